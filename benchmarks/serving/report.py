"""What one run measured, the targets it is judged by, and how it is printed and recorded.

Every target is a ratio or a bound between numbers measured in the same run, so that a
slower or busier machine moves both sides together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from benchmarks.serving.client import ProbeStats
from benchmarks.serving.inprocess import Ceiling
from benchmarks.serving.wrk import WrkResult
from rich.console import Console
from rich.table import Table

MIB = 1024 * 1024


@dataclass(frozen=True)
class Load:
    key: str
    label: str
    path: str
    content_type: str
    rows: int


@dataclass(frozen=True)
class Point:
    server: str  # "floor" or "liqi"
    load: Load
    result: WrkResult
    rss_peak_bytes: int

    @property
    def rows_per_s(self) -> float:
        """Rows answered with 2xx per second."""
        ok = self.result.requests - self.result.errors_status
        return ok * self.load.rows / self.result.duration_s if self.result.duration_s else 0.0


@dataclass(frozen=True)
class Probed:
    """A wrk run with statuses tallied and the probe's timings beside it."""

    point: Point
    probe: ProbeStats
    ready_after: bool  # alive and GET /readyz 200 right after the run


@dataclass
class Run:
    date: str
    machine: dict[str, str]
    duration_s: float
    ceiling: Ceiling | None = None
    import_tf_s: float | None = None
    floor_ready_s: float | None = None
    liqi_ready_s: float | None = None
    liqi_command: str = ""
    points: list[Point] = field(default_factory=list)
    floor_overload: Probed | None = None
    overload: Probed | None = None
    overload_queue_size: int = 0
    overload_server_503: str = ""  # what liqi's /metrics says about its 503s
    problems: list[str] = field(default_factory=list)

    def point(self, server: str, load_key: str, connections: int) -> Point | None:
        for p in self.points:
            if (p.server, p.load.key, p.result.connections) == (server, load_key, connections):
                return p
        return None

    def floor_ratio(self, point: Point) -> float | None:
        floor = self.point("floor", "tf1", point.result.connections)
        if floor is None or point.server == "floor" or not floor.result.req_per_s:
            return None
        return point.result.req_per_s / floor.result.req_per_s


@dataclass(frozen=True)
class Target:
    name: str
    passed: bool | None  # None: not measured in this run
    detail: str

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "FAIL", None: "NOT RUN"}[self.passed]


def targets(run: Run) -> list[Target]:
    return [
        _throughput_target(run),
        _single_connection_target(run),
        _batch_target(run),
        _overload_target(run),
        _startup_target(run),
    ]


def _throughput_target(run: Run) -> Target:
    name = "1-row JSON at 64 connections: >= 0.12 of the floor, p99 <= 20 ms, no errors"
    liqi, floor = run.point("liqi", "tf1", 64), run.point("floor", "tf1", 64)
    if liqi is None or floor is None:
        return Target(name, None, "not measured")
    ratio = liqi.result.req_per_s / floor.result.req_per_s
    errors = liqi.result.errors
    passed = ratio >= 0.12 and liqi.result.p99_ms <= 20 and errors == 0
    detail = (
        f"{liqi.result.req_per_s:,.0f} / {floor.result.req_per_s:,.0f} req/s = {ratio:.3f}; "
        f"p99 {liqi.result.p99_ms:.1f} ms; errors {errors} "
        f"(non-2xx {liqi.result.errors_status}, socket {liqi.result.socket_errors})"
    )
    return Target(name, passed, detail)


def _single_connection_target(run: Run) -> Target:
    name = "1-row JSON at 1 connection: >= 0.5 of in-process batch-1 calls/s incl. JSON"
    liqi = run.point("liqi", "tf1", 1)
    if liqi is None or run.ceiling is None:
        return Target(name, None, "not measured")
    ceiling = run.ceiling.batch1_json_calls_per_s
    ratio = liqi.result.req_per_s / ceiling
    detail = f"{liqi.result.req_per_s:,.0f} / {ceiling:,.0f} calls/s = {ratio:.2f}"
    return Target(name, ratio >= 0.5 and liqi.result.errors == 0, detail)


