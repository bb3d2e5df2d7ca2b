"""A 200 MB file through `liqi oss cp` both ways: streamed, so the server's memory stays flat."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import psutil
import pytest

from tests.e2e.test_daemon import liqi

pytestmark = pytest.mark.e2e
SIZE = 200 * 1024 * 1024
RSS_LIMIT = 200 * 1024 * 1024


class PeakRss:
    """Samples a process's resident memory until stopped; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def make_file(path: Path) -> str:
    digest = hashlib.sha256()
    block = os.urandom(1024 * 1024)
    with open(path, "wb") as fh:
        for i in range(SIZE // len(block)):
            chunk = block[:-4] + i.to_bytes(4, "big")
            digest.update(chunk)
            fh.write(chunk)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.mark.timeout(300)
def test_200mb_upload_and_download_stream(tmp_path: Path) -> None:
    home = tmp_path / "home"
    try:
        assert liqi(home, "server", "start", "--port", "0").returncode == 0
        pid = json.loads(liqi(home, "server", "status", "-o", "json").stdout)["pid"]
        assert liqi(home, "oss", "mb", "oss://big").returncode == 0
        source = tmp_path / "big.bin"
        expected = make_file(source)
        with PeakRss(pid) as upload:
            result = liqi(home, "oss", "cp", str(source), "oss://big/data/big.bin", timeout_s=240)
        assert result.returncode == 0, result.stderr
        assert "200.0 MiB" in result.stdout
        stored = home / "store" / "big" / "data" / "big.bin"
        assert stored.stat().st_size == SIZE
        back = tmp_path / "back.bin"
        with PeakRss(pid) as download:
            result = liqi(home, "oss", "cp", "oss://big/data/big.bin", str(back), timeout_s=240)
        assert result.returncode == 0, result.stderr
        assert sha256_of(back) == expected
        assert upload.peak < RSS_LIMIT, f"server peak RSS {upload.peak / 2**20:.0f} MiB on upload"
        assert download.peak < RSS_LIMIT, (
            f"server peak RSS {download.peak / 2**20:.0f} MiB on download"
        )
    finally:
        liqi(home, "server", "stop")
