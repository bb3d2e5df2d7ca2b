"""What only the local backend has: a real folder to escape from, a real disk to fill."""

from __future__ import annotations

import errno
import hashlib
import os
import resource
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from liqi.errors import ConfigError, ConflictError, InvalidRequestError, StoreError
from liqi.stores import LocalStore

SECRET = b"outside the bucket"


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_bytes(SECRET)
    return LocalStore(tmp_path / "bucket", tmp_path / "tmp")


def outside_tree(tmp_path: Path) -> dict[str, bytes | None]:
    """Everything under tmp_path except the bucket folder, with file contents."""
    found: dict[str, bytes | None] = {}
    for path in sorted(tmp_path.rglob("*")):
        relative = path.relative_to(tmp_path)
        if relative.parts[0] in ("bucket", "tmp"):
            continue
        found[str(relative)] = path.read_bytes() if path.is_file() else None
    return found


def read(store: LocalStore, key: str) -> bytes:
    reader = store.open(key)
    try:
        return b"".join(reader.chunks)
    finally:
        reader.close()


TRAVERSALS = [
    "../outside/secret.txt",
    "../../etc/passwd",
    "a/../../outside/secret.txt",
    "/etc/passwd",
    "a\x00b",
    "..",
    "../outside/",
    "tmp/../../outside/new",
]


@pytest.mark.parametrize("key", TRAVERSALS)
def test_path_traversal_never_reads_or_writes_outside_the_root(
    store: LocalStore, tmp_path: Path, key: str
) -> None:
    before = outside_tree(tmp_path)
    store.put("ok", [b"x"])
    absolute = str(tmp_path / "outside" / "secret.txt")
    attempts: list[Callable[[], object]] = [
        lambda: store.put(key, [b"overwritten"]),
        lambda: store.put(absolute, [b"overwritten"]),
        lambda: store.open(key),
        lambda: store.stat(key),
        lambda: store.delete(key),
        lambda: store.copy("ok", key),
        lambda: store.copy(key, "stolen"),
        lambda: store.list(key),
        lambda: store.delete_prefix(key),
    ]

    for attempt in attempts:
        with pytest.raises(InvalidRequestError):
            attempt()

    assert outside_tree(tmp_path) == before
    assert sorted(p.name for p in store.root.iterdir()) == ["ok"]


def test_symlinks_inside_the_root_are_not_followed(store: LocalStore, tmp_path: Path) -> None:
    before = outside_tree(tmp_path)
    (store.root / "dir-link").symlink_to(tmp_path / "outside", target_is_directory=True)
    (store.root / "file-link").symlink_to(tmp_path / "outside" / "secret.txt")
    store.put("real", [b"x"])
    (store.root / "inner-link").symlink_to(store.root / "real")
    attempts: list[Callable[[], object]] = [
        lambda: store.open("inner-link"),
        lambda: store.put("inner-link", [b"overwritten"]),
        lambda: store.open("file-link"),
        lambda: store.open("dir-link/secret.txt"),
        lambda: store.stat("dir-link/secret.txt"),
        lambda: store.put("file-link", [b"overwritten"]),
        lambda: store.put("dir-link/new", [b"planted"]),
        lambda: store.put("dir-link/", []),
        lambda: store.delete("file-link"),
        lambda: store.delete("dir-link/secret.txt"),
        lambda: store.copy("file-link", "stolen"),
        lambda: store.list("dir-link/"),
        lambda: store.delete_prefix("dir-link/"),
    ]

    for attempt in attempts:
        with pytest.raises(InvalidRequestError, match=r"outside the bucket|symbolic link"):
            attempt()

    assert read(store, "real") == b"x"
    assert [o.key for o in store.list().objects] == ["real"]
    assert store.list(delimiter="/").prefixes == ()
    assert store.delete_prefix("") == 1
    assert outside_tree(tmp_path) == before


def test_temporary_folder_inside_the_root_is_never_listed(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "bucket", tmp_path / "bucket" / ".tmp")
    (store.tmp_dir / ".liqi-put-stale").write_bytes(b"half an upload")
    store.put("a", [b"x"])

    assert [o.key for o in store.list().objects] == ["a"]
    assert store.list(delimiter="/").prefixes == ()
    with pytest.raises(InvalidRequestError, match="temporary"):
        store.open(".tmp/.liqi-put-stale")
    assert store.delete_prefix("") == 1
    assert (store.tmp_dir / ".liqi-put-stale").exists()


