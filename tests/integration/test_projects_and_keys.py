"""Projects, keys and roles through the SDK against a real server (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from liqi.client import Client
from liqi.errors import (
    AccessKeyNotFoundError,
    AlreadyExistsError,
    ConflictError,
    InvalidRequestError,
    PermissionDeniedError,
    ProjectNotFoundError,
)
from tests.support.servers import LiveServer


@dataclass
class World:
    admin: Client
    alice: Client  # admin of project_a
    bob: Client  # member of project_b
    alice_id: str
    bob_id: str


@pytest.fixture
def world(server: LiveServer) -> Iterator[World]:
    with server.admin() as admin:
        admin.create_project("project_a", "A's")
        admin.create_project("project_b", "B's")
        a = admin.create_key(project="project_a", role="admin", name="alice")
        b = admin.create_key(project="project_b", role="member", name="bob")
        assert a.secret
        assert b.secret
        with (
            server.client(a.access_id, a.secret) as alice,
            server.client(b.access_id, b.secret) as bob,
        ):
            yield World(admin, alice, bob, a.access_id, b.access_id)


def test_superuser_sees_every_project(world: World) -> None:
    assert [p.name for p in world.admin.list_projects()] == ["default", "project_a", "project_b"]


def test_key_sees_only_its_projects(world: World) -> None:
    assert [(p.name, p.role) for p in world.alice.list_projects()] == [("project_a", "admin")]
    assert [(p.name, p.role) for p in world.bob.list_projects()] == [("project_b", "member")]


@pytest.mark.parametrize(
    "action",
    [
        lambda c: c.get_project("project_b"),
        lambda c: c.delete_project("project_b"),
        lambda c: c.list_keys("project_b"),
        lambda c: c.create_key(project="project_b"),
    ],
    ids=["get", "delete", "list-keys", "create-key"],
)
def test_key_of_project_a_gets_404_on_project_b(world: World, action: object) -> None:
    with pytest.raises(ProjectNotFoundError) as caught:
        action(world.alice)  # type: ignore[operator]
    assert caught.value.http_status == 404
    # The answer is the same as for a project that does not exist at all.
    with pytest.raises(ProjectNotFoundError) as missing:
        world.alice.get_project("no_such_project")
    assert str(caught.value).replace("project_b", "X") == str(missing.value).replace(
        "no_such_project", "X"
    )
    assert world.admin.get_project("project_b").name == "project_b"


def test_member_gets_403_for_admin_actions(world: World) -> None:
    with pytest.raises(PermissionDeniedError) as caught:
        world.bob.delete_project("project_b")
    assert caught.value.http_status == 403
    assert f"liqi key grant {world.bob_id} --project project_b --role admin" in caught.value.message
    with pytest.raises(PermissionDeniedError):
        world.bob.create_key(project="project_b")
    assert world.bob.get_project("project_b").role == "member"


def test_only_superuser_creates_projects(world: World) -> None:
    with pytest.raises(PermissionDeniedError):
        world.alice.create_project("project_c")
    assert "project_c" not in [p.name for p in world.admin.list_projects()]


def test_project_admin_creates_member_keys_in_own_project(world: World, server: LiveServer) -> None:
    made = world.alice.create_key(project="project_a", role="member", name="carol")
    assert made.secret
    assert made.roles == {"project_a": "member"}
    with server.client(made.access_id, made.secret) as carol:
        assert [p.name for p in carol.list_projects()] == ["project_a"]
    listed = {k.access_id for k in world.alice.list_keys()}
    assert {world.alice_id, made.access_id} <= listed
    assert world.bob_id not in listed


def test_project_admin_cannot_make_superusers_or_orphan_keys(world: World) -> None:
    with pytest.raises(PermissionDeniedError):
        world.alice.create_key(project="project_a", superuser=True)
    with pytest.raises(PermissionDeniedError):
        world.alice.create_key()


def test_admin_cannot_revoke_or_grant_keys_of_other_projects(world: World) -> None:
    with pytest.raises(AccessKeyNotFoundError):
        world.alice.revoke_key(world.bob_id)
    with pytest.raises(AccessKeyNotFoundError):
        world.alice.grant_role(world.bob_id, "project_a", "member")


def test_grant_and_remove_role(world: World) -> None:
    world.admin.grant_role(world.bob_id, "project_a", "member")
    assert sorted(p.name for p in world.bob.list_projects()) == ["project_a", "project_b"]
    world.admin.remove_role(world.bob_id, "project_a")
    assert [p.name for p in world.bob.list_projects()] == ["project_b"]


def test_duplicate_project_is_a_conflict(world: World) -> None:
    with pytest.raises(AlreadyExistsError) as caught:
        world.admin.create_project("project_a")
    assert caught.value.http_status == 409


@pytest.mark.parametrize("name", ["a", "1abc", "has space", "x" * 65, "dash-ed"], ids=str)
def test_invalid_project_name_is_refused_and_nothing_is_created(world: World, name: str) -> None:
    before = [p.name for p in world.admin.list_projects()]
    with pytest.raises(InvalidRequestError) as caught:
        world.admin.create_project(name)
    assert caught.value.http_status == 400
    assert [p.name for p in world.admin.list_projects()] == before


def test_delete_project_removes_roles_in_it(world: World) -> None:
    world.admin.delete_project("project_b")
    assert world.bob.list_projects() == []
    keys = {k.access_id: k for k in world.admin.list_keys()}
    assert keys[world.bob_id].roles == {}


def test_last_superuser_cannot_be_revoked(server: LiveServer) -> None:
    with server.admin() as admin:
        me = admin.whoami()["access_id"]
        with pytest.raises(ConflictError) as caught:
            admin.revoke_key(me)
        assert "last superuser" in caught.value.message
        assert admin.whoami()["is_superuser"] is True


def test_register_existing_pair_is_idempotent_and_conflicts_on_other_secret(
    server: LiveServer,
) -> None:
    with server.admin() as admin:
        first = admin.register_key("LTAI4FakeIdForTest", "s3cret-value-123", project="default")
        again = admin.register_key("LTAI4FakeIdForTest", "s3cret-value-123", project="default")
        assert first.access_id == again.access_id == "LTAI4FakeIdForTest"
        assert first.secret is None
        with pytest.raises(AlreadyExistsError) as caught:
            admin.register_key("LTAI4FakeIdForTest", "another-secret-456", project="default")
        assert "liqi key revoke LTAI4FakeIdForTest" in caught.value.message
    with server.client("LTAI4FakeIdForTest", "s3cret-value-123") as imported:
        assert [p.name for p in imported.list_projects()] == ["default"]


def test_server_info_reports_database(server: LiveServer) -> None:
    with server.admin() as admin:
        info = admin.server_info()
    assert info.database == ("sqlite" if server.settings.database_url is None else "postgresql")
    assert info.uptime_s >= 0
