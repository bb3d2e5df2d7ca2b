"""Gateway benchmark: `liqi serve` directly against the same instance through the gateway.

One run measures, on this machine:

1. the exported MNIST softmax SavedModel (the real TF1 example) served by one `liqi serve`
   instance, and the gateway in its own process (`gateway_server.py`: the control plane's
   uvicorn settings around `with_gateway`) routing the service `mnist` to it; the gateway's
   answer must equal the instance's, byte for byte;
2. 1-row TF Serving JSON under wrk at 1 and 64 connections, directly
   (`/v1/models/mnist:predict`) and through the gateway
   (`/api/predict/mnist/v1/models/mnist:predict`), alternating in rounds so that drift on a
   shared machine hits both sides; each point is the median of the rounds;
3. a second instance, and a gateway routing to both, against the one-instance gateway at 64
   connections (scaling; on 2 cores the instances share the CPU with wrk and the gateway).

Targets: through the gateway at 64 connections >= 0.60 of direct req/s; added p50 (gateway
minus direct) <= 1 ms at 1 and at 64 connections. Also reported: the gateway process's CPU
time per request. wrk is installed with apt-get when missing; every process is stopped when
the run ends. `--out` appends a Markdown section to a results file.

`--clients httpx aiohttp` measures instead the gateway's hand-written upstream client against
library ones: one more gateway process per library client (`gateway_server.py --client`,
`library_pools.py`), each measured in the same rounds as the hand-written one at 1 and 64
connections (no scaling part). The rule: the hand-written client stays only if it clearly
wins, >= 1.3x the req/s or <= 0.7x the gateway CPU per request of the library client at
the same load.

Run: .venv/bin/python benchmarks/gateway/run.py [--duration-s 10] [--rounds 3] [--quick]
                                                [--clients httpx aiohttp]
                                                [--out benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import statistics
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import psutil  # noqa: E402
from benchmarks.gateway.library_pools import POOLS  # noqa: E402
from benchmarks.serving import client, inprocess, processes, wrk  # noqa: E402
from benchmarks.serving.run import READY_TIMEOUT_S, liqi_command  # noqa: E402

from liqi.datasets.mnist_reader import builtin_dir, read_data_sets  # noqa: E402
from liqi.protocols import tfserving  # noqa: E402

DIRECT_PATH = client.PREDICT_TF
GATEWAY_PATH = "/api/predict/mnist" + client.PREDICT_TF
CONNECTIONS = (1, 64)
RATIO_TARGET = 0.60
ADDED_P50_TARGET_MS = 1.0
GATEWAY_SCRIPT = Path(__file__).resolve().parent / "gateway_server.py"
ONE = "gateway, 1 instance (scaling)"  # measured beside TWO, while the second instance runs
TWO = "gateway, 2 instances"
ROWS = [("direct", 1), ("gateway", 1), ("direct", 64), ("gateway", 64), (ONE, 64), (TWO, 64)]
KEEP_RATE_RATIO = 1.3  # the hand-written client stays at >= this x a library client's req/s
KEEP_CPU_RATIO = 0.7  # ... or at <= this x its gateway CPU per request


def client_row(library: str) -> str:
    return f"gateway, {library} client"


@dataclass(frozen=True)
class Point:
    via: str  # "direct", "gateway", "gateway, 2 instances"
    connections: int
    req_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    gateway_cpu_us: float | None  # the gateway process's CPU time per request


@dataclass
class Run:
    date: str
    machine: dict[str, str]
    duration_s: float
    rounds: int
    clients: tuple[str, ...] = ()  # library upstream clients measured beside the gateway's
    rounds_seen: dict[tuple[str, int], list[Point]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def rows(self) -> list[tuple[str, int]]:
        if not self.clients:
            return ROWS
        return [
            (via, connections)
            for connections in CONNECTIONS
            for via in ("direct", "gateway", *map(client_row, self.clients))
        ]

    def add(self, point: Point) -> None:
        self.rounds_seen.setdefault((point.via, point.connections), []).append(point)

    def point(self, via: str, connections: int) -> Point | None:
        """The median of the rounds (by req/s; p50 is the median p50)."""
        seen = self.rounds_seen.get((via, connections))
        if not seen:
            return None
        by_rate = sorted(seen, key=lambda p: p.req_per_s)
        middle = by_rate[len(by_rate) // 2]
        cpu = [p.gateway_cpu_us for p in seen if p.gateway_cpu_us is not None]
        return Point(
            via=via,
            connections=connections,
            req_per_s=statistics.median(p.req_per_s for p in seen),
            p50_ms=statistics.median(p.p50_ms for p in seen),
            p99_ms=middle.p99_ms,
            errors=sum(p.errors for p in seen),
            gateway_cpu_us=statistics.median(cpu) if cpu else None,
        )


def measure(
    url: str, body: Path, connections: int, duration_s: float, via: str, gateway_pid: int | None
) -> Point:
    gateway = psutil.Process(gateway_pid) if gateway_pid else None
    cpu_before = sum(gateway.cpu_times()[:2]) if gateway else 0.0
    result = wrk.run(url, body, client.JSON, connections=connections, duration_s=duration_s)
    cpu_us = None
    if gateway is not None and result.requests:
        cpu_us = (sum(gateway.cpu_times()[:2]) - cpu_before) / result.requests * 1e6
    print(
        f"  {via} c={connections}: {result.req_per_s:,.0f} req/s, p50 {result.p50_ms:.2f} ms, "
        f"p99 {result.p99_ms:.2f} ms, errors {result.errors}"
        + (f", gateway CPU {cpu_us:.0f} µs/request" if cpu_us is not None else ""),
        flush=True,
    )
    return Point(
        via, connections, result.req_per_s, result.p50_ms, result.p99_ms, result.errors, cpu_us
    )


@contextlib.contextmanager
def instance(export: Path, work: Path, name: str) -> Iterator[processes.Server]:
    port = processes.free_port()
    command = liqi_command(export, port, [])
    log_path = work / f"{name}.log"
    with processes.running(
        name, command, port=port, log_path=log_path, ready_timeout_s=READY_TIMEOUT_S
    ) as server:
        yield server


@contextlib.contextmanager
def gateway(
    upstreams: list[processes.Server], work: Path, name: str, upstream_client: str = "hand-written"
) -> Iterator[processes.Server]:
    port = processes.free_port()
    command = [sys.executable, str(GATEWAY_SCRIPT), "--port", str(port), "--service", "mnist"]
    command += ["--client", upstream_client]
    for server in upstreams:
        command += ["--upstream", f"{server.name}={server.url}"]
    log_path = work / f"{name}.log"
    with processes.running(
        name, command, port=port, log_path=log_path, ready_path="/healthz", cwd=ROOT
    ) as server:
        yield server


def check_same_answer(direct: processes.Server, through: processes.Server, body: bytes) -> str:
    """'' when the gateway answers exactly as the instance does, else what differs."""
    d_status, _, d_body = client.post(direct.port, DIRECT_PATH, body, client.JSON)
    g_status, _, g_body = client.post(through.port, GATEWAY_PATH, body, client.JSON)
    if (d_status, d_body) != (g_status, g_body) or d_status != 200:
        return f"direct {d_status} {d_body[:200]!r} vs gateway {g_status} {g_body[:200]!r}"
    return ""


def warm_up(url: str, body: Path) -> None:
    wrk.run(url, body, client.JSON, connections=64, duration_s=1)


def bench(run: Run, export: Path, body: Path, work: Path) -> None:
    with (
        instance(export, work, "i-1") as one,
        gateway([one], work, "gateway") as gw,
        contextlib.ExitStack() as stack,
    ):
        gateways = [("gateway", gw)] + [
            (client_row(c), stack.enter_context(gateway([one], work, f"gateway-{c}", c)))
            for c in run.clients
        ]
        for _, through in gateways:
            problem = check_same_answer(one, through, body.read_bytes())
            if problem:
                run.problems.append(
                    f"{through.name}'s answer differs from the instance's: {problem}"
                )
        warm_up(one.url + DIRECT_PATH, body)
        for _, through in gateways:
            warm_up(through.url + GATEWAY_PATH, body)
        for round_no in range(1, run.rounds + 1):
            print(f"round {round_no}/{run.rounds}", flush=True)
            for connections in CONNECTIONS:
                run.add(
                    measure(
                        one.url + DIRECT_PATH, body, connections, run.duration_s, "direct", None
                    )
                )
                for via, through in gateways:
                    url = through.url + GATEWAY_PATH
                    pid = through.process.pid
                    run.add(measure(url, body, connections, run.duration_s, via, pid))
        if not run.clients:  # the client comparison has no scaling part
            scaling(run, export, body, work, one, gw)
        for server in (one, *(through for _, through in gateways)):
            check_server(run, server)


def scaling(
    run: Run, export: Path, body: Path, work: Path, one: processes.Server, gw: processes.Server
) -> None:
    print("scaling: a second instance", flush=True)
    with instance(export, work, "i-2") as two, gateway([one, two], work, "gateway-2") as gw2:
        warm_up(gw2.url + GATEWAY_PATH, body)
        for _ in range(run.rounds):
            run.add(measure(gw.url + GATEWAY_PATH, body, 64, run.duration_s, ONE, gw.process.pid))
            run.add(measure(gw2.url + GATEWAY_PATH, body, 64, run.duration_s, TWO, gw2.process.pid))


def check_server(run: Run, server: processes.Server) -> None:
    if not server.alive():
        run.problems.append(f"{server.name} exited with {server.process.returncode}")
    text = server.log_path.read_text(errors="replace")
    if "Traceback" in text:
        run.problems.append(f"{server.name}: traceback in its log:\n{server.log_tail(30)}")


# -- report -------------------------------------------------------------------------------------


def targets(run: Run) -> list[tuple[str, bool | None, str]]:
    found = []
    direct, through = run.point("direct", 64), run.point("gateway", 64)
    name = f"through the gateway at 64 connections >= {RATIO_TARGET:.2f} of direct req/s"
    if direct and through:
        ratio = through.req_per_s / direct.req_per_s
        detail = f"{through.req_per_s:,.0f} / {direct.req_per_s:,.0f} req/s = {ratio:.2f}"
        errors = through.errors + direct.errors
        found.append((name, ratio >= RATIO_TARGET and errors == 0, f"{detail}; errors {errors}"))
    else:
        found.append((name, None, "not measured"))
    for connections in CONNECTIONS:
        name = f"added p50 at {connections} connection(s) <= {ADDED_P50_TARGET_MS:g} ms"
        direct, through = run.point("direct", connections), run.point("gateway", connections)
        if direct and through:
            added = through.p50_ms - direct.p50_ms
            detail = f"{through.p50_ms:.2f} - {direct.p50_ms:.2f} ms = {added:+.2f} ms"
            found.append((name, added <= ADDED_P50_TARGET_MS, detail))
        else:
            found.append((name, None, "not measured"))
    return found


def table_rows(run: Run) -> list[list[str]]:
    rows = []
    for via, connections in run.rows:
        point = run.point(via, connections)
        if point is None:
            continue
        direct = run.point("direct", connections)
        ratio = f"{point.req_per_s / direct.req_per_s:.2f}" if direct and via != "direct" else ""
        cpu = f"{point.gateway_cpu_us:.0f}" if point.gateway_cpu_us is not None else ""
        rows.append(
            [
                via,
                str(connections),
                f"{point.req_per_s:,.0f}",
                ratio,
                f"{point.p50_ms:.2f}",
                f"{point.p99_ms:.2f}",
                str(point.errors),
                cpu,
                str(len(run.rounds_seen[(via, connections)])),
            ]
        )
    return rows


HEADER = [
    "path",
    "conns",
    "req/s",
    "÷ direct",
    "p50 ms",
    "p99 ms",
    "errors",
    "gateway CPU µs/req",
    "rounds",
]


def scaling_line(run: Run) -> str:
    one, two = run.point(ONE, 64), run.point(TWO, 64)
    if not (one and two):
        return "Scaling: not measured."
    return (
        f"Scaling at 64 connections through the gateway: 2 instances {two.req_per_s:,.0f} req/s "
        f"vs 1 instance {one.req_per_s:,.0f} req/s = {two.req_per_s / one.req_per_s:.2f}x "
        f"(p50 {two.p50_ms:.2f} vs {one.p50_ms:.2f} ms)."
    )


def saturation_line(run: Run) -> str:
    """What +1 ms of p50 at 64 connections asks for when the machine is saturated."""
    direct = run.point("direct", 64)
    if direct is None or not direct.req_per_s:
        return ""
    needed = 64 / (64 / direct.req_per_s + ADDED_P50_TARGET_MS / 1000)
    return (
        f"At 64 connections the 2 cores are saturated and p50 follows throughput (64 / req/s): "
        f"+{ADDED_P50_TARGET_MS:g} ms of p50 there means >= {needed:,.0f} req/s through the "
        f"gateway, {needed / direct.req_per_s:.2f} of direct."
    )


COMPARISON_HEADER = [
    "library client",
    "conns",
    "req/s hand-written / library",
    "CPU µs/req hand-written / library",
    "hand-written clearly wins",
]


def client_comparison(run: Run) -> list[list[str]]:
    """Per library client and load: the hand-written client's req/s and gateway CPU per
    request against the library's, and whether it clearly wins there (the rule)."""
    rows = []
    for name in run.clients:
        for connections in CONNECTIONS:
            own = run.point("gateway", connections)
            lib = run.point(client_row(name), connections)
            if not (own and lib and own.gateway_cpu_us and lib.gateway_cpu_us):
                continue
            rate = own.req_per_s / lib.req_per_s
            cpu = own.gateway_cpu_us / lib.gateway_cpu_us
            wins = rate >= KEEP_RATE_RATIO or cpu <= KEEP_CPU_RATIO
            rows.append(
                [
                    name,
                    str(connections),
                    f"{own.req_per_s:,.0f} / {lib.req_per_s:,.0f} = {rate:.2f}",
                    f"{own.gateway_cpu_us:.0f} / {lib.gateway_cpu_us:.0f} = {cpu:.2f}",
                    "yes" if wins else "no",
                ]
            )
    return rows


