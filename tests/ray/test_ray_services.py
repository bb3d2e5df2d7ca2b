"""Services on a Ray resource group: the tests of tests/services/test_services_live.py, run
unchanged against a control plane whose default group is the session's Ray head (each
instance a detached actor running ``liqi serve``), and what only a cluster has: Ray's own
listing of the instances, re-adoption by actor name after a control-plane restart, and an
instance on a lost node replaced while clients see no error."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest

from liqi.backends.ray_instance_actor import NAMESPACE
from liqi.client import Client
from liqi.datasets.mnist_reader import builtin_dir, read_data_sets
from liqi.errors import InvalidRequestError
from tests.services.conftest import (
    PROJECT,
    seed_model,
    seed_spec,
    wait_running,
    wait_until,
)
from tests.services.test_services_live import (  # noqa: F401  (the same tests, on Ray)
    Hammer,
    _pid_of,
    test_a_killed_instance_is_restarted_and_the_crash_is_kept,
    test_memory_over_the_limit_fails_the_service,
    test_modify_and_scale_under_load_fail_no_request,
    test_scale_to_zero_holds_the_first_request,
    test_stop_start_and_delete,
    test_the_seed_spec_deploys_and_answers_through_the_gateway,
)
from tests.support.ray_head import RayHead, ray_groups
from tests.support.servers import LiveServer, kill_instances, live_server

pytestmark = [pytest.mark.timeout(300), pytest.mark.tf]


@contextlib.contextmanager
def ray_plane(home: Path, head: RayHead) -> Iterator[LiveServer]:
    with live_server(home, None, resource_groups=ray_groups(head), resource_group="ray") as live:
        yield live


@pytest.fixture(scope="module")
def mnist_digits() -> tuple[np.ndarray, np.ndarray]:
    test = read_data_sets(str(builtin_dir())).test
    return test.images[:50].astype(np.float32), test.labels[:50]


def liqi_actors(head: RayHead, **filters: str) -> list[dict[str, Any]]:
    """liqi's actors as Ray's State API (what ``ray list actors`` shows) lists them."""
    params: list[tuple[str, str]] = [("detail", "true"), ("limit", "1000")]
    for key, value in {"ray_namespace": NAMESPACE, **filters}.items():
        params += [("filter_keys", key), ("filter_predicates", "="), ("filter_values", value)]
    answer = httpx.get(f"{head.dashboard_url}/api/v0/actors", params=params, timeout=30)
    answer.raise_for_status()
    found: list[dict[str, Any]] = answer.json()["data"]["result"]["result"]
    return found


def actor_of(head: RayHead, instance_id: str) -> dict[str, Any]:
    alive = [
        a
        for a in liqi_actors(head, state="ALIVE")
        if str(a["name"]).startswith(f"liqi-{instance_id}-")
    ]
    assert len(alive) == 1, alive
    return alive[0]


def test_ray_lists_each_instance_as_a_detached_actor_sized_by_the_spec(
    plane: LiveServer, admin: Client, ray_head: RayHead
) -> None:
    spec = seed_spec("ray_sized", metadata={"instance": 2, "cpu": 2, "memory": 1500})
    spec["generate_token"] = "true"
    token = admin.create_service(spec, project=PROJECT).token
    assert token
    info = wait_running(admin, "ray_sized")
    assert info.instances_ready == 2
    # The token and the workload key are nowhere Ray shows (`ray job list`: entrypoints,
    # metadata, runtime envs), and the file that carried them to the launch job is gone.
    from ray.job_submission import JobSubmissionClient

    jobs = JobSubmissionClient(ray_head.dashboard_url).list_jobs()
    listed = json.dumps([j.model_dump(mode="json") for j in jobs])
    assert "ray_sized" in listed
    assert token not in listed
    assert "LIQI_ACCESS_KEY" not in listed
    folders = plane.home / "services" / "ray_sized"
    assert not list(folders.rglob("launch.json"))
    for instance in info.instances:
        actor = actor_of(ray_head, instance.id)
        assert actor["is_detached"] is True
        assert actor["class_name"] == "InstanceActor"
        assert actor["required_resources"]["CPU"] == 2.0
        assert actor["required_resources"]["memory"] == 1500 * 2**20
        assert actor["repr_name"] == f"LiqiInstance({instance.url})"
        # The server runs at the normal priority, not at Ray workers' nice 15.
        assert psutil.Process(_pid_of(plane, instance.id)).nice() == 0
    admin.delete_service("ray_sized")
    admin.wait_service_deleted("ray_sized", timeout_s=90)
    names = {a["name"] for a in liqi_actors(ray_head, state="ALIVE")}
    assert not {n for n in names if "ray_sized" in n}
    # Their launch jobs are gone from Ray's job list (the stop jobs too, once ended).
    launches = [
        j.submission_id
        for j in JobSubmissionClient(ray_head.dashboard_url).list_jobs()
        if "ray_sized" in (j.submission_id or "") and not (j.submission_id or "").endswith("-stop")
    ]
    assert launches == []


def test_an_unknown_resource_group_is_refused_naming_the_groups(admin: Client) -> None:
    spec = seed_spec("ray_nowhere", metadata={"instance": 1, "resource": "eas-r-123"})
    with pytest.raises(InvalidRequestError) as caught:
        admin.create_service(spec, project=PROJECT)
    assert "'eas-r-123'" in str(caught.value)
    assert "local, ray" in str(caught.value)
    assert "ray_nowhere" not in {s.name for s in admin.list_services()}
    # An instance no node could take (the head has 8 CPUs) would wait in Ray for ever.
    big = seed_spec("ray_too_big", metadata={"instance": 1, "cpu": 64, "memory": 2000})
    with pytest.raises(InvalidRequestError) as caught:
        admin.create_service(big, project=PROJECT)
    assert "asks for 64 CPU and 2000 MB, and no node of resource group 'ray'" in str(caught.value)
    assert "ray_too_big" not in {s.name for s in admin.list_services()}
    # The same check on the whole spec at every modify: growing past every node is refused.
    admin.create_service(seed_spec("ray_grows", metadata={"instance": 0}), project=PROJECT)
    try:
        with pytest.raises(InvalidRequestError, match="asks for 64 CPU"):
            admin.modify_service("ray_grows", {"metadata": {"cpu": 64}})
        assert admin.get_service("ray_grows").latest_version == 1
    finally:
        admin.delete_service("ray_grows")


@pytest.mark.parametrize("how", ["metadata.resource", "project default"])
def test_one_service_on_ray_and_another_locally(
    ray_head: RayHead, tmp_path: Path, mnist_saved_model: Path, how: str
) -> None:
    """A server whose default is local: ``metadata.resource`` alone moves a service; or the
    project's default group (LIQI_PROJECT_RESOURCE_GROUPS) does, and ``local`` keeps one."""
    home = tmp_path / "home"
    by_project = how == "project default"
    try:
        with (
            live_server(
                home,
                None,
                resource_groups=ray_groups(ray_head),
                project_groups=f"{PROJECT}=ray" if by_project else "",
            ) as live,
            live.admin() as client,
        ):
            seed_model(client, mnist_saved_model)
            on_ray = seed_spec("on_ray", metadata={"instance": 1, "resource": "ray"})
            on_local = seed_spec("on_local")
            if by_project:
                on_ray = seed_spec("on_ray")
                on_local = seed_spec("on_local", metadata={"resource": "local"})
            client.create_service(on_ray, project=PROJECT)
            client.create_service(on_local, project=PROJECT)
            ray_info = wait_running(client, "on_ray")
            local_info = wait_running(client, "on_local")
            assert liqi_actors(ray_head, state="ALIVE", class_name="InstanceActor")
            actor_of(ray_head, ray_info.instances[0].id)
            with pytest.raises(AssertionError):
                actor_of(ray_head, local_info.instances[0].id)
            for name in ("on_ray", "on_local"):
                answer = httpx.get(f"{live.url}/api/predict/{name}", timeout=30)
                assert answer.status_code == 200, answer.text
                client.delete_service(name)
            for name in ("on_ray", "on_local"):
                client.wait_service_deleted(name, timeout_s=90)
    finally:
        kill_instances(home)


