"""A log file bounded in size: ``server.log`` is written until the next write would make it
larger than ``max_bytes``; then it becomes ``server.log.1`` (``.1`` becomes ``.2``, and so on,
the oldest beyond ``backups`` is deleted) and a new ``server.log`` begins. A file ends on a
line break whenever the line fits; a single line longer than a whole file is split.

Readers follow the log by *log offset*: the number of bytes written to the log since it began,
rotations included (:mod:`liqi.logs.reading`). The first rotation writes the index
``.server.log.offsets``, which gives, by inode, the log offset at which each kept file starts;
a log that never rotated has no index and its file starts at offset 0. The index is replaced
atomically once the new file exists and before anything is written to it, so a reader always
finds the start of every file that holds data.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

MB = 1024 * 1024
DEFAULT_MAX_MB = 50.0
DEFAULT_BACKUPS = 3
MAX_BACKUPS = 100


@dataclass(frozen=True)
class LogLimits:
    """How large one log file grows (``max_bytes``, at least 1) and how many rotated files
    are kept besides it (``backups``; 0: the full file is discarded)."""

    max_bytes: int = int(DEFAULT_MAX_MB * MB)
    backups: int = DEFAULT_BACKUPS

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or not 0 <= self.backups <= MAX_BACKUPS:
            raise ValueError(
                f"LogLimits(max_bytes={self.max_bytes}, backups={self.backups}): max_bytes must "
                f"be at least 1 and backups 0 to {MAX_BACKUPS}."
            )

    @classmethod
    def from_mb(cls, max_mb: float, backups: int) -> LogLimits:
        return cls(max_bytes=max(1, int(max_mb * MB)), backups=backups)

    @property
    def max_mb(self) -> float:
        return self.max_bytes / MB


def backup_path(path: Path, number: int) -> Path:
    """``server.log.1`` for number 1 (the newest rotated file), and so on."""
    return path.with_name(f"{path.name}.{number}")


def index_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.offsets")


def read_index(path: Path) -> dict[int, int]:
    """The log offset at which each file of the log at ``path`` starts, by inode ({} when the
    log never rotated, or the index is unreadable)."""
    try:
        raw = json.loads(index_path(path).read_text())
        starts = raw["starts"]
        return {int(ino): int(start) for ino, start in starts.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _write_index(path: Path, starts: dict[int, int]) -> None:
    target = index_path(path)
    tmp = target.with_name(f"{target.name}.tmp")
    tmp.write_text(json.dumps({"starts": {str(ino): start for ino, start in starts.items()}}))
    os.replace(tmp, target)


class RotatingLog:
    """Appends bytes to ``path``, rotating it as :class:`LogLimits` say. One writer per log;
    the file may also be appended to by others (their bytes count towards its size).

    Raises OSError from :meth:`write` when the folder is not writable or the disk is full.
    """

    def __init__(self, path: Path, limits: LogLimits) -> None:
        self.path = path
        self.limits = limits
        self._fd = -1
        self._ino = 0
        self._start = 0

    def write(self, data: bytes) -> None:
        """Append ``data``; rotate first where it would not fit (between lines if it can)."""
        while data:
            self._ensure_open()
            size = os.fstat(self._fd).st_size
            room = self.limits.max_bytes - size
            if len(data) <= room:
                _write_all(self._fd, data)
                return
            cut = data.rfind(b"\n", 0, max(room, 0)) + 1  # the whole lines that fit
            if cut == 0 and size == 0:
                cut = room  # one line longer than a whole file: split it
            if cut:
                _write_all(self._fd, data[:cut])
                data = data[cut:]
            self.rotate()

    def rotate(self) -> None:
        """Start a new file now (the current one becomes ``.1``)."""
        self._ensure_open()
        size = os.fstat(self._fd).st_size
        old_ino, new_start = self._ino, self._start + size
        starts = {**read_index(self.path), old_ino: self._start}
        os.close(self._fd)
        self._fd = -1
        if self.limits.backups == 0:
            self.path.unlink(missing_ok=True)
        else:
            for number in range(self.limits.backups - 1, 0, -1):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(backup_path(self.path, number), backup_path(self.path, number + 1))
            os.replace(self.path, backup_path(self.path, 1))
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._ino, self._start = os.fstat(self._fd).st_ino, new_start
        kept = {self._ino: new_start}
        for number in range(1, self.limits.backups + 1):
            with contextlib.suppress(FileNotFoundError):
                ino = backup_path(self.path, number).stat().st_ino
                if ino in starts:
                    kept[ino] = starts[ino]
        _write_index(self.path, kept)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _ensure_open(self) -> None:
        """Open the file, again when it was moved or deleted by someone else."""
        if self._fd >= 0:
            try:
                if os.stat(self.path).st_ino == self._ino:
                    return
            except FileNotFoundError:
                pass
            self.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._ino = os.fstat(self._fd).st_ino
        starts = read_index(self.path)
        if self._ino in starts:
            self._start = starts[self._ino]
        elif starts:  # a file the index does not know (made by someone else): after the rest
            self._start = max(
                [*starts.values(), *(_end(self.path, n, starts) for n in range(1, MAX_BACKUPS))]
            )
            _write_index(self.path, {**starts, self._ino: self._start})
        else:
            self._start = 0


def _end(path: Path, number: int, starts: dict[int, int]) -> int:
    """The log offset after backup ``number`` (0 when it is absent or not indexed)."""
    try:
        st = backup_path(path, number).stat()
    except OSError:
        return 0
    start = starts.get(st.st_ino)
    return 0 if start is None else start + st.st_size


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
