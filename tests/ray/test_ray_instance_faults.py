"""Instances failing on a Ray resource group: the test of
tests/reliability/test_instance_faults.py that SIGKILLs one of two instances under load, run
unchanged against a control plane whose default group is the session's Ray head (each instance
a detached actor running ``liqi serve``): clients see no error, the instance comes back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from liqi.client import Client
from tests.ray.test_ray_services import ray_groups
from tests.reliability.test_instance_faults import (  # noqa: F401  (the same test, on Ray)
    mnist_digits,
    mnist_service,
    report,
    test_a_sigkilled_instance_under_load_costs_no_client_a_request,
)
from tests.services.conftest import seeded_plane
from tests.support.ray_head import RayHead
from tests.support.servers import LiveServer

pytestmark = [pytest.mark.timeout(300), pytest.mark.tf, pytest.mark.reliability]


@pytest.fixture(scope="module")
def plane(
    ray_head: RayHead, tmp_path_factory: pytest.TempPathFactory, mnist_saved_model: Path
) -> Iterator[LiveServer]:
    """The instance-fault tests' control plane, with every service on the Ray head."""
    home = tmp_path_factory.mktemp("ray-faults") / "home"
    groups = {"resource_groups": ray_groups(ray_head), "resource_group": "ray"}
    with seeded_plane(home, mnist_saved_model, **groups) as live:
        yield live


@pytest.fixture(scope="module")
def admin(plane: LiveServer) -> Iterator[Client]:
    with plane.admin() as client:
        yield client
