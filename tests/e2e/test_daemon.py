"""The installed `liqi` entry point in real subprocesses: start, status, stop, failures."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from liqi.config import ProfileFile

pytestmark = pytest.mark.e2e
LIQI = str(Path(sys.executable).parent / "liqi")


def liqi(
    home: Path, *args: str, env: dict[str, str] | None = None, timeout_s: float = 90
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LIQI_")}
    full_env.update(env or {})
    return subprocess.run(
        [LIQI, "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=full_env,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def status(home: Path) -> dict[str, object]:
    result = liqi(home, "server", "status", "--output", "json")
    assert result.returncode == 0, result.stderr
    data: dict[str, object] = json.loads(result.stdout)
    return data


@pytest.fixture
def home(tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "home"
    yield path
    liqi(path, "server", "stop")


def test_start_status_stop_cycle(home: Path) -> None:
    started = liqi(home, "server", "start", "--port", "0")
    assert started.returncode == 0, started.stderr
    assert "liqi server started" in started.stdout
    info = status(home)
    assert info["running"] is True
    assert info["healthy"] is True
    assert isinstance(info["pid"], int)
    assert str(info["url"]).startswith("http://127.0.0.1:")
    assert info["version"]
    assert isinstance(info["uptime_s"], float)
    assert httpx.get(f"{info['url']}/healthz", trust_env=False).json()["pid"] == info["pid"]
    again = liqi(home, "server", "start", "--port", "0")
    assert again.returncode == 0
    assert "already running" in again.stdout
    assert status(home)["pid"] == info["pid"]
    stopped = liqi(home, "server", "stop")
    assert stopped.returncode == 0
    assert f"stopped (pid {info['pid']})" in stopped.stdout
    assert status(home)["running"] is False
    assert not (home / "run" / "server.json").exists()
    assert "not running" in liqi(home, "server", "stop").stdout
    assert (home / "config.toml").stat().st_mode & 0o777 == 0o600
    assert (home / "secret.key").stat().st_mode & 0o777 == 0o600


def test_stale_pid_file_is_detected_and_cleaned(home: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    (home / "run").mkdir(parents=True)
    (home / "run" / "server.json").write_text(
        json.dumps({"pid": dead.pid, "url": "http://127.0.0.1:1", "host": "127.0.0.1", "port": 1,
                    "version": "0", "started_at": "2026-01-01T00:00:00+00:00"})
    )  # fmt: skip
    shown = liqi(home, "server", "status")
    assert "stale pid file" in shown.stdout
    assert "stopped" in shown.stdout
    assert not (home / "run" / "server.json").exists()
    started = liqi(home, "server", "start", "--port", "0")
    assert started.returncode == 0, started.stderr


def test_port_in_use_fails_with_the_reason(home: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = liqi(home, "server", "start", "--port", str(port))
    assert result.returncode == 6
    assert f"Port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "--port" in result.stderr
    assert status(home)["running"] is False


def test_unwritable_home_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = liqi(blocker / "home", "server", "start", "--port", "0")
    assert result.returncode == 2
    assert "Set LIQI_HOME to a writable folder" in result.stderr


def test_database_that_cannot_connect_is_reported_without_password(home: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    url = f"postgresql+psycopg://liqi:hunter2secret@127.0.0.1:{closed_port}/liqi"
    result = liqi(home, "server", "start", "--port", "0", env={"LIQI_DATABASE_URL": url})
    assert result.returncode == 6
    assert "Cannot connect to the database" in result.stderr
    assert f"127.0.0.1:{closed_port}" in result.stderr
    assert "hunter2secret" not in result.stderr
    assert status(home)["running"] is False


def test_unsupported_database_url_is_explained(home: Path) -> None:
    result = liqi(
        home, "server", "run", "--port", "0", env={"LIQI_DATABASE_URL": "mysql://x@localhost/db"}
    )
    assert result.returncode == 2
    assert "liqi runs on sqlite or postgresql" in result.stderr


def test_restart_keeps_data_and_moves_the_profile_to_the_new_port(home: Path) -> None:
    assert liqi(home, "server", "start", "--port", "0").returncode == 0
    assert liqi(home, "project", "create", "kept_project").returncode == 0
    assert liqi(home, "server", "stop").returncode == 0
    (home / "config.toml").unlink()  # lost profile: written anew from the stored key
    assert liqi(home, "server", "start", "--port", "0").returncode == 0
    second_url = status(home)["url"]
    assert ProfileFile.load(home / "config.toml").get("default").endpoint == second_url
    listed = liqi(home, "project", "list", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    assert "kept_project" in [p["name"] for p in json.loads(listed.stdout)]


@pytest.mark.postgres
def test_daemon_on_postgresql(home: Path, postgres) -> None:  # type: ignore[no-untyped-def]
    url = postgres.create_database()
    started = liqi(home, "server", "start", "--port", "0", env={"LIQI_DATABASE_URL": url})
    assert started.returncode == 0, started.stderr
    listed = liqi(home, "project", "list", "-o", "json")
    assert [p["name"] for p in json.loads(listed.stdout)] == ["default"]


def test_python_dash_m_liqi(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "liqi", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    assert result.stdout.startswith("liqi, version ")
