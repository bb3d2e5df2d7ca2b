"""Services on Ray: a service's instance as a Ray actor (``metadata.resource: "ray"``) against
a local instance, on one control plane that has both groups, in one run.

1. ``create -> first prediction``: the seed's eas_mnist.json (tensorflow_cpu, 1 instance)
   created through the API with ``metadata.resource`` ``ray`` or ``local``, the EAS protobuf
   request sent through the gateway every 20 ms until it answers 200 (``benchmarks/deploy.py``),
   then deleted and waited for. One warm-up create of each kind (the model in the cache),
   then ``--rounds`` rounds, Ray and local alternating (the order reversed every other
   round). For each create, where the time went, in seconds from the create call: the
   instance handed to its backend (the control plane's ``started_at``: staged, and for Ray
   the launch job submitted), the Ray launch job's end (Ray's Jobs API), ``liqi serve``
   started (the mtime of the instance's ``spec.json``, which the local backend and the Ray
   actor's constructor each write just before they start it; the actor is ALIVE then), the
   instance seen ready by the control plane (``ready_at``, ``/readyz`` 200) and the first
   prediction; and the CPU seconds used up to then by the instance's ``liqi serve``, by this
   process (the control plane, the polling client, the sampler of the head's processes) and
   by the Ray head's other processes.
2. ``throughput``: one service of each kind running side by side, wrk (``benchmarks/serving``'s
   request.lua, ``--duration-s`` per point, as ``benchmarks/gateway``) with the 1-row TF
   Serving JSON body through the gateway (``/api/predict/<service>/v1/models/<service>:predict``)
   at 1 and 64 connections, Ray and local alternating in each round; medians, and Ray / local.
   Before it, what differs between the two ``liqi serve`` processes (nice value, CPU affinity,
   threads, environment variable names).

The Ray head is a throwaway one (``tests/support/ray_head.RayHead``: free loopback ports, a
temp dir, its own session), stopped by killing exactly its processes; the instances are
stopped by deleting their services. The run ends by listing what is left of either (none
expected). The control plane's isolation is ``none`` unless ``--isolation sandbox`` (a Ray
instance is never sandboxed, so both kinds run the same unconfined ``liqi serve``), and it keeps
no standby server unless ``--standby`` (an instance on Ray never uses one, so without it both
kinds start cold). Prints Markdown tables; the head's summed RSS at the end.

Run: .venv/bin/python benchmarks/ray_services.py [--rounds 3] [--throughput-rounds 2]
         [--duration-s 10] [--isolation none|sandbox] [--standby]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psutil  # noqa: E402
from benchmarks.deploy import first_prediction_s  # noqa: E402
from benchmarks.instance_sandbox import (  # noqa: E402
    eas_body,
    started_cold,
    tf_1row_body,
    wait_standby,
)
from benchmarks.serving import client, inprocess, wrk  # noqa: E402
from tests.support.ray_head import RayHead  # noqa: E402
from tests.support.servers import (  # noqa: E402
    LiveServer,
    instance_folder,
    kill_instances,
    live_server,
)

from liqi.backends.local_instances import SPEC_FILE  # noqa: E402
from liqi.backends.ray_instance_actor import NAMESPACE  # noqa: E402
from liqi.client import Client  # noqa: E402

KINDS = ("ray", "local")
CONNECTIONS = (1, 64)
PROJECT, BUCKET = "bench", "bench"
DELETE_TIMEOUT_S = 90.0
#: the stages of a create, in order (a local create has no launch job)
STAGES = (
    ("submitted", "handed to the backend"),
    ("job_ended", "launch job ended"),
    ("process", "`liqi serve` started (Ray: in the actor's constructor)"),
    ("ready", "ready (control plane)"),
    ("first", "first prediction"),
)

CPU_PARTS = (
    ("instance", "the instance's `liqi serve`"),
    ("plane", "this process: the control plane, the polling client, the CPU sampler"),
    ("head", "the Ray head's processes (the instance excepted)"),
)


def spec(kind: str, name: str) -> dict[str, Any]:
    """The seed's eas_mnist.json on the group ``kind``."""
    return {
        "name": name,
        "generate_token": "false",
        "model_path": f"oss://{BUCKET}/models/",
        "processor": "tensorflow_cpu",
        "metadata": {"region": "shanghai", "instance": 1, "cpu": 1, "memory": 2000,
                     "resource": kind},
    }  # fmt: skip


