"""The smaller leaks and crashes of issue 16, section 5, each tried as an attacker would: a
member of one project, or anyone on the network."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from liqi.client import Client
from liqi.errors import BucketNotFoundError, NotFoundError, PermissionDeniedError
from tests.support.servers import LiveServer


@dataclass
class World:
    """Project ``a`` (the victim) and project ``b`` whose member ``bob`` is the attacker."""

    admin: Client
    bob: Client
    bob_id: str
    bob_secret: str


@pytest.fixture
def world(sqlite_server: LiveServer) -> Iterator[World]:
    with sqlite_server.admin() as admin:
        admin.create_project("project_a")
        admin.create_project("project_b")
        admin.create_bucket("alices-data", project="project_a")
        admin.create_bucket("bobs-models", project="project_b")
        admin.put_object("bobs-models", "models/1/saved_model.pb", b"not a model")
        b = admin.create_key(project="project_b", role="member", name="bob")
        assert b.secret
        with sqlite_server.client(b.access_id, b.secret) as bob:
            yield World(admin, bob, b.access_id, b.secret)


def idle_service(name: str) -> dict[str, object]:
    """A service with no instance: it exists, nothing runs."""
    return {
        "name": name,
        "model_path": "oss://bobs-models/models/",
        "processor": "tensorflow_cpu",
        "metadata": {"instance": 0, "cpu": 1, "memory": 1000},
    }


# -- 1. service logs: the instance is looked up, never joined as a path ------------------------


@pytest.mark.parametrize("how", ["absolute", "relative"])
def test_service_logs_instance_is_not_a_path(
    world: World, sqlite_server: LiveServer, how: str
) -> None:
    world.bob.create_service(idle_service("bobs"), project="project_b")
    victim = sqlite_server.home / "services" / "alices" / "i-1"
    victim.mkdir(parents=True)
    (victim / "instance.log").write_text("alice's secret line\n")
    (sqlite_server.home / "services" / "bobs").mkdir(parents=True, exist_ok=True)
    instance = str(victim) if how == "absolute" else "../alices/i-1"
    with pytest.raises(NotFoundError) as caught:
        world.bob.service_logs("bobs", instance=instance)
    assert "secret" not in str(caught.value)


# -- 2. another project's bucket answers like a missing one -----------------------------------


def test_bucket_without_access_answers_like_a_missing_one(world: World) -> None:
    world.admin.put_object("alices-data", "secret.txt", b"alice")

    def refusal(bucket: str) -> tuple[int, str, str]:
        with pytest.raises(BucketNotFoundError) as caught:
            world.bob.read_object(bucket, "secret.txt")
        error = caught.value
        return error.http_status, error.code, error.message.replace(bucket, "<b>")

    assert refusal("alices-data") == refusal("no-such-bucket")
    with pytest.raises(BucketNotFoundError) as caught:
        world.bob.list_objects("alices-data")
    assert "project_a" not in caught.value.message
    # A bucket bob can see but may not write: 403, naming the grant that would allow it.
    world.admin.grant_bucket("alices-data", "project_b", read=True, write=False)
    assert world.bob.read_object("alices-data", "secret.txt") == b"alice"
    with pytest.raises(PermissionDeniedError) as denied:
        world.bob.put_object("alices-data", "x.txt", b"x")
    assert "--project project_b --write" in denied.value.message


# -- 3. the gateway's 404 names no other service ----------------------------------------------


def test_unsigned_missing_service_lists_no_services(
    world: World, sqlite_server: LiveServer
) -> None:
    world.bob.create_service(idle_service("bobs"), project="project_b")
    world.admin.create_service(idle_service("alices_secret_service"), project="project_a")
    answer = httpx.post(f"{sqlite_server.url}/api/predict/nope", content=b"{}", trust_env=False)
    assert answer.status_code == 404
    assert "nope" in answer.text
    assert "alices_secret_service" not in answer.text
    assert "bobs" not in answer.text


# -- 4. a presigned URL dies with the key that signed it ---------------------------------------


def test_presigned_url_stops_working_when_its_key_is_revoked(world: World) -> None:
    world.bob.put_object("bobs-models", "shared.txt", b"shared")
    get_url = world.bob.sign_url("bobs-models", "shared.txt", expires_s=3600)
    put_url = world.bob.sign_url("bobs-models", "up.txt", method="PUT", expires_s=3600)
    assert httpx.get(get_url, trust_env=False).content == b"shared"
    world.admin.revoke_key(world.bob_id)
    for answer in (
        httpx.get(get_url, trust_env=False),
        httpx.put(put_url, content=b"after revoke", trust_env=False),
    ):
        assert answer.status_code == 401
        assert "revoked" in answer.json()["message"]
    assert not world.admin.list_objects("bobs-models", "up.txt").objects
    # Naming another (active) key instead does not pass the signature.
    admin_id = world.admin.whoami()["access_id"]
    forged = get_url.replace(f"access_id={world.bob_id}", f"access_id={admin_id}")
    assert httpx.get(forged, trust_env=False).status_code == 401
