"""Serving benchmark: `liqi serve` against a bare-uvicorn floor and the in-process model.

One run measures, on this machine and in this order:

1. the exported MNIST softmax SavedModel in-process: signature calls/s at batch 1 and rows/s
   at batch 32, each also with TF Serving JSON decode and encode around the call;
2. the time of `import tensorflow` in a fresh interpreter;
3. the floor (`floor.py`: uvicorn, uvloop, httptools, a fixed answer) under wrk at 1, 8 and
   64 connections with the 1-row JSON body, then at 256 with the probe (see 5) beside it;
4. `liqi serve` (one instance, default settings): start to `/readyz` 200, the answers of
   every route checked against the in-process scores, then wrk at 1, 8 and 64 connections
   for 1-row TF Serving JSON, 1-row V2 JSON, 1-row EAS protobuf, 32-row TF Serving JSON and
   32-row EAS protobuf;
5. overload: `liqi serve --max-queue-size 16` driven by wrk at 256 connections (4x the
   largest load above), statuses tallied, with a probe that sends one request at a time and
   times 503s and 200s separately; the server must still be ready afterwards.

Each server is warmed up (1 s of each body at 64 connections) before it is measured.

It prints a table and the targets (PASS/FAIL with the numbers); `--out` appends a Markdown
section to a results file. wrk is installed with apt-get when missing. Everything listens
on 127.0.0.1; every server is stopped when the run ends, however it ends.

Run: .venv/bin/python benchmarks/serving/run.py [--duration-s 15] [--quick]
                                                [--out benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
from benchmarks.serving import client, inprocess, metrics, processes, wrk  # noqa: E402
from benchmarks.serving.inprocess import Bodies  # noqa: E402
from benchmarks.serving.report import Load, Point, Probed, Run, markdown, print_report  # noqa: E402
from rich.console import Console  # noqa: E402

LOADS = (
    Load("tf1", "1-row TF Serving JSON", client.PREDICT_TF, client.JSON, 1),
    Load("v2", "1-row V2 JSON", client.INFER_V2, client.JSON, 1),
    Load("eas", "1-row EAS protobuf", client.PREDICT_EAS, client.OCTET, 1),
    Load("tf32", "32-row TF Serving JSON", client.PREDICT_TF, client.JSON, 32),
    Load("eas32", "32-row EAS protobuf", client.PREDICT_EAS, client.OCTET, 32),
)
CONNECTIONS = (1, 8, 64)
OVERLOAD_CONNECTIONS = 4 * CONNECTIONS[-1]
READY_TIMEOUT_S = 180.0


def liqi_cli() -> list[str]:
    """The venv's `liqi` script, or the module when the script is not installed."""
    script = Path(sys.executable).parent / "liqi"
    return [str(script)] if script.exists() else [sys.executable, "-m", "liqi.cli.main"]


def liqi_command(export: Path, port: int, extra: list[str]) -> list[str]:
    return [
        *liqi_cli(), "serve", f"{export}/", "--name", "mnist", "--host", "127.0.0.1",
        "--port", str(port), *extra,
    ]  # fmt: skip


