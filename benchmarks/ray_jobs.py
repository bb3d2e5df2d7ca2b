"""Ray jobs against local ones: submit -> the script's first line as `liqi job logs` shows it
(through the API), and submit -> SUCCEEDED, for the same small script in the ``local`` group
and in a Ray group; and the Ray head's idle RSS.

One run: start a throwaway Ray head on this machine (tests/support/ray_head.py), a control plane
in a temporary LIQI_HOME with the groups ``local`` (default) and ``ray``, add a script that
prints a line at once and then sleeps 0.5 s, and submit it ``--rounds`` times to each group,
alternating (after one warm-up job each, reported apart). Each job is polled every 50 ms: its
log through ``GET /api/v1/jobs/<id>/logs`` until the line is there, then its state until it
is final. The script's own ``time.time()`` in the line splits first-line latency into "the
script started" (submit -> the print) and "the line reached liqi's log" (the print -> seen).
Each round also runs the script as a plain Ray job (``python -c``, straight to Ray's Jobs API,
its log read from Ray): Ray's own floor for starting an entrypoint on this machine.

``--log-interval-s`` sets the Ray backend's log copy interval for the run (RayJobBackend's
``log_interval_s``), to measure how much of the first-line latency it is.

Run: .venv/bin/python benchmarks/ray_jobs.py [--rounds 5] [--log-interval-s S]
     [--out benchmarks/RESULTS.md]   (appends the run's Markdown table to that file)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.ray_head import RayHead  # noqa: E402
from tests.support.servers import LiveServer, live_server  # noqa: E402

from liqi.backends.ray_jobs import RayJobBackend  # noqa: E402
from liqi.client import Client  # noqa: E402

SCRIPT = "import time\nprint('FIRST', time.time(), flush=True)\ntime.sleep(0.5)\n"
POLL_S = 0.05
JOB_TIMEOUT_S = 120.0
GROUPS = ("local", "ray")
BARE = "bare Ray job (no liqi)"


@dataclass(frozen=True)
class Timing:
    first_line_s: float  # submit -> the line in `liqi job logs`
    succeeded_s: float  # submit -> SUCCEEDED
    started_s: float  # submit -> the script's print (its own clock)


def poll(what: str, check: Callable[[], bool]) -> None:
    """Call ``check`` every POLL_S until it returns True; at most JOB_TIMEOUT_S."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} took over {JOB_TIMEOUT_S:g} s")
        time.sleep(POLL_S)


def run_job(client: Client, uri: str, group: str) -> Timing:
    wall = time.time()
    start = time.monotonic()
    job = client.submit_job(uri, resource_group=group)
    seen: list[str] = []

    def has_line() -> bool:
        seen[:] = [client.job_log_chunk(job.id)["data"]]
        return "\n" in seen[0]

    poll(f"job {job.id}'s first line", has_line)
    first_line_s = time.monotonic() - start
    printed = float(seen[0].split()[1]) - wall
    final: list[str] = []

    def ended() -> bool:
        info = client.get_job(job.id)
        final[:] = [info.state, info.reason]
        return info.is_final

    poll(f"job {job.id} to end", ended)
    succeeded_s = time.monotonic() - start
    if final[0] != "SUCCEEDED":
        raise RuntimeError(f"job {job.id} in {group} ended {final}")
    return Timing(first_line_s, succeeded_s, printed)


def run_bare_ray_job(dashboard_url: str) -> Timing:
    """The same script as a plain Ray job (no liqi: ``python -c``), straight to Ray's Jobs
    API, its log read from Ray: the floor of starting anything as a Ray job here."""
    from ray.job_submission import JobSubmissionClient

    ray = JobSubmissionClient(dashboard_url)
    wall = time.time()
    start = time.monotonic()
    ref = ray.submit_job(entrypoint=shlex.join([sys.executable, "-c", SCRIPT]))
    seen: list[str] = []

    def has_line() -> bool:
        text = ray.get_job_logs(ref)
        seen[:] = [line for line in text.splitlines() if line.startswith("FIRST ")]
        return bool(seen)

    poll(f"Ray job {ref}'s first line", has_line)
    first_line_s = time.monotonic() - start
    printed = float(seen[0].split()[1]) - wall
    poll(f"Ray job {ref} to end", lambda: str(ray.get_job_status(ref).value) == "SUCCEEDED")
    return Timing(first_line_s, time.monotonic() - start, printed)