def test_delete_prefix_spares_a_nested_temporary_folder_and_removes_links_only(
    tmp_path: Path,
) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_bytes(SECRET)
    store = LocalStore(tmp_path / "bucket", tmp_path / "bucket" / "work" / ".tmp")
    (store.tmp_dir / ".liqi-put-in-flight").write_bytes(b"half an upload")
    store.put("work/a", [b"x"])
    store.put("work/sub/b", [b"y"])
    (store.root / "work" / "sub" / "link").symlink_to(tmp_path / "outside")

    assert store.delete_prefix("work/") == 3  # work/a, work/sub/b, work/sub/

    assert (store.tmp_dir / ".liqi-put-in-flight").read_bytes() == b"half an upload"
    assert (tmp_path / "outside" / "secret.txt").read_bytes() == SECRET
    assert store.list() == store.list("nothing/")


def disk_full_after(size: int) -> Iterator[bytes]:
    yield b"n" * size
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_keeps_the_old_object(store: LocalStore) -> None:
    store.put("models/m.bin", [b"old"])

    with pytest.raises(StoreError, match="disk full") as caught:
        store.put("models/m.bin", disk_full_after(4096))

    assert "'models/m.bin'" in str(caught.value)
    assert read(store, "models/m.bin") == b"old"
    assert list(store.tmp_dir.iterdir()) == []


def test_a_write_the_filesystem_refuses_keeps_the_old_object(store: LocalStore) -> None:
    """A real failing writer: the kernel refuses to grow files past RLIMIT_FSIZE (EFBIG)."""
    store.put("models/m.bin", [b"old"])
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, hard))
    try:
        with pytest.raises(StoreError, match="too large") as caught:
            store.put("models/m.bin", (b"n" * 65536 for _ in range(16)))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))

    assert "'models/m.bin'" in str(caught.value)
    assert read(store, "models/m.bin") == b"old"
    assert list(store.tmp_dir.iterdir()) == []


def test_a_failed_put_creates_no_folders(store: LocalStore) -> None:
    with pytest.raises(StoreError):
        store.put("new/deep/m.bin", disk_full_after(10))

    assert list(store.root.iterdir()) == []


@pytest.mark.parametrize(
    ("first", "second"),
    [("a", "a/b"), ("a", "a/b/c"), ("a/b", "a"), ("a", "a/"), ("a/", "a")],
)
def test_an_object_and_a_folder_cannot_share_a_name(
    store: LocalStore, first: str, second: str
) -> None:
    store.put(first, [] if first.endswith("/") else [b"first"])

    with pytest.raises(ConflictError, match="both an object and a folder"):
        store.put(second, [] if second.endswith("/") else [b"second"])

    if not first.endswith("/"):
        assert read(store, first) == b"first"
    assert store.exists(first)
    assert list(store.tmp_dir.iterdir()) == []


def test_deleting_the_marker_of_a_full_folder_keeps_its_content(store: LocalStore) -> None:
    store.put("models/m.bin", [b"x"])

    assert store.delete("models/") is True

    assert read(store, "models/m.bin") == b"x"


def test_etag_is_the_md5_of_the_content(store: LocalStore) -> None:
    data = b"weights" * 1000

    info = store.put("m.bin", [data], content_type="application/x-weights")

    assert info.etag == store.stat("m.bin").etag == hashlib.md5(data).hexdigest()
    assert info.content_type == "application/x-weights"


def test_a_file_changed_outside_liqi_gets_a_new_etag(store: LocalStore) -> None:
    info = store.put("m.bin", [b"weights"])
    path = store.root / "m.bin"
    path.write_bytes(b"tampered, longer")

    stat = store.stat("m.bin")

    assert stat.etag != info.etag
    assert stat.etag == f"{stat.size:x}-{path.stat().st_mtime_ns:x}"
    assert stat.content_type is None


def test_objects_are_files_and_markers_are_folders(store: LocalStore) -> None:
    store.put("models/mnist/1/model.pb", [b"graph"])
    store.put("empty/", [])

    assert (store.root / "models" / "mnist" / "1" / "model.pb").read_bytes() == b"graph"
    assert (store.root / "empty").is_dir()
    assert store.exists("models/mnist/")


def test_temporary_folder_on_another_filesystem_is_refused(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on a filesystem of its own")
    with pytest.raises(ConfigError, match="same filesystem"):
        LocalStore(tmp_path / "bucket", shm / f"liqi-test-{os.getpid()}")


def test_unreadable_bucket_folder_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"not a folder")

    with pytest.raises(StoreError, match="Cannot use"):
        LocalStore(tmp_path / "file" / "bucket", tmp_path / "tmp")