def serve_available() -> tuple[bool, str]:
    """Whether `liqi serve --help` exits 0 (and what it said when it did not)."""
    command = [*liqi_cli(), "serve", "--help"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return False, f"{' '.join(command)} did not exit within 60 s"
    tail = (done.stdout + done.stderr).strip()[-300:]
    return done.returncode == 0, f"{' '.join(command)} exited {done.returncode}: {tail}"


def measure(server: processes.Server, load: Load, body: Path, connections: int,
            duration_s: float) -> Point:  # fmt: skip
    with processes.PeakRss(server) as rss:
        result = wrk.run(
            server.url + load.path,
            body,
            load.content_type,
            connections=connections,
            duration_s=duration_s,
        )
    return Point(server=server.name, load=load, result=result, rss_peak_bytes=rss.peak_bytes)


def measure_probed(server: processes.Server, body: Path, duration_s: float) -> Probed:
    """1-row JSON at OVERLOAD_CONNECTIONS with statuses tallied, plus the probe beside it."""
    load = LOADS[0]
    with (
        processes.PeakRss(server) as rss,
        client.Probe(server.port, load.path, body, load.content_type) as probe,
    ):
        url = server.url + load.path
        connections = OVERLOAD_CONNECTIONS
        result = wrk.run(url, body, load.content_type, connections=connections,
                         duration_s=duration_s, tally=True)  # fmt: skip
    try:
        status, _ = processes.get(server.port, "/readyz", timeout_s=5)
    except OSError:
        status = 0
    point = Point(server=server.name, load=load, result=result, rss_peak_bytes=rss.peak_bytes)
    return Probed(point=point, probe=probe.stats(), ready_after=server.alive() and status == 200)


def scrape_503(port: int) -> metrics.Samples | str:
    """liqi's 503 timings from its /metrics, or what went wrong asking."""
    try:
        status, body = processes.get(port, "/metrics", timeout_s=5)
    except OSError as exc:
        return f"GET /metrics failed: {exc}"
    if status != 200:
        return f"GET /metrics answered {status}"
    return metrics.samples_503(body.decode(errors="replace"))


def log_problems(server: processes.Server) -> list[str]:
    text = server.log_path.read_text(errors="replace") if server.log_path.exists() else ""
    tracebacks = text.count("Traceback (most recent call last)")
    if not tracebacks:
        return []
    return [f"{server.name}: {tracebacks} traceback(s) in its log; tail:\n{server.log_tail(40)}"]


@dataclass
class Bench:
    """What every stage of one run shares; each stage adds its numbers to `run`."""

    run: Run
    bodies: Bodies
    work: Path
    export: Path  # the folder holding version 1/
    duration_s: float
    serve_args: list[str]
    console: Console

    def body_of(self, load: Load) -> Path:
        b = self.bodies
        return {
            "tf1": b.tf_1row,
            "v2": b.v2_1row,
            "eas": b.eas_1row,
            "tf32": b.tf_32row,
            "eas32": b.eas_32row,
        }[load.key]

    def warm_up(self, server: processes.Server, loads: tuple[Load, ...]) -> None:
        for load in loads:
            url = server.url + load.path
            wrk.run(url, self.body_of(load), load.content_type, connections=64, duration_s=1)

    def floor(self) -> None:
        port = processes.free_port()
        command = [sys.executable, str(Path(__file__).parent / "floor.py"),
                   "--port", str(port), "--body-file", str(self.bodies.answer_1row)]  # fmt: skip
        log_path = self.work / "floor.log"
        with processes.running("floor", command, port=port, log_path=log_path) as server:
            self.run.floor_ready_s = server.ready_s
            load = LOADS[0]
            self.warm_up(server, (load,))
            for connections in CONNECTIONS:
                point = measure(server, load, self.body_of(load), connections, self.duration_s)
                self.run.points.append(point)
                self.console.print(_progress(point), highlight=False)
            # The reference for the overload run: the floor's answers at the same load.
            self.run.floor_overload = measure_probed(server, self.body_of(load), self.duration_s)
            self.console.print(_progress(self.run.floor_overload.point), highlight=False)

    def liqi(self) -> None:
        port = processes.free_port()
        command = liqi_command(self.export, port, self.serve_args)
        shown = liqi_command(Path("<export>"), 0, self.serve_args)
        self.run.liqi_command = " ".join(["liqi", *shown[shown.index("serve") :]])
        self.run.liqi_command = self.run.liqi_command.replace("--port 0", "--port <free port>")
        log_path = self.work / "liqi.log"
        try:
            with processes.running(
                "liqi", command, port=port, log_path=log_path, ready_timeout_s=READY_TIMEOUT_S
            ) as server:
                self.run.liqi_ready_s = server.ready_s
                self.console.print(f"  ready in {server.ready_s:.2f} s", highlight=False)
                problems = client.check_answers(port, self.bodies)
                self.run.problems += [f"liqi serve: {p}" for p in problems]
                self.warm_up(server, LOADS)
                self._liqi_points(server)
                self.run.problems += log_problems(server)
        except processes.ServerFailedError as exc:
            self.run.problems.append(f"liqi serve: {exc}")

    def _liqi_points(self, server: processes.Server) -> None:
        for load in LOADS:
            for connections in CONNECTIONS:
                point = measure(server, load, self.body_of(load), connections, self.duration_s)
                self.run.points.append(point)
                self.console.print(_progress(point), highlight=False)
                if not server.alive():
                    self.run.problems.append(
                        f"liqi serve exited with {server.process.returncode} during "
                        f"{load.label} at {connections} connections; log tail:\n"
                        f"{server.log_tail(40)}"
                    )
                    return

    def overload(self, max_queue_size: int) -> None:
        port = processes.free_port()
        extra = [*self.serve_args, "--max-queue-size", str(max_queue_size)]
        command = liqi_command(self.export, port, extra)
        log_path = self.work / "liqi-overload.log"
        try:
            with processes.running(
                "liqi", command, port=port, log_path=log_path, ready_timeout_s=READY_TIMEOUT_S
            ) as server:
                self.warm_up(server, LOADS[:1])
                before = scrape_503(port)
                probed = measure_probed(server, self.bodies.tf_1row, self.duration_s)
                self.run.overload = probed
                after = scrape_503(port)
                self.run.overload_server_503 = (
                    metrics.describe_503(before, after)
                    if isinstance(before, dict) and isinstance(after, dict)
                    else str(after if isinstance(before, dict) else before)
                )
                self.run.overload_queue_size = max_queue_size
                self.console.print(_progress(probed.point), highlight=False)
                if probed.probe.first_other:
                    self.run.problems.append(
                        f"liqi serve (overload): unexpected answer {probed.probe.first_other}"
                    )
                self.run.problems += [f"{p} (overload run)" for p in log_problems(server)]
        except processes.ServerFailedError as exc:
            self.run.problems.append(f"liqi serve (overload): {exc}")


def _progress(point: Point) -> str:
    r = point.result
    return (
        f"  {point.server} {point.load.label} c={r.connections}: {r.req_per_s:,.0f} req/s, "
        f"p99 {r.p99_ms:.1f} ms, non-2xx {r.errors_status}, socket errors {r.socket_errors}"
    )


def machine() -> dict[str, str]:
    def version(name: str) -> str:
        for dist in (name, f"{name}-cpu"):
            try:
                return importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                continue
        return "not installed"

    return {
        "cores": str(os.cpu_count()),
        "idle_cpu": f"{100 - psutil.cpu_percent(interval=1.0):.0f}%",
        "python": platform.python_version(),
        "tensorflow": version("tensorflow"),
        "uvicorn": version("uvicorn"),
        "wrk": wrk.version(),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark `liqi serve` against a bare uvicorn floor and the in-process "
        "model, with wrk on loopback.",
    )
    parser.add_argument(
        "--duration-s", type=float, default=15.0, help="Seconds of load per point (default 15)."
    )
    parser.add_argument(
        "--quick", action="store_true", help="Smoke run: 2 s per point, 1 s in-process loops."
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="Append a Markdown section to this file (e.g. "
        "benchmarks/RESULTS.md) when the run completes.",
    )
    parser.add_argument(
        "--floor-only", action="store_true", help="Measure the in-process model and the floor only."
    )
    parser.add_argument(
        "--max-queue-size",
        type=int,
        default=16,
        help="liqi serve's --max-queue-size in the overload run (default 16).",
    )
    parser.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="An extra argument for every `liqi serve` (repeatable), e.g. "
        "--serve-arg=--max-batch-size=32.",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        help="Keep the export, bodies and server logs here (default: a "
        "temporary folder, removed afterwards).",
    )
    args = parser.parse_args()
    if args.out and (args.quick or args.floor_only):
        parser.error("--out records full runs only; drop --quick/--floor-only.")
    if args.quick:
        args.duration_s = 2.0
    return args