# -- 1. create -> first prediction -------------------------------------------------------------


@dataclass
class Create:
    kind: str
    stages: dict[str, float | None] = field(default_factory=dict)  # seconds from the create
    cold: bool = True  # local: not a standby server
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds up to the prediction


class HeadCpu:
    """CPU seconds the Ray head's processes (daemons, workers, job supervisors and drivers)
    use while it runs, the instances' ``liqi serve`` excepted: their times sampled every
    ``interval_s`` (a process that lives less than that is missed)."""

    def __init__(self, head: RayHead, interval_s: float = 0.5) -> None:
        self.head, self.interval_s = head, interval_s
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HeadCpu:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        for process in self.head.processes():
            try:
                if "--instance-id" in process.cmdline():
                    continue
                times = process.cpu_times()
            except psutil.Error:
                continue
            self.first.setdefault(process.pid, times.user + times.system)
            self.last[process.pid] = times.user + times.system

    @property
    def used_s(self) -> float:
        return sum(self.last[pid] - self.first[pid] for pid in self.last)


def cpu_s(process: psutil.Process | None) -> float:
    if process is None:
        return float("nan")
    times = process.cpu_times()
    return float(times.user + times.system)


def measure_create(
    server: LiveServer, admin: Client, head: RayHead, kind: str, body: bytes
) -> Create:
    name = f"mnist_{kind}"
    url = f"{server.url}/api/predict/{name}"
    began = time.time()
    plane_before = cpu_s(psutil.Process())
    with HeadCpu(head) as around:
        first = first_prediction_s(
            url, body, lambda: admin.create_service(spec(kind, name), project=PROJECT)
        )
        plane_used = cpu_s(psutil.Process()) - plane_before
    info = admin.get_service(name)
    instance = info.instances[0]
    folder = server.home / "services" / name / instance.id
    created = Create(kind)

    def since(when: float | datetime | None) -> float | None:
        if when is None:
            return None
        return (when.timestamp() if isinstance(when, datetime) else when) - began

    created.stages["submitted"] = since(instance.started_at)
    created.stages["ready"] = since(instance.ready_at)
    created.cpu_s = {
        "instance": cpu_s(serve_process(folder)),
        "plane": plane_used,
        "head": around.used_s,
    }
    created.stages["first"] = first
    # spec.json is written just before `liqi serve` is started: by the local backend's
    # start, or by the Ray actor's constructor (then the actor is ALIVE)
    spec_file = folder / SPEC_FILE
    created.stages["process"] = since(spec_file.stat().st_mtime if spec_file.exists() else None)
    if kind == "ray":
        job = launch_job(head, instance.id)
        created.stages["job_ended"] = since(job.get("end_time", 0) / 1000 or None)
    else:
        created.cold = started_cold(name)
    admin.delete_service(name)
    admin.wait_service_deleted(name, timeout_s=DELETE_TIMEOUT_S)
    wait_standby(server.home / "services")
    return created


def serve_process(folder: Path) -> psutil.Process | None:
    """The ``liqi serve`` process working in ``folder`` (the instance's)."""
    for process in psutil.process_iter(["cmdline"]):
        argv = process.info["cmdline"] or []
        if "serve" in argv and instance_folder(process.pid) == str(folder):
            return process
    return None


def launch_job(head: RayHead, instance_id: str) -> dict[str, Any]:
    """The Ray job that launched the instance's actor (its submission id is the actor's
    name, ``liqi-<instance id>-<4 hex>``), from Ray's Jobs API."""
    answer = httpx.get(f"{head.dashboard_url}/api/jobs/", timeout=30, trust_env=False)
    answer.raise_for_status()
    prefix = f"liqi-{instance_id}-"
    for job in answer.json():
        ref = str(job.get("submission_id") or "")
        if ref.startswith(prefix) and "-stop-" not in ref:
            return dict(job)
    raise RuntimeError(f"no launch job {prefix}* on the Ray head")


