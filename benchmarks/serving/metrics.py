"""Read liqi's own account of its 503s from the Prometheus text of `GET /metrics`.

Only `liqi_request_duration_seconds` with `status="503"` is read: its count, its sum and
the smallest histogram bound holding 99 % of them, as the difference between two scrapes
(before and after the measured run). This is the time inside the server; the probe measures
what a client waits, which adds the time a request spends in the socket and the event loop
before the app sees it.
"""

from __future__ import annotations

import math
import re

_SAMPLE = re.compile(
    r"^liqi_request_duration_seconds_(?P<kind>bucket|sum|count)\{(?P<labels>[^}]*)\}\s+"
    r"(?P<value>\S+)$",
    re.MULTILINE,
)
_LE = re.compile(r'le="([^"]+)"')

Samples = dict[tuple[str, float], float]  # (count|sum|bucket, bucket bound or 0) -> value


def samples_503(text: str) -> Samples:
    """The 503 samples of one scrape, summed over the other labels."""
    samples: Samples = {}
    for match in _SAMPLE.finditer(text):
        if 'status="503"' not in match["labels"]:
            continue
        bound = 0.0
        if match["kind"] == "bucket":
            le = _LE.search(match["labels"])
            if le is None:
                continue
            bound = math.inf if le[1] == "+Inf" else float(le[1])
        key = (match["kind"], bound)
        samples[key] = samples.get(key, 0.0) + float(match["value"])
    return samples


def describe_503(before: Samples, after: Samples) -> str:
    delta = {key: value - before.get(key, 0.0) for key, value in after.items()}
    count = delta.get(("count", 0.0), 0.0)
    if not count:
        return "no 503 in liqi_request_duration_seconds"
    total = delta.get(("sum", 0.0), 0.0)
    buckets = sorted((b, v) for (kind, b), v in delta.items() if kind == "bucket")
    p99_bound = next((b for b, v in buckets if v >= 0.99 * count), math.inf)
    bound_text = "+Inf" if math.isinf(p99_bound) else f"{p99_bound * 1000:g} ms"
    return f"{count:.0f} 503s, mean {total / count * 1000:.2f} ms, 99 % within {bound_text}"
