"""Routes for models and their versions (registered from jobs)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel

from liqi.control.api.deps import DB, Who
from liqi.control.db.tables import Model, Project
from liqi.control.storage import model_registry

router = APIRouter(prefix="/api/v1")


class VersionOut(BaseModel):
    version: int
    uri: str
    job_id: str | None
    created_at: datetime


class ModelOut(BaseModel):
    project: str
    name: str
    created_at: datetime
    latest_version: int | None
    versions: list[VersionOut]


def model_out(session: DB, model: Model) -> ModelOut:
    project = session.get(Project, model.project_id)
    versions = sorted(model.versions, key=lambda v: v.version)
    return ModelOut(
        project=project.name if project else "?",
        name=model.name,
        created_at=model.created_at,
        latest_version=versions[-1].version if versions else None,
        versions=[
            VersionOut(version=v.version, uri=v.uri, job_id=v.job_id, created_at=v.created_at)
            for v in versions
        ],
    )


@router.get("/models")
def list_models(who: Who, session: DB, project: str | None = None) -> list[ModelOut]:
    return [model_out(session, m) for m in model_registry.list_models(session, who, project)]


@router.get("/projects/{project}/models/{name}")
def get_model(project: str, name: str, who: Who, session: DB) -> ModelOut:
    return model_out(session, model_registry.get_model(session, who, project, name))
