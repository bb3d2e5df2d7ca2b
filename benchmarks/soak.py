"""Soak: mixed load on one control plane for a long time, with nothing failed and nothing
growing (issue 18; reported in benchmarks/RESULTS.md, not a CI gate).

One control plane (a temporary LIQI_HOME, SQLite, the standby server on) serves the seed's
MNIST model (exported by the seed's TF1 script, put in ``oss://soak/models/1/``) as one
service of 2 instances. For ``--duration-min`` minutes:

- **predictions**: wrk at ``--connections`` keep-alive connections, the 1-row TF Serving JSON
  through the gateway, the whole time (``benchmarks/serving/request.lua``, statuses tallied);
- **a rolling update** every ``--update-every-s`` (``modify``: ``metadata.rpc.max_queue_size``
  toggled, a new version each time, the instances rolled one by one);
- **a scale** every ``--scale-every-s``: up to 3 instances, and back to 2 half a period later;
- **uploads**: a 1 MB object put, read back, compared and deleted every ``--upload-every-s``;
- **jobs**: a small script job (prints, writes one output file) every ``--job-every-s``,
  waited for, its output checked.

Every ``--sample-every-s``: RSS, open files and threads of the control plane (this process:
the server runs in it, in threads), of each ``liqi serve`` process (instances and the standby
server; from their first minute on, once the model is loaded) and the summed size of the log
files under LIQI_HOME. At the end: failed predictions
(wrk's non-2xx answers and socket errors), what each periodic action did and how many failed,
the slope per hour of each long-lived process's RSS, open files and threads (least squares
over the samples after the first 10 %), and the largest log folder against its rotation bound.

Run: .venv/bin/python benchmarks/soak.py [--duration-min 30] [--connections 32]
         [--update-every-s 120] [--scale-every-s 300] [--upload-every-s 30]
         [--job-every-s 60] [--sample-every-s 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
from benchmarks.instance_sandbox import tf_1row_body  # noqa: E402
from benchmarks.serving import client, inprocess, wrk  # noqa: E402
from tests.support.servers import LiveServer, kill_instances, live_server  # noqa: E402

from liqi.client import Client  # noqa: E402
from liqi.logs.rotation import LogLimits  # noqa: E402

PROJECT, BUCKET, SERVICE = "soak", "soak", "soak_mnist"
WARM_S = 60.0  # a `liqi serve` process is sampled from this age on
JOB = """
    import argparse, os
    parser = argparse.ArgumentParser()
    parser.add_argument("--buckets")
    args, _ = parser.parse_known_args()
    print("soak job", os.environ["LIQI_JOB_ID"], flush=True)
    with open(os.path.join(args.buckets, os.environ["LIQI_JOB_ID"] + ".txt"), "w") as fh:
        fh.write("done")
"""


def spec(instances: int, queue: int) -> dict[str, Any]:
    return {
        "name": SERVICE,
        "generate_token": "false",
        "model_path": f"oss://{BUCKET}/models/",
        "processor": "tensorflow_cpu",
        "metadata": {
            "instance": instances,
            "cpu": 1,
            "memory": 2000,
            "rpc": {"max_queue_size": queue},
        },
    }


@dataclass
class Tally:
    """What one periodic action did."""

    done: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def run(self, action: Callable[[], None]) -> None:
        try:
            action()
            self.done += 1
        except Exception as exc:  # reported, the soak goes on
            self.failed += 1
            self.errors.append(f"{type(exc).__name__}: {exc}"[:300])


@dataclass
class Sample:
    at_s: float
    rss_mb: float
    fds: int
    threads: int


def sample(process: psutil.Process) -> Sample | None:
    try:
        with process.oneshot():
            return Sample(
                time.monotonic(),
                process.memory_info().rss / 2**20,
                process.num_fds(),
                process.num_threads(),
            )
    except psutil.Error:
        return None


def serve_processes(home: Path) -> dict[int, str]:
    """The ``liqi serve`` processes working under ``home/services`` (pid -> folder name)."""
    found = {}
    prefix = str(home / "services")
    for process in psutil.process_iter(["cmdline", "cwd"]):
        cwd = process.info.get("cwd") or ""
        cmdline = process.info.get("cmdline") or []
        if cwd.startswith(prefix) and "serve" in cmdline:
            found[process.pid] = Path(cwd).name
    return found


def slope_per_hour(samples: list[Sample], value: Callable[[Sample], float]) -> float | None:
    """Least-squares slope of ``value`` per hour over the samples after the first 10 %."""
    kept = samples[len(samples) // 10 :]
    if len(kept) < 3:
        return None
    xs = [s.at_s for s in kept]
    ys = [value(s) for s in kept]
    return statistics.linear_regression(xs, ys).slope * 3600


def log_bytes(home: Path) -> tuple[int, int, str]:
    """Summed size of the log files under ``home``, the largest folder's share, its name."""
    by_folder: dict[Path, int] = {}
    for path in home.rglob("*.log*"):
        if path.is_file() and "jobs" not in path.parts:
            by_folder[path.parent] = by_folder.get(path.parent, 0) + path.stat().st_size
    if not by_folder:
        return 0, 0, "-"
    largest = max(by_folder, key=lambda p: by_folder[p])
    return sum(by_folder.values()), by_folder[largest], str(largest.relative_to(home))


