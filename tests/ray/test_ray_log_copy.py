"""What of a Ray job's log is the job's own output (pure: no Ray needed)."""

from __future__ import annotations

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
