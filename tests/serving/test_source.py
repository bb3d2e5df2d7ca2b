"""Model sources: local layouts, a bucket and the registry on a real control plane."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest

from liqi.client import Client
from liqi.errors import (
    BucketNotFoundError,
    InvalidRequestError,
    NotFoundError,
    ServerUnavailableError,
    StoreError,
)
from liqi.serving.source import (
    LocalSource,
    RegistrySource,
    StoredFolder,
    StoreSource,
    download,
    open_source,
)
from liqi.stores.base import ObjectInfo
from tests.support.servers import LiveServer

pytestmark = pytest.mark.timeout(120)

BIG = os.urandom(3 * 1024 * 1024 + 17)  # over the SDK's 1 MiB chunks


def no_client() -> Client:
    raise AssertionError("a local source must not build a client")


def saved_model(folder: Path, graph: bytes = b"\x08\x01graph") -> Path:
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(graph)
    (folder / "variables" / "variables.index").write_bytes(b"index")
    return folder


def files_under(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# -- local ----------------------------------------------------------------------------------


def test_bare_saved_model_folder_is_version_1(tmp_path: Path) -> None:
    folder = saved_model(tmp_path / "mnist")
    source = open_source(str(folder), cache_dir=tmp_path / "cache", client_factory=no_client)
    assert isinstance(source, LocalSource)
    assert (source.uri, source.name) == (str(folder), "mnist")
    assert source.versions() == {1: str(folder)}
    assert source.fetch(1) == folder
    assert not (tmp_path / "cache").exists()


def test_bare_folder_named_by_a_number_takes_its_parents_name(tmp_path: Path) -> None:
    folder = saved_model(tmp_path / "mnist" / "7")
    source = LocalSource(folder)
    assert source.name == "mnist"
    assert source.versions() == {1: str(folder)}


def test_versions_folder_ignores_junk_and_empty_versions(tmp_path: Path) -> None:
    base = tmp_path / "mnist"
    saved_model(base / "1")
    saved_model(base / "2", b"two")
    saved_model(base / ".tmp-3")  # still being copied
    saved_model(base / "notes")
    (base / "README.md").write_text("not a version")
    (base / "4").write_text("a file, not a version folder")
    (base / "5").mkdir()  # half-made: skipped until something is in it
    source = open_source(f"file://{base}", cache_dir=tmp_path / "cache")
    assert isinstance(source, LocalSource)
    assert source.uri == f"file://{base}"
    assert source.name == "mnist"
    assert source.versions() == {1: str(base / "1"), 2: str(base / "2")}
    assert source.fetch(2) == base / "2"
    with pytest.raises(NotFoundError) as caught:
        source.fetch(5)
    assert "has no version 5" in caught.value.message
    assert "Available versions: 1, 2." in caught.value.message
    (base / ".tmp-3").rename(base / "3")
    (base / "5" / "saved_model.pb").write_bytes(b"five")
    assert sorted(source.versions()) == [1, 2, 3, 5]
    assert (source.fetch(5) / "saved_model.pb").read_bytes() == b"five"


def test_only_empty_version_folders_means_no_versions_yet(tmp_path: Path) -> None:
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / ".tmp-2").mkdir()
    assert LocalSource(tmp_path / "m").versions() == {}
    assert LocalSource(tmp_path / "m" / ".tmp-2").versions() == {}  # empty folder


def test_a_model_file_is_version_1(tmp_path: Path) -> None:
    model = tmp_path / "mnist.onnx"
    model.write_bytes(b"onnx bytes")
    source = LocalSource(model)
    assert source.name == "mnist"
    assert source.versions() == {1: str(model)}
    assert source.fetch(1) == model


def test_a_missing_path_says_which(tmp_path: Path) -> None:
    source = LocalSource(tmp_path / "nowhere")
    for call in (source.versions, lambda: source.fetch(1)):
        with pytest.raises(NotFoundError) as caught:
            call()
        assert str(tmp_path / "nowhere") in caught.value.message
        assert "does not exist" in caught.value.message


@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        ("", "Cannot serve ''"),
        ("s3://bucket/model", "oss://<bucket>/<prefix>"),
        ("gs://bucket/model", "model:<name>[:<version>]"),
        ("oss://Bad_Bucket/m/", "Invalid bucket name"),
        ("oss://models/a/../b/", "Invalid object key"),
        ("model:", "Invalid model reference"),
        ("model:my model", "Invalid model reference"),
        ("model:mnist:v2", "Invalid model reference"),
        ("file://host/models/mnist", "file:///absolute/path"),
    ],
)
def test_bad_uris_are_refused_with_the_accepted_forms(
    uri: str, fragment: str, tmp_path: Path
) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        open_source(uri, cache_dir=tmp_path, client_factory=no_client)
    assert fragment in caught.value.message


# -- a bucket on a real control plane -------------------------------------------------------


class RecordingTransport(httpx.HTTPTransport):
    """A real transport that records object downloads and can cut the connection on one."""

    def __init__(self, fail_download: int | None = None) -> None:
        super().__init__()
        self.downloads: list[str] = []
        self.fail_download = fail_download

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and "/objects/" in request.url.path:
            self.downloads.append(request.url.path)
            if len(self.downloads) == self.fail_download:
                raise httpx.ConnectError("connection cut by the test", request=request)
        return super().handle_request(request)


@pytest.fixture
def admin(sqlite_server: LiveServer) -> Iterator[Client]:
    with sqlite_server.admin() as client:
        client.create_bucket("models", project="default")
        yield client


def upload_version(client: Client, base: str, number: int, graph: bytes) -> dict[str, bytes]:
    files = {
        "saved_model.pb": graph,
        "variables/variables.index": b"index %d" % number,
        "variables/variables.data-00000-of-00001": BIG,
    }
    for rel, data in files.items():
        client.put_object("models", f"{base}{number}/{rel}", data)
    return files


def test_bucket_versions_are_listed_downloaded_and_reused(
    sqlite_server: LiveServer, admin: Client, tmp_path: Path
) -> None:
    one = upload_version(admin, "models/mnist/", 1, b"one")
    two = upload_version(admin, "models/mnist/", 2, b"two")
    admin.put_object("models", "models/mnist/.tmp-3/saved_model.pb", b"partial")
    admin.put_object("models", "models/mnist/README.md", b"junk")
    admin.mkdir("models", "models/mnist/4")  # a folder marker only: not a version
    transport = RecordingTransport()
    with Client(environ=sqlite_server.environ, transport=transport) as client:
        source = open_source(
            "oss://models/models/mnist/",
            cache_dir=tmp_path / "cache",
            client_factory=lambda: client,
        )
        assert isinstance(source, StoreSource)
        assert (source.uri, source.name) == ("oss://models/models/mnist/", "mnist")
        assert source.versions() == {
            1: "oss://models/models/mnist/1/",
            2: "oss://models/models/mnist/2/",
        }
        path = source.fetch(2)
        assert path.is_dir()
        assert path.is_relative_to(tmp_path / "cache" / "models")
        assert path.name == "2"
        assert files_under(path) == two
        assert len(transport.downloads) == 3
        before = (path / "saved_model.pb").stat()

        assert source.fetch(2) == path  # reused: nothing downloaded again
        assert len(transport.downloads) == 3
        after = (path / "saved_model.pb").stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
        assert files_under(source.fetch(1)) == one
        assert [p.name for p in path.parent.iterdir() if p.name.startswith(".tmp")] == []

        three = upload_version(admin, "models/mnist/", 3, b"three")  # appears later
        assert sorted(source.versions()) == [1, 2, 3]
        assert files_under(source.fetch(3)) == three

        admin.put_object("models", "models/mnist/2/saved_model.pb", b"two, retrained")
        assert (source.fetch(2) / "saved_model.pb").read_bytes() == b"two, retrained"
        with pytest.raises(NotFoundError) as caught:
            source.fetch(9)
        assert "Available versions: 1, 2, 3." in caught.value.message


def test_objects_directly_under_the_prefix_are_version_1(admin: Client, tmp_path: Path) -> None:
    admin.put_object("models", "bare/saved_model.pb", b"bare graph")
    admin.put_object("models", "bare/variables/variables.index", b"index")
    source = StoreSource(admin, "models", "bare", tmp_path / "cache")
    assert source.name == "bare"
    assert source.versions() == {1: "oss://models/bare/"}
    assert files_under(source.fetch(1)) == {
        "saved_model.pb": b"bare graph",
        "variables/variables.index": b"index",
    }


def test_one_object_is_version_1_and_fetches_as_a_file(admin: Client, tmp_path: Path) -> None:
    admin.put_object("models", "files/mnist.onnx", BIG)
    admin.put_object("models", "files/other.onnx", b"not this one")
    source = open_source(
        "oss://models/files/mnist.onnx", cache_dir=tmp_path / "c", client_factory=lambda: admin
    )
    assert source.name == "mnist"
    assert source.versions() == {1: "oss://models/files/mnist.onnx"}
    path = source.fetch(1)
    assert path.is_file()
    assert path.name == "mnist.onnx"
    assert path.read_bytes() == BIG
    assert [p.name for p in path.parent.iterdir()] == ["mnist.onnx"]


def test_empty_prefix_has_no_versions_and_a_missing_bucket_says_so(
    admin: Client, tmp_path: Path
) -> None:
    assert StoreSource(admin, "models", "nothing/yet/", tmp_path).versions() == {}
    assert StoreSource(admin, "models", "nothing/yet", tmp_path).versions() == {}
    with pytest.raises(BucketNotFoundError, match="nosuch"):
        StoreSource(admin, "nosuch", "m/", tmp_path).versions()


def test_a_failed_download_leaves_no_partial_folder(
    sqlite_server: LiveServer, admin: Client, tmp_path: Path
) -> None:
    expected = upload_version(admin, "m/", 1, b"graph")
    cache = tmp_path / "cache"
    transport = RecordingTransport(fail_download=2)
    with Client(environ=sqlite_server.environ, transport=transport) as client:
        source = StoreSource(client, "models", "m/", cache)
        with pytest.raises(ServerUnavailableError):
            source.fetch(1)
        assert len(transport.downloads) == 2
        leftovers = [p.name for p in source.cache.iterdir() if not p.name.endswith(".lock")]
        assert leftovers == []
        (source.cache / ".tmp-1-left-by-a-killed-server").mkdir()
        assert files_under(source.fetch(1)) == expected  # the next try starts afresh
        assert sorted(p.name for p in source.cache.iterdir()) == ["1", "1.lock", "1.manifest.json"]


def test_keys_escaping_the_cache_are_refused(admin: Client, tmp_path: Path) -> None:
    now = datetime.now(timezone.utc)
    for key in ("m/1/../../escape", "m/1//x", "/etc/passwd"):
        folder = StoredFolder("models", "m/1/", (ObjectInfo(key, 1, now, "etag"),))
        with pytest.raises(StoreError, match="Refusing to download"):
            download(admin, folder, tmp_path / "cache" / "dest")
    assert not (tmp_path / "cache").exists()  # refused before anything was written


# -- the model registry ---------------------------------------------------------------------

EXPORTER = """
    import argparse, os
    parser = argparse.ArgumentParser()
    parser.add_argument("--buckets")
    args, _ = parser.parse_known_args()
    for number in (1, 2):
        folder = os.path.join(args.buckets, str(number))
        os.makedirs(os.path.join(folder, "variables"))
        with open(os.path.join(folder, "saved_model.pb"), "wb") as fh:
            fh.write(b"graph %d" % number)
        with open(os.path.join(folder, "variables", "variables.index"), "wb") as fh:
            fh.write(b"index %d" % number)
