"""A cgroup per workload: memory (and swap), pids and CPU limits over every descendant.

Both layouts are supported. cgroup v2 (the unified hierarchy, at ``/sys/fs/cgroup`` or at
``/sys/fs/cgroup/unified`` beside v1) is used when it has the ``memory`` and ``pids``
controllers; otherwise cgroup v1, one folder per controller (``memory``, ``pids``, ``cpu``).
A workload's cgroup is made under the control plane's own cgroup (``.../liqi/<name>``), so the
limits the control plane was given still hold over its workloads.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from liqi.errors import BackendError

ROOT = Path("/sys/fs/cgroup")
MB = 1024 * 1024
CPU_PERIOD_US = 100_000
V1_CONTROLLERS = ("memory", "pids", "cpu")


@dataclass(frozen=True)
class Layout:
    """Where the workload cgroups go: one base folder (v2) or one per controller (v1)."""

    version: int
    bases: dict[str, Path]  # controller -> the folder under which workloads' cgroups are made


def detect_layout(root: Path = ROOT) -> Layout | str:
    """The layout to use, or why there is none."""
    own = _own_cgroups()
    for unified in (root, root / "unified"):
        controllers = _read(unified / "cgroup.controllers")
        if controllers is not None and {"memory", "pids"} <= set(controllers.split()):
            base = unified / own.get("", "/").lstrip("/") / "liqi"
            return Layout(2, {"": base})
    bases = {}
    for name in V1_CONTROLLERS:
        mount = root / name
        if not (mount / "tasks").exists():
            if name == "cpu":
                continue  # CPU limits are optional
            return f"no cgroup v2 with memory and pids, and no cgroup v1 '{name}' at {mount}"
        bases[name] = mount / own.get(name, "/").lstrip("/") / "liqi"
    return Layout(1, bases)


class Cgroup:
    """One workload's cgroup (a folder per controller with v1)."""

    def __init__(self, layout: Layout, name: str) -> None:
        self.layout = layout
        self.name = name
        self.dirs = {ctl: base / name for ctl, base in layout.bases.items()}

    @property
    def procs_files(self) -> list[str]:
        """The files a process writes its pid to, to join this cgroup."""
        return [str(d / "cgroup.procs") for d in self.dirs.values()]

    def create(self, memory_mb: int | None, pids_max: int | None, cpu: float | None) -> None:
        try:
            if self.layout.version == 2:
                self._make_v2()
            else:
                for folder in self.dirs.values():
                    folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self.remove()
            raise BackendError(f"Cannot create the workload's cgroup {self.name}: {exc}") from None
        try:
            self.set_limits(memory_mb, pids_max, cpu)
        except BackendError:
            self.remove()
            raise

    def set_limits(self, memory_mb: int | None, pids_max: int | None, cpu: float | None) -> None:
        """Set the limits (None: leave as they are); they may change while it runs (a
        standby server gets its instance's limits when it becomes one)."""
        try:
            if self.layout.version == 2:
                self._limits_v2(memory_mb, pids_max, cpu)
            else:
                self._limits_v1(memory_mb, pids_max, cpu)
        except OSError as exc:
            raise BackendError(
                f"Cannot set the limits of the workload's cgroup {self.name}: {exc}"
            ) from None

    def _make_v2(self) -> None:
        path = self.dirs[""]
        base = path.parent
        base.mkdir(exist_ok=True)
        available = set((_read(base.parent / "cgroup.controllers") or "").split())
        wanted = [c for c in ("memory", "pids", "cpu") if c in available]
        for folder in (base.parent, base):
            (folder / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in wanted))
        path.mkdir(exist_ok=True)

    def _limits_v2(self, memory_mb: int | None, pids_max: int | None, cpu: float | None) -> None:
        path = self.dirs[""]
        if memory_mb is not None:
            (path / "memory.max").write_text(str(memory_mb * MB))
            with contextlib.suppress(FileNotFoundError):
                (path / "memory.swap.max").write_text("0")
        if pids_max is not None:
            (path / "pids.max").write_text(str(pids_max))
        if cpu is not None and (path / "cpu.max").exists():
            (path / "cpu.max").write_text(f"{int(cpu * CPU_PERIOD_US)} {CPU_PERIOD_US}")

    def _limits_v1(self, memory_mb: int | None, pids_max: int | None, cpu: float | None) -> None:
        memory = self.dirs["memory"]
        if memory_mb is not None:
            (memory / "memory.limit_in_bytes").write_text(str(memory_mb * MB))
            # memory+swap at the same value: no swapping past the limit
            with contextlib.suppress(FileNotFoundError):
                (memory / "memory.memsw.limit_in_bytes").write_text(str(memory_mb * MB))
        if pids_max is not None:
            (self.dirs["pids"] / "pids.max").write_text(str(pids_max))
        if cpu is not None and "cpu" in self.dirs:
            period = self.dirs["cpu"] / "cpu.cfs_period_us"
            period.write_text(str(CPU_PERIOD_US))
            (self.dirs["cpu"] / "cpu.cfs_quota_us").write_text(str(int(cpu * CPU_PERIOD_US)))

    def memory_bytes(self) -> int:
        """The memory its processes use now (0 when the kernel does not say)."""
        if self.layout.version == 2:
            text = _read(self.dirs[""] / "memory.current")
        else:
            text = _read(self.dirs["memory"] / "memory.usage_in_bytes")
        return int(text) if text and text.strip().isdigit() else 0

    def pids(self) -> set[int]:
        found: set[int] = set()
        for folder in self.dirs.values():
            text = _read(folder / "cgroup.procs") or ""
            found.update(int(line) for line in text.split())
        return found

    def kill(self, timeout_s: float = 10.0) -> None:
        """SIGKILL every member (forked-away ones too) and wait until none is left."""
        deadline = time.monotonic() + timeout_s
        kill_file = self.dirs.get("", Path("/nonexistent")) / "cgroup.kill"
        while True:
            members = self.pids()
            if not members:
                return
            if kill_file.exists():
                with contextlib.suppress(OSError):
                    kill_file.write_text("1")
            for pid in members:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                raise BackendError(
                    f"Cannot empty the workload's cgroup {self.name}: pids {sorted(members)}"
                )
            time.sleep(0.01)

    def remove(self) -> None:
        """Kill what is left and delete the cgroup's folders."""
        with contextlib.suppress(BackendError):
            self.kill()
        for folder in self.dirs.values():
            for _ in range(100):
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)  # the last members are still being reaped
            with contextlib.suppress(OSError):
                folder.parent.rmdir()  # the shared base, when no other workload is in it

    def peak_memory_bytes(self) -> int:
        """The most memory the workload used at once (0 when the kernel does not say)."""
        if self.layout.version == 2:
            text = _read(self.dirs[""] / "memory.peak")
        else:
            text = _read(self.dirs["memory"] / "memory.max_usage_in_bytes")
        return int(text) if text and text.strip().isdigit() else 0

    def limit_reason(self, memory_setting: str = "memory_mb") -> str | None:
        """Why the kernel stopped the workload: its memory limit (named as the user sets it,
        ``memory_setting``) or its process limit, or None."""
        if self.layout.version == 2:
            folder = self.dirs[""]
            memory = _counters(folder / "memory.events")
            pids = _counters(folder / "pids.events")
            oom = memory.get("oom_kill", 0) > 0
            limit = _read(folder / "memory.max")
            pids_hit = pids.get("max", 0) > 0
            pids_limit = _read(folder / "pids.max")
        else:
            memory_dir = self.dirs["memory"]
            oom = _counters(memory_dir / "memory.oom_control").get("oom_kill", 0) > 0
            limit = _read(memory_dir / "memory.limit_in_bytes")
            pids_hit = _counters(self.dirs["pids"] / "pids.events").get("max", 0) > 0
            pids_limit = _read(self.dirs["pids"] / "pids.max")
        if oom:
            mb = int(limit) // MB if limit and limit.strip().isdigit() else None
            return f"out of memory: killed at its limit of {mb} MB ({memory_setting})"
        if pids_hit:
            count = (pids_limit or "").strip()
            return (
                f"process limit reached: {count} processes and threads (the sandbox's "
                "pids_max); start fewer"
            )
        return None


def sweep_stale(layout: Layout | None = None, min_age_s: float = 5.0) -> int:
    """Remove workload cgroups left empty by a supervisor that was killed before it could
    (a cgroup with a process in it cannot be removed, so a running workload's stays); the
    young ones are skipped: their process may be about to join. Returns how many went."""
    found = layout or detect_layout()
    if isinstance(found, str):
        return 0
    removed = 0
    now = time.time()
    for base in found.bases.values():
        try:
            children = [p for p in base.iterdir() if p.is_dir()]
        except OSError:
            continue
        for child in children:
            try:
                members = _read(child / "cgroup.procs")
                if members is None or members.strip() or now - child.stat().st_mtime < min_age_s:
                    continue
                child.rmdir()
                removed += 1
            except OSError:
                continue
    return removed


def _own_cgroups() -> dict[str, str]:
    """controller -> this process's cgroup path ('' for the unified hierarchy)."""
    found: dict[str, str] = {}
    for line in (_read(Path("/proc/self/cgroup")) or "").splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(","):
            found[name] = path
    return found


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _counters(path: Path) -> dict[str, int]:
    found: dict[str, int] = {}
    for line in (_read(path) or "").splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            found[key] = int(value)
    return found
