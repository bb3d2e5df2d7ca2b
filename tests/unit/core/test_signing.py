"""Request signing: string to sign, canonical query, Authorization parsing, dates, freshness."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import pytest
from hypothesis import given, settings, strategies as st

from liqi.core import signing

NOW = datetime(2024, 3, 1, 12, 30, 45, tzinfo=timezone.utc)
ACCESS_ID = "AKIDexample01"
SECRET = "s3cr3t-Value_for.tests"
METHOD = "POST"
PATH = "/v1/projects/algo_platform/models"
QUERY = "b=2&a=1"
BODY = b'{"name": "mnist"}'
NONCE = "0123456789abcdef01234567"


def _sign(**changes: Any) -> signing.SignedHeaders:
    request: dict[str, Any] = {
        "method": METHOD,
        "path": PATH,
        "raw_query": QUERY,
        "body": BODY,
        "now": NOW,
        "nonce": NONCE,
    }
    request.update(changes)
    return signing.sign(access_id=ACCESS_ID, secret=SECRET, **request)


def _verify(
    headers: signing.SignedHeaders,
    *,
    secret: str = SECRET,
    method: str = METHOD,
    path: str = PATH,
    raw_query: str = QUERY,
) -> bool:
    """What the server does with the headers it received: rebuild the string and compare."""
    parsed = signing.parse_authorization(headers.authorization)
    assert parsed is not None
    text = signing.string_to_sign(
        method=method,
        path=path,
        raw_query=raw_query,
        content_sha256=headers.content_sha256,
        date=headers.date,
        nonce=headers.nonce,
    )
    return signing.signatures_match(signing.signature(secret, text), parsed.signature)


# --- sign / verify ----------------------------------------------------------------------------


def test_sign_verify_round_trip_accepts_the_same_request() -> None:
    headers = _sign()

    assert _verify(headers)


def test_sign_headers_carry_date_nonce_and_body_hash() -> None:
    headers = _sign()

    assert headers.date == "20240301T123045Z"
    assert headers.nonce == NONCE
    assert headers.content_sha256 == hashlib.sha256(BODY).hexdigest()
    assert headers.authorization.startswith(f"LIQI1-HMAC-SHA256 {ACCESS_ID}:")
    assert headers.as_dict() == {
        "authorization": headers.authorization,
        "x-liqi-date": "20240301T123045Z",
        "x-liqi-nonce": NONCE,
        "x-liqi-content-sha256": headers.content_sha256,
    }


def test_sign_signature_is_hmac_sha256_of_the_documented_string() -> None:
    headers = _sign()
    expected_text = "\n".join(
        [
            "LIQI1-HMAC-SHA256",
            "20240301T123045Z",
            NONCE,
            "POST",
            "/v1/projects/algo_platform/models",
            "a=1&b=2",
            hashlib.sha256(BODY).hexdigest(),
        ]
    )
    expected = hmac.new(SECRET.encode(), expected_text.encode(), hashlib.sha256).hexdigest()

    assert headers.authorization == f"LIQI1-HMAC-SHA256 {ACCESS_ID}:{expected}"


def test_sign_empty_body_hashes_to_empty_sha256() -> None:
    headers = _sign(body=b"")

    assert headers.content_sha256 == signing.EMPTY_SHA256
    assert signing.EMPTY_SHA256 == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )


def test_sign_verify_wrong_secret_is_refused() -> None:
    headers = _sign()

    assert not _verify(headers, secret=SECRET + "x")


def test_sign_without_nonce_picks_a_fresh_random_one() -> None:
    first = _sign(nonce=None)
    second = _sign(nonce=None)

    assert len(first.nonce) == 24
    assert set(first.nonce) <= set("0123456789abcdef")
    assert first.nonce != second.nonce
    assert first.authorization != second.authorization


def test_sign_method_is_case_insensitive() -> None:
    assert _sign(method="post").authorization == _sign(method="POST").authorization


def test_sign_query_order_does_not_change_the_signature() -> None:
    assert _sign(raw_query="b=2&a=1").authorization == _sign(raw_query="a=1&b=2").authorization


@pytest.mark.parametrize(
    "change",
    [
        {"method": "PUT"},
        {"path": "/v1/projects/algo_platform/models/"},
        {"path": "/v1/projects/other_project/models"},
        {"raw_query": "b=2&a=10"},
        {"raw_query": "b=2&a=1&c=3"},
        {"raw_query": "b=2&a="},
        {"body": b'{"name": "mnist2"}'},
        {"body": b""},
        {"now": NOW + timedelta(seconds=1)},
        {"nonce": "0123456789abcdef01234568"},
    ],
    ids=[
        "method",
        "path-trailing-slash",
        "path-other",
        "query-value",
        "query-extra-pair",
        "query-blank-value",
        "body",
        "body-empty",
        "date",
        "nonce",
    ],
)
def test_sign_tampering_any_part_changes_the_signature(change: dict[str, object]) -> None:
    original = signing.parse_authorization(_sign().authorization)
    tampered = signing.parse_authorization(_sign(**change).authorization)

    assert original is not None
    assert tampered is not None
    assert tampered.signature != original.signature


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("method", "DELETE"),
        ("path", "/v1/projects/algo_platform/keys"),
        ("raw_query", "a=1&b=3"),
    ],
    ids=["method", "path", "query"],
)
def test_sign_verify_refuses_a_request_changed_after_signing(field: str, value: str) -> None:
    headers = _sign()

    assert not _verify(headers, **{field: value})


# --- canonical_query --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("", ""),
        ("a=1", "a=1"),
        ("b=2&a=1", "a=1&b=2"),
        ("a=2&a=1", "a=1&a=2"),
        ("z=1&a=9&m=5", "a=9&m=5&z=1"),
        ("a=&b", "a=&b="),
        ("q=hello world", "q=hello%20world"),
        ("q=hello+world", "q=hello%20world"),
        ("q=hello%20world", "q=hello%20world"),
        ("q=a%2Bb", "q=a%2Bb"),
        ("q=a/b", "q=a%2Fb"),
        ("q=a%2fb", "q=a%2Fb"),
        ("q=-_.~", "q=-_.~"),
        ("q=a%26b%3Dc", "q=a%26b%3Dc"),
        ("name=caf%C3%A9", "name=caf%C3%A9"),
        ("name=café", "name=caf%C3%A9"),
        ("name=中文", "name=%E4%B8%AD%E6%96%87"),
        ("k%20ey=v", "k%20ey=v"),
    ],
    ids=[
        "empty",
        "single",
        "sorted-by-key",
        "sorted-by-value",
        "three-keys",
        "blank-values-kept",
        "space",
        "plus-is-space",
        "percent-space",
        "encoded-plus-kept",
        "slash-encoded",
        "hex-uppercased",
        "unreserved-kept",
        "encoded-separators-kept",
        "utf8-percent",
        "utf8-raw",
        "chinese",
        "key-encoded",
    ],
)
def test_canonical_query_sorts_and_encodes(raw: str, canonical: str) -> None:
    assert signing.canonical_query(raw) == canonical


query_pairs = st.lists(st.tuples(st.text(max_size=12), st.text(max_size=12)), max_size=8)


def _raw_query(pairs: list[tuple[str, str]]) -> str:
    return urlencode(pairs, quote_via=quote)


@settings(database=None, max_examples=200)
@given(data=st.data(), pairs=query_pairs)
def test_canonical_query_any_permutation_gives_the_same_string(
    data: st.DataObject, pairs: list[tuple[str, str]]
) -> None:
    shuffled = data.draw(st.permutations(pairs))

    assert signing.canonical_query(_raw_query(shuffled)) == signing.canonical_query(
        _raw_query(pairs)
    )


@settings(database=None, max_examples=200)
@given(pairs=query_pairs)
def test_canonical_query_keeps_every_pair_including_unicode(pairs: list[tuple[str, str]]) -> None:
    canonical = signing.canonical_query(_raw_query(pairs))

    assert sorted(parse_qsl(canonical, keep_blank_values=True)) == sorted(pairs)
    assert canonical.isascii()


# --- parse_authorization ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "access_id", "sig"),
    [
        ("LIQI1-HMAC-SHA256 AKIDexample01:abc123", "AKIDexample01", "abc123"),
        ("LIQI1-HMAC-SHA256 AKIDexample01:ABC123", "AKIDexample01", "abc123"),
        ("  LIQI1-HMAC-SHA256   AKIDexample01:abc123  ", "AKIDexample01", "abc123"),
        ("LIQI1-HMAC-SHA256 a.b-c_d:ff", "a.b-c_d", "ff"),
    ],
    ids=["plain", "uppercase-signature", "extra-blanks", "punctuated-id"],
)
def test_parse_authorization_good_header(header: str, access_id: str, sig: str) -> None:
    assert signing.parse_authorization(header) == signing.ParsedAuthorization(
        access_id=access_id, signature=sig
    )


@pytest.mark.parametrize(
    "header",
    [
        "",
        "   ",
        "Bearer abc.def",
        "AWS4-HMAC-SHA256 Credential=AKID/20240301/us-east-1/s3/aws4_request",
        "liqi1-hmac-sha256 AKIDexample01:abc123",
        "LIQI1-HMAC-SHA256",
        "LIQI1-HMAC-SHA256 ",
        "LIQI1-HMAC-SHA256 AKIDexample01",
        "LIQI1-HMAC-SHA256 :abc123",
        "LIQI1-HMAC-SHA256 AKIDexample01:",
        "LIQI1-HMAC-SHA256:AKIDexample01:abc123",
        "LIQI1-HMAC-SHA256X AKIDexample01:abc123",
    ],
    ids=[
        "empty",
        "blank",
        "bearer",
        "aws",
        "lowercase-scheme",
        "scheme-only",
        "scheme-and-space",
        "no-colon",
        "empty-id",
        "empty-signature",
        "no-space-after-scheme",
        "longer-scheme",
    ],
)
def test_parse_authorization_malformed_header_is_none(header: str) -> None:
    assert signing.parse_authorization(header) is None


def test_parse_authorization_reads_what_sign_wrote() -> None:
    headers = _sign()
    parsed = signing.parse_authorization(headers.authorization)

    assert parsed is not None
    assert parsed.access_id == ACCESS_ID
    assert len(parsed.signature) == 64
    assert headers.authorization.endswith(parsed.signature)


# --- signatures_match -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expected", "received", "match"),
    [
        ("abc", "abc", True),
        ("abc", "abd", False),
        ("abc", "ab", False),
        ("abc", "", False),
    ],
    ids=["same", "one-char-off", "prefix", "empty"],
)
def test_signatures_match(expected: str, received: str, match: bool) -> None:
    assert signing.signatures_match(expected, received) is match


# --- is_fresh ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "fresh"),
    [
        (timedelta(0), True),
        (timedelta(minutes=15), True),
        (-timedelta(minutes=15), True),
        (timedelta(minutes=15, microseconds=1), False),
        (-timedelta(minutes=15, microseconds=1), False),
        (timedelta(minutes=15, seconds=1), False),
        (-timedelta(minutes=15, seconds=1), False),
        (timedelta(days=1), False),
    ],
    ids=[
        "same-instant",
        "15min-old",
        "15min-ahead",
        "15min-1us-old",
        "15min-1us-ahead",
        "15min-1s-old",
        "15min-1s-ahead",
        "a-day-old",
    ],
)
def test_is_fresh_at_the_15_minute_boundary(offset: timedelta, fresh: bool) -> None:
    signed_at = NOW - offset

    assert signing.is_fresh(signed_at, NOW) is fresh


def test_is_fresh_honours_a_custom_skew() -> None:
    assert signing.is_fresh(NOW - timedelta(seconds=30), NOW, max_skew_s=30)
    assert not signing.is_fresh(NOW - timedelta(seconds=31), NOW, max_skew_s=30)


def test_is_fresh_compares_instants_across_time_zones() -> None:
    beijing = timezone(timedelta(hours=8))
    same_instant = NOW.astimezone(beijing)

    assert signing.is_fresh(same_instant + timedelta(minutes=15), NOW)
    assert not signing.is_fresh(same_instant + timedelta(minutes=16), NOW)


# --- format_date / parse_date -----------------------------------------------------------------


def test_format_date_converts_to_utc() -> None:
    beijing = timezone(timedelta(hours=8))

    assert signing.format_date(datetime(2024, 1, 1, 8, 0, 0, tzinfo=beijing)) == (
        "20240101T000000Z"
    )
    assert signing.format_date(datetime(2024, 1, 1, 0, 30, tzinfo=beijing)) == "20231231T163000Z"


def test_format_date_drops_microseconds() -> None:
    assert signing.format_date(NOW.replace(microsecond=999_999)) == "20240301T123045Z"


def test_parse_date_gives_an_aware_utc_datetime() -> None:
    parsed = signing.parse_date("20240229T235959Z")

    assert parsed == datetime(2024, 2, 29, 23, 59, 59, tzinfo=timezone.utc)
    assert parsed.tzinfo is timezone.utc


@settings(database=None)
@given(
    when=st.datetimes(
        min_value=datetime(1970, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from(
            [timezone.utc, timezone(timedelta(hours=8)), timezone(timedelta(hours=-5))]
        ),
    )
)
def test_format_date_parse_date_round_trip(when: datetime) -> None:
    text = signing.format_date(when)

    assert len(text) == 16
    assert signing.parse_date(text) == when.replace(microsecond=0)
    assert signing.format_date(signing.parse_date(text)) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not a date",
        "2024-03-01T12:30:45Z",
        "20240301T123045",
        "20240301 123045Z",
        "20240301T123045+0000",
        "20240301T123045Z ",
        " 20240301T123045Z",
        "20241301T123045Z",
        "20240230T123045Z",
        "20230229T123045Z",
        "20240301T243045Z",
        "20240301T126045Z",
        "20240301T123045.5Z",
        "1709296245",
    ],
    ids=[
        "empty",
        "words",
        "iso-extended",
        "no-z",
        "space-separator",
        "offset",
        "trailing-space",
        "leading-space",
        "month-13",
        "feb-30",
        "feb-29-non-leap",
        "hour-24",
        "minute-60",
        "fraction",
        "epoch",
    ],
)
def test_parse_date_rejects_bad_dates(text: str) -> None:
    with pytest.raises(ValueError, match=r"does not match format|unconverted data|day is out"):
        signing.parse_date(text)


@pytest.mark.parametrize(
    "text",
    ["2024111T010203Z", "20240301T1234Z", "2024031T1234Z", "20240301t123045z"],
    ids=["7-digit-date", "4-digit-time", "both-short", "lowercase-t-z"],
)
def test_parse_date_rejects_non_canonical_forms(text: str) -> None:
    # BUG (src/liqi/core/signing.py, parse_date): datetime.strptime accepts one-digit months,
    # days, hours, minutes and seconds and matches the literal T and Z case-insensitively, so
    # "20240301T1234Z" parses as 12:03:04 and "20240301t123045z" parses too, although the
    # docstring promises a ValueError for anything that is not YYYYMMDDTHHMMSSZ.
    with pytest.raises(ValueError):  # noqa: PT011 - any ValueError is the documented contract
        signing.parse_date(text)
