"""`liqi eas logs --follow` reads an instance log by log offset through the control plane's
API: a rotation under the follower neither loses nor repeats a line."""

from __future__ import annotations

from pathlib import Path

import pytest

from liqi.client import Client
from liqi.logs.rotation import LogLimits, RotatingLog
from tests.support.servers import live_server

pytestmark = pytest.mark.timeout(60)


def lines(start: int, stop: int) -> str:
    return "".join(f"line {n:05d}\n" for n in range(start, stop))


def read_from(admin: Client, offset: int) -> tuple[str, int]:
    """What the log holds from ``offset`` on, read as a follower does; and the next offset."""
    text = ""
    while True:
        chunk = admin.service_logs("rotating", "i-rotating", offset)
        text += chunk.data
        offset = chunk.offset
        if chunk.final or not chunk.data:
            return text, offset


def test_a_follower_reads_across_rotations(tmp_path: Path, model_dir: Path) -> None:
    with live_server(tmp_path / "home", None) as plane, plane.admin() as admin:
        admin.create_service(
            {
                "name": "rotating",
                "model_path": str(model_dir),
                "processor": "tensorflow_cpu",
                "metadata": {"instance": 0},
            }
        )
        folder = plane.home / "services" / "rotating" / "i-rotating"
        log = RotatingLog(folder / "instance.log", LogLimits(max_bytes=300, backups=5))
        log.write(lines(0, 20).encode())
        text, offset = read_from(admin, 0)
        assert text == lines(0, 20)

        log.write(lines(20, 100).encode())  # 880 bytes: three rotations
        assert (folder / "instance.log.3").exists()
        following, offset = read_from(admin, offset)
        assert following == lines(20, 100)
        assert offset == 1100


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A folder in the TF Serving layout; no instance ever loads it (0 instances)."""
    (tmp_path / "model" / "1").mkdir(parents=True)
    (tmp_path / "model" / "1" / "saved_model.pb").write_bytes(b"not loaded")
    return tmp_path / "model"
