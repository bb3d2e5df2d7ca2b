"""What only the s3 backend has: a key prefix in a shared bucket, a network, boto3 itself."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from liqi.errors import BackendUnavailableError, ConfigError, ObjectNotFoundError, StoreError
from liqi.stores.s3 import S3Store
from tests.support.moto_s3 import (
    ACCESS_KEY_ID,
    REGION,
    SECRET_ACCESS_KEY,
    create_bucket,
    remove_bucket,
    s3_client,
)

SECRET = "a-secret-that-must-never-show"


@pytest.fixture
def bucket(s3_server: str) -> Iterator[str]:
    name = create_bucket(s3_server)
    try:
        yield name
    finally:
        remove_bucket(s3_server, name)


def make_store(endpoint_url: str, bucket: str, **options: Any) -> S3Store:
    settings: dict[str, Any] = {
        "endpoint_url": endpoint_url,
        "region": REGION,
        "access_key_id": ACCESS_KEY_ID,
        "secret_access_key": SECRET_ACCESS_KEY,
    }
    settings.update(options)
    return S3Store(bucket, **settings)


def s3_keys(endpoint_url: str, bucket: str) -> list[str]:
    answer = s3_client(endpoint_url).list_objects_v2(Bucket=bucket)
    return [item["Key"] for item in answer.get("Contents", [])]


def test_two_prefixes_share_one_bucket_without_seeing_each_other(
    s3_server: str, bucket: str
) -> None:
    models = make_store(s3_server, bucket, prefix="liqi/models")
    data = make_store(s3_server, bucket, prefix="liqi/models-data/")
    models.put("a/1", [b"model"])
    data.put("a/1", [b"data"])

    assert [o.key for o in models.list().objects] == ["a/1"]
    assert models.list(delimiter="/").prefixes == ("a/",)
    assert models.delete_prefix("") == 1
    assert s3_keys(s3_server, bucket) == ["liqi/models-data/a/1"]
    assert data.open("a/1").info.size == 4


def test_an_unprefixed_store_uses_the_whole_bucket(s3_server: str, bucket: str) -> None:
    store = make_store(s3_server, bucket)

    store.put("models/m.bin", [b"x"])

    assert s3_keys(s3_server, bucket) == ["models/m.bin"]
    assert [o.key for o in store.list().objects] == ["models/m.bin"]


def test_copy_too_big_for_the_server_streams_through(s3_server: str, bucket: str) -> None:
    store = make_store(s3_server, bucket)
    store.put("src", [b"weights"], content_type="text/plain")
    store.server_copy_max_bytes = 3

    info = store.copy("src", "dst")

    assert info.size == 7
    assert store.stat("dst").content_type == "text/plain"
    reader = store.open("dst")
    assert b"".join(reader.chunks) == b"weights"


def test_a_missing_s3_bucket_is_a_store_error(s3_server: str) -> None:
    store = make_store(s3_server, "no-such-liqi-bucket")

    with pytest.raises(StoreError, match="'no-such-liqi-bucket' does not exist"):
        store.put("k", [b"x"])
    with pytest.raises(StoreError, match="does not exist"):
        store.list()


def test_an_unreachable_endpoint_is_a_store_error_without_credentials() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = S3Store(
        "models",
        endpoint_url=f"http://127.0.0.1:{port}",
        region=REGION,
        access_key_id="AKIDEXAMPLE",
        secret_access_key=SECRET,
    )

    for call in (lambda: store.put("k", [b"x"]), lambda: store.stat("k")):
        with pytest.raises(StoreError) as caught:
            call()
        assert not isinstance(caught.value, ObjectNotFoundError)
        assert "Could not connect" in str(caught.value)
        assert SECRET not in str(caught.value)


def test_parts_below_the_s3_minimum_are_refused() -> None:
    with pytest.raises(ConfigError, match="5 MiB"):
        S3Store("models", part_bytes=1024 * 1024)


def test_missing_boto3_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)

    with pytest.raises(BackendUnavailableError, match=r"liqi\[s3\]"):
        S3Store("models")
