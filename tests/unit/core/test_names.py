"""Rules for project names, access ids and secrets; what each role allows."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from liqi.core.names import Role, check_access_id, check_project_name, check_secret
from liqi.errors import InvalidRequestError

# --- project names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["abc", "a" * 64, "algo_platform", "A1_b", "x__", "Mnist2024"],
    ids=["shortest", "longest", "underscore", "mixed", "trailing-underscores", "camel-digits"],
)
def test_check_project_name_accepts_valid_names(name: str) -> None:
    assert check_project_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "ab",
        "a" * 65,
        "1abc",
        "_abc",
        "my-project",
        "my project",
        "my.project",
        "projé",
        "项目名称",
        " abc",
        "abc ",
        "ab/c",
    ],
    ids=[
        "empty",
        "too-short",
        "too-long",
        "digit-first",
        "underscore-first",
        "dash",
        "space",
        "dot",
        "accent",
        "chinese",
        "leading-space",
        "trailing-space",
        "slash",
    ],
)
def test_check_project_name_rejects_invalid_names(name: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        check_project_name(name)

    message = str(caught.value)
    assert message.startswith(f"Invalid project name {name!r}: use 3 to 64 letters")
    assert "'algo_platform'" in message


# --- access ids -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "access_id",
    ["abcd", "a" * 128, "0abc", "AK.test-01_x", "LTAI5tExampleAccessId"],
    ids=["shortest", "longest", "digit-first", "punctuation", "aliyun-style"],
)
def test_check_access_id_accepts_valid_ids(access_id: str) -> None:
    assert check_access_id(access_id) == access_id


@pytest.mark.parametrize(
    "access_id",
    ["", "abc", "a" * 129, ".abcd", "-abcd", "_abcd", "ab cd", "ab:cd", "abcé", "ab/cd"],
    ids=[
        "empty",
        "too-short",
        "too-long",
        "dot-first",
        "dash-first",
        "underscore-first",
        "space",
        "colon",
        "accent",
        "slash",
    ],
)
def test_check_access_id_rejects_invalid_ids(access_id: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        check_access_id(access_id)

    assert str(caught.value).startswith(f"Invalid access id {access_id!r}: use 4 to 128")


# --- secrets ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "secret",
    ["12345678", "~" * 256, "pa$$w0rd:\"'`", "kLmN0pQrStUvWxYz0123456789abcd", "!" * 8],
    ids=["shortest", "longest", "punctuation", "aliyun-style", "bangs"],
)
def test_check_secret_accepts_valid_secrets(secret: str) -> None:
    assert check_secret(secret) == secret


@pytest.mark.parametrize(
    "secret",
    ["", "1234567", "x" * 257, "has space1", "tab\tsecret", "sécret123", "secret\x7f12"],
    ids=["empty", "too-short", "too-long", "space", "tab", "non-ascii", "delete-char"],
)
def test_check_secret_rejects_invalid_secrets_without_echoing_them(secret: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        check_secret(secret)

    message = str(caught.value)
    assert message.startswith("Invalid access key secret: use 8 to 256 printable ASCII")
    if secret:
        assert secret not in message


# --- trailing newline -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("check", "value"),
    [
        (check_project_name, "algo_platform\n"),
        (check_access_id, "AKIDexample01\n"),
        (check_secret, "s3cr3t-value\n"),
    ],
    ids=["project-name", "access-id", "secret"],
)
def test_check_names_reject_a_trailing_newline(check: Callable[[str], str], value: str) -> None:
    # BUG (src/liqi/core/names.py lines 10-12 with .match at 26, 35, 44): the patterns end in
    # `$`, which also matches before a final "\n", so "algo_platform\n" is accepted and
    # returned unchanged (a project name or access id with a newline in it reaches the
    # database). Use re.fullmatch or `\Z`.
    with pytest.raises(InvalidRequestError):
        check(value)


# --- roles ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "needed", "allowed"),
    [
        (Role.ADMIN, Role.ADMIN, True),
        (Role.ADMIN, Role.MEMBER, True),
        (Role.MEMBER, Role.MEMBER, True),
        (Role.MEMBER, Role.ADMIN, False),
    ],
    ids=["admin-as-admin", "admin-as-member", "member-as-member", "member-as-admin"],
)
def test_role_allows(role: Role, needed: Role, allowed: bool) -> None:
    assert role.allows(needed) is allowed


def test_role_values_are_the_api_strings() -> None:
    assert [(role.value, Role(role.value)) for role in Role] == [
        ("admin", Role.ADMIN),
        ("member", Role.MEMBER),
    ]
