"""The launcher hides TensorFlow's own log lines in a job's output, never the script's: its
prints, its logging and its absl logging stay. LIQI_TF_LOG_LEVEL=info shows TensorFlow's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.training.test_launcher import launch, write_script

pytestmark = [pytest.mark.tf, pytest.mark.timeout(240)]

SCRIPT = """
    import logging
    from absl import logging as absl_logging
    import tensorflow as tf

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print("the script's print")
    logging.getLogger("train").warning("the script's logging")
    absl_logging.warning("the script's absl logging")
    tf.compat.v1.disable_v2_behavior()  # TensorFlow warns that an internal call is deprecated
    print("done")
"""

TF_NOISE = re.compile(
    r"oneDNN custom operations|cpu_feature_guard|^[IW]0000 |before absl::InitializeLog"
    r"|is deprecated and will be removed",
    re.MULTILINE,
)


@pytest.mark.parametrize(("level", "noisy"), [("", False), ("info", True)])
def test_tensorflow_noise_is_hidden_and_the_script_output_kept(
    tmp_path: Path, level: str, noisy: bool
) -> None:
    write_script(tmp_path / "script.py", SCRIPT)
    done = launch(
        tmp_path, "script.py", env={"LIQI_TF_LOG_LEVEL": level, "TF_CPP_MIN_LOG_LEVEL": ""}
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "the script's print\ndone\n"
    assert "WARNING train: the script's logging" in done.stderr
    assert "WARNING absl: the script's absl logging" in done.stderr
    assert bool(TF_NOISE.search(done.stderr)) is noisy, done.stderr
