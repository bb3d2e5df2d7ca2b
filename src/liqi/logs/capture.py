"""A process sends its own output to a rotating log file: :func:`capture_output`.

Everything written to file descriptors 1 and 2 is captured (Python's ``print`` and logging,
uvicorn, TensorFlow's C++ logging, a crash's traceback or ``faulthandler`` dump, and child
processes that inherit them): they are pointed at a pipe read by a writer process
(:mod:`liqi.logs.writer`) that this process starts. The writer is this process's child, in its
process group, and needs nothing else alive: an instance keeps logging after the control plane
that started it is gone. Because the writer is a separate process, bytes already in the pipe
are written even when this process dies without warning. On a normal exit this process waits
(briefly) for the writer to have written everything, so a reader that sees it gone finds its
last lines in the file.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import os
import subprocess
import sys
from pathlib import Path

from liqi.logs.rotation import LogLimits

DRAIN_TIMEOUT_S = 5.0
_PIPE_BYTES = 1024 * 1024


def writer_command(path: Path, limits: LogLimits) -> list[str]:
    return [
        sys.executable, "-m", "liqi.logs.writer",
        str(path.absolute()), str(limits.max_bytes), str(limits.backups),
    ]  # fmt: skip


def capture_output(path: Path, limits: LogLimits) -> int:
    """Send this process's fd 1 and 2 to the rotating log at ``path`` from now on; returns the
    writer's pid.

    Raises:
        OSError: the writer could not be started; the output goes where it went before.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    path.parent.mkdir(parents=True, exist_ok=True)
    read_end, write_end = os.pipe()
    try:
        with contextlib.suppress(OSError, AttributeError):  # Linux: room for bursts
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        # Its folder is "/" from the start: not the folder of the process it writes for,
        # by which instances are found.
        writer = subprocess.Popen(writer_command(path, limits), stdin=read_end, cwd="/")
        os.dup2(write_end, 1)
        os.dup2(write_end, 2)
    finally:
        os.close(read_end)
        os.close(write_end)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    atexit.register(_drain, writer)
    return writer.pid


def _drain(writer: subprocess.Popen[bytes], timeout_s: float = DRAIN_TIMEOUT_S) -> None:
    """At exit: flush everything, close our end of the pipe and wait for the writer to finish
    (up to ``timeout_s``: a child process may still hold the pipe)."""
    logging.shutdown()  # handlers flush (and write what they held back) while the pipe is open
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.close(null)
    with contextlib.suppress(subprocess.TimeoutExpired):
        writer.wait(timeout=timeout_s)
