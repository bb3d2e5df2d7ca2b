"""Datasets (volumes) against a real server, on SQLite and PostgreSQL: the built-in MNIST
volume, creating from a local directory and from an oss:// prefix, versions, half uploads,
isolation, and raw requests where the point is the wire (paths that try to leave a dataset)."""

from __future__ import annotations

import http.client
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from liqi.client import Client
from liqi.datasets.mnist_reader import builtin_dir
from liqi.errors import (
    AlreadyExistsError,
    BucketNotFoundError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    ProjectNotFoundError,
)
from tests.support.servers import LiveServer
from tests.support.signed import signed_headers

TRAIN = "odps://algo_platform/volumes/mnist/train"
TEST = "odps://algo_platform/volumes/mnist/test"


@dataclass
class World:
    server: LiveServer
    admin: Client
    alice: Client  # member of proj_a
    bob: Client  # member of proj_b
    credentials: tuple[str, str]  # alice's access id and secret


def _world(server: LiveServer) -> Iterator[World]:
    with server.admin() as admin:
        admin.create_project("proj_a")
        admin.create_project("proj_b")
        a = admin.create_key(project="proj_a", role="member")
        b = admin.create_key(project="proj_b", role="member")
        assert a.secret
        assert b.secret
        with (
            server.client(a.access_id, a.secret) as alice,
            server.client(b.access_id, b.secret) as bob,
        ):
            yield World(server, admin, alice, bob, (a.access_id, a.secret))


@pytest.fixture
def world(server: LiveServer) -> Iterator[World]:
    yield from _world(server)


@pytest.fixture
def sqlite_world(sqlite_server: LiveServer) -> Iterator[World]:
    yield from _world(sqlite_server)


def make_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def read_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def volume_files(server: LiveServer) -> list[Path]:
    return sorted(p for p in (server.settings.store_dir / "_volumes").rglob("*") if p.is_file())


FILES = {
    "images.bin": bytes(range(256)) * 64,
    "labels.txt": b"1\n2\n3\n",
    "nested/deeper/readme.md": b"# data\n",
}


# -- the built-in MNIST volume ----------------------------------------------------------------


def test_builtin_mnist_is_readable_from_a_fresh_project(server: LiveServer, tmp_path: Path) -> None:
    with server.admin() as admin:
        admin.create_project("fresh_proj")
        key = admin.create_key(project="fresh_proj", role="member")
    assert key.secret
    with server.client(key.access_id, key.secret) as fresh:
        listed = {d.uri: d for d in fresh.list_datasets()}
        assert set(listed) == {TRAIN, TEST}
        assert all(d.builtin and d.version == 1 for d in listed.values())
        for uri, partition in ((TRAIN, "train"), (TEST, "test")):
            shipped = read_tree(builtin_dir() / partition)
            described = fresh.describe_dataset(uri)
            assert described.file_count == len(shipped) == 2
            assert described.size == sum(len(b) for b in shipped.values())
            files = fresh.list_dataset_files(uri)
            assert {f.path: f.size for f in files} == {k: len(v) for k, v in shipped.items()}
            fresh.download_dataset(uri, tmp_path / partition)
            assert read_tree(tmp_path / partition) == shipped  # byte-identical
    assert read_tree(tmp_path / "train").keys() == {
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
    }


