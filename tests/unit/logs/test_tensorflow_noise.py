"""Choosing TensorFlow's log level, and telling the early absl lines of `import tensorflow`."""

from __future__ import annotations

import pytest

from liqi.errors import ConfigError
from liqi.logs.tensorflow_noise import is_early_noise, tf_log_level

pytestmark = pytest.mark.timeout(30)

ONEDNN = (
    b"I0000 00:00:1796647154.562464   26769 port.cc:153] oneDNN custom operations are on. You "
    b"may see slightly different numerical results"
)
NOTICE = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"


def test_the_level_comes_from_debug_then_the_variable() -> None:
    assert tf_log_level({}) is None
    assert tf_log_level({"LIQI_TF_LOG_LEVEL": ""}) is None
    assert tf_log_level({"LIQI_TF_LOG_LEVEL": "Warning"}) == "warning"
    assert tf_log_level({"LIQI_TF_LOG_LEVEL": "error"}, debug=True) == "info"
    with pytest.raises(ConfigError, match=r"LIQI_TF_LOG_LEVEL='loud' is not a level: use one of"):
        tf_log_level({"LIQI_TF_LOG_LEVEL": "loud"})


def test_early_absl_lines_are_told_by_severity() -> None:
    assert is_early_noise(ONEDNN, "IW")
    assert is_early_noise(NOTICE, "I")
    assert is_early_noise(b"W0000 00:00:1.5 12 loader.cc:42] slow", "IW")
    assert not is_early_noise(b"W0000 00:00:1.5 12 loader.cc:42] slow", "I")
    assert not is_early_noise(b"E0000 00:00:1.5 12 loader.cc:42] broken", "IW")
    # absl-py's own format (a script's absl logging) has a real date: never taken
    assert not is_early_noise(b"I1207 12:36:31.533086 139828305972096 train.py:12] step 1", "IW")
    assert not is_early_noise(b"the script's print", "IW")
