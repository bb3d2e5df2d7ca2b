"""First start of a server: project `default`, a superuser key, and a client profile for it."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from liqi.config import Profile, ProfileFile, ServerSettings
from liqi.control.db.secretbox import SecretBox
from liqi.control.db.tables import AccessKey, Project, utcnow
from liqi.control.identity import accounts
from liqi.core.names import Role

logger = logging.getLogger(__name__)

BOOTSTRAP_KEY_STATE = "bootstrap_access_id"
DEFAULT_PROJECT = "default"


@dataclass(frozen=True)
class BootstrapResult:
    access_id: str
    created: bool


def ensure_bootstrapped(sessions: sessionmaker[Session], box: SecretBox) -> BootstrapResult:
    """Create project `default` and a superuser key once per database; idempotent."""
    with sessions.begin() as session:
        existing = accounts.get_state(session, BOOTSTRAP_KEY_STATE)
        if existing is not None:
            return BootstrapResult(access_id=existing, created=False)
        project = session.scalars(select(Project).where(Project.name == DEFAULT_PROJECT)).first()
        if project is None:
            project = Project(
                name=DEFAULT_PROJECT, description="Created on first start.", created_at=utcnow()
            )
            session.add(project)
            session.flush()
        new = accounts.create_key(
            session,
            box,
            None,
            project=project,
            role=Role.ADMIN,
            name="bootstrap admin",
            superuser=True,
        )
        accounts.set_state(session, BOOTSTRAP_KEY_STATE, new.key.access_id)
        logger.info("bootstrapped project=%s access_id=%s", DEFAULT_PROJECT, new.key.access_id)
        return BootstrapResult(access_id=new.key.access_id, created=True)


def write_admin_profile(
    settings: ServerSettings,
    sessions: sessionmaker[Session],
    box: SecretBox,
    access_id: str,
    endpoint: str,
) -> None:
    """Keep a profile for the bootstrap key in ``LIQI_HOME/config.toml`` pointing at ``endpoint``.

    Written on first start, and on later starts the endpoint is brought up to date (the port may
    have changed). A profile file deleted by hand is written anew from the stored key.
    """
    profiles = ProfileFile.load(settings.profile_path)
    mine = [p for p in profiles.profiles.values() if p.access_id == access_id]
    if mine:
        for profile in mine:
            profiles.upsert(
                Profile(**{**profile.__dict__, "endpoint": endpoint}),
            )
    else:
        with sessions() as session:
            key = session.scalars(
                select(AccessKey).where(
                    AccessKey.access_id == access_id, AccessKey.revoked_at.is_(None)
                )
            ).first()
            if key is None:
                return
            secret = box.decrypt(key.secret_ciphertext)
        name = "default" if "default" not in profiles.profiles else "local-admin"
        profiles.upsert(
            Profile(
                name=name,
                endpoint=endpoint,
                access_id=access_id,
                access_key=secret,
                project=DEFAULT_PROJECT,
            )
        )
    profiles.save()