def test_builtin_cannot_be_dropped_or_replaced(sqlite_world: World, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", FILES)
    for client in (sqlite_world.admin, sqlite_world.alice):
        with pytest.raises(PermissionDeniedError) as caught:
            client.drop_dataset(TRAIN)
        assert "read-only" in caught.value.message
        with pytest.raises(PermissionDeniedError):
            client.create_dataset(TRAIN, src, force=True)
        with pytest.raises(PermissionDeniedError):
            client.create_dataset("odps://algo_platform/volumes/mnist/extra", src)
    assert sqlite_world.admin.describe_dataset(TRAIN).file_count == 2


def test_unknown_builtin_partition_names_the_real_ones(sqlite_world: World) -> None:
    with pytest.raises(NotFoundError) as caught:
        sqlite_world.alice.describe_dataset("odps://algo_platform/volumes/mnist/validation")
    assert "train, test" in caught.value.message


def test_builtin_supports_range_reads(sqlite_world: World, sqlite_server: LiveServer) -> None:
    path = "/api/v1/projects/algo_platform/volumes/mnist/test/files/t10k-labels-idx1-ubyte.gz"
    answer = signed_get(sqlite_server.url, sqlite_world.credentials, path, {"range": "bytes=0-9"})
    assert answer.status == 206
    shipped = (builtin_dir() / "test" / "t10k-labels-idx1-ubyte.gz").read_bytes()
    assert answer.body == shipped[:10]


# -- creating, versions -----------------------------------------------------------------------


def test_create_from_local_dir_describe_get_drop(
    world: World, server: LiveServer, tmp_path: Path
) -> None:
    uri = "odps://proj_a/volumes/mnist/train"
    src = make_tree(tmp_path / "src", FILES)
    made = world.alice.create_dataset(uri, src, comment="my copy")
    assert (made.uri, made.version, made.builtin) == (uri, 1, False)
    assert made.file_count == 3
    assert made.size == sum(len(b) for b in FILES.values())
    assert made.source == str(src)
    assert world.alice.describe_dataset(uri) == made
    assert [f.path for f in world.alice.list_dataset_files(uri)] == sorted(FILES)
    assert uri in [d.uri for d in world.alice.list_datasets()]
    assert [d.uri for d in world.alice.list_datasets("proj_a")] == [uri]
    world.alice.download_dataset(uri, tmp_path / "out")
    assert read_tree(tmp_path / "out") == FILES
    world.alice.drop_dataset(uri)
    with pytest.raises(NotFoundError) as caught:
        world.alice.describe_dataset(uri)
    assert "liqi dataset create" in caught.value.message
    assert uri not in [d.uri for d in world.alice.list_datasets()]
    assert volume_files(server) == []


def test_recreate_needs_force_and_makes_the_next_version(
    world: World, server: LiveServer, tmp_path: Path
) -> None:
    uri = "odps://proj_a/volumes/logs/day1"
    first = make_tree(tmp_path / "v1", {"a.txt": b"one", "old.txt": b"gone later"})
    second = make_tree(tmp_path / "v2", {"a.txt": b"two!", "new.txt": b"fresh"})
    world.alice.create_dataset(uri, first)
    with pytest.raises(AlreadyExistsError) as caught:
        world.alice.create_dataset(uri, second)
    assert "-f" in caught.value.message
    assert "version 1" in caught.value.message
    assert world.alice.describe_dataset(uri).version == 1
    made = world.alice.create_dataset(uri, second, force=True)
    assert made.version == 2
    assert {f.path for f in world.alice.list_dataset_files(uri)} == {"a.txt", "new.txt"}
    world.alice.download_dataset(uri, tmp_path / "out")
    assert read_tree(tmp_path / "out") == {"a.txt": b"two!", "new.txt": b"fresh"}
    # Version 1's files are gone from the disk once version 2 is live.
    assert [p.name for p in volume_files(server)] == ["a.txt", "new.txt"]
    assert all("/v2/" in p.as_posix() for p in volume_files(server))


def test_reader_of_the_old_version_is_not_disturbed(sqlite_world: World, tmp_path: Path) -> None:
    uri = "odps://proj_a/volumes/big/part"
    old = bytes(range(256)) * (8 * 4096)  # 8 MiB
    make_tree(tmp_path / "v1", {"data.bin": old})
    make_tree(tmp_path / "v2", {"data.bin": b"new content"})
    sqlite_world.alice.create_dataset(uri, tmp_path / "v1")
    path = "/api/v1/projects/proj_a/volumes/big/part/files/data.bin"
    headers = signed_headers(
        access_id=sqlite_world.credentials[0],
        secret=sqlite_world.credentials[1],
        method="GET",
        path=path,
    )
    url = sqlite_world.server.url + path
    with httpx.stream("GET", url, headers=headers, trust_env=False) as answer:
        assert answer.headers["x-liqi-version"] == "1"
        chunks = answer.iter_bytes(65536)
        received = next(chunks)
        sqlite_world.alice.create_dataset(uri, tmp_path / "v2", force=True)
        received += b"".join(chunks)
    assert received == old
    assert sqlite_world.alice.describe_dataset(uri).version == 2
    sqlite_world.alice.download_dataset(uri, tmp_path / "out")
    assert (tmp_path / "out" / "data.bin").read_bytes() == b"new content"


def test_half_upload_is_never_visible(world: World, server: LiveServer, tmp_path: Path) -> None:
    uri = "odps://proj_a/volumes/half/p"
    src = make_tree(tmp_path / "src", FILES)
    upload = uuid.uuid4().hex
    sent = 0
    for rel in sorted(FILES)[:2]:
        sent += world.alice.upload_dataset_file(uri, upload, rel, src / rel)
    # Abandoned (never committed): invisible.
    with pytest.raises(NotFoundError):
        world.alice.describe_dataset(uri)
    assert uri not in [d.uri for d in world.alice.list_datasets()]
    # Committed with what the client meant to send: refused, and dropped.
    total = sum(len(b) for b in FILES.values())
    with pytest.raises(InvalidRequestError) as caught:
        world.alice.commit_dataset_upload(uri, upload, file_count=3, size=total)
    assert "expected 3 files" in caught.value.message
    assert f"has 2 files of {sent} bytes" in caught.value.message
    with pytest.raises(NotFoundError):
        world.alice.describe_dataset(uri)
    assert volume_files(server) == []
    # The same upload id cannot be committed later either: its files are gone.
    with pytest.raises(InvalidRequestError) as empty:
        world.alice.commit_dataset_upload(uri, upload, file_count=2, size=sent)
    assert "holds no file" in empty.value.message


def test_missing_or_empty_source_is_refused(sqlite_world: World, tmp_path: Path) -> None:
    uri = "odps://proj_a/volumes/v/p"
    with pytest.raises(NotFoundError) as missing:
        sqlite_world.alice.create_dataset(uri, tmp_path / "no_such_dir")
    assert "no_such_dir" in missing.value.message
    assert "does not exist" in missing.value.message
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidRequestError) as empty:
        sqlite_world.alice.create_dataset(uri, tmp_path / "empty")
    assert "is empty" in empty.value.message
    sqlite_world.admin.create_bucket("data-bkt", project="proj_a")
    with pytest.raises(NotFoundError) as no_objects:
        sqlite_world.alice.create_dataset(uri, "oss://data-bkt/nothing/here/")
    assert "oss://data-bkt/nothing/here/" in no_objects.value.message
    with pytest.raises(NotFoundError):
        sqlite_world.alice.describe_dataset(uri)


