"""``python -m liqi.logs.writer PATH MAX_BYTES BACKUPS``: copy standard input to the rotating
log at PATH (:class:`liqi.logs.rotation.RotatingLog`) until the end of input.

A process that captures its own output (:func:`liqi.logs.capture.capture_output`) starts one
and points its stdout and stderr at the pipe this process reads. The writer outlives its
writer's death, however it dies (a crash, ``os._exit``, SIGKILL), and writes out what is left
in the pipe: the last lines of a crash are not lost. It ignores SIGINT, SIGTERM and SIGHUP, which
reach it with its process group: it ends when the last process holding the pipe is gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path

from liqi.logs.rotation import LogLimits, RotatingLog

CHUNK_BYTES = 64 * 1024
USAGE = "usage: python -m liqi.logs.writer PATH MAX_BYTES BACKUPS\n"


def pump(fd: int, log: RotatingLog) -> None:
    """Copy ``fd`` to ``log`` until the end of input. Bytes that cannot be written (disk full,
    folder gone) are dropped, saying so once on stderr, and writing resumes when it can."""
    failing = False
    while data := os.read(fd, CHUNK_BYTES):
        try:
            log.write(data)
        except Exception as exc:  # never stop reading: the other side would block or break
            if not failing:
                _say(
                    f"liqi log writer: cannot write {log.path}: {exc}; dropping output until it can"
                )
            failing = True
        else:
            failing = False
    log.close()


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        sys.stderr.write(USAGE)
        return 2
    try:
        limits = LogLimits(max_bytes=int(argv[2]), backups=int(argv[3]))
    except ValueError as exc:
        sys.stderr.write(f"{USAGE}{exc}\n")
        return 2
    path = Path(argv[1]).absolute()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    pump(0, RotatingLog(path, limits))
    return 0


def _say(text: str) -> None:
    with contextlib.suppress(OSError):
        os.write(2, (text + "\n").encode(errors="replace"))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
