"""A small blocking HTTP client: the answer checks before load, and the overload probe.

Before any load, every route is asked once and its answer compared with the in-process
scores, so a fast server that answers wrongly is reported, not measured. During the
overload run, :class:`Probe` sends one request at a time beside wrk and times each answer
by status: wrk reports one latency distribution for 200s and 503s together.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from benchmarks.serving.inprocess import Bodies

from liqi.protocols import eas, v2

PREDICT_TF = "/v1/models/mnist:predict"
INFER_V2 = "/v2/models/mnist/infer"
PREDICT_EAS = "/api/predict/mnist"
JSON = "application/json"
OCTET = "application/octet-stream"


def post(
    port: int, path: str, body: bytes, content_type: str, timeout_s: float = 10.0
) -> tuple[int, dict[str, str], bytes]:
    """One POST on a fresh loopback connection: (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": content_type})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def _scores(kind: str, body: bytes) -> np.ndarray:
    if kind == "tf":
        return np.asarray(json.loads(body)["predictions"], dtype=np.float32)
    if kind == "v2":
        return v2.decode_infer_response(body).outputs["scores"]
    return eas.decode_predict_response(body).outputs["scores"]


def check_answers(port: int, bodies: Bodies) -> list[str]:
    """Ask each route once; return what was wrong (empty when every answer is right)."""
    cases = [
        ("tf", PREDICT_TF, bodies.tf_1row, JSON, bodies.scores[:1]),
        ("v2", INFER_V2, bodies.v2_1row, JSON, bodies.scores[:1]),
        ("eas", PREDICT_EAS, bodies.eas_1row, OCTET, bodies.scores[:1]),
        ("tf", PREDICT_TF, bodies.tf_32row, JSON, bodies.scores),
        ("eas", PREDICT_EAS, bodies.eas_32row, OCTET, bodies.scores),
    ]
    problems = []
    for kind, path, body_file, content_type, expected in cases:
        what = f"POST {path} ({body_file.name}, {content_type})"
        try:
            status, _, body = post(port, path, body_file.read_bytes(), content_type)
        except OSError as exc:
            problems.append(f"{what}: {type(exc).__name__}: {exc}")
            continue
        if status != 200:
            problems.append(f"{what}: status {status}, body {body[:300]!r}")
            continue
        try:
            got = _scores(kind, body)
        except Exception as exc:  # any decoding failure is the finding itself
            problems.append(f"{what}: undecodable answer ({exc}): {body[:300]!r}")
            continue
        if got.shape != expected.shape or not np.allclose(got, expected, atol=1e-5):
            problems.append(
                f"{what}: wrong scores, shape {got.shape} (expected {expected.shape}), "
                f"body {body[:300]!r}"
            )
    for path in ("/healthz", "/readyz", "/metrics"):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            text = response.read()
            if response.status != 200:
                problems.append(f"GET {path}: status {response.status}, body {text[:300]!r}")
        except OSError as exc:
            problems.append(f"GET {path}: {type(exc).__name__}: {exc}")
        finally:
            conn.close()
    return problems


@dataclass(frozen=True)
class ProbeStats:
    """Latencies (ms) of the probe's answers, by status."""

    ok: int
    rejected: int  # 503
    other: dict[int, int]
    errors: int
    ok_p50_ms: float
    ok_p99_ms: float
    rejected_p50_ms: float
    rejected_p99_ms: float
    rejected_max_ms: float
    first_other: str


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


class Probe:
    """Sends `body` to `path` one request at a time, in a thread, until stopped."""

    def __init__(self, port: int, path: str, body_file: Path, content_type: str) -> None:
        self.port, self.path, self.content_type = port, path, content_type
        self.body = body_file.read_bytes()
        self.latencies: dict[int, list[float]] = {}
        self.errors = 0
        self.first_other = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _run(self) -> None:
        headers = {"Content-Type": self.content_type}
        conn: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            start = time.perf_counter()
            try:
                conn.request("POST", self.path, body=self.body, headers=headers)
                response = conn.getresponse()
                text = response.read()
            except (OSError, http.client.HTTPException):
                self.errors += 1
                conn.close()
                conn = None
                self._stop.wait(0.01)
                continue
            elapsed_ms = (time.perf_counter() - start) * 1000
            self.latencies.setdefault(response.status, []).append(elapsed_ms)
            if response.status not in (200, 503) and not self.first_other:
                self.first_other = f"{response.status} {text[:300]!r}"
            if response.will_close:
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def stats(self) -> ProbeStats:
        ok = self.latencies.get(200, [])
        rejected = self.latencies.get(503, [])
        other = {s: len(v) for s, v in self.latencies.items() if s not in (200, 503)}
        return ProbeStats(
            ok=len(ok),
            rejected=len(rejected),
            other=other,
            errors=self.errors,
            ok_p50_ms=_pct(ok, 50),
            ok_p99_ms=_pct(ok, 99),
            rejected_p50_ms=_pct(rejected, 50),
            rejected_p99_ms=_pct(rejected, 99),
            rejected_max_ms=max(rejected, default=float("nan")),
            first_other=self.first_other,
        )
