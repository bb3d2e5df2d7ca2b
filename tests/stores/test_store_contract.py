"""One suite for every Store backend: ``local`` always, ``s3`` against a real moto server."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from liqi.errors import InvalidRequestError, ObjectNotFoundError
from liqi.stores import LocalStore, ObjectInfo, Store
from liqi.stores.base import CHUNK_BYTES
from liqi.stores.s3 import S3Store
from tests.support.moto_s3 import (
    ACCESS_KEY_ID,
    REGION,
    SECRET_ACCESS_KEY,
    create_bucket,
    remove_bucket,
    s3_client,
    unfinished_uploads,
)

MiB = 1024 * 1024
PART_BYTES = 5 * MiB  # S3's smallest part: objects above it go up in several parts
PREFIX = "liqi/models/"
# Keys next to the s3 store's prefix, in the same S3 bucket: never seen, never touched.
NEIGHBOURS = ("outside", "liqi/", "liqi/models-old/x", "liqi/modelsx")


class InjectedError(Exception):
    """Raised by a test's chunks or before_commit."""


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh, empty store: a local folder, or a new S3 bucket with a key prefix."""
    if request.param == "local":
        yield LocalStore(tmp_path / "bucket", tmp_path / "tmp")
        return
    endpoint_url: str = request.getfixturevalue("s3_server")
    bucket = create_bucket(endpoint_url)
    for key in NEIGHBOURS:
        s3_client(endpoint_url).put_object(Bucket=bucket, Key=key, Body=b"not ours")
    try:
        yield S3Store(
            bucket,
            prefix=PREFIX,
            endpoint_url=endpoint_url,
            region=REGION,
            access_key_id=ACCESS_KEY_ID,
            secret_access_key=SECRET_ACCESS_KEY,
            multipart_threshold_bytes=PART_BYTES,
            part_bytes=PART_BYTES,
        )
    finally:
        remove_bucket(endpoint_url, bucket)


def read(store: Store, key: str, start: int = 0, end: int | None = None) -> bytes:
    reader = store.open(key, start=start, end=end)
    try:
        chunks = list(reader.chunks)
    finally:
        reader.close()
    assert all(len(chunk) <= CHUNK_BYTES for chunk in chunks)
    return b"".join(chunks)


def keys(store: Store, prefix: str = "") -> list[str]:
    return [info.key for info in store.walk(prefix)]


def leftovers(store: Store) -> list[str]:
    """Temporary files or unfinished multipart uploads a write left behind."""
    if isinstance(store, LocalStore):
        return [path.name for path in store.tmp_dir.iterdir()]
    assert isinstance(store, S3Store)
    assert store.endpoint_url
    return unfinished_uploads(store.endpoint_url, store.bucket)


def pattern(size: int, seed: int = 0) -> bytes:
    block = bytes((seed + i * 7) % 256 for i in range(251))
    return (block * (size // len(block) + 1))[:size]


def test_put_open_stat_round_trip(store: Store) -> None:
    data = b"hello, liqi\n" * 1000
    key = "models/mnist/1/saved_model.pb"

    info = store.put(key, iter([data]), content_type="application/octet-stream")

    assert (info.key, info.size) == (key, len(data))
    stat = store.stat(key)
    assert (stat.key, stat.size, stat.etag) == (key, len(data), info.etag)
    assert stat.modified_at.tzinfo is not None
    reader = store.open(key)
    assert (reader.info.size, reader.info.etag, reader.start, reader.end) == (
        len(data),
        info.etag,
        0,
        len(data),
    )
    assert b"".join(reader.chunks) == data
    reader.close()
    assert store.exists(key)
    assert not store.exists("models/mnist/1/other.pb")


def test_content_type_is_kept(store: Store) -> None:
    store.put("data/table.csv", [b"a,b\n1,2\n"], content_type="text/csv")

    assert store.stat("data/table.csv").content_type == "text/csv"
    reader = store.open("data/table.csv")
    reader.close()
    assert reader.info.content_type == "text/csv"


def test_empty_object(store: Store) -> None:
    info = store.put("empty", [])

    assert info.size == 0
    assert store.stat("empty").etag == hashlib.md5(b"").hexdigest()
    assert read(store, "empty") == b""
    assert [o.size for o in store.list().objects] == [0]


def test_binary_content(store: Store) -> None:
    data = bytes(range(256)) * 4099 + b"\x00\r\n\xff\x00"

    store.put("blob.bin", [data[:1000], data[1000:]])

    assert read(store, "blob.bin") == data
    assert store.stat("blob.bin").etag == hashlib.md5(data).hexdigest()


def test_chunked_put_of_many_chunks(store: Store) -> None:
    pieces = [pattern(i * 37 % 4999, seed=i) for i in range(3000)]  # some empty, ~7.5 MB

    info = store.put("many", (piece for piece in pieces))

    data = b"".join(pieces)
    assert info.size == len(data) == store.stat("many").size
    assert hashlib.sha256(read(store, "many")).digest() == hashlib.sha256(data).digest()


SIZE = 3 * CHUNK_BYTES + 17


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (0, None),
        (0, 10),
        (10, None),
        (CHUNK_BYTES - 3, CHUNK_BYTES + 5),
        (SIZE - 1, None),
        (SIZE, None),
        (5, 5),
        (0, SIZE),
    ],
    ids=["all", "start", "tail", "middle", "last-byte", "at-end", "empty", "exact"],
)
def test_range_reads(store: Store, start: int, end: int | None) -> None:
    data = pattern(SIZE)
    store.put("ranged", [data])

    reader = store.open("ranged", start=start, end=end)
    body = b"".join(reader.chunks)
    reader.close()

    assert body == data[start:end]
    assert (reader.start, reader.end, reader.info.size) == (start, end or SIZE, SIZE)


@pytest.mark.parametrize(
    ("start", "end"),
    [(SIZE + 1, None), (0, SIZE + 1), (SIZE + 1, SIZE + 2), (10, 5), (-1, None)],
    ids=["start-past-end", "end-past-end", "both-past-end", "reversed", "negative"],
)
def test_range_outside_the_object_is_refused(store: Store, start: int, end: int | None) -> None:
    store.put("ranged", [pattern(SIZE)])

    with pytest.raises(InvalidRequestError, match="outside"):
        store.open("ranged", start=start, end=end)


def failing_chunks(size: int) -> Iterator[bytes]:
    for offset in range(0, size, MiB):
        yield pattern(min(MiB, size - offset), seed=offset)
    raise InjectedError("the client went away")


def refuse() -> None:
    raise InjectedError("signed hash does not match")


@pytest.mark.parametrize("size", [1000, 6 * MiB], ids=["small", "multipart"])
@pytest.mark.parametrize("failure", ["chunks", "before_commit"])
@pytest.mark.parametrize("key", ["models/m.bin", "models/new/m.bin"], ids=["overwrite", "new"])
def test_failed_put_leaves_the_old_object(store: Store, failure: str, size: int, key: str) -> None:
    store.put("models/m.bin", [b"old content"])

    if failure == "chunks":
        with pytest.raises(InjectedError):
            store.put(key, failing_chunks(size))
    else:
        with pytest.raises(InjectedError):
            store.put(key, [pattern(size)], before_commit=refuse)

    assert read(store, "models/m.bin") == b"old content"
    assert keys(store) == ["models/m.bin"]
    assert store.list("models/", delimiter="/").prefixes == ()
    assert leftovers(store) == []


def test_before_commit_runs_after_the_last_chunk_before_visibility(store: Store) -> None:
    events: list[str] = []

    def chunks() -> Iterator[bytes]:
        for i in range(3):
            events.append(f"chunk {i}")
            yield b"x" * 10

    def before_commit() -> None:
        events.append("before_commit")
        assert not store.exists("fresh")

    store.put("fresh", chunks(), before_commit=before_commit)

    assert events == ["chunk 0", "chunk 1", "chunk 2", "before_commit"]
    assert read(store, "fresh") == b"x" * 30


def test_large_object_goes_up_in_parts(store: Store) -> None:
    pieces = [pattern(MiB, seed=i) for i in range(12)]
    data = b"".join(pieces)

    info = store.put("big/model.bin", iter(pieces))

    assert info.size == 12 * MiB
    assert hashlib.sha256(read(store, "big/model.bin")).digest() == hashlib.sha256(data).digest()
    boundary = PART_BYTES
    assert (
        read(store, "big/model.bin", boundary - 10, boundary + 10)
        == data[boundary - 10 : boundary + 10]
    )
    if isinstance(store, S3Store):
        assert info.etag.endswith("-3")  # 5 + 5 + 2 MiB
        assert store.stat("big/model.bin").etag == info.etag
    assert leftovers(store) == []


TREE = ["data/y", "models-old/x", "models/a/1", "models/a/2", "models/b", "models/c/", "readme"]


def put_all(store: Store, names: list[str]) -> None:
    for name in names:
        store.put(name, [] if name.endswith("/") else [name.encode()])


def test_list_with_prefix(store: Store) -> None:
    put_all(store, TREE)

    listing = store.list("models/")

    assert [(o.key, o.size) for o in listing.objects] == [
        ("models/a/1", 10),
        ("models/a/2", 10),
        ("models/b", 8),
    ]
    assert (listing.prefixes, listing.next_marker) == ((), None)
    assert [o.key for o in store.list("mod").objects] == [
        "models-old/x",
        "models/a/1",
        "models/a/2",
        "models/b",
    ]
    assert store.list("nothing/").objects == ()


def test_list_with_delimiter_shows_folders(store: Store) -> None:
    put_all(store, [*TREE, "empty/"])

    top = store.list(delimiter="/")
    models = store.list("models/", delimiter="/")
    leaf = store.list("models/a/", delimiter="/")

    assert [o.key for o in top.objects] == ["readme"]
    assert top.prefixes == ("data/", "empty/", "models-old/", "models/")
    assert [o.key for o in models.objects] == ["models/b"]
    assert models.prefixes == ("models/a/", "models/c/")
    assert ([o.key for o in leaf.objects], leaf.prefixes) == (["models/a/1", "models/a/2"], ())
    assert store.list("empty/", delimiter="/") == store.list("nothing/", delimiter="/")


def pages(store: Store, prefix: str, delimiter: str | None, limit: int) -> list[list[str]]:
    found: list[list[str]] = []
    marker: str | None = None
    while True:
        page = store.list(prefix, delimiter=delimiter, marker=marker, limit=limit)
        found.append(sorted([o.key for o in page.objects] + list(page.prefixes)))
        assert len(found[-1]) <= limit
        if page.next_marker is None:
            return found
        assert page.next_marker == found[-1][-1]
        marker = page.next_marker


def test_listing_is_sorted_by_full_key_like_s3(store: Store) -> None:
    put_all(store, ["a0", "a/b", "a-c", "a.d/e"])

    assert [o.key for o in store.list().objects] == ["a-c", "a.d/e", "a/b", "a0"]
    assert pages(store, "", "/", 1) == [["a-c"], ["a.d/"], ["a/"], ["a0"]]


@pytest.mark.parametrize("limit", [1, 2, 3, 7])
@pytest.mark.parametrize("delimiter", [None, "/"])
@pytest.mark.parametrize("prefix", ["", "models/", "models/a"])
def test_pagination_reproduces_the_full_listing(
    store: Store, limit: int, delimiter: str | None, prefix: str
) -> None:
    put_all(store, [*TREE, "models/a/3/", "models/a/3/x", "models/ab", "models/a-z", "z/"])
    full = store.list(prefix, delimiter=delimiter)

    found = pages(store, prefix, delimiter, limit)

    assert full.next_marker is None
    names = [name for page in found for name in page]
    assert names == sorted([o.key for o in full.objects] + list(full.prefixes))
    assert len(names) == len(set(names)) > 0


def test_folder_marker_is_a_prefix_not_an_object(store: Store) -> None:
    info = store.put("models/", [])

    assert info.size == 0
    assert store.list().objects == ()
    assert store.list(delimiter="/").prefixes == ("models/",)
    assert store.stat("models/").size == 0
    assert read(store, "models/") == b""
    assert store.exists("models/")
    assert not store.exists("models")
    assert keys(store) == []


def test_folder_marker_with_content_is_refused(store: Store) -> None:
    with pytest.raises(InvalidRequestError, match="must be empty"):
        store.put("models/", [b"content"])

    assert not store.exists("models/")


def test_delete(store: Store) -> None:
    put_all(store, ["a", "m/", "m/b"])

    assert store.delete("a") is True
    assert store.delete("a") is False
    assert store.delete("never") is False
    assert store.delete("never/") is False
    with pytest.raises(ObjectNotFoundError):
        store.stat("a")
    assert store.delete("m/b") is True
    assert store.delete("m/") is True
    assert not store.exists("m/")
    assert store.list(delimiter="/") == store.list("nothing/")


def test_delete_prefix(store: Store) -> None:
    # Every folder has its marker: a local store counts its folders as markers.
    put_all(
        store, ["models/", "models/a/", "models/a/1", "models/b", "modelsx", "other/", "other/c"]
    )

    assert store.delete_prefix("models/") == 4

    assert keys(store) == ["modelsx", "other/c"]
    assert store.list(delimiter="/").prefixes == ("other/",)
    assert store.delete_prefix("nothing/") == 0
    assert store.delete_prefix("") == 3
    assert store.list(delimiter="/") == store.list("nothing/")


def test_copy(store: Store) -> None:
    store.put("src/model.bin", [b"weights"], content_type="text/plain")
    store.put("dst/model.bin", [b"older weights"])

    info = store.copy("src/model.bin", "dst/model.bin")

    assert (info.key, info.size) == ("dst/model.bin", 7)
    assert read(store, "dst/model.bin") == b"weights"
    assert read(store, "src/model.bin") == b"weights"
    assert store.stat("dst/model.bin").content_type == "text/plain"
    assert store.copy("src/model.bin", "src/model.bin").size == 7
    with pytest.raises(ObjectNotFoundError):
        store.copy("src/missing", "dst/missing")
    assert not store.exists("dst/missing")


@pytest.mark.parametrize("key", ["missing", "dir/missing", "missing/"])
def test_missing_object(store: Store, key: str) -> None:
    store.put("dir/present", [b"x"])

    with pytest.raises(ObjectNotFoundError, match="missing"):
        store.stat(key)
    with pytest.raises(ObjectNotFoundError, match="missing"):
        store.open(key)
    with pytest.raises(ObjectNotFoundError, match="missing"):
        store.open(key, start=1, end=2)
    assert not store.exists(key)


BAD_KEYS = ["../x", "a/../../x", "/etc/passwd", "a\x00b", "a//b", "", "a\\b", "./a"]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_invalid_keys_are_refused(store: Store, key: str) -> None:
    store.put("ok", [b"x"])
    calls: list[Callable[[], object]] = [
        lambda: store.put(key, [b"x"]),
        lambda: store.open(key),
        lambda: store.stat(key),
        lambda: store.delete(key),
        lambda: store.copy("ok", key),
        lambda: store.copy(key, "ok2"),
    ]
    for call in calls:
        with pytest.raises(InvalidRequestError, match="key"):
            call()
    if key:
        with pytest.raises(InvalidRequestError):
            store.list(key)
    assert keys(store) == ["ok"]


def test_presign(store: Store) -> None:
    store.put("shared/model.bin", [b"weights"])

    get_url = store.presign("shared/model.bin", expires_s=60)
    put_url = store.presign("shared/upload.bin", method="PUT", expires_s=60)

    if isinstance(store, LocalStore):
        assert (get_url, put_url) == (None, None)
        return
    assert get_url is not None
    assert put_url is not None
    answer = httpx.get(get_url, trust_env=False)
    assert (answer.status_code, answer.content) == (200, b"weights")
    assert httpx.put(put_url, content=b"uploaded", trust_env=False).status_code == 200
    assert read(store, "shared/upload.bin") == b"uploaded"
    with pytest.raises(InvalidRequestError, match="PATCH"):
        store.presign("shared/model.bin", method="PATCH")


def test_concurrent_writes_of_one_key_are_whole(store: Store) -> None:
    contents = [pattern(300_000, seed=i) for i in range(4)]
    errors: list[BaseException] = []

    def write(data: bytes) -> None:
        try:
            for _ in range(3):
                store.put("shared", [data[:100_000], data[100_000:]])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(data,)) for data in contents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert read(store, "shared") in contents
    assert keys(store) == ["shared"]
    assert leftovers(store) == []


def test_listing_infos_match_stat(store: Store) -> None:
    put_all(store, ["a", "b/c"])

    listed = {o.key: o for o in store.list().objects}

    for key in ("a", "b/c"):
        stat: ObjectInfo = store.stat(key)
        assert (listed[key].size, listed[key].etag) == (stat.size, stat.etag)
