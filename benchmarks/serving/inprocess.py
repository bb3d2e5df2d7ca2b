"""The model side: export the MNIST SavedModel, the request bodies, and the in-process ceiling.

The ceiling is what the model costs without HTTP: the loaded signature called in a loop at
batch 1 and batch 32, and the same with the TF Serving JSON decode and encode around it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from liqi.datasets.mnist_reader import builtin_dir, read_data_sets
from liqi.protocols import eas, tfserving, v2
from liqi.protocols.tensors import InferenceResponse
from liqi.serving.loaders import SavedModelLoader, Servable

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "mnist" / "mnist_softmax.py"


@dataclass(frozen=True)
class Bodies:
    """Request bodies on disk (for wrk) and the answers the model gives to them."""

    tf_1row: Path
    v2_1row: Path
    eas_1row: Path
    tf_32row: Path
    eas_32row: Path
    answer_1row: Path  # liqi's TF Serving answer to tf_1row: the floor's body
    images: np.ndarray  # the 32 test images, float32 [32, 784]
    scores: np.ndarray  # the model's scores for them, float32 [32, 10]


@dataclass(frozen=True)
class Ceiling:
    batch1_calls_per_s: float
    batch1_json_calls_per_s: float
    batch32_rows_per_s: float
    batch32_json_rows_per_s: float


def export_model(out: Path, timeout_s: float = 300) -> Path:
    """Run the real TF1 example into `out`; the SavedModel lands in `out/1`."""
    volumes = f"{builtin_dir() / 'train'},{builtin_dir() / 'test'}"
    command = [sys.executable, "-m", "liqi.training.launcher", "--tf1", str(EXAMPLE)]
    command += [f"--volumes={volumes}", f"--buckets={out}/"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0 or not (out / "1" / "saved_model.pb").is_file():
        raise RuntimeError(f"exporting the MNIST model failed:\n{done.stderr[-2000:]}")
    return out / "1"


def import_tensorflow_s(timeout_s: float = 120) -> float:
    """Wall time of `python -c "import tensorflow"` in a fresh interpreter."""
    start = time.monotonic()
    subprocess.run(
        [sys.executable, "-c", "import tensorflow"], capture_output=True, check=True,
        timeout=timeout_s,
    )  # fmt: skip
    return time.monotonic() - start


def load(version_dir: Path) -> Servable:
    return SavedModelLoader().load(version_dir, name="mnist", version=1)


def write_bodies(servable: Servable, out: Path) -> Bodies:
    images = read_data_sets(builtin_dir()).test.images[:32].astype(np.float32)
    scores = servable.predict({"images": images})["scores"]
    one = images[:1]
    tf_1row = out / "tf_1row.json"
    tf_1row.write_bytes(tfserving.encode_predict_request({"images": one}, columnar=False))
    v2_1row = out / "v2_1row.json"
    v2_1row.write_bytes(v2.encode_infer_request({"images": one}).body)
    eas_1row = out / "eas_1row.pb"
    eas_1row.write_bytes(eas.encode_predict_request({"images": one}))
    tf_32row = out / "tf_32row.json"
    tf_32row.write_bytes(tfserving.encode_predict_request({"images": images}, columnar=False))
    eas_32row = out / "eas_32row.pb"
    eas_32row.write_bytes(eas.encode_predict_request({"images": images}))
    answer = out / "answer_1row.json"
    answer.write_bytes(_json_predict(servable, tf_1row.read_bytes()))
    return Bodies(tf_1row, v2_1row, eas_1row, tf_32row, eas_32row, answer, images, scores)


def _json_predict(servable: Servable, body: bytes) -> bytes:
    request = tfserving.decode_predict(body, model="mnist")
    outputs = servable.predict(request.inference.inputs, request.inference.signature)
    response = InferenceResponse(model="mnist", version="1", outputs=outputs)
    return tfserving.encode_predict(response, columnar=request.columnar)


def calls_per_s(call: Callable[[], object], duration_s: float) -> float:
    for _ in range(20):  # warm up
        call()
    calls = 0
    start = time.perf_counter()
    deadline = start + duration_s
    while True:
        call()
        calls += 1
        now = time.perf_counter()
        if now >= deadline:
            return calls / (now - start)


def measure_ceiling(servable: Servable, bodies: Bodies, duration_s: float) -> Ceiling:
    one = {"images": bodies.images[:1]}
    all32 = {"images": bodies.images}
    body1, body32 = bodies.tf_1row.read_bytes(), bodies.tf_32row.read_bytes()
    return Ceiling(
        batch1_calls_per_s=calls_per_s(lambda: servable.predict(one), duration_s),
        batch1_json_calls_per_s=calls_per_s(lambda: _json_predict(servable, body1), duration_s),
        batch32_rows_per_s=32 * calls_per_s(lambda: servable.predict(all32), duration_s),
        batch32_json_rows_per_s=32
        * calls_per_s(lambda: _json_predict(servable, body32), duration_s),
    )
