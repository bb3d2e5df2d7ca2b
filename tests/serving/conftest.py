from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from liqi.datasets.mnist_reader import builtin_dir

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "mnist"


@pytest.fixture(scope="session")
def mnist_saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seed's MNIST softmax model, exported once per session by the real TF1 example."""
    out = tmp_path_factory.mktemp("mnist_export")
    volumes = f"{builtin_dir() / 'train'},{builtin_dir() / 'test'}"
    script = str(EXAMPLES / "mnist_softmax.py")
    command = [sys.executable, "-m", "liqi.training.launcher", "--tf1", script]
    command += [f"--volumes={volumes}", f"--buckets={out}/"]
    subprocess.run(command, check=True, capture_output=True, timeout=240)
    return out / "1"
