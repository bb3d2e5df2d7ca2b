"""Instance sandbox: what running model-server instances in liqi.sandbox costs (issue 16:
the sandbox adds at most 200 ms to an instance's start; serving throughput inside it at least
0.95 of outside).

Parts, in this order, each comparing the sandbox with no sandbox in the same run:

1. ``start``: four control planes in this process, isolation ``none`` and ``sandbox``, each
   with the standby server off (every instance cold) and on. One warm-up create on each, then
   rounds that visit the four in turn (the order reversed every other round): create the
   seed's eas_mnist.json, send the EAS protobuf request through the gateway every 20 ms until
   it answers 200, delete the service, wait until it is gone and, where the plane keeps one,
   until its next standby server is ready (so no TensorFlow import runs in the background of
   the next measurement). Whether each instance was a standby server is read from the
   process table (a cold instance is a ``liqi serve --instance-id`` process), not assumed.
2. ``bare``: ``liqi serve`` of the MNIST SavedModel with the command line and the sandbox
   policy an instance gets (``serve_command``, ``instance_sandbox``), started as a plain
   subprocess and in a ``SandboxedProcess`` (cgroup, bwrap, ``setpriv`` to the workload
   user), alternately: start to ``/readyz`` 200.
3. ``throughput``: one such server of each kind, wrk (``benchmarks/serving``'s request.lua)
   at 1, 8 and 64 connections with the 1-row TF Serving JSON body, plain and sandboxed
   alternating in each round; medians per connection count, and sandboxed / plain.
4. ``weight`` (only when asked for): why a sandboxed server loses CPU under contention. One
   second of CPU, started in a session of its own (as an instance is) and in a
   ``SandboxedProcess``, beside ``--neighbours`` busy loops of each kind: every sandboxed
   workload of the host sits under liqi's one parent cgroup, which has the CPU weight of one
   session. A third kind, the sandbox without the ``cpu`` cgroup, shows what changing that
   gives.

Each part also reports the machine's busy share while it ran and the CPU used by sandboxed
workloads on this host that are not this run's (other sessions' tests share the parent).

Prints Markdown tables of medians. Needs root, bubblewrap and cgroups (``liqi.sandbox``), wrk.

Run: .venv/bin/python benchmarks/instance_sandbox.py [--parts start bare throughput weight]
         [--rounds 5] [--bare-rounds 5] [--throughput-rounds 3] [--duration-s 10]
         [--neighbours 2]
See --help.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psutil  # noqa: E402
from benchmarks.deploy import SPEC, first_prediction_s  # noqa: E402
from benchmarks.serving import client, inprocess, processes, wrk  # noqa: E402
from tests.support.servers import LiveServer, live_server  # noqa: E402

from liqi.backends.instances import SANDBOX_DIR, InstanceSpec  # noqa: E402
from liqi.backends.local_instances import LOG_FILE, seen_inside, serve_command  # noqa: E402
from liqi.client import Client  # noqa: E402
from liqi.client.eas_requests import TFRequest  # noqa: E402
from liqi.control.services.staging import INSTANCE_ENV, instance_sandbox  # noqa: E402
from liqi.sandbox import SandboxedProcess, SandboxPolicy, safe_env, workload_user  # noqa: E402
from liqi.sandbox.cgroups import Cgroup, Layout, detect_layout  # noqa: E402
from liqi.sandbox.command import bwrap_argv  # noqa: E402
from liqi.sandbox.users import give_to_workload_user  # noqa: E402

PARTS = ("start", "bare", "throughput", "weight")
CONNECTIONS = (1, 8, 64)
PLANES = (("none", False), ("none", True), ("sandbox", False), ("sandbox", True))
READY_TIMEOUT_S = 180.0
MEMORY_MB = int(SPEC["metadata"]["memory"])  # type: ignore[index]


# -- 1. create -> first prediction on real control planes -------------------------------------


@dataclass
class Plane:
    isolation: str
    standby: bool
    server: LiveServer
    admin: Client
    times: list[float]
    claimed: list[bool]

    @property
    def label(self) -> str:
        return f"{self.isolation}, standby {'on' if self.standby else 'off'}"

    def measure(self, body: bytes) -> tuple[float, bool]:
        """One create -> first prediction, then delete and wait for a quiet plane; and
        whether the instance was a standby server."""
        url = f"{self.server.url}/api/predict/{SPEC['name']}"
        seconds = first_prediction_s(
            url, body, lambda: self.admin.create_service(SPEC, project="bench")
        )
        claimed = not started_cold(str(SPEC["name"]))
        self.admin.delete_service(str(SPEC["name"]))
        self.admin.wait_service_deleted(str(SPEC["name"]), timeout_s=60)
        wait_standby(self.server.home / "services")
        return seconds, claimed


def started_cold(service: str) -> bool:
    """Whether the service's instance (the only one this run has at a time) is a ``liqi
    serve`` process of its own: a standby server that became it keeps its command line
    (``python -m liqi.serving.standby``), sandboxed or not."""
    marker = f"{service}-v"
    for process in psutil.Process().children(recursive=True):
        try:
            argv = process.cmdline()
        except psutil.Error:
            continue
        if "serve" in argv and any(a.startswith(marker) for a in argv if a != service):
            return True
    return False


def wait_standby(services: Path, timeout_s: float = 120.0) -> None:
    """Until one of the standby servers the plane started is ready; at once when it has
    none (standby off, or not used under this isolation)."""
    if not any(services.rglob("standby-*")):
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(services.rglob("standby-*/ready")):
            return
        time.sleep(0.1)
    raise TimeoutError(f"no standby server became ready under {services} within {timeout_s}s")


def eas_body() -> bytes:
    from liqi.datasets.mnist_reader import builtin_dir, read_data_sets

    image = read_data_sets(str(builtin_dir())).test.images[:1]
    request = TFRequest("predict_images")
    request.add_feed("images", [1, 784], TFRequest.DT_FLOAT, [float(x) for x in image.ravel()])
    return bytes(request.to_string())


@contextmanager
def planes(tmp: Path, model: Path) -> Iterator[list[Plane]]:
    with ExitStack() as stack:
        found = []
        for n, (isolation, standby) in enumerate(PLANES):
            server = stack.enter_context(
                live_server(tmp / f"home{n}", None, isolation=isolation, standby=standby)
            )
            admin = stack.enter_context(server.admin())
            admin.create_project("bench")
            admin.create_bucket("bench", project="bench")
            for path in sorted(model.rglob("*")):
                if path.is_file():
                    admin.put_object("bench", f"models/1/{path.relative_to(model)}", path)
            found.append(Plane(isolation, standby, server, admin, [], []))
        yield found


def measure_start(tmp: Path, model: Path, rounds: int) -> list[Plane]:
    body = eas_body()
    with planes(tmp, model) as found:
        for plane in found:  # warm-up: the model cached, a first standby started
            seconds, claimed = plane.measure(body)
            print(f"  warm-up {plane.label}: {seconds:.2f} s (standby: {claimed})", flush=True)
        for n in range(rounds):
            for plane in found if n % 2 == 0 else reversed(found):
                seconds, claimed = plane.measure(body)
                plane.times.append(seconds)
                plane.claimed.append(claimed)
                print(f"  round {n + 1} {plane.label}: {seconds:.2f} s (standby: {claimed})",
                      flush=True)  # fmt: skip
    return found


def report_start(found: list[Plane]) -> None:
    by = {(p.isolation, p.standby): p for p in found}
    print("\n| standby | isolation none | isolation sandbox | sandbox adds | "
          "instances from a standby (none / sandbox) |")  # fmt: skip
    print("|---|---|---|---|---|")
    for standby in (False, True):
        plain, boxed = by["none", standby], by["sandbox", standby]
        a, b = statistics.median(plain.times), statistics.median(boxed.times)
        print(
            f"| {'on' if standby else 'off'} | {a * 1000:.0f} ms | {b * 1000:.0f} ms | "
            f"{(b - a) * 1000:+.0f} ms | {sum(plain.claimed)}/{len(plain.claimed)} / "
            f"{sum(boxed.claimed)}/{len(boxed.claimed)} |"
        )
    for p in found:
        print(f"  {p.label}: " + ", ".join(f"{t:.2f}" for t in p.times))


# -- 2. and 3. liqi serve as an instance runs it, plain and sandboxed ---------------------------


@dataclass
class Served:
    name: str
    port: int
    ready_s: float

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def instance(
    tmp: Path, export: Path, name: str, sandboxed: bool
) -> tuple[InstanceSpec, dict[str, str]]:
    """The spec of one instance of ``export`` (as staging makes it) and its environment."""
    folder = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=tmp))
    spec = InstanceSpec(
        instance_id=folder.name,
        service="mnist",
        model_uri=str(export),
        dir=str(folder),
        memory_mb=MEMORY_MB,
        port=processes.free_port(),
        env={"LIQI_HOME": str(tmp / "home")},
    )
    if sandboxed:
        user = workload_user("bench")
        env = safe_env(os.environ, **{k: os.environ[k] for k in INSTANCE_ENV if k in os.environ})
        spec = instance_sandbox(spec, user, env, tmp / "home", tmp / "cache")
    return spec, {**spec.env, "PYTHONUNBUFFERED": "1"}


@contextmanager
def serving(tmp: Path, export: Path, sandboxed: bool) -> Iterator[Served]:
    """``liqi serve`` started as the local instance backend starts it, up to ``/readyz``."""
    name = "sandbox" if sandboxed else "plain"
    spec, extra = instance(tmp, export, name, sandboxed)
    folder = Path(spec.dir)
    started = time.monotonic()
    process: subprocess.Popen[bytes] | SandboxedProcess
    with open(folder / LOG_FILE, "ab") as log:
        if sandboxed:  # what LocalInstanceBackend.start and _start_sandboxed do
            assert spec.sandbox is not None
            policy = SandboxPolicy.from_dict(spec.sandbox)
            policy = replace(policy, env={**policy.env, **extra})
            give_to_workload_user(policy, folder)
            argv = serve_command(seen_inside(spec))
            process = SandboxedProcess(policy, argv, SANDBOX_DIR, stdout=log, stderr=log)
        else:
            argv = serve_command(spec)
            env = {k: v for k, v in os.environ.items() if k != "LIQI_SERVE_TOKEN"} | extra
            process = subprocess.Popen(argv, cwd=folder, env=env, stdin=subprocess.DEVNULL,
                                       stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)  # fmt: skip
    try:
        ready_s = await_ready(spec.port, started, process, folder)
        yield Served(name, spec.port, ready_s)
    finally:
        if isinstance(process, SandboxedProcess):
            process.kill()
            process.close()
        else:
            processes.stop(process)


def await_ready(
    port: int, started: float, process: subprocess.Popen[bytes] | SandboxedProcess, folder: Path
) -> float:
    while time.monotonic() - started < READY_TIMEOUT_S:
        if process.poll() is not None:
            log = (folder / LOG_FILE).read_text(errors="replace")[-2000:]
            raise RuntimeError(f"liqi serve in {folder} exited before it was ready:\n{log}")
        try:
            if processes.get(port, "/readyz", timeout_s=1.0)[0] == 200:
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.02)
    raise TimeoutError(f"liqi serve in {folder} not ready within {READY_TIMEOUT_S:g} s")


def measure_bare(tmp: Path, export: Path, rounds: int) -> dict[str, list[float]]:
    ready: dict[str, list[float]] = {"plain": [], "sandbox": []}
    for n in range(rounds):
        for sandboxed in (False, True) if n % 2 == 0 else (True, False):
            with serving(tmp, export, sandboxed) as served:
                ready[served.name].append(served.ready_s)
                print(f"  round {n + 1} {served.name}: ready in {served.ready_s:.2f} s",
                      flush=True)  # fmt: skip
    return ready


def report_bare(ready: dict[str, list[float]]) -> None:
    a, b = (statistics.median(ready[n]) for n in ("plain", "sandbox"))
    print("\n| `liqi serve` start to ready | plain | sandboxed | sandbox adds |")
    print("|---|---|---|---|")
    print(f"| median of {len(ready['plain'])} | {a:.2f} s | {b:.2f} s | {(b - a) * 1000:+.0f} ms |")
    print("  plain: " + ", ".join(f"{t:.2f}" for t in ready["plain"]))
    print("  sandbox: " + ", ".join(f"{t:.2f}" for t in ready["sandbox"]))


def measure_throughput(
    tmp: Path, export: Path, rounds: int, duration_s: float
) -> dict[tuple[str, int], list[wrk.WrkResult]]:
    body = tmp / "tf_1row.json"
    body.write_bytes(tf_1row_body())
    url_path, content_type = client.PREDICT_TF, client.JSON
    results: dict[tuple[str, int], list[wrk.WrkResult]] = {}
    with serving(tmp, export, False) as plain, serving(tmp, export, True) as boxed:
        for served in (plain, boxed):
            check_answer(served, body)
            wrk.run(served.url + url_path, body, content_type, connections=64, duration_s=2)
        for n in range(rounds):
            for connections in CONNECTIONS:
                pair = (plain, boxed) if (n + connections) % 2 == 0 else (boxed, plain)
                for served in pair:
                    result = wrk.run(served.url + url_path, body, content_type,
                                     connections=connections, duration_s=duration_s)  # fmt: skip
                    results.setdefault((served.name, connections), []).append(result)
                    print(f"  round {n + 1} {served.name} c={connections}: "
                          f"{result.req_per_s:,.0f} req/s, p50 {result.p50_ms:.2f} ms, "
                          f"errors {result.errors}", flush=True)  # fmt: skip
    return results


def tf_1row_body() -> bytes:
    from liqi.datasets.mnist_reader import builtin_dir, read_data_sets
    from liqi.protocols import tfserving

    image = read_data_sets(str(builtin_dir())).test.images[:1].astype("float32")
    return bytes(tfserving.encode_predict_request({"images": image}, columnar=False))


def check_answer(served: Served, body: Path) -> None:
    answer = httpx.post(served.url + client.PREDICT_TF, content=body.read_bytes(),
                        headers={"content-type": client.JSON}, trust_env=False)  # fmt: skip
    if answer.status_code != 200 or "predictions" not in answer.json():
        raise RuntimeError(f"{served.name} answered {answer.status_code}: {answer.text[:300]}")


def report_throughput(results: dict[tuple[str, int], list[wrk.WrkResult]]) -> None:
    print("\n| conns | plain req/s | sandboxed req/s | sandboxed / plain | p50 ms plain / "
          "sandboxed | errors | rounds |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for connections in CONNECTIONS:
        plain, boxed = results["plain", connections], results["sandbox", connections]
        a = statistics.median(r.req_per_s for r in plain)
        b = statistics.median(r.req_per_s for r in boxed)
        pa = statistics.median(r.p50_ms for r in plain)
        pb = statistics.median(r.p50_ms for r in boxed)
        errors = sum(r.errors for r in plain + boxed)
        print(f"| {connections} | {a:,.0f} | {b:,.0f} | {b / a:.2f} | {pa:.2f} / {pb:.2f} | "
              f"{errors} | {len(plain)} |")  # fmt: skip


# -- 4. CPU weight: why the sandbox loses under contention ---------------------------------------

SPIN = ["/bin/sh", "-c", "while :; do :; done"]
CPU_SECOND = "import time\nt = time.process_time()\nwhile time.process_time() - t < 1.0: pass\n"


def bench_policy(name: str) -> SandboxPolicy:
    user = workload_user("bench")
    uid, gid = user if user else (None, None)
    return SandboxPolicy(name=name, uid=uid, gid=gid, env=safe_env(os.environ))


def cpu_second_s(kind: str) -> float:
    """Wall time of one second of CPU: ``plain`` in a session of its own (as an instance is
    started), ``sandbox`` in a SandboxedProcess, ``sandbox, no cpu cgroup`` the same sandbox
    with its memory and pids cgroups only (it stays in the root cpu cgroup, in the session
    bwrap makes): the change that would give it a plain process's weight."""
    argv = [sys.executable, "-c", CPU_SECOND]
    started = time.monotonic()
    if kind == "plain":
        subprocess.run(argv, check=True, start_new_session=True)
    elif kind == "sandbox":
        process = SandboxedProcess(bench_policy("bench-cpu"), argv, "/")
        process.wait()
        process.close()
    else:
        layout = detect_layout()
        assert not isinstance(layout, str), layout
        bases = {name: base for name, base in layout.bases.items() if name != "cpu"}
        cgroup = Cgroup(Layout(layout.version, bases), f"bench-nocpu-{os.getpid()}")
        cgroup.create(None, 2048, None)
        command = bwrap_argv(bench_policy("bench-nocpu"), argv, "/", cgroup.procs_files)
        try:
            subprocess.run(command, env={}, check=True, start_new_session=True)
        finally:
            cgroup.remove()
    return time.monotonic() - started


