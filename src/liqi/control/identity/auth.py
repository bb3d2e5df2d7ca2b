"""Authentication of control-plane requests: the :class:`Authenticator` checks a request's
HMAC signature, clock and nonce against the access keys and returns its principal;
:class:`BodyCheck` checks a streamed body against its signed hash. The ASGI middleware that
runs them before any route is :mod:`liqi.control.api.middleware`.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from liqi.control.db.secretbox import SecretBox
from liqi.control.db.tables import AccessKey
from liqi.control.identity import accounts, workload_keys
from liqi.control.identity.workload_keys import WorkloadScope
from liqi.core import signing
from liqi.core.replay import NonceCache
from liqi.errors import (
    AuthenticationError,
    InvalidRequestError,
    PermissionDeniedError,
    RequestExpiredError,
    RequestReplayedError,
    SignatureMismatchError,
)

logger = logging.getLogger(__name__)
PRINCIPAL_SCOPE_KEY = "liqi.principal"
BODY_CHECK_SCOPE_KEY = "liqi.body_check"
LAST_USED_GRANULARITY = timedelta(minutes=1)


class Authenticator:
    """Checks one request's signature against the stored key. Thread-safe."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        box: SecretBox,
        clock: Callable[[], datetime],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._box = box
        self._clock = clock
        self._monotonic = monotonic
        # Nonces outlive the freshness window on both sides of the clock.
        self._nonces = NonceCache(window_s=2 * signing.MAX_CLOCK_SKEW_S + 60)

    def check_headers(self, headers: dict[str, str]) -> None:
        """What can be checked before the body is read: the signature headers are present and
        well formed, the date is within the clock window, the access key exists and is
        active. A request that fails here is refused before its body is received."""
        parsed, _, _, _ = self._parse(headers)
        with self._sessions() as session:
            if _usable(accounts.find_active_key(session, parsed.access_id), self._clock()) is None:
                raise _unknown_key(parsed.access_id)

    def authenticate(
        self,
        *,
        method: str,
        path: str,
        raw_query: str,
        headers: dict[str, str],
        body: bytes | None,
    ) -> accounts.Principal:
        """Check the signature; ``body`` None means the caller checks the body hash later."""
        parsed, date_text, nonce, claimed_hash = self._parse(headers)
        now = self._clock()
        if body is not None and hashlib.sha256(body).hexdigest() != claimed_hash:
            raise SignatureMismatchError(
                f"The body does not match its {signing.CONTENT_HASH_HEADER} header: it was "
                "changed after signing."
            )
        with self._sessions.begin() as session:
            key = _usable(accounts.find_active_key(session, parsed.access_id), now)
            if key is None:
                raise _unknown_key(parsed.access_id)
            text = signing.string_to_sign(
                method=method,
                path=path,
                raw_query=raw_query,
                content_sha256=claimed_hash,
                date=date_text,
                nonce=nonce,
            )
            expected = signing.signature(self._box.decrypt(key.secret_ciphertext), text)
            if not signing.signatures_match(expected, parsed.signature):
                raise SignatureMismatchError(
                    f"Signature mismatch for access id {parsed.access_id!r}: the access key "
                    "secret is wrong, or the request was changed after signing. Check "
                    "access_key in your profile (`liqi config show`)."
                )
            if not self._nonces.remember(f"{parsed.access_id}:{nonce}", self._monotonic()):
                raise RequestReplayedError(
                    "This signed request was already received once; sign each request anew."
                )
            _check_scope(session, key, method, path, raw_query)
            if key.last_used_at is None or now - key.last_used_at > LAST_USED_GRANULARITY:
                key.last_used_at = now
            return accounts.load_principal(session, key)

    def _parse(self, headers: dict[str, str]) -> tuple[signing.ParsedAuthorization, str, str, str]:
        """Checks 2 to 6 of docs/auth.md: the parsed Authorization header, the date text, the
        nonce and the claimed body hash."""
        header = headers.get("authorization")
        if not header:
            raise AuthenticationError(
                "Missing credentials: sign requests with an access key. The liqi CLI and SDK do "
                "this from your profile (see `liqi config show`)."
            )
        parsed = signing.parse_authorization(header)
        if parsed is None:
            raise AuthenticationError(
                "Malformed Authorization header: expected "
                f"'{signing.ALGORITHM} <access_id>:<signature>'."
            )
        date_text = headers.get(signing.DATE_HEADER, "")
        nonce = headers.get(signing.NONCE_HEADER, "")
        claimed_hash = headers.get(signing.CONTENT_HASH_HEADER, "").lower()
        if not nonce or not claimed_hash:
            raise AuthenticationError(
                f"Missing {signing.NONCE_HEADER} or {signing.CONTENT_HASH_HEADER} header: "
                "sign requests with the liqi SDK or follow docs/auth.md."
            )
        try:
            date = signing.parse_date(date_text)
        except ValueError:
            raise AuthenticationError(
                f"Bad or missing {signing.DATE_HEADER} header {date_text!r}: expected UTC time "
                "as YYYYMMDDTHHMMSSZ."
            ) from None
        now = self._clock()
        if not signing.is_fresh(date, now):
            raise RequestExpiredError(
                f"Request signed at {date_text} but the server's clock says "
                f"{signing.format_date(now)}; requests more than 15 minutes away are refused. "
                "Check this machine's clock and send a newly signed request."
            )
        return parsed, date_text, nonce, claimed_hash


def _unknown_key(access_id: str) -> AuthenticationError:
    return AuthenticationError(
        f"Unknown or revoked access id {access_id!r}. Check access_id in your profile "
        "(`liqi config show`) or ask an admin for a key."
    )


def _usable(key: AccessKey | None, now: datetime) -> AccessKey | None:
    """The key, unless it is an expired workload key (refused like a revoked one)."""
    if key is not None and key.expires_at is not None and key.expires_at <= now:
        return None
    return key


def _check_scope(session: Session, key: AccessKey, method: str, path: str, query: str) -> None:
    """A workload key may only make the requests its scope allows."""
    if key.scope_json is None:
        return
    scope = WorkloadScope.from_json(key.scope_json)
    if not workload_keys.allows(session, scope, method, path, query):
        raise PermissionDeniedError(
            f"Access id {key.access_id!r} is a workload key: it may only read the model of the "
            "service instance it was made for, or the files of its job."
        )


class BodyCheck:
    """Hashes a streamed body as it passes; ``verify`` compares with the signed hash."""

    def __init__(self, claimed_sha256: str) -> None:
        self._claimed = claimed_sha256.lower()
        self._hash = hashlib.sha256()
        self.size = 0
        self.complete = False

    def update(self, chunk: bytes, more: bool) -> None:
        self._hash.update(chunk)
        self.size += len(chunk)
        self.complete = not more

    def verify(self) -> None:
        if not self.complete:
            raise InvalidRequestError(
                f"The upload ended after {self.size} bytes, before the end of the body; "
                "nothing was stored. Send it again."
            )
        if self._hash.hexdigest() != self._claimed:
            raise SignatureMismatchError(
                f"The body does not match its {signing.CONTENT_HASH_HEADER} header: it was "
                "changed after signing; nothing was stored."
            )