def test_a_restarted_control_plane_readopts_its_ray_instances(
    ray_head: RayHead, tmp_path: Path, mnist_saved_model: Path
) -> None:
    home = tmp_path / "home"
    try:
        with ray_plane(home, ray_head) as first, first.admin() as client:
            seed_model(client, mnist_saved_model)
            client.create_service(seed_spec("adopted"), project=PROJECT)
            before = wait_running(client, "adopted").instances[0]
            actor = actor_of(ray_head, before.id)
        # The control plane is gone; the actor and its server are not.
        assert httpx.get(f"{before.url}/readyz", timeout=10).status_code == 200
        with ray_plane(home, ray_head) as second, second.admin() as client:
            after = wait_running(client, "adopted").instances[0]
            assert (after.id, after.url, after.restarts) == (before.id, before.url, 0)
            assert actor_of(ray_head, after.id)["actor_id"] == actor["actor_id"]
            answer = httpx.get(f"{second.url}/api/predict/adopted", timeout=30)
            assert answer.status_code == 200, answer.text
            client.delete_service("adopted")
            client.wait_service_deleted("adopted", timeout_s=90)
    finally:
        kill_instances(home)


def cluster_state(head: RayHead) -> str:
    """What Ray says of its nodes and liqi's actors: the message of a failed wait."""
    nodes = httpx.get(f"{head.dashboard_url}/api/v0/nodes?detail=true", timeout=30).json()
    actors = liqi_actors(head)
    return json.dumps(
        {
            "nodes": [
                (n["state"], n.get("resources_total")) for n in nodes["data"]["result"]["result"]
            ],
            "actors": [(a["name"], a["state"], a.get("required_resources")) for a in actors],
        }
    )


