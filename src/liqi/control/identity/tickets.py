"""One-time tickets: how a workload on another machine gets its key without the key ever
being written where others can read it.

A job on a Ray cluster starts from an entrypoint that ``ray job list`` shows to everyone who
can reach the cluster, and its node need not share a disk with the control plane. So the
entrypoint carries a ticket instead of the key: 32 random bytes that the driver trades, once,
at ``POST /workloads/claim``, for its job's workload key. Only the ticket's SHA-256 is kept.
A second claim of the same ticket is refused and revokes the key: whoever traded it first
(the driver, or someone who read the entrypoint before it started) can no longer use it, and
the job's driver, finding its ticket spent, fails saying so.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from liqi.control.db.secretbox import SecretBox
from liqi.control.db.tables import AccessKey
from liqi.control.identity.workload_keys import WorkloadKey
from liqi.errors import AuthenticationError, InvalidRequestError

TICKET_BYTES = 32
MAX_TICKET_CHARS = 128


def _digest(ticket: str) -> str:
    return hashlib.sha256(ticket.encode("utf-8")).hexdigest()


def issue(session: Session, access_id: str) -> str:
    """A new one-time ticket for the workload key ``access_id`` (an earlier one stops
    working)."""
    key = session.scalars(select(AccessKey).where(AccessKey.access_id == access_id)).one()
    ticket = secrets.token_urlsafe(TICKET_BYTES)
    key.ticket_hash = _digest(ticket)
    key.ticket_claimed_at = None
    return ticket


SPENT = (
    "This workload ticket was already claimed: someone other than the job's driver may have "
    "used it, so its key is now revoked."
)


def claim(session: Session, box: SecretBox, ticket: str, now: datetime) -> WorkloadKey | None:
    """The key the ticket was issued for, once; None when the ticket was claimed before, in
    which case its key is revoked now (commit the session, then refuse with :data:`SPENT`).

    Raises:
        InvalidRequestError: not a ticket.
        AuthenticationError: unknown, revoked or expired.
    """
    if not ticket or len(ticket) > MAX_TICKET_CHARS or not ticket.isascii():
        raise InvalidRequestError('Send {"ticket": "..."}: the ticket from the job\'s command.')
    key = session.scalars(select(AccessKey).where(AccessKey.ticket_hash == _digest(ticket))).first()
    if key is None or key.revoked_at is not None:
        raise AuthenticationError("Unknown or revoked workload ticket.")
    if key.expires_at is not None and key.expires_at <= now:
        raise AuthenticationError("This workload ticket's key has expired.")
    if key.ticket_claimed_at is not None:
        key.revoked_at = now
        return None
    key.ticket_claimed_at = now
    return WorkloadKey(key.access_id, box.decrypt(key.secret_ciphertext))