def client_verdict(run: Run) -> str:
    """The rule, per library client: keep the hand-written client only if it clearly wins
    at every load measured."""
    rows = client_comparison(run)
    lines = []
    for name in run.clients:
        mine = [row for row in rows if row[0] == name]
        if len(mine) < len(CONNECTIONS):
            lines.append(f"against {name}: not measured at every load.")
        elif all(row[-1] == "yes" for row in mine):
            lines.append(
                f"against {name}: the hand-written client clearly wins at 1 and 64 "
                f"connections (>= {KEEP_RATE_RATIO:g}x req/s or <= {KEEP_CPU_RATIO:g}x CPU "
                "per request): keep it."
            )
        else:
            lost = ", ".join(f"c={row[1]}" for row in mine if row[-1] == "no")
            lines.append(
                f"against {name}: the hand-written client does not clearly win at {lost}: "
                "the rule says replace it."
            )
    return " ".join(lines)


def markdown(run: Run) -> str:
    m = run.machine
    title = (
        f"## Gateway upstream client (`benchmarks/gateway/run.py --clients "
        f"{' '.join(run.clients)}`), {run.date}"
        if run.clients
        else f"## Gateway (`benchmarks/gateway/run.py`), {run.date}"
    )
    setup = (
        "the gateway with its hand-written upstream client and, each in a process of its "
        "own, the same gateway with a library client (`gateway_server.py --client`, "
        "`library_pools.py`) measured in the same rounds"
        if run.clients
        else "the gateway in its own process"
    )
    lines = [
        title,
        "",
        f"Machine: {m['cores']} cores, Python {m['python']}, {m['wrk']}; CPU idle "
        f"{m['idle_cpu']} before the run and {m.get('idle_cpu_after', '?')} after it. "
        f"{run.rounds} round(s) of {run.duration_s:g} s per point, direct and gateway "
        "alternating; each row is the median of its rounds. One `liqi serve` instance of the "
        f"exported MNIST SavedModel (default settings), {setup} "
        "(`gateway_server.py`: uvicorn with uvloop and httptools around `with_gateway`), wrk, "
        "all on the same machine. Body: 1-row TF Serving JSON; direct "
        f"`{DIRECT_PATH}`, through the gateway `{GATEWAY_PATH}`. Gateway CPU: the gateway "
        "process's user + system CPU time over the point, divided by its requests.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
        *("| " + " | ".join(row) + " |" for row in table_rows(run)),
        "",
    ]
    if run.clients:
        lines += [
            "| " + " | ".join(COMPARISON_HEADER) + " |",
            "|" + "---|" * len(COMPARISON_HEADER),
            *("| " + " | ".join(row) + " |" for row in client_comparison(run)),
            "",
            f"Rule: {client_verdict(run)}",
        ]
    else:
        lines += [scaling_line(run), saturation_line(run)]
    lines += [
        "",
        "| target | result | numbers |",
        "|---|---|---|",
        *(f"| {name} | {_verdict(ok)} | {detail} |" for name, ok, detail in targets(run)),
    ]
    if run.problems:
        lines += ["", "Problems:", *(f"- {p}" for p in run.problems)]
    return "\n".join(lines) + "\n"


