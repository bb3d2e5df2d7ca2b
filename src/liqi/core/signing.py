"""Request signing for the control plane (sans-IO).

A client signs every request with its access key's secret; the secret never travels. The
string to sign is::

    LIQI1-HMAC-SHA256
    <date: YYYYMMDDTHHMMSSZ, UTC>
    <nonce>
    <METHOD>
    <path, percent-encoded as sent>
    <canonical query: key=value pairs sorted, RFC 3986 encoded, joined by '&'>
    <hex SHA-256 of the body>

and the request carries::

    Authorization: LIQI1-HMAC-SHA256 <access_id>:<hex HMAC-SHA256(secret, string to sign)>
    X-Liqi-Date: <date>
    X-Liqi-Nonce: <nonce>
    X-Liqi-Content-SHA256: <hex SHA-256 of the body>

The server refuses dates more than :data:`MAX_CLOCK_SKEW_S` away from its clock and a nonce it
has already seen inside that window, so a captured request cannot be replayed.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qsl, quote

ALGORITHM = "LIQI1-HMAC-SHA256"
MAX_CLOCK_SKEW_S = 15 * 60
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
DATE_HEADER = "x-liqi-date"
NONCE_HEADER = "x-liqi-nonce"
CONTENT_HASH_HEADER = "x-liqi-content-sha256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_DATE_RE = re.compile(r"\d{8}T\d{6}Z")


@dataclass(frozen=True)
class SignedHeaders:
    authorization: str
    date: str
    nonce: str
    content_sha256: str

    def as_dict(self) -> dict[str, str]:
        return {
            "authorization": self.authorization,
            DATE_HEADER: self.date,
            NONCE_HEADER: self.nonce,
            CONTENT_HASH_HEADER: self.content_sha256,
        }


@dataclass(frozen=True)
class ParsedAuthorization:
    access_id: str
    signature: str


def format_date(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime(DATE_FORMAT)


def parse_date(text: str) -> datetime:
    """Parse an ``X-Liqi-Date`` value; raises ValueError when it is not ``YYYYMMDDTHHMMSSZ``."""
    if not _DATE_RE.fullmatch(text):
        raise ValueError(f"{text!r} does not match format YYYYMMDDTHHMMSSZ")
    return datetime.strptime(text, DATE_FORMAT).replace(tzinfo=timezone.utc)


def canonical_query(raw_query: str) -> str:
    pairs = parse_qsl(raw_query, keep_blank_values=True)
    encoded = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in encoded)


def string_to_sign(
    *, method: str, path: str, raw_query: str, content_sha256: str, date: str, nonce: str
) -> str:
    return "\n".join(
        [ALGORITHM, date, nonce, method.upper(), path, canonical_query(raw_query), content_sha256]
    )


def signature(secret: str, text: str) -> str:
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def sign(
    *,
    access_id: str,
    secret: str,
    method: str,
    path: str,
    raw_query: str,
    body: bytes = b"",
    now: datetime,
    nonce: str | None = None,
    content_sha256: str | None = None,
) -> SignedHeaders:
    """Headers that authenticate one request. ``now`` is the caller's clock reading.

    ``content_sha256`` (hex) replaces hashing ``body`` for streamed uploads whose hash the
    caller computed while reading the file once before sending it.
    """
    date = format_date(now)
    nonce = nonce or secrets.token_hex(12)
    content_sha256 = content_sha256 or hashlib.sha256(body).hexdigest()
    text = string_to_sign(
        method=method,
        path=path,
        raw_query=raw_query,
        content_sha256=content_sha256,
        date=date,
        nonce=nonce,
    )
    return SignedHeaders(
        authorization=f"{ALGORITHM} {access_id}:{signature(secret, text)}",
        date=date,
        nonce=nonce,
        content_sha256=content_sha256,
    )


def parse_authorization(value: str) -> ParsedAuthorization | None:
    """Split an Authorization header; None when it is not a liqi signature."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme != ALGORITHM:
        return None
    access_id, sep, sig = rest.strip().rpartition(":")
    if not sep or not access_id or not sig:
        return None
    return ParsedAuthorization(access_id=access_id, signature=sig.lower())


def is_fresh(date: datetime, now: datetime, max_skew_s: float = MAX_CLOCK_SKEW_S) -> bool:
    return abs(now - date) <= timedelta(seconds=max_skew_s)


def signatures_match(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.encode())
