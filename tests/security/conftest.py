"""Fixtures of the security tests: a machine that can sandbox, and a project's member (not a
superuser) on a live control plane, whose code is the hostile one."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from liqi.client import Client
from liqi.sandbox import sandbox_available
from tests.support.servers import LiveServer, kill_instances, live_server

MEMBER_PROJECT = "members"


@pytest.fixture
def require_sandbox() -> None:
    """Fail (never skip) on a machine that cannot sandbox, with the reason."""
    ok, reason = sandbox_available()
    assert ok, f"this machine cannot sandbox workloads: {reason}"


@dataclass
class Member:
    """A member of project :data:`MEMBER_PROJECT` on ``live``; local processor paths are
    allowed under ``code`` (LIQI_LOCAL_MODEL_ROOTS)."""

    live: LiveServer
    admin: Client
    client: Client
    project: str
    code: Path


@pytest.fixture
def member(tmp_path: Path) -> Iterator[Member]:
    code = tmp_path / "code"
    code.mkdir()
    home = tmp_path / "home"
    with live_server(home, None, local_model_roots=(code,)) as live, live.admin() as admin:
        try:
            admin.create_project(MEMBER_PROJECT)
            key = admin.create_key(project=MEMBER_PROJECT, role="member", name="mallory")
            assert key.secret
            with live.client(key.access_id, key.secret) as client:
                yield Member(live, admin, client, MEMBER_PROJECT, code)
        finally:
            kill_instances(home)  # instances outlive the control plane: none may outlive a test
