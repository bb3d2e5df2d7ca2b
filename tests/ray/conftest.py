"""One Ray head per test session (per xdist worker), started on free loopback ports.

Ray is an extra (``liqi[ray]``): without it the tests here are skipped with the reason, except
in CI (``CI=true``), where a missing Ray is a failure, not a silent skip.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from liqi.client import Client
from tests.services.conftest import seeded_plane
from tests.support.ray_head import RayHead, ray_groups
from tests.support.servers import LiveServer, live_server


@pytest.fixture(scope="session")
def ray_head(request: pytest.FixtureRequest) -> Iterator[RayHead]:
    if importlib.util.find_spec("ray") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Ray is not installed (CI=true): scripts/setup-test-env installs it")
        pytest.skip("Ray is not installed: pip install 'liqi[ray]' (or scripts/setup-test-env)")
    head = RayHead.create()
    head.start()
    say(
        request,
        f"ray head: dashboard {head.dashboard_url}, started in {head.started_s:.1f} s, "
        f"{len(head.pids)} processes, {head.rss_mb()} MB summed RSS",
    )
    try:
        yield head
    finally:
        rss_mb = head.rss_mb()
        head.stop()
        say(
            request,
            f"ray head: {rss_mb} MB summed RSS at the end; stopped in {head.stopped_s:.1f} s",
        )


@pytest.fixture
def ray_server(ray_head: RayHead, tmp_path: Path) -> Iterator[LiveServer]:
    """A control plane whose default resource group is the Ray head (group ``ray``)."""
    with live_server(
        tmp_path / "home",
        None,
        isolation="none",
        resource_groups=ray_groups(ray_head),
        resource_group="ray",
    ) as live:
        yield live


@pytest.fixture(scope="module")
def plane(
    ray_head: RayHead, tmp_path_factory: pytest.TempPathFactory, mnist_saved_model: Path
) -> Iterator[LiveServer]:
    """The services tests' control plane (those of tests/services and tests/reliability that
    a module here re-runs), with every service on the Ray head by default."""
    home = tmp_path_factory.mktemp("ray-svc") / "home"
    groups = {"resource_groups": ray_groups(ray_head), "resource_group": "ray"}
    with seeded_plane(home, mnist_saved_model, **groups) as live:
        yield live


@pytest.fixture(scope="module")
def admin(plane: LiveServer) -> Iterator[Client]:
    with plane.admin() as client:
        yield client


def say(request: pytest.FixtureRequest, line: str) -> None:
    """A line on pytest's terminal (not captured); printed under xdist, which has none."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        print(line)
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(line)
