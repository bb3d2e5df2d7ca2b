"""Workload keys: an access key minted for one service instance, scoped and expiring.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from liqi.control.db.tables import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("access_keys") as batch:
        batch.add_column(sa.Column("workload", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("scope_json", sa.Text(), nullable=True))
        batch.add_column(sa.Column("expires_at", UTCDateTime(), nullable=True))
        batch.create_index("ix_access_keys_workload", ["workload"])


def downgrade() -> None:
    with op.batch_alter_table("access_keys") as batch:
        batch.drop_index("ix_access_keys_workload")
        batch.drop_column("expires_at")
        batch.drop_column("scope_json")
        batch.drop_column("workload")
