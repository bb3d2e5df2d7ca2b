"""The SDK's service methods against a real control plane. The services here ask for 0
instances, so no model server starts: these tests are about the API round trips and the
waiting logic (instances are exercised in tests/cli/test_cli_eas_live.py and tests/services/)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from liqi.client import Client
from liqi.client.services import (
    ServiceEvent,
    ServiceInfo,
    ServiceLogChunk,
    ServiceToken,
    ServiceVersionInfo,
    load_service_file,
    parse_service_json,
)
from liqi.errors import (
    AlreadyExistsError,
    ConflictError,
    DeadlineExceededError,
    InvalidRequestError,
    NotFoundError,
    ProjectNotFoundError,
)
from tests.support.servers import LiveServer, live_server

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("services_client") / "home", None) as live:
        yield live


@pytest.fixture(scope="module")
def admin(plane: LiveServer) -> Iterator[Client]:
    with plane.admin() as client:
        yield client


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder in the TF Serving layout; no instance ever loads it (0 instances)."""
    folder = tmp_path_factory.mktemp("model")
    (folder / "1").mkdir()
    (folder / "1" / "saved_model.pb").write_bytes(b"not loaded by these tests")
    return folder


def spec(name: str, model_dir: Path, **extra: Any) -> dict[str, Any]:
    """The seed's eas_mnist.json form, with no instance."""
    document: dict[str, Any] = {
        "name": name,
        "generate_token": "false",
        "model_path": str(model_dir),
        "processor": "tensorflow_cpu",
        "metadata": {"region": "shanghai", "instance": 0, "cpu": 1, "memory": 2000},
    }
    document.update(extra)
    return document


def test_create_from_a_dict_a_path_and_json_text(
    admin: Client, model_dir: Path, tmp_path: Path
) -> None:
    created = admin.create_service(spec("sdk_dict", model_dir, unused_field=1))
    assert isinstance(created, ServiceInfo)
    assert created.state == "CREATING"
    assert created.project == "default"
    assert created.token is None
    assert not created.token_required
    assert created.warnings == ["Ignored field unused_field: accepted, not used by liqi."]
    assert created.config["metadata"]["region"] == "shanghai"
    assert created.endpoint.endswith("/api/predict/sdk_dict")
    assert created.events[0].message.startswith("created version 1")

    path = tmp_path / "eas_sdk.json"
    path.write_text(json.dumps(spec("sdk_path", model_dir, generate_token="true")))
    from_path = admin.create_service(path)
    assert from_path.token
    assert from_path.token_required
    path.write_text(json.dumps(spec("sdk_str_path", model_dir)))
    assert admin.create_service(str(path)).name == "sdk_str_path"
    text = json.dumps(spec("sdk_text", model_dir))
    assert admin.create_service(text).name == "sdk_text"

    listed = {s.name: s for s in admin.list_services()}
    assert {"sdk_dict", "sdk_path", "sdk_str_path", "sdk_text"} <= set(listed)
    assert listed["sdk_dict"].instances == []  # the list has no detail
    assert [s.name for s in admin.list_services("default")] == sorted(
        s.name for s in admin.list_services("default")
    )
    with pytest.raises(ProjectNotFoundError):
        admin.list_services("no_such_project")


def test_wait_returns_the_settled_service(admin: Client, model_dir: Path) -> None:
    admin.create_service(spec("sdk_wait", model_dir))
    seen: list[str] = []
    final = admin.wait_service("sdk_wait", timeout_s=20, on_change=lambda i: seen.append(i.state))
    assert final.state == "RUNNING"
    assert final.is_settled
    assert final.instances_wanted == 0
    assert final.instances_ready == 0
    assert seen[-1] == "RUNNING"


def test_wait_times_out_naming_the_state(admin: Client, model_dir: Path) -> None:
    admin.create_service(spec("sdk_timeout", model_dir))
    admin.wait_service("sdk_timeout", timeout_s=20)
    with pytest.raises(DeadlineExceededError) as caught:
        admin.wait_service("sdk_timeout", timeout_s=0.3, until={"STOPPED"})
    message = caught.value.message
    assert "'sdk_timeout' is still RUNNING after 0.3 s" in message
    assert "waiting for STOPPED" in message
    assert caught.value.exit_code == 6


def test_modify_merge_replace_versions_and_switch(admin: Client, model_dir: Path) -> None:
    admin.create_service(spec("sdk_versions", model_dir))
    merged = admin.modify_service("sdk_versions", {"metadata": {"cpu": 2}})
    assert merged.current_version == merged.latest_version == 2
    assert merged.cpu == 2
    assert merged.config["metadata"] == {
        "region": "shanghai",
        "instance": 0,
        "cpu": 2,
        "memory": 2000,
    }
    replaced = admin.modify_service(
        "sdk_versions",
        {"model_path": str(model_dir), "processor": "onnx", "metadata": {"instance": 0}},
        replace=True,
    )
    assert replaced.current_version == 3
    assert replaced.processor == "onnx"
    assert replaced.cpu is None
    assert replaced.memory_mb is None
    assert replaced.config == {
        "model_path": str(model_dir),
        "processor": "onnx",
        "metadata": {"instance": 0},
        "name": "sdk_versions",
    }
    admin.wait_service("sdk_versions", timeout_s=20)

    versions = admin.list_service_versions("sdk_versions")
    assert all(isinstance(v, ServiceVersionInfo) for v in versions)
    assert [(v.version, v.current) for v in versions] == [(1, False), (2, False), (3, True)]
    assert versions[0].config["metadata"]["cpu"] == 1

    switched = admin.switch_service_version("sdk_versions", 1)
    assert (switched.current_version, switched.latest_version) == (1, 3)
    assert switched.processor == "tensorflow_cpu"
    final = admin.wait_service("sdk_versions", timeout_s=20)
    assert final.current_version == 1
    with pytest.raises(ConflictError, match="already runs version 1"):
        admin.switch_service_version("sdk_versions", 1)
    with pytest.raises(NotFoundError, match=r"has no version 9\. Versions: 1, 2, 3"):
        admin.switch_service_version("sdk_versions", 9)


