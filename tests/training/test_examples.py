"""The MNIST examples, run through the launcher as a job runs them, on the built-in volume.

The exported SavedModels are then loaded with TensorFlow 2 in another process, as a model
server would, and scored on the built-in test images.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from liqi.datasets.mnist_reader import builtin_dir

pytestmark = pytest.mark.tf

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "mnist"
RUN_TIMEOUT_S = 150
ACCURACY = re.compile(r"^accuracy: (0\.\d{2,})$", re.MULTILINE)

CHECK_SAVED_MODEL = """
    import json, sys
    import numpy as np
    import tensorflow as tf
    from liqi.datasets.mnist_reader import builtin_dir, read_data_sets

    loaded = tf.saved_model.load(sys.argv[1])
    test = read_data_sets(builtin_dir()).test
    seen = {"signatures": sorted(loaded.signatures.keys())}
    for key in seen["signatures"]:
        function = loaded.signatures[key]
        _, inputs = function.structured_input_signature
        scores = function(images=tf.constant(test.images))["scores"].numpy()
        seen[key] = {
            "inputs": {k: [s.shape.as_list(), s.dtype.name] for k, s in inputs.items()},
            "outputs": {
                k: [s.shape.as_list(), s.dtype.name]
                for k, s in function.structured_outputs.items()
            },
            "accuracy": float(np.mean(scores.argmax(axis=1) == test.labels)),
            "max_row_sum_error": float(np.abs(scores.sum(axis=1) - 1.0).max()),
        }
    print(json.dumps(seen))
"""


def run(cwd: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LIQI_")}
    return subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


def launch_example(cwd: Path, name: str, *args: str, tf1: bool = True) -> str:
    """Run examples/mnist/NAME through the launcher with PAI's flags; its stdout."""
    volumes = f"--volumes={builtin_dir() / 'train'},{builtin_dir() / 'test'}"
    launcher = ["-m", "liqi.training.launcher", *(["--tf1"] if tf1 else [])]
    done = run(cwd, *launcher, EXAMPLES / name, volumes, "--checkpointDir=/nonexistent/", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def printed_accuracy(stdout: str) -> float:
    found = ACCURACY.findall(stdout)
    assert len(found) == 1, stdout
    return float(found[0])


def check_saved_model(tmp_path: Path, export_dir: Path) -> dict[str, Any]:
    checker = tmp_path / "check_saved_model.py"
    checker.write_text(textwrap.dedent(CHECK_SAVED_MODEL))
    done = run(tmp_path, checker, export_dir)
    assert done.returncode == 0, done.stderr
    seen: dict[str, Any] = json.loads(done.stdout)
    return seen


def assert_servable(seen: dict[str, Any]) -> None:
    assert seen["signatures"] == ["predict_images", "serving_default"]
    for key in ("predict_images", "serving_default"):
        signature = seen[key]
        assert signature["inputs"] == {"images": [[None, 784], "float32"]}
        assert signature["outputs"] == {"scores": [[None, 10], "float32"]}
        assert signature["accuracy"] >= 0.85
        assert signature["max_row_sum_error"] < 1e-4  # probabilities


def test_training_test_prints_its_accuracy_and_writes_nothing(tmp_path: Path) -> None:
    work, buckets = tmp_path / "work", tmp_path / "buckets"
    work.mkdir()
    buckets.mkdir()

    stdout = launch_example(work, "training_test.py", f"--buckets={buckets}/")

    assert printed_accuracy(stdout) >= 0.85
    assert list(work.iterdir()) == []
    assert list(buckets.iterdir()) == []


@pytest.mark.timeout(300)
def test_mnist_softmax_exports_a_servable_savedmodel(tmp_path: Path) -> None:
    buckets = tmp_path / "buckets"
    buckets.mkdir()

    stdout = launch_example(tmp_path, "mnist_softmax.py", f"--buckets={buckets}/")

    assert printed_accuracy(stdout) >= 0.85
    assert (buckets / "1" / "saved_model.pb").is_file()
    assert sorted(p.name for p in buckets.iterdir()) == ["1"]
    seen = check_saved_model(tmp_path, buckets / "1")
    assert_servable(seen)
    assert seen["predict_images"]["accuracy"] == pytest.approx(printed_accuracy(stdout), abs=1e-3)


def test_mnist_softmax_refuses_to_overwrite_an_export(tmp_path: Path) -> None:
    buckets = tmp_path / "buckets"
    (buckets / "1").mkdir(parents=True)
    (buckets / "1" / "saved_model.pb").write_bytes(b"an earlier model")
    volumes = f"--volumes={builtin_dir() / 'train'},{builtin_dir() / 'test'}"

    script = EXAMPLES / "mnist_softmax.py"
    done = run(
        tmp_path, "-m", "liqi.training.launcher", "--tf1", script, volumes, f"--buckets={buckets}/"
    )

    assert done.returncode == 1
    assert f"{buckets}/1 already exists. Pass --export_version=2" in done.stderr
    assert (buckets / "1" / "saved_model.pb").read_bytes() == b"an earlier model"


@pytest.mark.timeout(300)
def test_mnist_softmax_tf2_exports_the_same_signatures(tmp_path: Path) -> None:
    buckets = tmp_path / "buckets"
    buckets.mkdir()

    stdout = launch_example(
        tmp_path, "mnist_softmax_tf2.py", f"--buckets={buckets}/", "--export_version=3", tf1=False
    )

    assert printed_accuracy(stdout) >= 0.85
    assert (buckets / "3" / "saved_model.pb").is_file()
    seen = check_saved_model(tmp_path, buckets / "3")
    assert_servable(seen)
    assert seen["predict_images"]["accuracy"] == pytest.approx(printed_accuracy(stdout), abs=1e-3)