class Soak:
    def __init__(self, server: LiveServer, admin: Client, args: argparse.Namespace, tmp: Path):
        self.server, self.admin, self.args, self.tmp = server, admin, args, tmp
        self.updates, self.scales = Tally(), Tally()
        self.uploads, self.jobs = Tally(), Tally()
        self.queue = 1024
        self.plane: list[Sample] = []
        self.serve: dict[int, list[Sample]] = {}
        self.serve_names: dict[int, str] = {}
        self.logs: list[tuple[int, int, str]] = []
        self.script_uri = ""

    def update(self) -> None:
        self.queue = 1025 if self.queue == 1024 else 1024
        self.admin.modify_service(SERVICE, {"metadata": {"rpc": {"max_queue_size": self.queue}}})
        self._settle()

    def scale(self, instances: int) -> None:
        self.admin.scale_service(SERVICE, instances)
        self._settle()

    def _settle(self) -> None:
        info = self.admin.wait_service(SERVICE, timeout_s=300)
        if info.state != "RUNNING":
            raise RuntimeError(f"{SERVICE} is {info.state}: {info.reason}")

    def upload(self) -> None:
        data = os.urandom(2**20)
        key = f"uploads/{time.monotonic_ns()}.bin"
        self.admin.put_object(BUCKET, key, data)
        if self.admin.read_object(BUCKET, key) != data:
            raise RuntimeError(f"oss://{BUCKET}/{key} came back different")
        self.admin.delete_object(BUCKET, key)

    def job(self) -> None:
        job = self.admin.submit_job(
            self.script_uri, project=PROJECT, buckets=[f"oss://{BUCKET}/jobs/"]
        )
        done = self.admin.wait_job(job.id, timeout_s=300)
        if done.state != "SUCCEEDED":
            raise RuntimeError(f"job {job.id} {done.state}: {done.reason}")
        if self.admin.read_object(BUCKET, f"jobs/{job.id}.txt") != b"done":
            raise RuntimeError(f"job {job.id}'s output is missing")

    def take_samples(self) -> None:
        found = sample(psutil.Process())
        if found:
            self.plane.append(found)
        for pid, name in serve_processes(self.server.home).items():
            try:  # a server's first minute is its model loading, not a trend
                young = time.time() - psutil.Process(pid).create_time() < WARM_S
            except psutil.Error:
                continue
            got = None if young else sample(psutil.Process(pid))
            if got:
                self.serve.setdefault(pid, []).append(got)
                self.serve_names[pid] = name
        self.logs.append(log_bytes(self.server.home))

    def run(self, stop_at: float) -> None:
        """The periodic actions, each in its own thread, until ``stop_at``."""
        script = self.tmp / "soak_job.py"
        script.write_text(textwrap.dedent(JOB))
        self.script_uri = self.admin.add_resource(script, project=PROJECT, force=True).uri
        a = self.args

        def every(period_s: float, action: Callable[[], None], offset_s: float = 0.0) -> None:
            next_at = time.monotonic() + offset_s + period_s
            while True:
                wait = next_at - time.monotonic()
                if next_at > stop_at:
                    return
                if wait > 0:
                    time.sleep(min(wait, 1.0))
                    continue
                action()
                next_at += period_s

        half = a.scale_every_s / 2
        loops = [
            (a.update_every_s, lambda: self.updates.run(self.update), 0.0),
            (a.scale_every_s, lambda: self.scales.run(lambda: self.scale(3)), 0.0),
            (a.scale_every_s, lambda: self.scales.run(lambda: self.scale(2)), half),
            (a.upload_every_s, lambda: self.uploads.run(self.upload), 0.0),
            (a.job_every_s, lambda: self.jobs.run(self.job), 0.0),
            (a.sample_every_s, self.take_samples, -a.sample_every_s),
        ]
        threads = [
            threading.Thread(target=every, args=loop, daemon=True, name=f"soak-{n}")
            for n, loop in enumerate(loops)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


def fmt(value: float | None, unit: str) -> str:
    return "-" if value is None else f"{value:+.2f} {unit}/h"


def report(soak: Soak, load: wrk.WrkResult, minutes: float, limits: LogLimits) -> str:
    statuses = ", ".join(f"{k} {v:,}" for k, v in sorted(load.statuses.items())) or "-"
    lines = [
        f"\n## Soak (`benchmarks/soak.py`), {date.today().isoformat()}\n",
        f"{minutes:g} minutes on {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} "
        f"at the end. Predictions: wrk at {load.connections} connections through the gateway, "
        f"{load.requests:,} requests ({load.req_per_s:,.0f}/s), statuses {statuses}, socket "
        f"errors {load.socket_errors}, **failed {load.errors}**; p50 {load.p50_ms:.1f} ms, "
        f"p99 {load.p99_ms:.1f} ms, max {load.max_ms:.0f} ms.\n",
        "| action | done | failed | first error |",
        "|---|---|---|---|",
    ]
    for name, tally in (
        ("rolling update", soak.updates),
        ("scale 2->3 / 3->2", soak.scales),
        ("1 MB upload, read, delete", soak.uploads),
        ("job (script, output)", soak.jobs),
    ):
        first = tally.errors[0] if tally.errors else ""
        lines.append(f"| {name} | {tally.done} | {tally.failed} | {first} |")
    lines += [
        "",
        "| process | samples | RSS first -> last | RSS slope | open files slope | threads slope |",
        "|---|---|---|---|---|---|",
    ]
    rows = [("control plane (this process)", soak.plane)]
    long_lived = sorted(soak.serve.items(), key=lambda kv: -len(kv[1]))
    rows += [(f"`liqi serve` {soak.serve_names[pid]}", s) for pid, s in long_lived[:4]]
    for name, samples in rows:
        if not samples:
            continue
        lines.append(
            f"| {name} | {len(samples)} | {samples[0].rss_mb:.0f} -> {samples[-1].rss_mb:.0f} MB"
            f" | {fmt(slope_per_hour(samples, lambda s: s.rss_mb), 'MB')}"
            f" | {fmt(slope_per_hour(samples, lambda s: s.fds), 'files')}"
            f" | {fmt(slope_per_hour(samples, lambda s: s.threads), 'threads')} |"
        )
    total, largest, where = max(soak.logs, default=(0, 0, "-"), key=lambda t: t[1])
    bound = limits.max_bytes * (limits.backups + 1)
    lines.append(
        f"\n{len(soak.serve)} `liqi serve` processes seen in all (instances replaced by the "
        f"updates and scales, and standby servers). Logs: at most {total / 2**20:.1f} MB under "
        f"LIQI_HOME; the largest folder ({where}) {largest / 2**20:.2f} MB against its "
        f"rotation bound of {bound / 2**20:.0f} MB per log.\n"
    )
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-min", type=float, default=30.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--update-every-s", type=float, default=120.0)
    parser.add_argument("--scale-every-s", type=float, default=300.0)
    parser.add_argument("--upload-every-s", type=float, default=30.0)
    parser.add_argument("--job-every-s", type=float, default=60.0)
    parser.add_argument("--sample-every-s", type=float, default=10.0)
    parser.add_argument("--out", type=Path, help="append the Markdown section to this file")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    wrk.ensure_installed()
    duration_s = args.duration_min * 60
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        version = inprocess.export_model(tmp / "export")
        body = tmp / "tf_1row.json"
        body.write_bytes(tf_1row_body())
        home = tmp / "home"
        try:
            with live_server(home, None, isolation="none") as server, server.admin() as admin:
                admin.create_project(PROJECT)
                admin.create_bucket(BUCKET, project=PROJECT)
                for path in sorted(version.rglob("*")):
                    if path.is_file():
                        admin.put_object(BUCKET, f"models/1/{path.relative_to(version)}", path)
                admin.create_service(spec(2, 1024), project=PROJECT)
                info = admin.wait_service(SERVICE, timeout_s=300)
                if info.state != "RUNNING":
                    raise RuntimeError(f"{SERVICE} is {info.state}: {info.reason}")
                url = f"{server.url}/api/predict/{SERVICE}/v1/models/{SERVICE}:predict"
                soak = Soak(server, admin, args, tmp)
                began = time.monotonic()
                stop_at = began + duration_s
                actions = threading.Thread(target=soak.run, args=(stop_at,), daemon=True)
                actions.start()
                load = wrk.run(url, body, client.JSON, connections=args.connections,
                               duration_s=duration_s, tally=True, timeout_s=10)  # fmt: skip
                actions.join(timeout=600)
                text = report(soak, load, args.duration_min, server.settings.log_limits)
        finally:
            kill_instances(home)
    print(text)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as out:
            out.write(text)


if __name__ == "__main__":
    main()