def measure_creates(
    server: LiveServer, admin: Client, head: RayHead, rounds: int
) -> dict[str, list[Create]]:
    body = eas_body()
    for kind in KINDS:  # warm-up: the model in the cache, Ray's workers started
        created = measure_create(server, admin, head, kind, body)
        print(f"  warm-up {kind}: {created.stages['first']:.2f} s", flush=True)
    found: dict[str, list[Create]] = {kind: [] for kind in KINDS}
    for n in range(rounds):
        for kind in KINDS if n % 2 == 0 else reversed(KINDS):
            created = measure_create(server, admin, head, kind, body)
            found[kind].append(created)
            print(f"  round {n + 1} {kind}: " + ", ".join(
                f"{key} {value:.2f}" for key, value in created.stages.items()
                if value is not None) + ("" if created.cold else " (standby)") + "; CPU s "
                + ", ".join(f"{key} {value:.2f}" for key, value in created.cpu_s.items()),
                flush=True)  # fmt: skip
    return found


def report_creates(found: dict[str, list[Create]]) -> None:
    print("\n| create -> first prediction | median | max | rounds | local from a standby |")
    print("|---|---|---|---|---|")
    for kind in KINDS:
        firsts = [c.stages["first"] or 0.0 for c in found[kind]]
        claimed = "" if kind == "ray" else f"{sum(not c.cold for c in found[kind])}/{len(firsts)}"
        print(f"| {kind} | {statistics.median(firsts):.2f} s | {max(firsts):.2f} s | "
              f"{', '.join(f'{t:.2f}' for t in firsts)} | {claimed} |")  # fmt: skip
    print("\n| stage (median s from create) | " + " | ".join(KINDS) + " | Ray adds |")
    print("|---|---|---|---|")
    for key, label in STAGES:
        medians = [stage_median(found[kind], key) for kind in KINDS]
        cells = [f"{m:.2f}" if m is not None else "" for m in medians]
        ray, local = medians
        extra = f"{ray - local:+.2f}" if ray is not None and local is not None else ""
        print(f"| {label} | {' | '.join(cells)} | {extra} |")
    print("\n| CPU seconds up to the first prediction (median) | " + " | ".join(KINDS) + " |")
    print("|---|---|---|")
    for key, label in CPU_PARTS:
        cells = [f"{statistics.median(c.cpu_s[key] for c in found[kind]):.2f}" for kind in KINDS]
        print(f"| {label} | {' | '.join(cells)} |")


def stage_median(creates: list[Create], key: str) -> float | None:
    values = [c.stages[key] for c in creates if c.stages.get(key) is not None]
    return statistics.median(v for v in values if v is not None) if values else None


# -- 2. throughput through the gateway ----------------------------------------------------------


def measure_throughput(
    server: LiveServer, admin: Client, head: RayHead, rounds: int, duration_s: float, tmp: Path
) -> tuple[dict[tuple[str, int], list[wrk.WrkResult]], int]:
    """wrk's results by kind and connections, and the head's summed RSS with the instance
    running (its ``liqi serve`` is a child of the actor's worker)."""
    body = tmp / "tf_1row.json"
    body.write_bytes(tf_1row_body())
    urls = {k: f"{server.url}/api/predict/mnist_{k}/v1/models/mnist_{k}:predict" for k in KINDS}
    for kind in KINDS:
        admin.create_service(spec(kind, f"mnist_{kind}"), project=PROJECT)
    for kind in KINDS:
        info = admin.wait_service(f"mnist_{kind}", timeout_s=180)
        if info.state != "RUNNING":
            raise RuntimeError(f"mnist_{kind} is {info.state}: {info.reason}")
    compare_processes(server, admin)
    results: dict[tuple[str, int], list[wrk.WrkResult]] = {}
    serving_mb = head.rss_mb()
    try:
        for kind in KINDS:
            check_answer(urls[kind], body)
            wrk.run(urls[kind], body, client.JSON, connections=64, duration_s=2)
        for n in range(rounds):
            for connections in CONNECTIONS:
                order = KINDS if (n + connections) % 2 == 0 else tuple(reversed(KINDS))
                for kind in order:
                    result = wrk.run(urls[kind], body, client.JSON, connections=connections,
                                     duration_s=duration_s)  # fmt: skip
                    results.setdefault((kind, connections), []).append(result)
                    print(f"  round {n + 1} {kind} c={connections}: "
                          f"{result.req_per_s:,.0f} req/s, p50 {result.p50_ms:.2f} ms, "
                          f"p99 {result.p99_ms:.2f} ms, errors {result.errors}",
                          flush=True)  # fmt: skip
    finally:
        for kind in KINDS:
            admin.delete_service(f"mnist_{kind}")
        for kind in KINDS:
            admin.wait_service_deleted(f"mnist_{kind}", timeout_s=DELETE_TIMEOUT_S)
    return results, serving_mb