def ray_backend(server: LiveServer) -> RayJobBackend:
    assert server.plane is not None
    backend = server.plane.runner.backends["ray"]
    assert isinstance(backend, RayJobBackend)
    return backend


def median_max(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f} / {max(values) * 1000:.0f} ms"


def table(timings: dict[str, list[Timing]], warm_up: dict[str, Timing]) -> list[str]:
    lines = [
        "| group | submit -> first line in `liqi job logs` (median / max) | submit -> "
        "SUCCEEDED | submit -> the script's print | the print -> seen in the log | "
        "warm-up job: first line / SUCCEEDED |",
        "|---|---|---|---|---|---|",
    ]
    for group in (*GROUPS, BARE):
        runs = timings[group]
        first = warm_up[group]
        lines.append(
            f"| {group} | {median_max([t.first_line_s for t in runs])} | "
            f"{median_max([t.succeeded_s for t in runs])} | "
            f"{median_max([t.started_s for t in runs])} | "
            f"{median_max([t.first_line_s - t.started_s for t in runs])} | "
            f"{first.first_line_s * 1000:.0f} / {first.succeeded_s * 1000:.0f} ms |"
        )

    def ratio(measure: str) -> str:
        ray = statistics.median([getattr(t, measure) for t in timings["ray"]])
        local = statistics.median([getattr(t, measure) for t in timings["local"]])
        return f"{ray / local:.1f}"

    lines.append(
        f"| ray / local (medians) | {ratio('first_line_s')} | {ratio('succeeded_s')} | "
        f"{ratio('started_s')} | | |"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--log-interval-s", type=float, help="the Ray backend's log copy interval")
    parser.add_argument("--out", type=Path, help="append the run's Markdown table to this file")
    args = parser.parse_args()
    head = RayHead.create()
    head.start()
    try:
        time.sleep(5)  # let the head's processes settle before reading their memory
        idle_rss_mb, idle_uss_mb, processes = head.rss_mb(), uss_mb(head), len(head.processes())
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            script = tmp / "first.py"
            script.write_text(SCRIPT)
            groups = f"ray=ray:{head.dashboard_url}"
            with (
                live_server(tmp / "home", None, isolation="none", resource_groups=groups) as live,
                live.admin() as client,
            ):
                backend = ray_backend(live)
                if args.log_interval_s is not None:
                    backend.log_interval_s = args.log_interval_s
                uri = client.add_resource(script).uri
                load_before = os.getloadavg()[0]
                warm_up = {group: run_job(client, uri, group) for group in GROUPS}
                warm_up[BARE] = run_bare_ray_job(head.dashboard_url)
                timings: dict[str, list[Timing]] = {group: [] for group in (*GROUPS, BARE)}
                for _ in range(args.rounds):
                    for group in GROUPS:
                        timings[group].append(run_job(client, uri, group))
                    timings[BARE].append(run_bare_ray_job(head.dashboard_url))
                interval_s = backend.log_interval_s
            busy_rss_mb = head.rss_mb()
    finally:
        head.stop()
    lines = [
        f"Ray {ray_version()}, head started in {head.started_s:.1f} s; {args.rounds} rounds, "
        f"log copy interval {interval_s:g} s; head RSS summed over its {processes} processes: "
        f"{idle_rss_mb} MB idle ({idle_uss_mb} MB unique to each process, USS), "
        f"{busy_rss_mb} MB after the jobs. Load average (1 min) {load_before:.1f} before the "
        f"jobs, {os.getloadavg()[0]:.1f} after, on {os.cpu_count()} cores.",
        "",
        *table(timings, warm_up),
    ]
    print("\n".join(lines))
    if args.out:
        with open(args.out, "a", encoding="utf-8") as out:
            out.write(f"\n### Run of {date.today()}\n\n" + "\n".join(lines) + "\n")


def uss_mb(head: RayHead) -> int:
    """The head's memory without the pages its processes share (RSS counts those in each)."""
    total = 0
    for proc in head.processes():
        with contextlib.suppress(psutil.Error):
            total += proc.memory_full_info().uss
    return total // (1024 * 1024)


def ray_version() -> str:
    import ray

    return str(ray.__version__)


if __name__ == "__main__":
    main()
