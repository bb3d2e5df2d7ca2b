"""Routes for datasets, the seed's volumes (``liqi dataset create|list|describe|ls|get|drop``).

A local directory is uploaded with one ``PUT .../files/{path}?upload=<id>`` per file (streamed;
each body's signed hash is checked before the file is staged), then made visible by
``POST .../commit?upload=<id>``. ``POST`` on the partition copies an ``oss://`` prefix.
"""

from __future__ import annotations

from datetime import datetime
from email.utils import format_datetime

import anyio.to_thread
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from starlette.background import BackgroundTask
from starlette.responses import StreamingResponse

from liqi.control.api.deps import DB, PlaneDep, Who
from liqi.control.api.objects import body_chunks, parse_range
from liqi.control.identity.auth import BODY_CHECK_SCOPE_KEY, BodyCheck
from liqi.control.server.plane import ControlPlane
from liqi.control.storage import datasets
from liqi.control.storage.datasets import Partition
from liqi.core.names import check_project_name
from liqi.core.odps import VolumeUri, check_partition_name, check_volume_name
from liqi.core.refs import check_key
from liqi.stores.local import LocalStore

router = APIRouter(prefix="/api/v1")
PARTITION = "/projects/{project}/volumes/{volume}/{partition}"


class DatasetOut(BaseModel):
    uri: str
    project: str
    volume: str
    partition: str
    version: int
    source: str
    comment: str
    file_count: int
    size: int
    builtin: bool
    created_at: datetime


class FileOut(BaseModel):
    path: str
    size: int


class FromOss(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: StrictStr = Field(description="oss://bucket/prefix/ whose objects become the files")
    comment: StrictStr = Field(default="", max_length=4096)
    force: StrictBool = False


class Commit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    file_count: StrictInt = Field(ge=1, description="files the client uploaded")
    size: StrictInt = Field(ge=0, description="their total size in bytes")
    source: StrictStr = Field(default="", max_length=4096, description="where they came from")
    comment: StrictStr = Field(default="", max_length=4096)
    force: StrictBool = False


def dataset_out(part: Partition) -> DatasetOut:
    return DatasetOut(
        uri=str(part.uri),
        project=part.uri.project,
        volume=part.uri.volume,
        partition=part.uri.partition,
        version=part.version,
        source=part.source,
        comment=part.comment,
        file_count=part.file_count,
        size=part.size,
        builtin=part.builtin,
        created_at=part.created_at,
    )


def volume_uri(project: str, volume: str, partition: str) -> VolumeUri:
    return VolumeUri(
        check_project_name(project), check_volume_name(volume), check_partition_name(partition)
    )


def _store(p: ControlPlane) -> LocalStore:
    return p.stores.system_store("volumes")


@router.get("/datasets")
def list_datasets(who: Who, session: DB, project: str | None = None) -> list[DatasetOut]:
    return [dataset_out(d) for d in datasets.visible(session, who, project)]


@router.get(PARTITION)
def describe_dataset(
    project: str, volume: str, partition: str, p: PlaneDep, who: Who, session: DB
) -> DatasetOut:
    uri = volume_uri(project, volume, partition)
    return dataset_out(datasets.describe(session, who, uri, _store(p)))


@router.get(PARTITION + "/files")
def list_files(
    project: str, volume: str, partition: str, p: PlaneDep, who: Who, session: DB
) -> list[FileOut]:
    uri = volume_uri(project, volume, partition)
    _, tree = datasets.open_partition(session, who, uri, _store(p))
    return [FileOut(path=f.key, size=f.size) for f in tree.files()]


@router.get(PARTITION + "/files/{path:path}")
def get_file(
    project: str, volume: str, partition: str, path: str, request: Request, p: PlaneDep, who: Who
) -> Response:
    uri = volume_uri(project, volume, partition)
    check_key(path, allow_folder=False)
    header = request.headers.get("range")
    part, reader = datasets.open_file(p.sessions, who, uri, path, _store(p))
    span = parse_range(header, reader.info.size) if header else None
    if span:
        reader.close()
        part, reader = datasets.open_file(
            p.sessions, who, uri, path, _store(p), start=span[0], end=span[1]
        )
    size = reader.info.size
    headers = {
        "content-length": str(reader.end - reader.start),
        "accept-ranges": "bytes",
        "etag": f'"{reader.info.etag}"',
        "last-modified": format_datetime(reader.info.modified_at, usegmt=True),
        "x-liqi-version": str(part.version),
    }
    if span:
        headers["content-range"] = f"bytes {reader.start}-{reader.end - 1}/{size}"
    return StreamingResponse(
        reader.chunks,
        status_code=206 if span else 200,
        media_type="application/octet-stream",
        headers=headers,
        background=BackgroundTask(reader.close),
    )


@router.put(PARTITION + "/files/{path:path}")
async def put_file(
    project: str,
    volume: str,
    partition: str,
    path: str,
    upload: str,
    request: Request,
    p: PlaneDep,
    who: Who,
) -> FileOut:
    uri = volume_uri(project, volume, partition)
    check_key(path, allow_folder=False)  # before the body: nothing is read for a bad path
    datasets.check_upload_id(upload)
    check: BodyCheck = request.scope[BODY_CHECK_SCOPE_KEY]
    size = await anyio.to_thread.run_sync(
        lambda: datasets.upload_file(
            p.sessions, _store(p), who, uri, upload, path, body_chunks(request), check.verify
        )
    )
    return FileOut(path=path, size=size)


@router.post(PARTITION + "/commit", status_code=201)
def commit_upload(
    project: str, volume: str, partition: str, upload: str, body: Commit, p: PlaneDep, who: Who
) -> DatasetOut:
    uri = volume_uri(project, volume, partition)
    part = datasets.commit_upload(
        p.sessions,
        _store(p),
        who,
        uri,
        upload,
        file_count=body.file_count,
        size=body.size,
        source=body.source,
        comment=body.comment,
        force=body.force,
    )
    return dataset_out(part)


@router.post(PARTITION, status_code=201)
def create_from_oss(
    project: str, volume: str, partition: str, body: FromOss, p: PlaneDep, who: Who
) -> DatasetOut:
    uri = volume_uri(project, volume, partition)
    part = datasets.create_from_oss(
        p.sessions, p.stores, who, uri, body.source, comment=body.comment, force=body.force
    )
    return dataset_out(part)


@router.delete(PARTITION, status_code=204)
def drop_dataset(project: str, volume: str, partition: str, p: PlaneDep, who: Who) -> Response:
    datasets.drop(p.sessions, _store(p), who, volume_uri(project, volume, partition))
    return Response(status_code=204)
