"""What of a Ray job's log is the job's own output (pure: no Ray needed)."""

from __future__ import annotations

from pathlib import Path

from liqi.backends.ray_jobs import _user_output

PREAMBLE = "Running entrypoint for job liqi-j1: /usr/bin/python -m liqi.backends.ray_driver /x\n"


def test_nothing_is_output_before_ray_has_started_the_entrypoint() -> None:
    assert _user_output("") == b""
    assert _user_output("2026-12-07 INFO job_manager.py:581 -- Runtime env is setting up.\n") == b""
    assert _user_output(PREAMBLE[:20]) == b""


def test_the_output_starts_after_rays_own_lines() -> None:
    setup = "2026-12-07 INFO job_manager.py:581 -- Runtime env is setting up.\n"
    assert _user_output(setup + PREAMBLE) == b""
    assert _user_output(setup + PREAMBLE + "hello\nwor") == b"hello\nwor"


def test_the_jobs_own_copy_of_the_line_is_output() -> None:
    text = PREAMBLE + "x Running entrypoint for job y\nRunning entrypoint for job z\n"
    assert _user_output(text) == b"x Running entrypoint for job y\nRunning entrypoint for job z\n"


def test_non_ascii_output_is_kept_as_utf8() -> None:
    assert _user_output(PREAMBLE + "你好\n") == "你好\n".encode()


def test_the_log_is_copied_at_every_tick_until_the_first_output_then_at_the_interval(
    tmp_path: Path,
) -> None:
    """A user waits for the first line: until it is there the log is asked for at every
    call; afterwards at most every ``log_interval_s`` (and once more at the end)."""
    from liqi.backends.jobs import LaunchPlan, TaskSpec
    from liqi.backends.ray_jobs import RayJobBackend

    log = tmp_path / "chief.log"
    task = TaskSpec("chief", ("python", "x.py"), {}, str(tmp_path), str(log))
    (tmp_path / "plan.json").write_text(LaunchPlan("j1", str(tmp_path), (task,)).to_json())
    now = [0.0]
    backend = RayJobBackend("http://127.0.0.1:9", log_interval_s=1.0, clock=lambda: now[0])
    logs = [PREAMBLE]
    asked: list[float] = []

    class Client:
        def get_job_logs(self, ref: str) -> str:
            asked.append(now[0])
            return logs[0]

    backend._client = Client()  # type: ignore[assignment]
    for at in (0.1, 0.2, 0.3):
        now[0] = at
        backend._copy_logs("liqi-j1", tmp_path, final=False)
    assert asked == [0.1, 0.2, 0.3]  # nothing yet: asked every time
    logs[0] = PREAMBLE + "first\n"
    now[0] = 0.4
    backend._copy_logs("liqi-j1", tmp_path, final=False)
    assert log.read_text() == "first\n"
    logs[0] = PREAMBLE + "first\nsecond\n"
    for at in (0.5, 0.9, 1.3, 1.5):
        now[0] = at
        backend._copy_logs("liqi-j1", tmp_path, final=False)
    assert asked == [0.1, 0.2, 0.3, 0.4, 1.5]  # then at the interval
    now[0] = 1.6
    backend._copy_logs("liqi-j1", tmp_path, final=True)
    assert asked[-1] == 1.6
    assert log.read_text() == "first\nsecond\n"