WEIGHT_KINDS = ("plain", "sandbox", "sandbox, no cpu cgroup")


def measure_weight(neighbours: int, rounds: int) -> dict[str, list[float]]:
    """``cpu_second_s`` of each kind beside ``neighbours`` busy loops started plain (each in
    its own session) and as many in SandboxedProcesses."""
    wall: dict[str, list[float]] = {kind: [] for kind in WEIGHT_KINDS}
    spinning = [subprocess.Popen(SPIN, start_new_session=True) for _ in range(neighbours)]
    boxed = [SandboxedProcess(bench_policy(f"bench-spin{i}"), SPIN, "/") for i in range(neighbours)]
    try:
        for n in range(rounds):
            for kind in WEIGHT_KINDS if n % 2 == 0 else reversed(WEIGHT_KINDS):
                wall[kind].append(cpu_second_s(kind))
    finally:
        for process in spinning:
            process.kill()
            process.wait()
        for box in boxed:
            box.kill()
            box.close()
    return wall


def report_weight(neighbours: int, wall: dict[str, list[float]]) -> None:
    a, b, c = (statistics.median(wall[kind]) for kind in WEIGHT_KINDS)
    print(f"\n| 1 s of CPU beside {neighbours} busy plain + {neighbours} busy sandboxed loops | "
          "plain | sandboxed | sandboxed, no cpu cgroup | plain / sandboxed | "
          "plain / no cpu cgroup |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    print(f"| wall time, median of {len(wall['plain'])} | {a:.2f} s | {b:.2f} s | {c:.2f} s | "
          f"{a / b:.2f} | {a / c:.2f} |")  # fmt: skip


