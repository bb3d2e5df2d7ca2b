"""odps:// addresses, resource and volume names, resource kinds (pure, no server)."""

from __future__ import annotations

import pytest

from liqi.core.odps import (
    MAX_RESOURCE_BYTES,
    ResourceUri,
    VolumeUri,
    check_partition_name,
    check_resource_name,
    check_volume_name,
    infer_kind,
    parse_odps_uri,
    parse_resource_uri,
    parse_volume_uri,
    resource_kind,
)
from liqi.errors import InvalidRequestError


def test_limit_is_2_gib() -> None:
    assert MAX_RESOURCE_BYTES == 2048 * 1024 * 1024


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("odps://algo_platform/volumes/mnist/train", VolumeUri("algo_platform", "mnist", "train")),
        ("odps://algo_platform/volumes/mnist/test/", VolumeUri("algo_platform", "mnist", "test")),
        ("odps://my_proj/resources/mnist_softmax.py", ResourceUri("my_proj", "mnist_softmax.py")),
        ("odps://my_proj/resources/job.tar.gz", ResourceUri("my_proj", "job.tar.gz")),
    ],
)
def test_parse_round_trips(text: str, expected: ResourceUri | VolumeUri) -> None:
    parsed = parse_odps_uri(text)
    assert parsed == expected
    assert str(parsed) == text.rstrip("/")


@pytest.mark.parametrize(
    "text",
    [
        "oss://bucket/key",
        "odps://",
        "odps://proj",
        "odps://proj/tables/t",
        "odps://proj/resources",
        "odps://proj/resources/a/b",
        "odps://proj/volumes/v",
        "odps://proj/volumes/v/p/extra",
        "odps:///volumes/v/p",
        "odps://1proj/volumes/v/p",
        "odps://proj/volumes/../p",
        "odps://proj/volumes/v/..",
        "odps://proj/resources/..",
        "odps://proj/volumes/v/p?x=1",
        "odps://proj/volumes/v//",
    ],
)
def test_bad_addresses_are_refused_with_the_value(text: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_odps_uri(text)
    message = caught.value.message
    assert repr(text) in message or "name" in message


def test_unknown_form_names_both_accepted_forms() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_odps_uri("odps://proj/tables/t")
    assert "odps://<project>/resources/<name>" in caught.value.message
    assert "odps://<project>/volumes/<volume>/<partition>" in caught.value.message


def test_typed_parsers_refuse_the_other_form() -> None:
    with pytest.raises(InvalidRequestError, match="names a volume"):
        parse_resource_uri("odps://p_1/volumes/v/p")
    with pytest.raises(InvalidRequestError, match="names a resource"):
        parse_volume_uri("odps://p_1/resources/r.py")


@pytest.mark.parametrize("name", ["a", "train.py", "job.tar.gz", "_x-1.2", "A" * 256, "9lives"])
def test_good_resource_names(name: str) -> None:
    assert check_resource_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "../x", "a/../../b", "/etc/passwd", "a/b", "..", ".hidden", "a..b", "a b", "é.py",
     "x\x00y", "a\\b", "A" * 257],
)  # fmt: skip
def test_bad_resource_names(name: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        check_resource_name(name)
    assert caught.value.message.startswith(f"Invalid resource name {name!r}")


def test_volume_and_partition_names_follow_the_table_columns() -> None:
    assert check_volume_name("v" * 128) == "v" * 128
    assert check_partition_name("p" * 128) == "p" * 128
    assert check_partition_name("2024-01-01.v2") == "2024-01-01.v2"
    with pytest.raises(InvalidRequestError, match="longer than 128"):
        check_volume_name("v" * 129)
    with pytest.raises(InvalidRequestError, match="Invalid partition name"):
        check_partition_name("a/b")


@pytest.mark.parametrize(
    ("name", "kind"),
    [("a.py", "py"), ("A.PY", "py"), ("x.jar", "jar"), ("d.tar.gz", "archive"),
     ("d.tgz", "archive"), ("d.zip", "archive"), ("d.tar", "archive"), ("d.gz", "file"),
     ("notes.txt", "file"), ("Makefile", "file")],
)  # fmt: skip
def test_infer_kind(name: str, kind: str) -> None:
    assert infer_kind(name) == kind
    assert resource_kind(name) == kind
    assert resource_kind(name, "") == kind


def test_explicit_kind_overrides_and_is_checked() -> None:
    assert resource_kind("a.py", "file") == "file"
    assert resource_kind("a.zip", "archive") == "archive"
    with pytest.raises(InvalidRequestError, match=r"must end with \.py"):
        resource_kind("a.txt", "py")
    with pytest.raises(InvalidRequestError, match="Unknown resource type 'table'"):
        resource_kind("a.txt", "table")
