"""Deploy benchmark: time from `create` of the seed's eas_mnist.json to the first successful
prediction through the gateway, on a real control plane (target <= 5 s on this machine).

One run: export the MNIST model with the seed's TF1 script, start a control plane in a
temporary LIQI_HOME, put the model in oss://bench/models/1/, then `--repeats` times: create
the service, send the EAS protobuf request every 20 ms until one answers 200, record the
time, delete the service and wait until its instance is gone and a standby server (TensorFlow
imported, docs/services.md) is ready. The first create is cold (no standby yet), the others
warm. `import tensorflow` in a fresh interpreter is measured in the same run, since a cold
instance's start is mostly that import.

Run: .venv/bin/python benchmarks/deploy.py [--repeats 3] [--out benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from benchmarks.serving.inprocess import export_model, import_tensorflow_s  # noqa: E402
from tests.support.servers import live_server  # noqa: E402

from liqi.client.eas_requests import TFRequest  # noqa: E402
from liqi.datasets.mnist_reader import builtin_dir, read_data_sets  # noqa: E402

SPEC = {
    "name": "bench_mnist",
    "generate_token": "false",
    "model_path": "oss://bench/models/",
    "processor": "tensorflow_cpu",
    "metadata": {"region": "shanghai", "instance": 1, "cpu": 1, "memory": 2000},
}
DEADLINE_S = 120.0


def first_prediction_s(url: str, body: bytes, create: object) -> float:
    """Seconds from calling ``create`` to the first 200 answer through the gateway."""
    started = time.monotonic()
    create()  # type: ignore[operator]
    with httpx.Client(timeout=10, trust_env=False) as client:
        while time.monotonic() - started < DEADLINE_S:
            if client.post(url, content=body).status_code == 200:
                return time.monotonic() - started
            time.sleep(0.02)
    raise TimeoutError(f"no successful prediction within {DEADLINE_S}s")


def wait_standby(folder: Path, timeout_s: float = 90.0) -> None:
    """Until a standby server (started after the last TensorFlow instance) is ready."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(folder.glob("standby-*/ready")):
            return
        time.sleep(0.1)
    raise TimeoutError(f"no standby server became ready in {folder} within {timeout_s}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="append a Markdown section to this file")
    args = parser.parse_args()
    images = read_data_sets(str(builtin_dir())).test.images[:1].astype(np.float32)
    request = TFRequest("predict_images")
    request.add_feed("images", [1, 784], TFRequest.DT_FLOAT, images.ravel().tolist())
    body = request.to_string()
    times: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        model = export_model(Path(tmp) / "export")
        import_s = import_tensorflow_s()
        with live_server(Path(tmp) / "home", None) as server, server.admin() as admin:
            admin.create_project("bench")
            admin.create_bucket("bench", project="bench")
            for path in sorted(model.rglob("*")):
                if path.is_file():
                    admin.put_object("bench", f"models/1/{path.relative_to(model)}", path)
            url = f"{server.url}/api/predict/bench_mnist"
            for repeat in range(args.repeats):
                seconds = first_prediction_s(
                    url, body, lambda: admin.create_service(SPEC, project="bench")
                )
                times.append(seconds)
                print(f"run {repeat + 1}: create -> first prediction {seconds:.2f}s", flush=True)
                admin.delete_service("bench_mnist")
                admin.wait_service_deleted("bench_mnist", timeout_s=60)
                wait_standby(server.home / "services" / ".standby")
    cold, warm = times[0], statistics.median(times[1:]) if len(times) > 1 else float("nan")
    verdict = "PASS" if warm <= 5.0 else "FAIL"
    print(f"import tensorflow: {import_s:.2f}s")
    print(f"create -> first prediction: cold {cold:.2f}s, warm median {warm:.2f}s ({verdict})")
    if args.out:
        lines = [
            f"\n## Deploy: create -> first prediction ({date.today().isoformat()})\n",
            "`benchmarks/deploy.py`: the seed's eas_mnist.json created through the API on a",
            "real control plane, the EAS protobuf request sent through the gateway every 20 ms",
            "until it answers 200.\n",
            "| run | start | create -> first prediction |",
            "|---|---|---|",
            *[
                f"| {n} | {'cold' if n == 1 else 'standby'} | {t:.2f} s |"
                for n, t in enumerate(times, 1)
            ],
            f"\nCold {cold:.2f} s; with the standby server, median {warm:.2f} s ({verdict}, "
            f"target <= 5 s); `import tensorflow` in a fresh interpreter: {import_s:.2f} s in "
            "the same run.\n",
        ]
        with open(args.out, "a", encoding="utf-8") as out:
            out.write("\n".join(lines))


if __name__ == "__main__":
    main()
