"""RotatingLog (size-bounded files, whole lines, a bounded count) and reading the log back
across rotations by log offset (read_log, log_end, tail_lines)."""

from __future__ import annotations

from pathlib import Path

import pytest

from liqi.logs.reading import log_end, read_log, tail_lines
from liqi.logs.rotation import LogLimits, RotatingLog, backup_path

pytestmark = pytest.mark.timeout(30)


def lines(count: int, start: int = 0) -> list[bytes]:
    return [f"line {n:05d}\n".encode() for n in range(start, start + count)]  # 11 bytes each


def files_of(path: Path) -> list[Path]:
    """The log's files, oldest first."""
    found = [path] if path.exists() else []
    number = 1
    while backup_path(path, number).exists():
        found.insert(0, backup_path(path, number))
        number += 1
    return found


def kept(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in files_of(path))


def test_files_rotate_at_the_size_between_lines_and_their_count_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "server.log"
    log = RotatingLog(path, LogLimits(max_bytes=100, backups=2))
    written = lines(100)
    for line in written:
        log.write(line)
    log.close()

    assert files_of(path) == [backup_path(path, 2), backup_path(path, 1), path]
    assert not backup_path(path, 3).exists()
    for file in files_of(path):
        data = file.read_bytes()
        assert 0 < len(data) <= 100
        assert data.endswith(b"\n")  # whole lines: 9 of 11 bytes fit in 100
    everything = b"".join(written)
    assert everything.endswith(kept(path))  # complete and in order: the newest bytes
    assert len(kept(path)) > 200  # two full backups and the current file
    assert (tmp_path / ".server.log.offsets").exists()


def test_one_large_write_is_cut_into_files_and_a_long_line_is_split(tmp_path: Path) -> None:
    path = tmp_path / "instance.log"
    log = RotatingLog(path, LogLimits(max_bytes=100, backups=10))
    data = b"".join(lines(20)) + b"x" * 250 + b"\nend\n"
    log.write(data)
    log.close()
    assert kept(path) == data
    assert all(len(f.read_bytes()) <= 100 for f in files_of(path))
    assert path.read_bytes().endswith(b"end\n")


def test_without_backups_only_the_current_file_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "instance.log"
    log = RotatingLog(path, LogLimits(max_bytes=100, backups=0))
    for line in lines(50):
        log.write(line)
    log.close()
    assert files_of(path) == [path]
    assert path.read_bytes().endswith(b"line 00049\n")
    assert len(path.read_bytes()) <= 100


def test_a_follower_reads_every_byte_once_across_rotations(tmp_path: Path) -> None:
    path = tmp_path / "instance.log"
    log = RotatingLog(path, LogLimits(max_bytes=64, backups=3))
    followed = bytearray()
    offset = 0
    written = b""
    for batch in range(30):
        chunk = b"".join(lines(3, start=batch * 3))
        log.write(chunk)
        written += chunk
        while piece := read_log(path, offset, limit=50).data:  # smaller than a file
            followed += piece
            offset += len(piece)
    log.close()
    assert bytes(followed) == written
    assert offset == log_end(path) == len(written)


def test_a_read_from_before_the_oldest_kept_file_starts_there(tmp_path: Path) -> None:
    path = tmp_path / "instance.log"
    log = RotatingLog(path, LogLimits(max_bytes=64, backups=1))
    written = b"".join(lines(40))
    for line in lines(40):
        log.write(line)
    log.close()
    piece = read_log(path, 0, limit=10_000)
    assert piece.data == kept(path)
    assert written.endswith(piece.data)
    assert piece.offset == len(written)
    assert read_log(path, piece.offset, limit=10).data == b""


def test_a_new_writer_continues_the_log_offsets(tmp_path: Path) -> None:
    path = tmp_path / "server.log"
    first = RotatingLog(path, LogLimits(max_bytes=64, backups=3))
    first.write(b"".join(lines(10)))
    first.close()
    end = log_end(path)
    assert end == 110
    second = RotatingLog(path, LogLimits(max_bytes=64, backups=3))
    second.write(b"".join(lines(10, start=10)))
    second.close()
    assert read_log(path, end, limit=1000).data == b"".join(lines(10, start=10))
    assert log_end(path) == 220


def test_a_log_that_never_rotated_reads_as_its_file(tmp_path: Path) -> None:
    path = tmp_path / "instance.log"
    path.write_bytes(b"hello\nworld\n")
    assert read_log(path, 6, limit=100).data == b"world\n"
    assert log_end(path) == 12
    assert read_log(tmp_path / "missing.log", 0, limit=100).data == b""
    assert log_end(tmp_path / "missing.log") == 0


def test_tail_lines_reach_into_rotated_files(tmp_path: Path) -> None:
    path = tmp_path / "server.log"
    log = RotatingLog(path, LogLimits(max_bytes=40, backups=5))
    for line in lines(20):
        log.write(line)
    log.close()
    assert path.read_bytes().count(b"\n") < 8
    assert tail_lines(path, 8, chunk_bytes=16) == [f"line {n:05d}" for n in range(12, 20)]


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="max_bytes must be at least 1"):
        LogLimits(max_bytes=0, backups=1)
    assert LogLimits.from_mb(0.5, 2) == LogLimits(max_bytes=512 * 1024, backups=2)