def _verdict(ok: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "NOT RUN"}[ok]


def print_report(run: Run) -> None:
    widths = [
        max(len(HEADER[i]), *(len(r[i]) for r in table_rows(run))) for i in range(len(HEADER))
    ]
    print()
    print("  ".join(h.ljust(w) for h, w in zip(HEADER, widths, strict=True)))
    for row in table_rows(run):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    print()
    if run.clients:
        for row in client_comparison(run):
            print("  ".join(f"{h}: {c}" for h, c in zip(COMPARISON_HEADER, row, strict=True)))
        print(f"Rule: {client_verdict(run)}")
    else:
        print(scaling_line(run))
        print(saturation_line(run))
    for name, ok, detail in targets(run):
        print(f"{_verdict(ok)}  {name}: {detail}")
    for problem in run.problems:
        print(f"PROBLEM: {problem}")


# -- main -----------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark the gateway: `liqi serve` directly vs through the gateway, "
        "with wrk on loopback."
    )
    parser.add_argument(
        "--duration-s", type=float, default=10.0, help="Seconds of load per point (default 10)."
    )
    parser.add_argument("--rounds", type=int, default=3, help="Rounds per point (default 3).")
    parser.add_argument("--quick", action="store_true", help="Smoke run: 2 s per point, one round.")
    parser.add_argument(
        "--out", type=Path, help="Append a Markdown section to this file (full runs only)."
    )
    parser.add_argument(
        "--clients",
        nargs="+",
        choices=sorted(POOLS),
        default=[],
        help="Measure these library upstream clients beside the hand-written one "
        "(instead of the scaling part).",
    )
    parser.add_argument(
        "--work-dir", type=Path, help="Keep the export, body and logs here (default: a temp dir)."
    )
    args = parser.parse_args()
    if args.out and args.quick:
        parser.error("--out records full runs only; drop --quick.")
    if args.quick:
        args.duration_s, args.rounds = 2.0, 1
    return args


