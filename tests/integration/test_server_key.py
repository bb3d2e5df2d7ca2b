"""A server whose secret.key does not fit its database says so, and keeps serving."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

from liqi.errors import SecretKeyMismatchError
from tests.support.servers import live_server


def test_wrong_secret_key_answers_500_with_reason_and_logs_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = tmp_path / "home"
    with live_server(home, None):
        pass
    (home / "secret.key").write_bytes(Fernet.generate_key())
    (home / "config.toml").unlink()  # the profile cannot be rewritten either: the key is lost
    caplog.set_level(logging.ERROR, logger="liqi.control.identity.auth")
    with pytest.raises(SecretKeyMismatchError), live_server(home, None):
        pass
    assert not (home / "run" / "server.json").exists()


def test_wrong_secret_key_on_a_request(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    home = tmp_path / "home"
    with live_server(home, None):
        pass
    (home / "secret.key").write_bytes(Fernet.generate_key())
    caplog.set_level(logging.ERROR, logger="liqi.control.identity.auth")
    with live_server(home, None) as server:
        with pytest.raises(SecretKeyMismatchError) as caught, server.admin() as admin:
            admin.list_projects()
        assert caught.value.http_status == 500
        assert "secret.key" in caught.value.message
        assert "Traceback" not in caught.value.message
        # The traceback is in the server log, and the server keeps serving.
        assert any(r.exc_info for r in caplog.records if "authentication failed" in r.getMessage())
        assert httpx.get(f"{server.url}/healthz", trust_env=False).status_code == 200
