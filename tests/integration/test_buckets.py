"""Buckets, grants and objects through the SDK against a real server (SQLite, PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from liqi.client import Client
from liqi.errors import (
    AlreadyExistsError,
    BucketNotFoundError,
    ConflictError,
    InvalidRequestError,
    ObjectNotFoundError,
    PermissionDeniedError,
    RangeNotSatisfiableError,
)
from tests.support.servers import LiveServer


@dataclass
class Two:
    admin: Client
    owner: Client  # admin of project_a, which owns bucket "models"
    other: Client  # member of project_b


@pytest.fixture
def two(server: LiveServer) -> Iterator[Two]:
    with server.admin() as admin:
        admin.create_project("project_a")
        admin.create_project("project_b")
        a = admin.create_key(project="project_a", role="admin")
        b = admin.create_key(project="project_b", role="member")
        assert a.secret
        assert b.secret
        with (
            server.client(a.access_id, a.secret) as owner,
            server.client(b.access_id, b.secret) as other,
        ):
            owner.create_bucket("models", project="project_a")
            yield Two(admin, owner, other)


def test_bucket_models_folder_upload_and_browse(two: Two) -> None:
    two.owner.mkdir("models", "models/")
    two.owner.put_object("models", "models/1/saved_model.pb", b"\x08\x01graph")
    two.owner.put_object("models", "readme.txt", b"hello")
    top = two.owner.list_objects("models", delimiter="/")
    assert top.prefixes == ("models/",)
    assert [o.key for o in top.objects] == ["readme.txt"]
    inner = two.owner.list_objects("models", "models/", delimiter="/")
    assert inner.prefixes == ("models/1/",)
    assert two.owner.read_object("models", "models/1/saved_model.pb") == b"\x08\x01graph"
    info = two.owner.stat_object("models", "readme.txt")
    assert info.size == 5
    assert [b.name for b in two.owner.list_buckets()] == ["models"]


def test_range_reads(two: Two) -> None:
    two.owner.put_object("models", "digits", b"0123456789")
    assert two.owner.read_object("models", "digits", start=2, end=5) == b"234"
    assert two.owner.read_object("models", "digits", start=7) == b"789"
    with pytest.raises(RangeNotSatisfiableError):
        two.owner.read_object("models", "digits", start=20)


def test_other_project_needs_a_grant_and_is_told_the_command(two: Two) -> None:
    two.owner.put_object("models", "m.bin", b"weights")
    # Without a role or a grant the bucket answers like a missing one (docs/auth.md).
    with pytest.raises(BucketNotFoundError) as caught:
        two.other.read_object("models", "m.bin")
    assert "project_a" not in caught.value.message
    with pytest.raises(BucketNotFoundError):
        two.other.put_object("models", "x", b"x")

    two.owner.grant_bucket("models", "project_b", read=True, write=False)
    assert two.other.read_object("models", "m.bin") == b"weights"
    with pytest.raises(PermissionDeniedError) as caught_write:
        two.other.put_object("models", "x", b"x")
    assert "liqi oss grant oss://models --project project_b --write" in caught_write.value.message
    assert not two.owner.list_objects("models", "x").objects

    two.owner.grant_bucket("models", "project_b", read=True, write=True)
    two.other.put_object("models", "from_b.txt", b"written by b")
    assert two.owner.read_object("models", "from_b.txt") == b"written by b"
    assert [b.access for b in two.other.list_buckets()] == ["write"]

    two.owner.revoke_bucket("models", "project_b")
    with pytest.raises(BucketNotFoundError):
        two.other.read_object("models", "m.bin")
    assert two.other.list_buckets() == []


def test_only_bucket_admins_manage_it(two: Two) -> None:
    two.owner.grant_bucket("models", "project_b", read=True, write=True)
    with pytest.raises(PermissionDeniedError):
        two.other.grant_bucket("models", "project_b", read=True, write=True)
    with pytest.raises(PermissionDeniedError):
        two.other.delete_bucket("models")
    assert two.owner.get_bucket("models").grants == [
        {"project": "project_b", "read": True, "write": True}
    ]


def test_missing_bucket_and_object(two: Two) -> None:
    with pytest.raises(BucketNotFoundError) as caught:
        two.owner.list_objects("nobucket")
    assert "liqi oss mb oss://nobucket" in caught.value.message
    with pytest.raises(ObjectNotFoundError):
        two.owner.read_object("models", "missing.bin")
    with pytest.raises(ObjectNotFoundError):
        two.owner.delete_object("models", "missing.bin")


@pytest.mark.parametrize(
    "name", ["ab", "UPPER", "under_score", "-lead", "trail-", "x" * 64], ids=str
)
def test_invalid_bucket_names_are_refused(two: Two, name: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        two.owner.create_bucket(name, project="project_a")
    assert "3 to 63 lowercase" in caught.value.message
    assert [b.name for b in two.owner.list_buckets()] == ["models"]


def test_bucket_names_are_global(two: Two) -> None:
    with pytest.raises(AlreadyExistsError):
        two.admin.create_bucket("models", project="project_b")


def test_rb_refuses_non_empty_unless_forced(two: Two) -> None:
    two.owner.put_object("models", "a/b.txt", b"x")
    with pytest.raises(ConflictError) as caught:
        two.owner.delete_bucket("models")
    assert "--force" in caught.value.message
    two.owner.delete_bucket("models", force=True)
    assert two.owner.list_buckets() == []


def test_copy_within_and_across_buckets_and_recursive(two: Two) -> None:
    two.owner.create_bucket("archive", project="project_a")
    two.owner.put_object("models", "m/1/a.bin", b"A")
    two.owner.put_object("models", "m/1/variables/v.bin", b"V")
    two.owner.copy_object("oss://models/m/1/a.bin", "models", "copy.bin")
    assert two.owner.read_object("models", "copy.bin") == b"A"
    copied = two.owner.copy_object("oss://models/m/1/", "archive", "backup/", recursive=True)
    assert sorted(c.key for c in copied) == ["backup/a.bin", "backup/variables/v.bin"]
    assert two.owner.read_object("archive", "backup/variables/v.bin") == b"V"
    with pytest.raises(BucketNotFoundError):
        two.other.copy_object("oss://models/m/1/a.bin", "models", "stolen.bin")


def test_delete_recursive(two: Two) -> None:
    for key in ("d/1.txt", "d/e/2.txt", "keep.txt"):
        two.owner.put_object("models", key, b"x")
    assert two.owner.delete_object("models", "d/", recursive=True) >= 2
    assert [o.key for o in two.owner.iter_objects("models")] == ["keep.txt"]


def test_presigned_get_and_put(two: Two) -> None:
    two.owner.put_object("models", "shared.txt", b"shared content")
    url = two.owner.sign_url("models", "shared.txt", expires_s=60)
    answer = httpx.get(url, trust_env=False)
    assert answer.status_code == 200
    assert answer.content == b"shared content"
    tampered = url.replace("shared.txt", "other.txt")
    assert httpx.get(tampered, trust_env=False).status_code == 401
    put_url = two.owner.sign_url("models", "uploaded.txt", method="PUT", expires_s=60)
    assert httpx.put(put_url, content=b"via presigned", trust_env=False).status_code == 200
    assert two.owner.read_object("models", "uploaded.txt") == b"via presigned"
    # A GET URL does not allow a PUT.
    assert httpx.put(url, content=b"overwrite", trust_env=False).status_code == 401
    assert two.owner.read_object("models", "shared.txt") == b"shared content"


def test_tampered_upload_leaves_old_object(server: LiveServer, two: Two) -> None:
    from tests.integration.test_auth import admin_pair
    from tests.support.signed import send, signed_headers

    two.admin.put_object("models", "model.pb", b"original")
    access_id, secret = admin_pair(server)
    path = "/api/v1/buckets/models/objects/model.pb"
    headers = signed_headers(
        access_id=access_id, secret=secret, method="PUT", path=path, body=b"signed body"
    )
    answer = send(server.url, "PUT", path, headers, body=b"evil body!!")
    assert answer.status_code == 401
    assert answer.json()["code"] == "signature_mismatch"
    assert two.admin.read_object("models", "model.pb") == b"original"
    assert [o.key for o in two.admin.iter_objects("models")] == ["model.pb"]


def test_interrupted_upload_leaves_nothing(sqlite_server: LiveServer) -> None:
    import hashlib
    import socket
    import time

    from tests.integration.test_auth import admin_pair
    from tests.support.signed import signed_headers

    with sqlite_server.admin() as admin:
        admin.create_bucket("uploads", project="default")
        admin.put_object("uploads", "model.bin", b"old version")
    full = b"n" * (1024 * 1024)
    path = "/api/v1/buckets/uploads/objects/model.bin"
    headers = signed_headers(
        access_id=admin_pair(sqlite_server)[0],
        secret=admin_pair(sqlite_server)[1],
        method="PUT",
        path=path,
        body=full,
    )
    assert headers["x-liqi-content-sha256"] == hashlib.sha256(full).hexdigest()
    host, port = sqlite_server.url.removeprefix("http://").split(":")
    head = f"PUT {path} HTTP/1.1\r\nhost: {host}\r\ncontent-length: {len(full)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode() + full[: 100 * 1024])
    tmp_dir = sqlite_server.settings.store_dir / "_tmp"
    deadline = time.monotonic() + 10
    while any(tmp_dir.glob("*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(tmp_dir.glob("*")), list(tmp_dir.glob("*"))
    with sqlite_server.admin() as admin:
        assert admin.read_object("uploads", "model.bin") == b"old version"
        assert [o.key for o in admin.iter_objects("uploads")] == ["model.bin"]


def test_project_delete_refused_with_buckets_and_removes_its_files(
    sqlite_server: LiveServer,
) -> None:
    with sqlite_server.admin() as admin:
        admin.create_project("doomed")
        admin.create_bucket("doomed-bucket", project="doomed")
        with pytest.raises(ConflictError) as caught:
            admin.delete_project("doomed")
        assert "oss://doomed-bucket" in caught.value.message
        assert "doomed" in [p.name for p in admin.list_projects()]
        admin.delete_bucket("doomed-bucket")
        script = sqlite_server.home / "train.py"
        script.write_text("print('hi')\n")
        admin.add_resource(script, project="doomed")
        resources_root = sqlite_server.settings.store_dir / "_resources"
        assert any(p.is_file() for p in resources_root.rglob("*"))
        admin.delete_project("doomed")
        assert not any(p.is_file() for p in resources_root.rglob("*"))
