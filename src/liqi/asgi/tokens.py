"""The service-token check, the same for a model server's own endpoint and the gateway.

A request carries the service's token in ``Authorization`` as the raw token, ``Bearer
<token>``, or the EAS SDKs' ``EAS <signature>`` (an HMAC over the body's md5, the content
type, the date and the path, keyed by the token;
:func:`liqi.protocols.eas_signature.check_authorization`),
whose date must be fresh. Comparisons are constant-time.
"""

from __future__ import annotations

import hmac
from datetime import datetime, timezone

from liqi.errors import AuthenticationError
from liqi.protocols import eas_signature

WWW_AUTHENTICATE = (b"www-authenticate", b'Bearer realm="liqi"')


def signed(authorization: str) -> bool:
    """Whether the header is an EAS signature (checking it needs the whole body)."""
    return authorization.lstrip().startswith("EAS ")


def token_accepted(
    authorization: str,
    token: str,
    *,
    method: str,
    path: str,
    content_type: str = "",
    date: str = "",
    body: bytes = b"",
    now: datetime | None = None,
) -> bool:
    """Whether ``authorization`` carries ``token`` in one of the accepted forms. ``body`` is
    needed only when the header is :func:`signed`; its ``date`` must be fresh against ``now``
    (default: the current time), else :class:`~liqi.errors.RequestExpiredError`."""
    value = authorization.strip()
    if not value or not token:
        return False
    scheme, _, rest = value.partition(" ")
    if scheme.lower() == "bearer":
        return hmac.compare_digest(rest.strip().encode(), token.encode())
    return eas_signature.check_authorization(
        value,
        token=token,
        method=method,
        body=body,
        content_type=content_type,
        date=date,
        path=path,
        now=now or datetime.now(timezone.utc),
    )


def token_error(service: str, *, given: bool) -> AuthenticationError:
    """The 401 for a missing or wrong token; ``service`` is '' on an instance's own port."""
    whose = f"service {service!r}" if service else "this server"
    if given:
        return AuthenticationError(
            f"Missing or wrong token for {whose}. Send 'Authorization: <token>' (or 'Bearer "
            "<token>', or the EAS SDK's signature) with the service's token."
        )
    return AuthenticationError(
        f"{whose[0].upper()}{whose[1:]} needs a token: send 'Authorization: <token>' with the "
        "service's token (or 'Bearer <token>', or the EAS SDK's signature)."
    )
