"""No secret in clear: drop the ``token`` from stored service documents (it is kept
encrypted on the service) and the token and access key from stored instance specs (the
reconciler adds them back when it starts an instance).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_SECRET_ENV = ("LIQI_ACCESS_KEY",)


def upgrade() -> None:
    bind = op.get_bind()
    versions = sa.table("service_versions", sa.column("id"), sa.column("document_json"))
    for row_id, text in bind.execute(sa.select(versions.c.id, versions.c.document_json)):
        document = json.loads(text)
        if isinstance(document, dict) and "token" in document:
            del document["token"]
            bind.execute(
                versions.update()
                .where(versions.c.id == row_id)
                .values(document_json=json.dumps(document))
            )
    instances = sa.table("service_instances", sa.column("id"), sa.column("spec_json"))
    for row_id, text in bind.execute(sa.select(instances.c.id, instances.c.spec_json)):
        try:
            spec = json.loads(text or "{}")
        except ValueError:
            continue
        if not isinstance(spec, dict):
            continue
        found = spec.get("env")
        env: dict[str, object] = found if isinstance(found, dict) else {}
        if spec.get("token") is None and not any(k in env for k in _SECRET_ENV):
            continue
        spec["token"] = None
        spec["env"] = {k: v for k, v in env.items() if k not in _SECRET_ENV}
        bind.execute(
            instances.update()
            .where(instances.c.id == row_id)
            .values(spec_json=json.dumps(spec, indent=2))
        )


def downgrade() -> None:
    """Nothing to restore: the secrets are kept encrypted elsewhere."""
