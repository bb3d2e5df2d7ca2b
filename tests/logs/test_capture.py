"""capture_output in real processes: a child's stdout and stderr (fd 1 and 2) go to a rotating
log through the writer process, rotate at the size, and keep their last lines: a traceback
before exit, and bytes written just before the process is killed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from liqi.logs.reading import read_log
from liqi.logs.rotation import backup_path

pytestmark = pytest.mark.timeout(60)

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from liqi.logs.capture import capture_output
    from liqi.logs.rotation import LogLimits

    log, ending, pid_file = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    pid_file.write_text(str(capture_output(log, LogLimits(max_bytes=4096, backups=2))))
    for n in range(2000):
        print(f"line {n:05d}")
    os.write(2, b"straight to fd 2\\n")
    if ending == "traceback":
        raise RuntimeError("the end")
    os.write(1, b"last words\\n")
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def run_child(tmp_path: Path, ending: str) -> tuple[subprocess.CompletedProcess[str], Path, int]:
    log = tmp_path / "logs" / "instance.log"
    pid_file = tmp_path / "writer.pid"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    done = subprocess.run(
        [sys.executable, str(script), str(log), ending, str(pid_file)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    return done, log, int(pid_file.read_text())


def whole_log(log: Path) -> str:
    return read_log(log, 0, limit=1 << 20).data.decode()


def test_a_child_writing_past_the_size_rotates_and_keeps_its_traceback(tmp_path: Path) -> None:
    done, log, _ = run_child(tmp_path, "traceback")
    assert done.returncode == 1
    assert done.stdout == done.stderr == ""  # all of it went to the log
    assert [p.name for p in sorted(log.parent.iterdir())] == [
        ".instance.log.offsets",
        "instance.log",
        "instance.log.1",
        "instance.log.2",
    ]
    for path in (log, backup_path(log, 1), backup_path(log, 2)):
        assert 0 < path.stat().st_size <= 4096
    text = whole_log(log)
    tail = text.splitlines()
    numbered = [line for line in tail if line.startswith("line ")]
    assert numbered == [f"line {n:05d}" for n in range(2000 - len(numbered), 2000)]
    assert len(numbered) > 2 * 4096 // 11
    after = tail[tail.index("line 01999") + 1 :]
    assert after[0] == "straight to fd 2"
    assert after[1] == "Traceback (most recent call last):"
    assert after[-1] == "RuntimeError: the end"


def test_bytes_written_just_before_a_kill_reach_the_log(tmp_path: Path) -> None:
    done, log, writer_pid = run_child(tmp_path, "kill")
    assert done.returncode == -9
    # The writer drains the pipe after the child is gone, then exits.
    deadline = time.monotonic() + 20
    while psutil.pid_exists(writer_pid) and time.monotonic() < deadline:
        try:
            if psutil.Process(writer_pid).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.02)
    assert whole_log(log).endswith("line 01999\nstraight to fd 2\nlast words\n")
