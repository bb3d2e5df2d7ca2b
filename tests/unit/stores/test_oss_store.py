"""OssStore at the seam: against an in-memory fake of the oss2.Bucket methods it calls."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterator

import oss2
import pytest

from liqi.errors import (
    BackendUnavailableError,
    ConfigError,
    InvalidRequestError,
    ObjectNotFoundError,
    StoreError,
)
from liqi.stores.oss import OssStore
from tests.unit.stores.fake_oss import FakeOssBucket, server_error

KiB = 1024
PART = 100 * KiB
SECRET = "very-secret-access-key-value"


class InjectedError(Exception):
    pass


@pytest.fixture
def fake() -> FakeOssBucket:
    return FakeOssBucket()


@pytest.fixture
def store(fake: FakeOssBucket) -> OssStore:
    return OssStore(
        "liqi-fake",
        endpoint="https://oss-cn-hangzhou.aliyuncs.com",
        access_key_id="LTAI-test",
        access_key_secret=SECRET,
        prefix="liqi/models",
        bucket_factory=fake.factory,
        multipart_threshold_bytes=PART,
        part_bytes=PART,
    )


def read(store: OssStore, key: str, start: int = 0, end: int | None = None) -> bytes:
    reader = store.open(key, start=start, end=end)
    try:
        return b"".join(reader.chunks)
    finally:
        reader.close()


def data_of(size: int) -> bytes:
    return bytes(i % 251 for i in range(size))


def test_the_bucket_is_built_with_credentials_endpoint_and_name(fake: FakeOssBucket) -> None:
    OssStore(
        "models-bucket",
        endpoint="https://oss.example",
        access_key_id="id",
        access_key_secret=SECRET,
        bucket_factory=fake.factory,
    )

    assert fake.called("Bucket") == [("Auth", "https://oss.example", "models-bucket")]


def test_small_put_is_one_put_object_under_the_prefix(store: OssStore, fake: FakeOssBucket) -> None:
    info = store.put("mnist/1/model.pb", [b"gra", b"ph"], content_type="application/x-pb")

    assert fake.called("put_object") == [("liqi/models/mnist/1/model.pb", 5)]
    assert fake.called("init_multipart_upload") == []
    assert fake.objects["liqi/models/mnist/1/model.pb"].data == b"graph"
    assert fake.objects["liqi/models/mnist/1/model.pb"].content_type == "application/x-pb"
    assert (info.key, info.size, info.content_type) == ("mnist/1/model.pb", 5, "application/x-pb")
    assert info.etag == store.stat("mnist/1/model.pb").etag
    assert read(store, "mnist/1/model.pb") == b"graph"


def test_large_put_goes_up_in_parts(store: OssStore, fake: FakeOssBucket) -> None:
    data = data_of(350 * KiB)

    info = store.put("big.bin", (data[i : i + 10 * KiB] for i in range(0, len(data), 10 * KiB)))

    assert [args[2:] for args in fake.called("upload_part")] == [
        (1, PART),
        (2, PART),
        (3, PART),
        (4, 50 * KiB),
    ]
    assert fake.called("complete_multipart_upload") == [("liqi/models/big.bin", "upload-1", 4)]
    assert fake.objects["liqi/models/big.bin"].data == data
    assert (info.size, info.etag) == (len(data), fake.objects["liqi/models/big.bin"].etag)
    assert fake.uploads == {}


def chunks_then_boom(size: int) -> Iterator[bytes]:
    yield data_of(size)
    raise InjectedError


@pytest.mark.parametrize("failure", ["chunks", "before_commit", "upload_part", "complete"])
def test_a_failed_multipart_upload_is_aborted(
    store: OssStore, fake: FakeOssBucket, failure: str
) -> None:
    store.put("m.bin", [b"old"])
    expected: type[Exception] = InjectedError
    chunks: Iterator[bytes] = iter([data_of(250 * KiB)])
    before_commit = None
    if failure == "chunks":
        chunks = chunks_then_boom(250 * KiB)
    elif failure == "before_commit":

        def before_commit() -> None:
            raise InjectedError

    else:
        expected = StoreError
        method = "upload_part" if failure == "upload_part" else "complete_multipart_upload"
        fake.fail_next[method] = server_error(
            oss2.exceptions.ServerError, 500, "InternalError", "Please retry."
        )

    with pytest.raises(expected):
        store.put("m.bin", chunks, before_commit=before_commit)

    assert fake.called("abort_multipart_upload") == [("liqi/models/m.bin", "upload-1")]
    assert fake.uploads == {}
    assert read(store, "m.bin") == b"old"


def test_a_failed_small_put_sends_nothing(store: OssStore, fake: FakeOssBucket) -> None:
    def refuse() -> None:
        raise InjectedError

    with pytest.raises(InjectedError):
        store.put("m.bin", [b"abc"], before_commit=refuse)

    assert fake.called("put_object") == []
    assert fake.objects == {}


def test_list_with_delimiter_strips_the_prefix_and_hides_markers(store: OssStore) -> None:
    for key in ["models/", "models/a/1", "models/b", "readme", "empty/"]:
        store.put(key, [] if key.endswith("/") else [b"x"])
    store._bucket.objects["liqi/models-other/x"] = store._bucket.objects["liqi/models/readme"]

    top = store.list(delimiter="/")
    models = store.list("models/", delimiter="/")

    assert ([o.key for o in top.objects], top.prefixes) == (["readme"], ("empty/", "models/"))
    assert ([o.key for o in models.objects], models.prefixes) == (["models/b"], ("models/a/",))
    assert [o.key for o in store.list().objects] == ["models/a/1", "models/b", "readme"]


@pytest.mark.parametrize("delimiter", [None, "/"])
def test_pages_reproduce_the_full_listing(store: OssStore, delimiter: str | None) -> None:
    for key in ["a/", "a/1", "a/2", "a-b", "b/c/d", "c", "d/", "e"]:
        store.put(key, [] if key.endswith("/") else [b"x"])
    full = store.list(delimiter=delimiter)

    names: list[str] = []
    marker = None
    while True:
        page = store.list(delimiter=delimiter, marker=marker, limit=2)
        assert len(page.objects) + len(page.prefixes) <= 2
        names += sorted([o.key for o in page.objects] + list(page.prefixes))
        if page.next_marker is None:
            break
        marker = page.next_marker

    assert names == sorted([o.key for o in full.objects] + list(full.prefixes))


def test_range_reads(store: OssStore, fake: FakeOssBucket) -> None:
    data = data_of(5000)
    store.put("r.bin", [data])

    assert read(store, "r.bin", 10, 20) == data[10:20]
    assert read(store, "r.bin", 4990) == data[4990:]
    assert read(store, "r.bin", 5000) == b""
    assert read(store, "r.bin", 7, 7) == b""
    ranges = [kwargs["byte_range"] for name, _, kwargs in fake.calls if name == "get_object"]
    assert ranges == [(10, 19), (4990, None), (5000, None)]
    for start, end in [(5001, None), (0, 5001), (9, 3), (-1, None)]:
        with pytest.raises(InvalidRequestError, match="outside"):
            store.open("r.bin", start=start, end=end)
    assert all(result.closed for result in fake.opened)


def test_presign_signs_the_prefixed_key(store: OssStore, fake: FakeOssBucket) -> None:
    url = store.presign("shared/model.bin", method="put", expires_s=60)

    assert url is not None
    assert url.startswith("https://")
    assert fake.called("sign_url") == [("PUT", "liqi/models/shared/model.bin", 60)]
    with pytest.raises(InvalidRequestError, match="PATCH"):
        store.presign("shared/model.bin", method="PATCH")
    with pytest.raises(InvalidRequestError, match="lifetime"):
        store.presign("shared/model.bin", expires_s=0)


def test_copy_is_server_side_unless_too_big(store: OssStore, fake: FakeOssBucket) -> None:
    store.put("src", [b"weights"], content_type="text/plain")

    info = store.copy("src", "dst")
    store.server_copy_max_bytes = 3
    streamed = store.copy("src", "dst2")

    assert fake.called("copy_object") == [("liqi-fake", "liqi/models/src", "liqi/models/dst")]
    assert (info.size, read(store, "dst")) == (7, b"weights")
    assert (streamed.size, read(store, "dst2")) == (7, b"weights")
    assert fake.objects["liqi/models/dst2"].content_type == "text/plain"
    with pytest.raises(ObjectNotFoundError):
        store.copy("missing", "dst3")


def test_delete_and_delete_prefix(store: OssStore, fake: FakeOssBucket) -> None:
    for key in ["a/", "a/1", "a/2", "b"]:
        store.put(key, [] if key.endswith("/") else [b"x"])

    assert store.delete("b") is True
    assert store.delete("b") is False
    assert store.delete_prefix("a/") == 3
    assert fake.objects == {}


def test_missing_objects_are_object_not_found(store: OssStore) -> None:
    with pytest.raises(ObjectNotFoundError, match="'missing'"):
        store.stat("missing")  # HEAD answers a bare 404 (NotFound)
    with pytest.raises(ObjectNotFoundError, match="'missing'"):
        store.open("missing")  # GET answers NoSuchKey
    assert not store.exists("missing")


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (
            server_error(oss2.exceptions.NoSuchBucket, 404, "NoSuchBucket", "No bucket."),
            "bucket 'liqi-fake' does not exist",
        ),
        (
            server_error(oss2.exceptions.AccessDenied, 403, "AccessDenied", "Denied."),
            "Check the AccessKey",
        ),
        (
            server_error(oss2.exceptions.ServerError, 503, "ServiceUnavailable", "Busy."),
            "ServiceUnavailable: Busy.*request id 5F0",
        ),
        (oss2.exceptions.RequestError(ConnectionError("refused")), "unreachable"),
    ],
    ids=["no-bucket", "access-denied", "server-error", "network"],
)
def test_other_oss_errors_are_store_errors(
    store: OssStore, fake: FakeOssBucket, error: BaseException, message: str
) -> None:
    for method in ("head_object", "put_object", "list_objects"):
        fake.fail_next[method] = error
    calls = [lambda: store.stat("k"), lambda: store.put("k", [b"x"]), lambda: store.list()]

    for call in calls:
        with pytest.raises(StoreError, match=message) as caught:
            call()
        assert SECRET not in str(caught.value)
        assert not isinstance(caught.value, ObjectNotFoundError)


def test_an_expired_upload_is_a_store_error_not_a_missing_object(
    store: OssStore, fake: FakeOssBucket
) -> None:
    fake.fail_next["upload_part"] = server_error(
        oss2.exceptions.NoSuchUpload, 404, "NoSuchUpload", "The upload does not exist."
    )

    with pytest.raises(StoreError, match="NoSuchUpload") as caught:
        store.put("big.bin", [data_of(250 * KiB)])

    assert not isinstance(caught.value, ObjectNotFoundError)
    assert fake.called("abort_multipart_upload") == [("liqi/models/big.bin", "upload-1")]


def test_folder_marker_with_content_is_refused(store: OssStore, fake: FakeOssBucket) -> None:
    with pytest.raises(InvalidRequestError, match="must be empty"):
        store.put("models/", [b"x"])

    assert fake.objects == {}


def test_bad_keys_never_reach_oss(store: OssStore, fake: FakeOssBucket) -> None:
    for key in ["../x", "/abs", "a\x00b"]:
        with pytest.raises(InvalidRequestError):
            store.put(key, [b"x"])
        with pytest.raises(InvalidRequestError):
            store.open(key)

    assert [name for name, _, _ in fake.calls] == ["Bucket"]


def test_parts_below_the_oss_minimum_are_refused(fake: FakeOssBucket) -> None:
    with pytest.raises(ConfigError, match="100 KiB"):
        OssStore(
            "b",
            endpoint="e",
            access_key_id="i",
            access_key_secret="s",
            bucket_factory=fake.factory,
            part_bytes=1024,
        )


def test_missing_oss2_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "oss2", None)

    with pytest.raises(BackendUnavailableError, match=r"liqi\[oss\]"):
        OssStore("b", endpoint="e", access_key_id="i", access_key_secret="s")


def test_the_fake_matches_oss2_bucket_signatures() -> None:
    """Same required parameters, in order, and only keyword parameters oss2 has."""

    def required(parameters: list[inspect.Parameter]) -> list[str]:
        return [p.name for p in parameters if p.default is inspect.Parameter.empty]

    for name, method in inspect.getmembers(FakeOssBucket, inspect.isfunction):
        if name.startswith("_") or name in ("factory", "called"):
            continue
        real = list(inspect.signature(getattr(oss2.Bucket, name)).parameters.values())
        fake = list(inspect.signature(method).parameters.values())
        assert required(fake) == required(real), name
        assert {p.name for p in fake} <= {p.name for p in real}, name


def test_presign_with_the_real_oss2_bucket_signs_locally() -> None:
    store = OssStore(
        "liqi-models",
        endpoint="https://oss-cn-hangzhou.aliyuncs.com",
        access_key_id="LTAI-test",
        access_key_secret=SECRET,
        prefix="team-a/",
    )

    url = store.presign("mnist/1/model.pb", expires_s=600)

    assert url is not None
    assert url.startswith("https://liqi-models.oss-cn-hangzhou.aliyuncs.com/team-a/mnist/1/")
    assert "Signature=" in url
    assert SECRET not in url
