"""Projects, access keys, role bindings, server state.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from liqi.control.db.tables import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_projects")),
        sa.UniqueConstraint("name", name=op.f("uq_projects_name")),
    )
    op.create_table(
        "access_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("access_id", sa.String(length=128), nullable=False),
        sa.Column("secret_ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("is_superuser", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.Column("last_used_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_keys")),
        sa.UniqueConstraint("access_id", name=op.f("uq_access_keys_access_id")),
    )
    op.create_table(
        "role_bindings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("access_key_id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["access_key_id"],
            ["access_keys.id"],
            name=op.f("fk_role_bindings_access_key_id_access_keys"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_role_bindings_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_role_bindings")),
        sa.UniqueConstraint(
            "access_key_id", "project_id", name=op.f("uq_role_bindings_access_key_id")
        ),
    )
    op.create_index(
        op.f("ix_role_bindings_access_key_id"), "role_bindings", ["access_key_id"], unique=False
    )
    op.create_index(
        op.f("ix_role_bindings_project_id"), "role_bindings", ["project_id"], unique=False
    )
    op.create_table(
        "server_state",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_server_state")),
    )


def downgrade() -> None:
    op.drop_table("server_state")
    op.drop_index(op.f("ix_role_bindings_project_id"), table_name="role_bindings")
    op.drop_index(op.f("ix_role_bindings_access_key_id"), table_name="role_bindings")
    op.drop_table("role_bindings")
    op.drop_table("access_keys")
    op.drop_table("projects")