def _batch_target(run: Run) -> Target:
    name = (
        "32-row requests: rows/s >= 0.5 of in-process batch-32 rows/s (best protocol and "
        "connection count; JSON's own figure is in the table)"
    )
    points = [p for p in run.points if p.server == "liqi" and p.load.rows == 32]
    if not points or run.ceiling is None:
        return Target(name, None, "not measured")
    best = max(points, key=lambda p: p.rows_per_s)
    ceiling = run.ceiling.batch32_rows_per_s
    ratio = best.rows_per_s / ceiling
    detail = (
        f"{best.rows_per_s:,.0f} rows/s ({best.load.label}) at {best.result.connections} "
        "connections / "
        f"{ceiling:,.0f} = {ratio:.2f}"
    )
    return Target(name, ratio >= 0.5 and best.result.errors == 0, detail)


def _overload_target(run: Run) -> Target:
    name = "overload: 503s within 10 ms (probe p99), no socket errors, ready afterwards"
    over = run.overload
    if over is None:
        return Target(name, None, "not measured")
    r, probe = over.point.result, over.probe
    share = r.statuses.get("503", 0) / r.requests if r.requests else 0.0
    unloaded = run.point("liqi", "tf1", 1)
    unloaded_text = f"{unloaded.result.p99_ms:.1f} ms at 1 connection" if unloaded else "n/a"
    floor = run.floor_overload
    floor_text = (
        f"; the floor at {floor.point.result.connections} connections: probe p50 "
        f"{_ms(floor.probe.ok_p50_ms)} p99 {_ms(floor.probe.ok_p99_ms)} ms, "
        f"{floor.point.result.req_per_s:,.0f} req/s"
        if floor
        else ""
    )
    fast_503 = probe.rejected > 0 and probe.rejected_p99_ms <= 10
    passed = fast_503 and r.socket_errors == 0 and over.ready_after and not probe.other
    detail = (
        f"{r.connections} connections, --max-queue-size {run.overload_queue_size}: "
        f"{r.req_per_s:,.0f} answers/s, 503 share {share:.1%}, other non-2xx "
        f"{r.statuses.get('other', 0)}, socket errors {r.socket_errors}; probe: 503 p50 "
        f"{_ms(probe.rejected_p50_ms)} p99 {_ms(probe.rejected_p99_ms)} ms "
        f"({probe.rejected} answers), accepted p50 {_ms(probe.ok_p50_ms)} p99 "
        f"{_ms(probe.ok_p99_ms)} ms ({probe.ok} answers) vs unloaded p99 {unloaded_text}"
        f"{floor_text}; ready afterwards: {'yes' if over.ready_after else 'NO'}"
    )
    if run.overload_server_503:
        detail += f"; server side (its /metrics): {run.overload_server_503}"
    return Target(name, passed, detail)


def _startup_target(run: Run) -> Target:
    name = "start to ready <= import tensorflow + 1 s"
    if run.liqi_ready_s is None or run.import_tf_s is None:
        return Target(name, None, "not measured")
    bound = run.import_tf_s + 1
    detail = f"{run.liqi_ready_s:.2f} s vs {run.import_tf_s:.2f} s + 1 s = {bound:.2f} s"
    return Target(name, run.liqi_ready_s <= bound, detail)


def _socket_errors(r: WrkResult) -> str:
    if not r.socket_errors:
        return "0"
    kinds = {"connect": r.errors_connect, "read": r.errors_read, "write": r.errors_write,
             "timeout": r.errors_timeout}  # fmt: skip
    return f"{r.socket_errors} ({', '.join(f'{k} {n}' for k, n in kinds.items() if n)})"


