"""Reading a log that :class:`liqi.logs.rotation.RotatingLog` writes, across its rotations.

Positions are *log offsets*: bytes written since the log began, so a follower that keeps the
offset of its last read never misses or repeats a byte when the file rotates under it. For a
log that never rotated the log offset is the file offset. Bytes rotated away are gone: a read
from before the oldest kept file starts there.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from liqi.logs.rotation import MAX_BACKUPS, backup_path, read_index

_ATTEMPTS = 5


@dataclass(frozen=True)
class LogPiece:
    data: bytes
    offset: int  # the log offset after ``data``: where the next read continues


@dataclass(frozen=True)
class _Segment:
    file: BinaryIO
    start: int  # log offset of the file's first byte
    size: int


def read_log(path: Path, offset: int, limit: int) -> LogPiece:
    """Up to ``limit`` bytes of the log at ``path`` from log offset ``offset``, across the files
    it rotated into; empty at the end of the log (or when there is no log)."""
    with _segments(path) as segments:
        if not segments:
            return LogPiece(b"", max(offset, 0))
        position = max(offset, segments[0].start)
        out = bytearray()
        for segment in segments:
            end = segment.start + segment.size
            if position >= end:
                continue
            if position < segment.start:  # a gap: bytes no file keeps
                if out:
                    break
                position = segment.start
            segment.file.seek(position - segment.start)
            chunk = segment.file.read(min(limit - len(out), end - position))
            out += chunk
            position += len(chunk)
            if len(out) >= limit:
                break
        return LogPiece(bytes(out), max(position, offset))


def log_end(path: Path) -> int:
    """The log offset after the last byte written so far (0 when there is no log)."""
    with _segments(path) as segments:
        return segments[-1].start + segments[-1].size if segments else 0


def read_tail(path: Path, max_bytes: int) -> bytes:
    """The last ``max_bytes`` of the log (fewer when it holds fewer), across rotations."""
    end = log_end(path)
    piece = read_log(path, max(0, end - max_bytes), max_bytes)
    return piece.data


def tail_lines(path: Path, count: int, *, chunk_bytes: int = 64 * 1024) -> list[str]:
    """The last ``count`` lines of the log (text, undecodable bytes replaced)."""
    if count <= 0:
        return []
    want = chunk_bytes
    while True:
        data = read_tail(path, want)
        lines = data.decode("utf-8", errors="replace").splitlines()
        if len(lines) > count or len(data) < want:
            return lines[-count:]
        want *= 4


@contextlib.contextmanager
def _segments(path: Path) -> Iterator[list[_Segment]]:
    """The log's kept files with the log offset each starts at, oldest first, opened: the
    same set of files by name before and after they were opened (else read again)."""
    for attempt in range(_ATTEMPTS):
        opened: list[tuple[Path, BinaryIO]] = []
        try:
            for candidate in [path, *(backup_path(path, n) for n in range(1, MAX_BACKUPS + 1))]:
                try:
                    opened.append((candidate, open(candidate, "rb")))  # noqa: SIM115 - closed below
                except FileNotFoundError:
                    if candidate != path:
                        break
            found = [(name, file, os.fstat(file.fileno())) for name, file in opened]
            if attempt < _ATTEMPTS - 1 and not _still_there(found):
                continue  # rotated while opening: open them again
            yield _placed(path, found, read_index(path))
            return
        finally:
            for _, file in opened:
                file.close()


_Found = list[tuple[Path, BinaryIO, os.stat_result]]


def _still_there(found: _Found) -> bool:
    for name, _, st in found:
        try:
            if os.stat(name).st_ino != st.st_ino:
                return False
        except FileNotFoundError:
            return False
    return True


def _placed(path: Path, found: _Found, starts: dict[int, int]) -> list[_Segment]:
    """Segments for the opened files whose start is known, oldest first. Without an index the
    log never rotated: the current file starts at 0 and others are not this log's."""
    segments: list[_Segment] = []
    for name, file, st in found:
        start = starts.get(st.st_ino) if starts else (0 if name == path else None)
        if start is not None:
            segments.append(_Segment(file, start, st.st_size))
    segments.sort(key=lambda s: s.start)
    # A file's bytes end where the next file's start (a late writer's bytes are ignored).
    trimmed = [
        _Segment(s.file, s.start, min(s.size, nxt.start - s.start))
        for s, nxt in itertools.pairwise(segments)
    ]
    return [*trimmed, *segments[-1:]] if segments else []


_ERROR_LINE = re.compile(r"^(Error: |[\w.]*(Error|Exception)\b)")
_TAIL_BYTES = 16 * 1024


def last_error_line(log: Path) -> str:
    """The last error line of a log (the CLI's ``Error: ...``, an exception's last line),
    else its last line; '' when it cannot be read."""
    try:
        tail = read_tail(log, _TAIL_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return ""
    return last_error_in(tail)


def last_error_in(text: str) -> str:
    """The last error line of ``text`` (see :func:`last_error_line`), else its last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if _ERROR_LINE.match(line)]
    chosen = errors[-1] if errors else (lines[-1] if lines else "")
    return chosen[:500]
