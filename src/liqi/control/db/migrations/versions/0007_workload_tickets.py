"""Workload tickets: a one-time ticket a job's driver on another machine trades for its key.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from liqi.control.db.tables import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("access_keys") as batch:
        batch.add_column(sa.Column("ticket_hash", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("ticket_claimed_at", UTCDateTime(), nullable=True))
        batch.create_index("ix_access_keys_ticket_hash", ["ticket_hash"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("access_keys") as batch:
        batch.drop_index("ix_access_keys_ticket_hash")
        batch.drop_column("ticket_claimed_at")
        batch.drop_column("ticket_hash")