# -- the machine around the run ------------------------------------------------------------------


class Neighbours:
    """What else ran while a part ran: the machine's busy share (``psutil.cpu_percent`` over
    the part) and the CPU of sandboxed workloads that are not this run's (their processes in
    the cgroups under liqi's base, sampled every ``interval_s``). All sandboxed workloads of
    a host share liqi's parent cgroup, hence its CPU weight: see RESULTS.md."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.cgroups: set[str] = set()
        self.busy_percent = 0.0
        self.started = 0.0
        self.elapsed_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        layout = detect_layout()
        self.base = (
            None
            if isinstance(layout, str)
            # every workload joins pids (v1) or the one hierarchy (v2); cpu only for a limit
            else layout.bases.get("pids", next(iter(layout.bases.values())))
        )

    def __enter__(self) -> Neighbours:
        psutil.cpu_percent()
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.elapsed_s = time.monotonic() - self.started
        self.busy_percent = psutil.cpu_percent()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            if self.base is None or not self.base.is_dir():
                continue
            mine = {p.pid for p in psutil.Process().children(recursive=True)}
            try:
                folders = list(self.base.iterdir())
            except OSError:
                continue  # removed with its last workload
            for folder in folders:
                procs = folder / "cgroup.procs"
                if not folder.is_dir() or not procs.exists():
                    continue
                try:
                    pids = [int(line) for line in procs.read_text().split()]
                except (OSError, ValueError):
                    continue
                for pid in set(pids) - mine:
                    try:
                        times = psutil.Process(pid).cpu_times()
                    except psutil.Error:
                        continue
                    self.cgroups.add(folder.name)
                    self.first.setdefault(pid, times.user + times.system)
                    self.last[pid] = times.user + times.system

    def describe(self) -> str:
        cpu_s = sum(self.last[pid] - self.first[pid] for pid in self.last)
        share = 100 * cpu_s / self.elapsed_s if self.elapsed_s else 0.0
        return (
            f"{self.elapsed_s:.0f} s, machine {self.busy_percent:.0f}% busy; other sandboxed "
            f"workloads on the host: {len(self.cgroups)} cgroup(s), {share:.0f}% of one core"
        )


# -- the run ------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="The instance sandbox's cost: create -> first prediction with isolation "
        "none and sandbox (standby off and on), `liqi serve` start to ready plain and "
        "sandboxed, and wrk throughput plain and sandboxed.",
    )
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS[:3]),
                        help="Which parts to run (default: start bare throughput).")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=5,
                        help="Rounds of the four control planes (default 5).")  # fmt: skip
    parser.add_argument("--bare-rounds", type=int, default=5,
                        help="Plain/sandboxed `liqi serve` starts, each (default 5).")  # fmt: skip
    parser.add_argument("--throughput-rounds", type=int, default=3,
                        help="wrk rounds per connection count, each (default 3).")  # fmt: skip
    parser.add_argument("--duration-s", type=float, default=10.0,
                        help="Seconds of wrk per point (default 10).")  # fmt: skip
    parser.add_argument("--neighbours", type=int, default=2,
                        help="Busy loops of each kind in the weight part (default 2).")  # fmt: skip
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    wrk.ensure_installed()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        tmp.chmod(0o755)  # the workload user reads the model (a TemporaryDirectory is 0700)
        version = inprocess.export_model(tmp / "export")
        print(f"import tensorflow: {inprocess.import_tensorflow_s():.2f} s", flush=True)
        around = {part: Neighbours() for part in args.parts}
        if "start" in args.parts:
            with around["start"]:
                found = measure_start(tmp, version, args.rounds)
        if "bare" in args.parts:
            with around["bare"]:
                ready = measure_bare(tmp, version.parent, args.bare_rounds)
        if "throughput" in args.parts:
            with around["throughput"]:
                results = measure_throughput(
                    tmp, version.parent, args.throughput_rounds, args.duration_s
                )
        if "weight" in args.parts:
            with around["weight"]:
                wall = measure_weight(args.neighbours, args.bare_rounds)
    print(f"\n{date.today().isoformat()}, {os.cpu_count()} cores, load average (1 min) "
          f"{os.getloadavg()[0]:.2f} at the end")  # fmt: skip
    if "start" in args.parts:
        report_start(found)
        print(f"  during this part: {around['start'].describe()}")
    if "bare" in args.parts:
        report_bare(ready)
        print(f"  during this part: {around['bare'].describe()}")
    if "throughput" in args.parts:
        report_throughput(results)
        print(f"  during this part: {around['throughput'].describe()}")
    if "weight" in args.parts:
        report_weight(args.neighbours, wall)
        print(f"  during this part: {around['weight'].describe()}")


if __name__ == "__main__":
    main()
