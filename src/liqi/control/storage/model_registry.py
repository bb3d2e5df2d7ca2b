"""Models: named streams of integer versions, registered from what jobs export.

A job that writes a SavedModel (a folder holding ``saved_model.pb``) into a bucket adds the
next version of a Model (named by ``model_name``, else after the job), pointing at that folder
and remembering the job (lineage).
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from liqi.control.db.tables import Model, ModelVersion, utcnow
from liqi.control.identity import accounts
from liqi.control.identity.accounts import Principal
from liqi.errors import InvalidRequestError, NotFoundError

SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
MODEL_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")


def model_name_for(job_name: str, wanted: str | None) -> str:
    name = wanted or PurePosixPath(job_name).name.removesuffix(".py").removesuffix(".tar.gz")
    name = re.sub(r"[^A-Za-z0-9_.\-]", "_", name).lstrip("._-") or "model"
    if not MODEL_NAME_RE.fullmatch(name):
        raise InvalidRequestError(
            f"Invalid model name {name!r}: use up to 128 letters, digits, '_', '.' or '-'."
        )
    return name


def saved_model_dirs(written: list[tuple[str, str]]) -> list[str]:
    """``oss://`` folders holding a SavedModel among the (bucket, key) pairs a job wrote."""
    found = set()
    for bucket, key in written:
        path = PurePosixPath(key)
        if path.name in SAVED_MODEL_FILES:
            parent = str(path.parent)
            found.add(f"oss://{bucket}/{'' if parent == '.' else parent + '/'}")
    return sorted(found)


def register_versions(
    session: Session, project_id: int, name: str, uris: list[str], job_id: str | None
) -> list[ModelVersion]:
    model = session.scalars(
        select(Model).where(Model.project_id == project_id, Model.name == name)
    ).first()
    if model is None:
        model = Model(project_id=project_id, name=name, created_at=utcnow())
        session.add(model)
        session.flush()
    latest = session.scalar(
        select(func.max(ModelVersion.version)).where(ModelVersion.model_id == model.id)
    )
    made = []
    for offset, uri in enumerate(uris, start=1):
        version = ModelVersion(
            model_id=model.id,
            version=(latest or 0) + offset,
            uri=uri,
            job_id=job_id,
            created_at=utcnow(),
        )
        session.add(version)
        made.append(version)
    session.flush()
    return made


def list_models(session: Session, who: Principal, project: str | None) -> list[Model]:
    stmt = select(Model).options(selectinload(Model.versions)).order_by(Model.name)
    if project is not None:
        stmt = stmt.where(Model.project_id == accounts.get_project(session, who, project).id)
    elif not who.is_superuser:
        stmt = stmt.where(Model.project_id.in_(list(who.roles)))
    return list(session.scalars(stmt))


def get_model(session: Session, who: Principal, project: str, name: str) -> Model:
    owner = accounts.get_project(session, who, project)
    model = session.scalars(
        select(Model)
        .where(Model.project_id == owner.id, Model.name == name)
        .options(selectinload(Model.versions))
    ).first()
    if model is None:
        raise NotFoundError(
            f"Model {name!r} does not exist in project {project!r}. List models with "
            "`liqi model list`."
        )
    return model
