"""Which cgroup layout the sandbox uses, and how it reads a limit's reason, on fake trees of
both kinds (this machine has v1 only, so v2 is checked here on files)."""

from __future__ import annotations

from pathlib import Path

from liqi.sandbox.cgroups import Cgroup, Layout, detect_layout


def test_v2_with_memory_and_pids_is_preferred(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    for name in ("memory", "pids", "cpu"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "tasks").write_text("")
    layout = detect_layout(tmp_path)
    assert isinstance(layout, Layout)
    assert layout.version == 2
    assert list(layout.bases) == [""]


def test_v1_when_the_unified_tree_lacks_the_controllers(tmp_path: Path) -> None:
    (tmp_path / "unified").mkdir()
    (tmp_path / "unified" / "cgroup.controllers").write_text("hugetlb\n")
    for name in ("memory", "pids", "cpu"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "tasks").write_text("")
    layout = detect_layout(tmp_path)
    assert isinstance(layout, Layout)
    assert layout.version == 1
    assert set(layout.bases) == {"memory", "pids", "cpu"}


def test_no_layout_says_why(tmp_path: Path) -> None:
    reason = detect_layout(tmp_path)
    assert isinstance(reason, str)
    assert "memory" in reason


def test_v2_reasons_come_from_the_event_files(tmp_path: Path) -> None:
    cgroup = Cgroup(Layout(2, {"": tmp_path}), "w")
    folder = tmp_path / "w"
    folder.mkdir()
    (folder / "memory.max").write_text(str(64 * 1024 * 1024))
    (folder / "memory.events").write_text("low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\n")
    (folder / "pids.events").write_text("max 0\n")
    assert cgroup.limit_reason() == "out of memory: killed at its limit of 64 MB (memory_mb)"
    assert cgroup.limit_reason("metadata.memory").endswith("64 MB (metadata.memory)")
    (folder / "memory.events").write_text("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n")
    (folder / "pids.events").write_text("max 3\n")
    (folder / "pids.max").write_text("20\n")
    assert cgroup.limit_reason() == (
        "process limit reached: 20 processes and threads (the sandbox's pids_max); start fewer"
    )
