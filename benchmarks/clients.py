"""Client overhead: requests/s of `liqi.PredictClient.predict` in a loop against a raw pooled
`httpx.Client.post` of the same body, against the same `liqi serve` (a subprocess), in one run.

Target (issue 8): PredictClient / raw httpx >= 0.9, for EAS protobuf and TF Serving JSON.
The client's loop includes what it does for the caller: encoding the arrays, the signature
check, decoding the answer into arrays. The raw loop posts pre-encoded bytes and reads the
answer's bytes. Rounds alternate between the two and the medians are compared.

Run: .venv/bin/python benchmarks/clients.py [--model EXPORT/1] [--seconds 2] [--rounds 5]
     [--out benchmarks/RESULTS.md]   (appends the Markdown section to that file)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from benchmarks.serving import processes  # noqa: E402
from benchmarks.serving.inprocess import calls_per_s, export_model  # noqa: E402

from liqi import PredictClient  # noqa: E402
from liqi.datasets.mnist_reader import builtin_dir, read_data_sets  # noqa: E402
from liqi.protocols import eas, tfserving  # noqa: E402

CASES = (("eas", "EAS protobuf"), ("tfserving", "TF Serving JSON"))


@contextmanager
def serve_mnist(model: Path | None) -> Iterator[processes.Server]:
    """`liqi serve` (a subprocess) of `model`, else of the MNIST model exported here."""
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model = model or export_model(tmp / "export")
        port = processes.free_port()
        command = [sys.executable, "-m", "liqi", "serve", str(model), "--name", "mnist"]
        command += ["--port", str(port), "--poll-interval-s", "0"]
        log_path = tmp / "serve.log"
        with processes.running("liqi serve", command, port=port, log_path=log_path) as server:
            yield server


def measure(url: str, protocol: str, rows: np.ndarray, seconds: float, rounds: int) -> tuple:
    inputs = {"images": rows}
    if protocol == "eas":
        path, body = "/api/predict/mnist", eas.encode_predict_request(inputs)
        content_type = eas.DEFAULT_CONTENT_TYPE
    else:
        path = "/v1/models/mnist:predict"
        body = tfserving.encode_predict_request(inputs, columnar=True)
        content_type = "application/json"
    headers = {"Content-Type": content_type}
    with (
        httpx.Client(base_url=url, trust_env=False, timeout=30) as raw,
        PredictClient(url, "mnist", protocol=protocol) as client,  # type: ignore[arg-type]
    ):

        def raw_call() -> bytes:
            answer = raw.post(path, content=body, headers=headers)
            answer.raise_for_status()
            return answer.content

        def client_call() -> object:
            return client.predict(inputs)

        for warm in (raw_call, client_call):
            calls_per_s(warm, 0.5)
        raw_rates, client_rates = [], []
        for _ in range(rounds):
            raw_rates.append(calls_per_s(raw_call, seconds))
            client_rates.append(calls_per_s(client_call, seconds))
    return statistics.median(raw_rates), statistics.median(client_rates)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, help="A SavedModel version folder (else exported)")
    parser.add_argument("--seconds", type=float, default=2.0, help="per round and loop")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, help="append the Markdown section to this file")
    args = parser.parse_args()
    test = read_data_sets(str(builtin_dir())).test
    lines = []
    with serve_mnist(args.model) as server:
        for rows_count in (1, 32):
            rows = test.images[:rows_count].astype(np.float32)
            for protocol, label in CASES:
                raw_rate, client_rate = measure(
                    server.url, protocol, rows, args.seconds, args.rounds
                )
                ratio = client_rate / raw_rate
                lines.append(
                    f"| {label}, {rows_count} row(s) | {raw_rate:.0f} | {client_rate:.0f} "
                    f"| {ratio:.2f} |"
                )
                print(lines[-1], flush=True)
    section = "\n".join(
        [
            f"\n## Python client overhead (`benchmarks/clients.py`), {date.today().isoformat()}",
            "",
            "Target (issue 8): requests/s of `PredictClient.predict` in a loop >= 0.9 of a raw",
            "pooled `httpx.Client.post` of the same body, one connection, against the same",
            f"`liqi serve` subprocess (medians of {args.rounds} alternating rounds of "
            f"{args.seconds:g} s).",
            "",
            "| case | raw httpx req/s | PredictClient req/s | client / raw |",
            "|---|---|---|---|",
            *lines,
            "",
        ]
    )
    print(section)
    if args.out is not None:
        with args.out.open("a", encoding="utf-8") as out:
            out.write(section)


if __name__ == "__main__":
    main()
