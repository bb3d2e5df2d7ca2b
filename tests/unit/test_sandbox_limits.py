"""Which sandbox limit a workload's error line names (pure: no sandbox is started)."""

from __future__ import annotations

from liqi.sandbox import SandboxPolicy
from liqi.sandbox.limits import explain_error

POLICY = SandboxPolicy(name="w", nofile=512, tmp_mb=64)


def test_too_many_open_files_names_nofile_and_its_value() -> None:
    hint = explain_error("OSError: [Errno 24] Too many open files: '/dev/null'", POLICY)
    assert "512 open files (nofile)" in hint


def test_no_space_names_the_size_of_tmp() -> None:
    hint = explain_error("OSError: [Errno 28] No space left on device", POLICY)
    assert "/tmp holds 64 MB (tmp_mb)" in hint


def test_other_errors_name_no_limit() -> None:
    assert explain_error("ValueError: bad input", POLICY) == ""
    assert explain_error("", POLICY) == ""