def test_stop_start_scale(admin: Client, model_dir: Path) -> None:
    admin.create_service(spec("sdk_stop", model_dir))
    admin.wait_service("sdk_stop", timeout_s=20)
    admin.stop_service("sdk_stop")
    stopped = admin.wait_service("sdk_stop", timeout_s=20, until={"STOPPED"})
    assert stopped.state == "STOPPED"
    admin.start_service("sdk_stop")
    started = admin.wait_service("sdk_stop", timeout_s=20, until={"RUNNING"})
    assert started.state == "RUNNING"
    with pytest.raises(ConflictError, match=r"is not stopped \(it is RUNNING\)"):
        admin.start_service("sdk_stop")
    scaled = admin.scale_service("sdk_stop", 0)
    assert scaled.instances_wanted == 0
    with pytest.raises(InvalidRequestError, match="Instances=65 is out of range"):
        admin.scale_service("sdk_stop", 65)


def test_token_events_and_logs(admin: Client, model_dir: Path) -> None:
    created = admin.create_service(spec("sdk_token", model_dir, generate_token=True))
    token = admin.service_token("sdk_token")
    assert token == ServiceToken(service="sdk_token", token_required=True, token=created.token)
    admin.create_service(spec("sdk_no_token", model_dir))
    assert admin.service_token("sdk_no_token").token is None

    admin.wait_service("sdk_token", timeout_s=20)
    events = admin.service_events("sdk_token")
    assert all(isinstance(e, ServiceEvent) for e in events)
    messages = [e.message for e in events]
    assert messages[0].startswith("created version 1 by ")
    assert "state CREATING -> RUNNING" in messages
    assert len(admin.service_events("sdk_token", limit=1)) == 1
    with pytest.raises(InvalidRequestError, match="limit=0 is out of range"):
        admin.service_events("sdk_token", limit=0)

    # No instance has run: an empty, final chunk.
    chunk = admin.service_logs("sdk_token")
    assert chunk == ServiceLogChunk(instance="", data="", offset=0, final=True)
    assert list(admin.follow_service_logs("sdk_token")) == []
    with pytest.raises(NotFoundError, match="has no instance 'nope'"):
        admin.service_logs("sdk_token", instance="nope")


def test_delete(admin: Client, model_dir: Path) -> None:
    admin.create_service(spec("sdk_delete", model_dir))
    admin.wait_service("sdk_delete", timeout_s=20)
    with pytest.raises(DeadlineExceededError, match=r"'sdk_delete' is still RUNNING after 0\.2 s"):
        admin.wait_service_deleted("sdk_delete", timeout_s=0.2)
    deleting = admin.delete_service("sdk_delete")
    assert deleting.name == "sdk_delete"
    seen: list[str] = []
    admin.wait_service_deleted("sdk_delete", timeout_s=20, on_change=lambda i: seen.append(i.state))
    assert set(seen) <= {"RUNNING", "DELETING"}
    with pytest.raises(NotFoundError):
        admin.get_service("sdk_delete")
    assert "sdk_delete" not in [s.name for s in admin.list_services()]


def test_bad_requests_change_nothing(admin: Client, model_dir: Path, tmp_path: Path) -> None:
    before = [s.name for s in admin.list_services()]
    with pytest.raises(NotFoundError, match="Model not found: the path"):
        admin.create_service(spec("sdk_bad", tmp_path / "no_model_here"))
    with pytest.raises(InvalidRequestError, match="needs 'model_path'"):
        admin.create_service({"name": "sdk_bad", "processor": "tensorflow_cpu"})
    with pytest.raises(InvalidRequestError, match=r"'metadata\.instance' must be a number"):
        admin.create_service(spec("sdk_bad", model_dir, metadata={"instance": "many"}))
    with pytest.raises(InvalidRequestError, match="'generate_token' must be true or false"):
        admin.create_service(spec("sdk_bad", model_dir, generate_token="maybe"))
    assert [s.name for s in admin.list_services()] == before

    admin.create_service(spec("sdk_twice", model_dir))
    with pytest.raises(AlreadyExistsError, match="'sdk_twice' already exists"):
        admin.create_service(spec("sdk_twice", model_dir))
    with pytest.raises(InvalidRequestError, match="cannot be renamed"):
        admin.modify_service("sdk_twice", {"name": "other"})
    for call in (
        lambda: admin.get_service("sdk_nope"),
        lambda: admin.stop_service("sdk_nope"),
        lambda: admin.service_token("sdk_nope"),
        lambda: admin.list_service_versions("sdk_nope"),
        lambda: admin.delete_service("sdk_nope"),
    ):
        with pytest.raises(NotFoundError, match="Service 'sdk_nope' does not exist"):
            call()


def test_service_files_are_read_with_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match=r"'.*missing\.json' does not exist"):
        load_service_file(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{\n  "name": "x",\n  "model_path": \n}\n')
    with pytest.raises(InvalidRequestError) as caught:
        load_service_file(broken)
    assert str(broken) in caught.value.message
    assert "line 4, column 1" in caught.value.message
    with pytest.raises(InvalidRequestError, match="must hold a JSON object"):
        parse_service_json("[1, 2]", "list.json")