def _ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1f}"


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _rows(run: Run) -> list[list[str]]:
    rows = []
    labelled = [(p, p.server) for p in run.points]
    if run.floor_overload:
        labelled.append((run.floor_overload.point, "floor"))
    if run.overload:
        labelled.append((run.overload.point, f"liqi, queue {run.overload_queue_size}"))
    for p, server in labelled:
        r = p.result
        rows.append(
            [
                server,
                p.load.label,
                str(r.connections),
                f"{r.req_per_s:,.0f}",
                f"{p.rows_per_s:,.0f}",
                _ratio(run.floor_ratio(p)),
                f"{r.p50_ms:.2f}",
                f"{r.p99_ms:.2f}",
                str(r.errors_status),
                _socket_errors(r),
                f"{p.rss_peak_bytes / MIB:.0f}",
            ]
        )
    return rows


HEADERS = [
    "server", "load", "conns", "req/s", "rows/s", "÷ floor", "p50 ms", "p99 ms",
    "non-2xx", "socket err", "peak RSS MiB",
]  # fmt: skip


def print_report(run: Run, console: Console) -> None:
    table = Table(title=f"Serving benchmark, {run.duration_s:g} s per point")
    for header in HEADERS:
        table.add_column(header, justify="left" if header in ("server", "load") else "right")
    for row in _rows(run):
        table.add_row(*row)
    console.print(table)
    for line in _context_lines(run):
        console.print(line, highlight=False)
    for target in targets(run):
        style = {True: "green", False: "red", None: "yellow"}[target.passed]
        console.print(f"[{style}]{target.verdict}[/] {target.name}: {target.detail}")
    for problem in run.problems:
        console.print(f"[red]problem[/] {problem}", highlight=False, markup=False)


def _context_lines(run: Run) -> list[str]:
    lines = []
    if run.ceiling is not None:
        c = run.ceiling
        lines.append(
            f"In-process: batch 1 {c.batch1_calls_per_s:,.0f} calls/s, batch 1 with JSON "
            f"decode+encode {c.batch1_json_calls_per_s:,.0f} calls/s, batch 32 "
            f"{c.batch32_rows_per_s:,.0f} rows/s ({c.batch32_json_rows_per_s:,.0f} rows/s "
            "with JSON)."
        )
    if run.import_tf_s is not None:
        lines.append(f"`import tensorflow` in a fresh interpreter: {run.import_tf_s:.2f} s.")
    if run.floor_ready_s is not None:
        lines.append(f"Floor start to ready: {run.floor_ready_s:.2f} s.")
    if run.liqi_ready_s is not None:
        lines.append(f"`liqi serve` start to ready: {run.liqi_ready_s:.2f} s ({run.liqi_command}).")
    return lines


def markdown(run: Run) -> str:
    m = run.machine
    out = [
        f"## Model server (`benchmarks/serving/run.py`), {run.date}",
        "",
        f"Machine: {m['cores']} cores, Python {m['python']}, TensorFlow {m['tensorflow']}, "
        f"{m['wrk']}, uvicorn {m['uvicorn']}; CPU idle {m['idle_cpu']} before the run and "
        f"{m.get('idle_cpu_after', '?')} after it. One run, {run.duration_s:g} s per point; wrk "
        "and the server share the machine. The floor is a bare ASGI app on uvicorn (uvloop, "
        "httptools, one worker) answering a fixed body of the size of liqi's 1-row answer "
        "(`benchmarks/serving/floor.py`); `÷ floor` divides by the floor at the same number of "
        "connections. The model is the exported `mnist_softmax.py` SavedModel; bodies are "
        "real test images.",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "---|" * len(HEADERS),
    ]
    out += ["| " + " | ".join(row) + " |" for row in _rows(run)]
    out.append("")
    out += _context_lines(run)
    out.append("")
    out.append("| target | result | numbers |")
    out.append("|---|---|---|")
    out += [f"| {t.name} | {t.verdict} | {t.detail} |" for t in targets(run)]
    if run.problems:
        out += ["", "Problems seen in this run:", ""]
        out += [f"- {problem.splitlines()[0]}" for problem in run.problems]
    out.append("")
    return "\n".join(out)