def test_an_instance_on_a_lost_node_is_replaced_and_clients_see_no_error(
    plane: LiveServer,
    admin: Client,
    ray_head: RayHead,
    mnist_digits: tuple[np.ndarray, np.ndarray],
) -> None:
    # Two instances of 5 CPUs cannot share the head (8 CPUs): one lands on node 2.
    node = ray_head.add_node(num_cpus=5)
    spec = seed_spec("ray_lost", metadata={"instance": 2, "cpu": 5, "memory": 1000})
    admin.create_service(spec, project=PROJECT)
    try:
        info = wait_running(admin, "ray_lost", timeout_s=180)
    except Exception as exc:
        raise AssertionError(f"{exc}; Ray: {cluster_state(ray_head)}") from None
    nodes = {actor_of(ray_head, i.id)["node_id"] for i in info.instances}
    assert len(nodes) == 2, "the two instances share a node"
    spare = ray_head.add_node(num_cpus=5)  # where the lost one's replacement can go
    body = {"instances": mnist_digits[0][:1].tolist()}
    url = f"{plane.url}/api/predict/ray_lost/v1/models/ray_lost:predict"
    try:
        with Hammer(url, body) as hammer:
            time.sleep(1.0)
            node.kill()
            try:
                replaced = wait_until(
                    admin,
                    "ray_lost",
                    lambda s: s.instances_ready == 2 and sum(i.restarts for i in s.instances) >= 1,
                    timeout_s=180,
                )
            except AssertionError as exc:
                raise AssertionError(f"{exc}; Ray: {cluster_state(ray_head)}") from None
    finally:
        spare.kill()
    assert hammer.failures == []
    assert hammer.ok > 20
    events = " ".join(e.message for e in replaced.events)
    assert "crashed" in events, events
    admin.delete_service("ray_lost")
    admin.wait_service_deleted("ray_lost", timeout_s=90)