def main() -> int:
    args = parse_args()
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # a log file: no wrapping of the table
    wrk.ensure_installed()
    if not args.floor_only:
        available, said = serve_available()
        if not available:
            console.print(f"liqi serve is not available: {said}", highlight=False, markup=False)
            return 2
    run = Run(date=date.today().isoformat(), machine=machine(), duration_s=args.duration_s)
    console.print(f"CPU idle before the run: {run.machine['idle_cpu']}", highlight=False)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="liqi-serving-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        console.print(f"exporting the MNIST model into {work / 'export'}", highlight=False)
        export_version = inprocess.export_model(work / "export")
        # Quiet TensorFlow's logging in this process only (it reads the variable on import).
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
        saved = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
        try:
            servable = inprocess.load(export_version)
        finally:
            _restore_env("TF_CPP_MIN_LOG_LEVEL", saved)
        bodies = inprocess.write_bodies(servable, work)
        run.ceiling = inprocess.measure_ceiling(servable, bodies, 1.0 if args.quick else 3.0)
        del servable
        run.import_tf_s = inprocess.import_tensorflow_s()
        bench = Bench(run, bodies, work, export_version.parent, args.duration_s,
                      args.serve_arg, console)  # fmt: skip
        console.print("floor", highlight=False)
        bench.floor()
        if not args.floor_only:
            console.print("liqi serve", highlight=False)
            bench.liqi()
            console.print(f"liqi serve --max-queue-size {args.max_queue_size}, overload")
            bench.overload(args.max_queue_size)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    run.machine["idle_cpu_after"] = f"{100 - psutil.cpu_percent(interval=1.0):.0f}%"
    print_report(run, console)
    if args.out:
        with args.out.open("a") as out:
            out.write("\n" + markdown(run))
        console.print(f"appended the results to {args.out}", highlight=False)
    return 0


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


if __name__ == "__main__":
    sys.exit(main())
