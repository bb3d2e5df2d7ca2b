"""wrk: install it when missing, run it with `request.lua`, and parse what it reports.

The Lua `done()` hook prints one `WRK_JSON {...}` line (requests, errors, latency percentiles,
status tally); the `--latency` distribution in wrk's own text is parsed as a fallback and a
cross-check, so a change in either format is noticed rather than misread.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "request.lua"
_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
_DISTRIBUTION = re.compile(r"^\s*(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", re.MULTILINE)


class WrkError(RuntimeError):
    """wrk could not be installed, did not finish in time, or printed nothing parsable."""


@dataclass(frozen=True)
class WrkResult:
    """One wrk run. Latencies are in milliseconds; `statuses` is only filled with tally."""

    connections: int
    duration_s: float
    requests: int
    errors_connect: int
    errors_read: int
    errors_write: int
    errors_status: int
    errors_timeout: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    statuses: dict[str, int]

    @property
    def req_per_s(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def socket_errors(self) -> int:
        return self.errors_connect + self.errors_read + self.errors_write + self.errors_timeout

    @property
    def errors(self) -> int:
        """Non-2xx answers plus socket errors (wrk's `status` counts statuses >= 400)."""
        return self.errors_status + self.socket_errors


def version() -> str:
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
    first = (out.stdout + out.stderr).strip().splitlines()
    return first[0].split(" Copyright")[0] if first else "unknown"


def ensure_installed(timeout_s: float = 300) -> None:
    """`apt-get install -y wrk` when wrk is not on PATH; `apt-get update` only if that fails."""
    if shutil.which("wrk"):
        return
    install = ["apt-get", "install", "-y", "wrk"]
    if subprocess.run(install, capture_output=True, timeout=timeout_s).returncode != 0:
        subprocess.run(["apt-get", "update"], capture_output=True, timeout=timeout_s, check=False)
        done = subprocess.run(install, capture_output=True, text=True, timeout=timeout_s)
        if done.returncode != 0:
            raise WrkError(f"apt-get install -y wrk failed: {done.stderr.strip()[-500:]}")
    if not shutil.which("wrk"):
        raise WrkError("wrk is still not on PATH after apt-get install -y wrk.")


def run(
    url: str,
    body_file: Path,
    content_type: str,
    *,
    connections: int,
    duration_s: float,
    tally: bool = False,
    timeout_s: float = 2.0,
) -> WrkResult:
    """Drive `url` with POSTs of `body_file` on `connections` keep-alive connections."""
    threads = 1 if connections == 1 else 2
    command = [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{duration_s:g}s",
        f"--timeout={timeout_s:g}s", "--latency", "-s", str(SCRIPT), url,
        "--", str(body_file), content_type,
    ]  # fmt: skip
    if tally:
        command.append("tally")
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + 30)
    except subprocess.TimeoutExpired as exc:
        raise WrkError(f"wrk did not finish within {duration_s + 30:g} s: {command}") from exc
    if done.returncode != 0:
        raise WrkError(f"wrk exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return parse(done.stdout, connections=connections)


def parse(text: str, *, connections: int) -> WrkResult:
    """A WrkResult from wrk's output: the WRK_JSON line, else the text summary."""
    for line in text.splitlines():
        if line.startswith("WRK_JSON "):
            data = json.loads(line[len("WRK_JSON ") :])
            errors, latency = data["errors"], data["latency_us"]
            result = WrkResult(
                connections=connections,
                duration_s=data["duration_us"] / 1e6,
                requests=data["requests"],
                errors_connect=errors["connect"],
                errors_read=errors["read"],
                errors_write=errors["write"],
                errors_status=errors["status"],
                errors_timeout=errors["timeout"],
                p50_ms=latency["p50"] / 1000,
                p90_ms=latency["p90"] / 1000,
                p99_ms=latency["p99"] / 1000,
                max_ms=latency["max"] / 1000,
                statuses=data["statuses"],
            )
            _cross_check(result, text)
            return result
    return _parse_text(text, connections=connections)


def _distribution(text: str) -> dict[str, float]:
    return {m[1]: float(m[2]) * _UNITS_MS[m[3]] for m in _DISTRIBUTION.finditer(text)}


def _cross_check(result: WrkResult, text: str) -> None:
    text_p50 = _distribution(text).get("50")
    # wrk prints 2 decimals; the JSON has microseconds. Allow rounding plus 1 %.
    if text_p50 is not None and abs(text_p50 - result.p50_ms) > 0.01 + 0.01 * text_p50:
        raise WrkError(f"wrk's p50 disagrees: JSON {result.p50_ms} ms, text {text_p50} ms")


def _parse_text(text: str, *, connections: int) -> WrkResult:
    percentiles = _distribution(text)
    total = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", text)
    if total is None or "50" not in percentiles or "99" not in percentiles:
        raise WrkError(f"wrk printed no WRK_JSON line and no parsable summary:\n{text[-800:]}")
    socket = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    connect, read, write, timeout = (int(g) for g in socket.groups()) if socket else (0,) * 4
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return WrkResult(
        connections=connections,
        duration_s=float(total[2]) * _UNITS_MS[total[3]] / 1000,
        requests=int(total[1]),
        errors_connect=connect,
        errors_read=read,
        errors_write=write,
        errors_status=int(non_2xx[1]) if non_2xx else 0,
        errors_timeout=timeout,
        p50_ms=percentiles["50"],
        p90_ms=percentiles.get("90", percentiles["99"]),
        p99_ms=percentiles["99"],
        max_ms=percentiles["99"],
        statuses={},
    )