def test_create_from_an_oss_prefix_needs_read_access(world: World, tmp_path: Path) -> None:
    world.admin.create_bucket("shared-data", project="proj_a")
    for rel, data in FILES.items():
        world.alice.put_object("shared-data", f"exports/mnist/{rel}", data)
    world.alice.put_object("shared-data", "exports/other.txt", b"not in the prefix")
    uri = "odps://proj_a/volumes/mnist/all"
    made = world.alice.create_dataset(uri, "oss://shared-data/exports/mnist")
    assert made.source == "oss://shared-data/exports/mnist/"
    assert made.file_count == 3
    world.alice.download_dataset(uri, tmp_path / "out")
    assert read_tree(tmp_path / "out") == FILES
    # proj_b may not read the bucket until it is granted.
    theirs = "odps://proj_b/volumes/copy/all"
    with pytest.raises(BucketNotFoundError) as caught:  # no grant: like a missing bucket
        world.bob.create_dataset(theirs, "oss://shared-data/exports/mnist/")
    assert "proj_a" not in caught.value.message
    with pytest.raises(NotFoundError):
        world.bob.describe_dataset(theirs)
    world.admin.grant_bucket("shared-data", "proj_b", read=True, write=False)
    assert world.bob.create_dataset(theirs, "oss://shared-data/exports/mnist/").file_count == 3