def compare_processes(server: LiveServer, admin: Client) -> None:
    """What differs between the two instances' ``liqi serve`` processes besides their
    folders: environment variables (names; values only of thread settings), nice value, CPU
    affinity, threads."""
    found: dict[str, psutil.Process] = {}
    for kind in KINDS:
        name = f"mnist_{kind}"
        instance = admin.get_service(name).instances[0]
        process = serve_process(server.home / "services" / name / instance.id)
        if process is None:
            print(f"  no `liqi serve` process found for {name}")
            return
        found[kind] = process
    env = {kind: p.environ() for kind, p in found.items()}
    ray_only = sorted(set(env["ray"]) - set(env["local"]))
    local_only = sorted(set(env["local"]) - set(env["ray"]))
    changed = sorted(
        k for k in set(env["ray"]) & set(env["local"]) if env["ray"][k] != env["local"][k]
    )
    threads = sorted(k for k in set(env["ray"]) | set(env["local"]) if "THREADS" in k)
    print(f"  instance processes, ray / local: nice {found['ray'].nice()} / "
          f"{found['local'].nice()}, CPU affinity {found['ray'].cpu_affinity()} / "
          f"{found['local'].cpu_affinity()}, threads {found['ray'].num_threads()} / "
          f"{found['local'].num_threads()}")  # fmt: skip
    print(f"  environment only under Ray: {', '.join(ray_only) or 'none'}; only local: "
          f"{', '.join(local_only) or 'none'}; different: {', '.join(changed) or 'none'}; "
          + "; ".join(f"{k}={env['ray'].get(k, '-')} / {env['local'].get(k, '-')}"
                      for k in threads))  # fmt: skip


def check_answer(url: str, body: Path) -> None:
    answer = httpx.post(url, content=body.read_bytes(), trust_env=False, timeout=30,
                        headers={"content-type": client.JSON})  # fmt: skip
    if answer.status_code != 200 or "predictions" not in answer.json():
        raise RuntimeError(f"{url} answered {answer.status_code}: {answer.text[:300]}")