def main() -> int:
    args = parse_args()
    wrk.ensure_installed()
    run = Run(
        date=date.today().isoformat(),
        machine={
            "cores": str(os.cpu_count()),
            "idle_cpu": f"{100 - psutil.cpu_percent(interval=1.0):.0f}%",
            "python": platform.python_version(),
            "wrk": wrk.version(),
        },
        duration_s=args.duration_s,
        rounds=args.rounds,
        clients=tuple(args.clients),
    )
    print(f"CPU idle before the run: {run.machine['idle_cpu']}", flush=True)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="liqi-gateway-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        print(f"exporting the MNIST model into {work / 'export'}", flush=True)
        version_dir = inprocess.export_model(work / "export")
        image = read_data_sets(builtin_dir()).test.images[:1].astype(np.float32)
        body = work / "tf_1row.json"
        body.write_bytes(tfserving.encode_predict_request({"images": image}, columnar=False))
        bench(run, version_dir.parent, body, work)
    except processes.ServerFailedError as exc:
        run.problems.append(str(exc))
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    run.machine["idle_cpu_after"] = f"{100 - psutil.cpu_percent(interval=1.0):.0f}%"
    print_report(run)
    if args.out:
        with args.out.open("a") as out:
            out.write("\n" + markdown(run))
        print(f"appended the results to {args.out}")
    return 1 if run.problems else 0


if __name__ == "__main__":
    sys.exit(main())