def test_other_projects_datasets_are_404(world: World, tmp_path: Path) -> None:
    uri = "odps://proj_a/volumes/private/p"
    src = make_tree(tmp_path / "src", FILES)
    world.alice.create_dataset(uri, src)
    actions = [
        lambda: world.bob.describe_dataset(uri),
        lambda: world.bob.list_dataset_files(uri),
        lambda: world.bob.download_dataset(uri, tmp_path / "stolen"),
        lambda: world.bob.drop_dataset(uri),
        lambda: world.bob.create_dataset(uri, src, force=True),
        lambda: world.bob.list_datasets("proj_a"),
    ]
    for action in actions:
        with pytest.raises(ProjectNotFoundError):
            action()
    assert not (tmp_path / "stolen").exists()
    assert {d.uri for d in world.bob.list_datasets()} == {TRAIN, TEST}
    assert world.alice.describe_dataset(uri).version == 1


# -- paths that try to leave a dataset --------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _raw(
    url: str,
    credentials: tuple[str, str],
    method: str,
    path: str,
    *,
    query: str = "",
    body: bytes = b"",
    extra: dict[str, str] | None = None,
) -> Raw:
    """A signed request sent with exactly ``path`` (no dot-segment clean-up)."""
    headers = signed_headers(
        access_id=credentials[0],
        secret=credentials[1],
        method=method,
        path=path,
        query=query,
        body=body,
    )
    headers.update(extra or {})
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        conn.request(method, path + (f"?{query}" if query else ""), body=body, headers=headers)
        answer = conn.getresponse()
        return Raw(answer.status, answer.read())
    finally:
        conn.close()


def signed_get(
    url: str, credentials: tuple[str, str], path: str, extra: dict[str, str] | None = None
) -> Raw:
    return _raw(url, credentials, "GET", path, extra=extra)


TRAVERSALS = ["..%2F..%2Fx", "a/%2E%2E/%2E%2E/%2E%2E/b", "%2Fetc%2Fpasswd", "a/../../../b"]


@pytest.mark.parametrize("raw_path", TRAVERSALS)
def test_traversal_in_uploaded_file_paths_is_refused(
    sqlite_world: World, sqlite_server: LiveServer, tmp_path: Path, raw_path: str
) -> None:
    base = "/api/v1/projects/proj_a/volumes/v/p/files/"
    answer = _raw(
        sqlite_server.url,
        sqlite_world.credentials,
        "PUT",
        base + raw_path,
        query=f"upload={uuid.uuid4().hex}",
        body=b"escaped",
    )
    assert answer.status == 400, answer.body
    assert answer.json()["code"] == "invalid_request"
    assert volume_files(sqlite_server) == []
    escaped = [p for p in tmp_path.rglob("*") if p.is_file() and p.read_bytes() == b"escaped"]
    assert escaped == []


@pytest.mark.parametrize("raw_path", [*TRAVERSALS, "..%2F..%2F..%2Fsecret.key"])
@pytest.mark.parametrize(
    "partition",
    ["algo_platform/volumes/mnist/train", "proj_a/volumes/v/p"],
    ids=["builtin", "user"],
)
def test_traversal_in_downloaded_file_paths_is_refused(
    sqlite_world: World, sqlite_server: LiveServer, tmp_path: Path, raw_path: str, partition: str
) -> None:
    sqlite_world.alice.create_dataset("odps://proj_a/volumes/v/p", make_tree(tmp_path, FILES))
    path = f"/api/v1/projects/{partition}/files/{raw_path}"
    answer = signed_get(sqlite_server.url, sqlite_world.credentials, path)
    assert answer.status == 400, answer.body
    secret = (sqlite_server.home / "secret.key").read_bytes()
    assert secret not in answer.body


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/projects/proj_a/volumes/../p",
        "/api/v1/projects/proj_a/volumes/v/..",
        "/api/v1/projects/proj_a/volumes/v/a%20b",
    ],
)
def test_bad_volume_and_partition_names_are_refused(
    sqlite_world: World, sqlite_server: LiveServer, path: str
) -> None:
    answer = signed_get(sqlite_server.url, sqlite_world.credentials, path)
    assert answer.status == 400, answer.body
    assert "name" in answer.json()["message"]


def test_bad_upload_id_is_refused(sqlite_world: World, sqlite_server: LiveServer) -> None:
    path = "/api/v1/projects/proj_a/volumes/v/p/files/a.txt"
    answer = _raw(
        sqlite_server.url, sqlite_world.credentials, "PUT", path, query="upload=..", body=b"x"
    )
    assert answer.status == 400
    assert "upload id" in answer.json()["message"]
    assert volume_files(sqlite_server) == []
