"""Member code run through a live control plane: deploying a Python processor, and finding
what is left of a workload afterwards (its processes, its cgroups)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import psutil

from liqi.client import Client
from liqi.client.services import ServiceInfo
from liqi.sandbox.cgroups import detect_layout
from tests.support.waiting import wait_until


def processes_in(folder: str | Path) -> list[int]:
    """The live (not zombie) processes whose working folder is ``folder``."""
    found = []
    for process in psutil.process_iter(["cwd", "status"]):
        if process.info.get("cwd") == str(folder) and process.info["status"] != "zombie":
            found.append(process.pid)
    return found


def workload_cgroups(prefix: str) -> list[Path]:
    """The workload cgroups (every controller's folder) whose name starts with ``prefix``."""
    layout = detect_layout()
    assert not isinstance(layout, str), layout
    found: list[Path] = []
    for base in layout.bases.values():
        if base.is_dir():
            found += [p for p in base.iterdir() if p.is_dir() and p.name.startswith(prefix)]
    return found


def deploy_processor(
    client: Client,
    name: str,
    folder: Path,
    code: str,
    *,
    project: str | None = None,
    metadata: dict[str, object] | None = None,
    timeout_s: float = 120.0,
) -> ServiceInfo:
    """Create service ``name`` whose Python processor is ``code`` (written to
    ``folder/app.py``) and wait until it is RUNNING."""
    folder.mkdir(parents=True)
    (folder / "app.py").write_text(textwrap.dedent(code))
    spec = {
        "name": name,
        "generate_token": "false",
        "processor_type": "python",
        "processor_path": str(folder),
        "processor_entry": "app.py",
        "metadata": {"instance": 1, **(metadata or {})},
    }
    client.create_service(spec, project=project)
    found: list[ServiceInfo] = []

    def running() -> bool:
        found[:] = [client.get_service(name)]
        return found[0].state == "RUNNING"

    try:
        wait_until(running, f"service {name} RUNNING", timeout_s=timeout_s, interval_s=0.2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen: {found[-1] if found else None}") from None
    return found[0]
