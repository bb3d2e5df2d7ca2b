"""`liqi serve` hides TensorFlow's own log lines (C++ INFO/WARNING, also those of `import
tensorflow` that TF_CPP_MIN_LOG_LEVEL cannot reach, and its Python warnings) unless
`liqi --debug`; liqi's own lines stay."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from liqi.serving.state_file import read_state
from tests.support.model_server import wait_ready

pytestmark = [pytest.mark.tf, pytest.mark.timeout(240)]

TF_NOISE = re.compile(
    r"oneDNN custom operations|cpu_feature_guard|Unable to create a python object for variable"
    r"|^[IW]0000 |before absl::InitializeLog|WARNING:tensorflow|WARNING tensorflow:",
    re.MULTILINE,
)


def serve_output(model: Path, tmp_path: Path, *global_options: str) -> tuple[str, str]:
    """Start `liqi [global_options] serve MODEL` on port 0, wait until it is ready, stop it;
    its stdout and stderr."""
    state_file = tmp_path / "state.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_CPP_", "LIQI_TF_"))}
    env["LIQI_HOME"] = str(tmp_path / "home")
    command = [sys.executable, "-m", "liqi", *global_options, "serve", str(model)]
    command += ["--name", "mnist", "--port", "0", "--state-file", str(state_file)]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        state = read_state(state_file)
        while (state is None or state.url is None) and time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()
            time.sleep(0.05)
            state = read_state(state_file)
        assert state is not None
        assert state.url is not None
        wait_ready(state.url)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert f"Serving mnist version 1 at {state.url}" in out
    assert "listening on" in err
    assert "model=mnist version=1 processor=tensorflow" in err  # the load line
    return out, err


def test_tensorflow_noise_is_hidden_by_default(mnist_saved_model: Path, tmp_path: Path) -> None:
    out, err = serve_output(mnist_saved_model, tmp_path)
    assert TF_NOISE.findall(out + err) == []


def test_debug_shows_tensorflow_logging(mnist_saved_model: Path, tmp_path: Path) -> None:
    out, err = serve_output(mnist_saved_model, tmp_path, "--debug")
    shown = set(TF_NOISE.findall(out + err))
    # A line of `import tensorflow` itself: which ones depends on the CPU (oneDNN's is printed
    # where oneDNN is on by default, e.g. with AVX-512; the CPU feature guard's where TF was
    # not built for every instruction the CPU has).
    assert shown & {"oneDNN custom operations", "cpu_feature_guard"}
    assert "Unable to create a python object for variable" in shown  # TF's Python warning