"""


def test_registry_versions_come_from_the_control_plane(admin: Client, tmp_path: Path) -> None:
    script = tmp_path / "exporter.py"
    script.write_text(textwrap.dedent(EXPORTER))
    resource = admin.add_resource(script, force=True).uri
    job = admin.submit_job(resource, buckets=["oss://models/out/"], model_name="mnist")
    finished = admin.wait_job(job.id, timeout_s=90)
    assert finished.state == "SUCCEEDED", finished.reason
    cache = tmp_path / "cache"

    source = open_source("model:mnist", cache_dir=cache, client_factory=lambda: admin)
    assert isinstance(source, RegistrySource)
    assert (source.uri, source.name) == ("model:mnist", "mnist")
    assert source.versions() == {1: "oss://models/out/1/", 2: "oss://models/out/2/"}
    path = source.fetch(2)
    assert path == cache / "_registry" / "default" / "mnist" / "2"
    assert files_under(path) == {
        "saved_model.pb": b"graph 2",
        "variables/variables.index": b"index 2",
    }
    inode = (path / "saved_model.pb").stat().st_ino
    assert source.fetch(2) == path
    assert (path / "saved_model.pb").stat().st_ino == inode

    pinned = open_source("model:mnist:1", cache_dir=cache, client_factory=lambda: admin)
    assert pinned.versions() == {1: "oss://models/out/1/"}
    assert (pinned.fetch(1) / "saved_model.pb").read_bytes() == b"graph 1"
    with pytest.raises(NotFoundError) as caught:
        pinned.fetch(2)
    assert "Available versions: 1." in caught.value.message

    missing = RegistrySource(admin, "mnist", 7, cache)
    with pytest.raises(NotFoundError) as caught:
        missing.versions()
    assert caught.value.message == "Model 'mnist' has no version 7. Available versions: 1, 2."
    with pytest.raises(NotFoundError, match="'nosuch' does not exist"):
        RegistrySource(admin, "nosuch", None, cache).versions()
