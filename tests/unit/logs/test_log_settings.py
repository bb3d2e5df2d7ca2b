"""LIQI_LOG_MAX_MB and LIQI_LOG_BACKUPS in the server settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from liqi.config import load_server_settings
from liqi.errors import ConfigError
from liqi.logs.rotation import LogLimits

pytestmark = pytest.mark.timeout(30)


def test_defaults_and_variables(tmp_path: Path) -> None:
    default = load_server_settings({"LIQI_HOME": str(tmp_path)})
    assert default.log_limits == LogLimits(max_bytes=50 * 1024 * 1024, backups=3)
    chosen = load_server_settings(
        {"LIQI_HOME": str(tmp_path), "LIQI_LOG_MAX_MB": "0.5", "LIQI_LOG_BACKUPS": "0"}
    )
    assert chosen.log_limits == LogLimits(max_bytes=512 * 1024, backups=0)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("LIQI_LOG_MAX_MB", "lots", "LIQI_LOG_MAX_MB='lots' is not a size"),
        ("LIQI_LOG_MAX_MB", "0", "LIQI_LOG_MAX_MB='0' is not a size"),
        ("LIQI_LOG_MAX_MB", "nan", "LIQI_LOG_MAX_MB='nan' is not a size"),
        ("LIQI_LOG_BACKUPS", "-1", "LIQI_LOG_BACKUPS='-1' is not a count: .* 0 to 100"),
        ("LIQI_LOG_BACKUPS", "101", "LIQI_LOG_BACKUPS='101' is not a count"),
    ],
)
def test_bad_values_are_refused(tmp_path: Path, variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_server_settings({"LIQI_HOME": str(tmp_path), variable: value})