def report_throughput(results: dict[tuple[str, int], list[wrk.WrkResult]]) -> None:
    print("\n| conns | Ray req/s | local req/s | Ray / local | p50 ms Ray / local | "
          "p99 ms Ray / local | errors | rounds |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for connections in CONNECTIONS:
        ray, local = results["ray", connections], results["local", connections]

        def med(runs: list[wrk.WrkResult], of: Callable[[wrk.WrkResult], float]) -> float:
            return statistics.median(of(r) for r in runs)

        a, b = med(ray, lambda r: r.req_per_s), med(local, lambda r: r.req_per_s)
        p50 = f"{med(ray, lambda r: r.p50_ms):.2f} / {med(local, lambda r: r.p50_ms):.2f}"
        p99 = f"{med(ray, lambda r: r.p99_ms):.2f} / {med(local, lambda r: r.p99_ms):.2f}"
        errors = sum(r.errors for r in ray + local)
        print(f"| {connections} | {a:,.0f} | {b:,.0f} | {a / b:.2f} | {p50} | {p99} | "
              f"{errors} | {len(ray)} |")  # fmt: skip


# -- the run ------------------------------------------------------------------------------------


def leftovers(head: RayHead, home: Path) -> list[str]:
    """What this run started and is still running: the head's processes, instances."""
    found = [f"ray head pid {p.pid}" for p in head.processes()]
    prefix = str(home / "services") + "/"
    for process in psutil.process_iter(["cwd", "cmdline"]):
        if str(process.info["cwd"] or "").startswith(prefix):
            found.append(f"instance pid {process.pid}: {' '.join(process.info['cmdline'])}")
    return found


def actors_alive(head: RayHead) -> int:
    params = [("filter_keys", "ray_namespace"), ("filter_predicates", "="),
              ("filter_values", NAMESPACE), ("filter_keys", "state"),
              ("filter_predicates", "="), ("filter_values", "ALIVE")]  # fmt: skip
    answer = httpx.get(f"{head.dashboard_url}/api/v0/actors", params=params, timeout=30)
    answer.raise_for_status()
    return len(answer.json()["data"]["result"]["result"])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Service instances on a Ray group against local ones: create -> first "
        "prediction and throughput through the gateway, one control plane, one run."
    )
    parser.add_argument("--rounds", type=int, default=3,
                        help="Creates of each kind after the warm-up (default 3).")  # fmt: skip
    parser.add_argument("--throughput-rounds", type=int, default=2,
                        help="wrk rounds per connection count and kind (default 2).")  # fmt: skip
    parser.add_argument("--duration-s", type=float, default=10.0,
                        help="Seconds of wrk per point (default 10).")  # fmt: skip
    parser.add_argument("--isolation", choices=("none", "sandbox"), default="none",
                        help="The control plane's isolation (default none: local instances "
                        "unconfined, as Ray instances are).")  # fmt: skip
    parser.add_argument("--standby", action="store_true",
                        help="Keep a standby server for local instances (default: none, so "
                        "both kinds start cold).")  # fmt: skip
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    wrk.ensure_installed()
    began = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        version = inprocess.export_model(tmp / "export")
        import_s = inprocess.import_tensorflow_s()
        print(f"import tensorflow: {import_s:.2f} s", flush=True)
        head = RayHead.create()
        home = tmp / "home"
        try:
            head.start()
            idle_mb = head.rss_mb()
            print(f"ray head: started in {head.started_s:.1f} s, {len(head.pids)} processes, "
                  f"{idle_mb} MB summed RSS", flush=True)  # fmt: skip
            groups = f"ray=ray:{head.dashboard_url}"
            plane = live_server(
                home, None, resource_groups=groups, standby=args.standby, isolation=args.isolation
            )
            with plane as server, server.admin() as admin:
                seed(admin, version)
                psutil.cpu_percent()
                found = measure_creates(server, admin, head, args.rounds)
                busy_creates = psutil.cpu_percent()
                results, serving_mb = measure_throughput(
                    server, admin, head, args.throughput_rounds, args.duration_s, tmp
                )
                busy_throughput = psutil.cpu_percent()
                end_mb = head.rss_mb()
                alive = actors_alive(head)
        finally:
            left_instances = kill_instances(home)
            head.stop()
        left = leftovers(head, home)
    print(f"\n{date.today().isoformat()}, {os.cpu_count()} cores, load average (1 min) "
          f"{os.getloadavg()[0]:.2f} at the end; {time.monotonic() - began:.0f} s in all; "
          f"`import tensorflow` {import_s:.2f} s; isolation {args.isolation}; standby server "
          f"{'on' if args.standby else 'off'}")  # fmt: skip
    report_creates(found)
    print(f"  machine {busy_creates:.0f}% busy during this part")
    report_throughput(results)
    print(f"  machine {busy_throughput:.0f}% busy during this part")
    print(f"\nRay head: started in {head.started_s:.1f} s; summed RSS of its processes "
          f"{idle_mb} MB idle after start, {serving_mb} MB with the instance running (its "
          f"`liqi serve` included), {end_mb} MB at the end (no instance left: "
          f"{alive} liqi actor(s) alive); stopped in {head.stopped_s:.1f} s")  # fmt: skip
    print(f"Cleanup: {left_instances} instance(s) killed after the plane closed; "
          f"left running after the head's stop: {left or 'nothing'}")  # fmt: skip


def seed(admin: Client, version: Path) -> None:
    admin.create_project(PROJECT)
    admin.create_bucket(BUCKET, project=PROJECT)
    for path in sorted(version.rglob("*")):
        if path.is_file():
            admin.put_object(BUCKET, f"models/1/{path.relative_to(version)}", path)


if __name__ == "__main__":
    main()
