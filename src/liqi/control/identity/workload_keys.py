"""Workload keys: the seed's ``role_arn`` made real for service instances and remote jobs.

An instance that reads its model through the control plane (``oss://`` or ``model:``) gets a
key of its own, never a person's: minted when it is staged, bound to the service's project,
limited by a :class:`WorkloadScope` to reading exactly its model (the objects under its
``oss://`` prefix, or the registry entry of its ``model:`` name and the objects of that
model's versions), expiring after ``ttl``, and revoked when the instance goes. The secret is
kept encrypted like every other key's and reaches the instance only in its environment.

A job run on another machine (a Ray cluster) gets one too, scoped to its own files: reading
its staged inputs and sending back its outputs and result (``/api/v1/jobs/<id>/files/...``),
nothing else. It reaches the job's driver through a one-time ticket (:mod:`tickets`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import parse_qs, unquote

from sqlalchemy import select
from sqlalchemy.orm import Session

from liqi.control.db.secretbox import SecretBox
from liqi.control.db.tables import AccessKey, Model, Project
from liqi.control.identity import accounts
from liqi.core.names import Role
from liqi.core.refs import parse_oss_uri

WORKLOAD_KEY_TTL = timedelta(days=7)
_OBJECT = re.compile(r"^/api/v1/buckets/([^/]+)/(objects|stat)/(.+)$")
_LISTING = re.compile(r"^/api/v1/buckets/([^/]+)/objects$")
_MODEL = re.compile(r"^/api/v1/projects/([^/]+)/models/([^/]+)$")
_JOB_FILES = re.compile(r"^/api/v1/jobs/([^/]+)/files/(staged|outputs|result)$")
JOB_FILE_METHODS = {"staged": "GET", "outputs": "PUT", "result": "PUT"}


@dataclass(frozen=True)
class WorkloadScope:
    """What a workload key may read: objects under ``(bucket, prefix)`` pairs, and the
    registry entries (and versions' objects) of ``(project, model)`` pairs; the files of
    ``jobs`` (by id). Nothing else."""

    prefixes: tuple[tuple[str, str], ...] = ()
    models: tuple[tuple[str, str], ...] = ()
    jobs: tuple[str, ...] = ()

    def to_json(self) -> str:
        data: dict[str, object] = {"prefixes": self.prefixes, "models": self.models}
        if self.jobs:
            data["jobs"] = self.jobs
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> WorkloadScope:
        data = json.loads(text)
        return cls(
            prefixes=tuple((str(b), str(p)) for b, p in data.get("prefixes", ())),
            models=tuple((str(p), str(m)) for p, m in data.get("models", ())),
            jobs=tuple(str(j) for j in data.get("jobs", ())),
        )

    @classmethod
    def for_model(cls, model_uri: str, project: str) -> WorkloadScope | None:
        """The scope an instance serving ``model_uri`` needs; None when it reads nothing
        through the control plane (a local path, a downloaded archive)."""
        if model_uri.startswith("oss://"):
            ref = parse_oss_uri(model_uri)
            return cls(prefixes=((ref.bucket, ref.key),))
        if model_uri.startswith("model:"):
            name = model_uri.removeprefix("model:").split(":", 1)[0]
            return cls(models=((project, name),))
        return None


@dataclass(frozen=True)
class WorkloadKey:
    access_id: str
    secret: str


def key_for(
    session: Session,
    box: SecretBox,
    *,
    workload: str,
    project: Project,
    scope: WorkloadScope,
    now: datetime,
    ttl: timedelta = WORKLOAD_KEY_TTL,
) -> WorkloadKey:
    """The workload's active key, or a new one (its old ones revoked) when it has none, it
    expired or its scope changed."""
    for key in _active(session, workload):
        usable = key.scope_json == scope.to_json() and (
            key.expires_at is None or key.expires_at > now + ttl / 10
        )
        if usable:
            return WorkloadKey(key.access_id, box.decrypt(key.secret_ciphertext))
        key.revoked_at = now
    new = accounts.create_key(
        session, box, None, project=project, role=Role.MEMBER, name=f"workload {workload}"
    )
    new.key.workload = workload
    new.key.scope_json = scope.to_json()
    new.key.expires_at = now + ttl
    return WorkloadKey(new.key.access_id, new.secret)


def revoke(session: Session, workload: str, now: datetime) -> None:
    """Revoke every key of ``workload`` (it ended)."""
    for key in _active(session, workload):
        key.revoked_at = now


def _active(session: Session, workload: str) -> list[AccessKey]:
    """The workload's keys that are not revoked."""
    stmt = select(AccessKey).where(AccessKey.workload == workload, AccessKey.revoked_at.is_(None))
    return list(session.scalars(stmt))


def allows(session: Session, scope: WorkloadScope, method: str, path: str, query: str) -> bool:
    """Whether a workload key with ``scope`` may make this request: reads of its model, or
    its job's own files."""
    path = unquote(path)
    found = _JOB_FILES.match(path)
    if found:
        return found[1] in scope.jobs and JOB_FILE_METHODS[found[2]] == method
    if method not in ("GET", "HEAD"):
        return False
    found = _MODEL.match(path)
    if found:
        return (found[1], found[2]) in scope.models
    found = _OBJECT.match(path)
    if found:
        bucket, key, listing = found[1], found[3], False
    else:
        found = _LISTING.match(path)
        if not found:
            return False
        bucket, key, listing = found[1], parse_qs(query).get("prefix", [""])[0], True
    if any(part in (".", "..") for part in key.split("/")):
        return False
    for allowed_bucket, prefix in _prefixes(session, scope):
        if bucket != allowed_bucket:
            continue
        if _within(key, prefix) or (listing and prefix and key == prefix.rstrip("/")):
            return True
    return False


def _within(key: str, prefix: str) -> bool:
    """``key`` is the object ``prefix`` names, or under the folder it names."""
    if not prefix:
        return True
    return key == prefix or key.startswith(prefix if prefix.endswith("/") else prefix + "/")


def _prefixes(session: Session, scope: WorkloadScope) -> list[tuple[str, str]]:
    found = list(scope.prefixes)
    for project, name in scope.models:
        model = session.scalars(
            select(Model).join(Project).where(Project.name == project, Model.name == name)
        ).first()
        if model is None:
            continue
        for version in model.versions:
            if version.uri.startswith("oss://"):
                ref = parse_oss_uri(version.uri)
                found.append((ref.bucket, ref.key))
    return found
