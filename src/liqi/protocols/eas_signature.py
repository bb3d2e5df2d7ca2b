"""The EAS SDKs' request signature: ``Authorization: EAS <base64 HMAC-SHA1>`` keyed by the
service's token, over the method, the body's md5, the content type, the date and the path
(reference/pai_eas.md B8), and the date's freshness window."""

from __future__ import annotations

__all__ = ["check_authorization", "date_is_fresh", "sign_request", "string_to_sign"]

import base64
import hashlib
import hmac
from datetime import datetime, timezone
from email.utils import format_datetime, parsedate_to_datetime

from liqi.errors import RequestExpiredError
from liqi.protocols.eas import DEFAULT_CONTENT_TYPE

# A signed request's Date may be this far from the server's clock...
MAX_CLOCK_SKEW_S = 15 * 60.0
# ...after any time-zone offset: the Python SDK sends local time labelled GMT, and local time
# runs from 12 hours behind UTC (UTC-12) to 14 hours ahead (UTC+14).
LOCAL_TIME_BEHIND_S = 12 * 3600.0
LOCAL_TIME_AHEAD_S = 14 * 3600.0


def string_to_sign(
    *, method: str, content_md5: str, content_type: str, date: str, path: str
) -> str:
    """What the EAS SDKs sign: ``METHOD\\nmd5\\ncontent-type\\ndate\\npath``."""
    return f"{method.upper()}\n{content_md5}\n{content_type}\n{date}\n{path}"


def _signature(token: str, message: str) -> bytes:
    digest = hmac.new(token.encode(), message.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest)


def sign_request(
    *,
    token: str,
    body: bytes,
    date: str,
    path: str,
    method: str = "POST",
    content_type: str = DEFAULT_CONTENT_TYPE,
) -> dict[str, str]:
    """The headers the EAS SDKs send with a signed request (``date`` is RFC 1123, GMT)."""
    content_md5 = hashlib.md5(body).hexdigest()
    message = string_to_sign(
        method=method, content_md5=content_md5, content_type=content_type, date=date, path=path
    )
    return {
        "Content-MD5": content_md5,
        "Date": date,
        "Content-Type": content_type,
        "Authorization": "EAS " + _signature(token, message).decode(),
    }


def check_authorization(
    header: str | None,
    *,
    token: str,
    method: str,
    body: bytes,
    content_type: str,
    date: str,
    path: str,
    now: datetime,
    max_skew_s: float = MAX_CLOCK_SKEW_S,
) -> bool:
    """Whether ``header`` (the ``Authorization`` value) authorizes this request.

    Accepted: the raw token, or ``EAS <signature>`` where the signature is the base64
    HMAC-SHA1, keyed by the token, of :func:`string_to_sign` over the md5 hex of ``body``
    (as computed here, not as claimed by a ``Content-MD5`` header), ``content_type``,
    ``date`` and ``path`` (``/api/predict/<name>[/<sub-path>]``). The md5 may be written
    without its leading zeros, as the Java SDK does. An empty ``token`` authorizes nothing.
    All comparisons are constant-time.

    A signed request's ``date`` must be fresh (:func:`date_is_fresh`, against ``now``):
    a right signature over a stale or unreadable date raises :class:`RequestExpiredError`,
    so that a captured request cannot be replayed for ever.
    """
    if not header or not token:
        return False
    header = header.strip()
    raw_ok = hmac.compare_digest(header.encode(), token.encode())
    scheme, _, signature = header.partition(" ")
    if scheme != "EAS":
        return raw_ok
    given = signature.strip().encode()
    md5_hex = hashlib.md5(body).hexdigest()
    signed_ok = False
    for content_md5 in (md5_hex, md5_hex.lstrip("0") or "0"):
        message = string_to_sign(
            method=method,
            content_md5=content_md5,
            content_type=content_type,
            date=date,
            path=path,
        )
        signed_ok |= hmac.compare_digest(given, _signature(token, message))
    if signed_ok and not raw_ok and not date_is_fresh(date, now, max_skew_s):
        raise RequestExpiredError(
            f"The request's Date {date!r:.60} is too far from the server's clock "
            f"({format_datetime(now, usegmt=True)}): a signed request must be sent within "
            f"{max_skew_s / 60:g} minutes of its Date (in GMT; a Date in the signer's local time "
            "is accepted too). Check the clock and sign the request again."
        )
    return raw_ok or signed_ok


def date_is_fresh(date: str, now: datetime, max_skew_s: float = MAX_CLOCK_SKEW_S) -> bool:
    """Whether an RFC 1123 ``date`` is within ``max_skew_s`` of ``now``, allowing the
    eas-prediction Python SDK's quirk: it writes the machine's local time and labels it GMT,
    so a date off by a time-zone offset (UTC-12 to UTC+14) is accepted too."""
    try:
        sent = parsedate_to_datetime(date)
    except (TypeError, ValueError, IndexError):
        return False
    if sent.tzinfo is None:
        sent = sent.replace(tzinfo=timezone.utc)
    ahead_s = (sent - now).total_seconds()
    return -LOCAL_TIME_BEHIND_S - max_skew_s <= ahead_s <= LOCAL_TIME_AHEAD_S + max_skew_s
