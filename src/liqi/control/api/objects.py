"""Routes for the objects in a bucket: list, upload, download (with ranges), stat, delete,
copy, and presigned URLs (``liqi oss ls|cp|mv|rm|mkdir|cat|stat|sign``).

Uploads stream: the body goes to the store chunk by chunk (never whole in memory) and becomes
visible only once its signed hash is checked (``BodyCheck``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Literal
from urllib.parse import quote

import anyio.from_thread
import anyio.to_thread
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr
from starlette.background import BackgroundTask
from starlette.responses import StreamingResponse

from liqi.control.api.deps import DB, PlaneDep, Who
from liqi.control.identity import accounts
from liqi.control.identity.accounts import Principal
from liqi.control.identity.auth import BODY_CHECK_SCOPE_KEY, BodyCheck
from liqi.control.server.plane import ControlPlane
from liqi.control.storage import buckets
from liqi.core.refs import check_key, check_prefix, parse_oss_uri
from liqi.errors import (
    AuthenticationError,
    InvalidRequestError,
    ObjectNotFoundError,
    RangeNotSatisfiableError,
)
from liqi.stores.base import ObjectInfo, Store

router = APIRouter(prefix="/api/v1")
presigned_router = APIRouter()

# Uploads whose body streams to a store: the auth middleware hashes them on the way instead of
# buffering (see control/api/middleware.py). Routes that stream must call BodyCheck.verify
# before commit.
STREAMED_PATHS = re.compile(
    r"^/api/v1/(buckets/[^/]+/objects/.+"
    r"|projects/[^/]+/resources/[^/]+"
    r"|projects/[^/]+/volumes/[^/]+/[^/]+/files/.+"
    r"|jobs/[^/]+/files/outputs)$"
)
MAX_PRESIGN_S = 7 * 24 * 3600
RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


class ObjectOut(BaseModel):
    key: str
    size: int
    modified_at: datetime
    etag: str
    content_type: str | None = None


class ListingOut(BaseModel):
    objects: list[ObjectOut]
    prefixes: list[str]
    next_marker: str | None


class CopyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: StrictStr = Field(description="oss://bucket/key of the object (or folder) to copy")
    key: StrictStr = Field(description="destination key in this bucket")
    recursive: StrictBool = False


class CopyOut(BaseModel):
    copied: list[ObjectOut]


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: StrictStr
    method: Literal["GET", "PUT"] = "GET"
    expires_s: int = Field(default=60, ge=1, le=MAX_PRESIGN_S)


class SignOut(BaseModel):
    url: str
    method: str
    expires_at: datetime


def object_out(info: ObjectInfo) -> ObjectOut:
    return ObjectOut(
        key=info.key,
        size=info.size,
        modified_at=info.modified_at,
        etag=info.etag,
        content_type=info.content_type,
    )


def _store(p: ControlPlane, session: DB, who: Principal, bucket: str, *, write: bool) -> Store:
    found = buckets.get_bucket(session, bucket)
    buckets.check_access(session, who, found, write=write)
    return p.stores.store_for(found)


def _in_thread_store(p: ControlPlane, who: Principal, bucket: str, *, write: bool) -> Store:
    with p.sessions() as session:
        return _store(p, session, who, bucket, write=write)


@router.get("/buckets/{bucket}/objects")
def list_objects(
    bucket: str,
    p: PlaneDep,
    who: Who,
    session: DB,
    prefix: str = "",
    delimiter: str | None = None,
    marker: str | None = None,
    limit: int = 1000,
) -> ListingOut:
    check_prefix(prefix)
    if delimiter not in (None, "", "/"):
        raise InvalidRequestError(f"Delimiter {delimiter!r} is not supported: use '/' or none.")
    if not 1 <= limit <= 1000:
        raise InvalidRequestError(f"limit={limit} is out of range: use 1 to 1000.")
    store = _store(p, session, who, bucket, write=False)
    page = store.list(prefix, delimiter=delimiter or None, marker=marker or None, limit=limit)
    return ListingOut(
        objects=[object_out(o) for o in page.objects],
        prefixes=list(page.prefixes),
        next_marker=page.next_marker,
    )


def _object_headers(info: ObjectInfo) -> dict[str, str]:
    return {
        "etag": f'"{info.etag}"',
        "last-modified": format_datetime(info.modified_at.astimezone(timezone.utc), usegmt=True),
        "accept-ranges": "bytes",
        "x-liqi-modified-at": info.modified_at.isoformat(),
    }


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end_exclusive)`` for a ``Range: bytes=...`` header; None for the whole object."""
    if not header:
        return None
    match = RANGE_RE.match(header.strip())
    if not match or match.groups() == ("", ""):
        raise RangeNotSatisfiableError(f"Unsupported Range header {header!r}: use bytes=START-END.")
    first, last = match.groups()
    if first == "":
        length = int(last)
        start, end = max(size - length, 0), size
    else:
        start = int(first)
        end = min(int(last) + 1, size) if last else size
    if start >= size or end <= start:
        raise RangeNotSatisfiableError(f"Range {header!r} is outside the object of {size} bytes.")
    return start, end


def _download(store: Store, key: str, range_header: str | None) -> StreamingResponse:
    info = store.stat(key)
    span = parse_range(range_header, info.size)
    start, end = span if span else (0, info.size)
    reader = store.open(key, start=start, end=end)
    headers = _object_headers(info)
    headers["content-length"] = str(end - start)
    status = 200
    if span:
        status = 206
        headers["content-range"] = f"bytes {start}-{end - 1}/{info.size}"
    return StreamingResponse(
        reader.chunks,
        status_code=status,
        media_type=info.content_type or "application/octet-stream",
        headers=headers,
        background=BackgroundTask(reader.close),
    )


@router.get("/buckets/{bucket}/objects/{key:path}")
def get_object(
    bucket: str, key: str, request: Request, p: PlaneDep, who: Who, session: DB
) -> Response:
    check_key(key, allow_folder=False)
    store = _store(p, session, who, bucket, write=False)
    return _download(store, key, request.headers.get("range"))


@router.head("/buckets/{bucket}/objects/{key:path}")
def head_object(bucket: str, key: str, p: PlaneDep, who: Who, session: DB) -> Response:
    check_key(key)
    info = _store(p, session, who, bucket, write=False).stat(key)
    headers = _object_headers(info)
    headers["content-length"] = str(info.size)
    return Response(status_code=200, headers=headers, media_type=info.content_type)


@router.get("/buckets/{bucket}/stat/{key:path}")
def stat_object(bucket: str, key: str, p: PlaneDep, who: Who, session: DB) -> ObjectOut:
    check_key(key)
    return object_out(_store(p, session, who, bucket, write=False).stat(key))


def body_chunks(request: Request) -> Iterator[bytes]:
    """The request body as a sync iterator, for a store running in a worker thread."""
    stream = request.stream().__aiter__()

    async def next_chunk() -> bytes | None:
        try:
            return await stream.__anext__()
        except StopAsyncIteration:
            return None

    while True:
        chunk = anyio.from_thread.run(next_chunk)
        if chunk is None:
            return
        if chunk:
            yield chunk


@router.put("/buckets/{bucket}/objects/{key:path}")
async def put_object(bucket: str, key: str, request: Request, p: PlaneDep, who: Who) -> ObjectOut:
    check_key(key)
    check: BodyCheck = request.scope[BODY_CHECK_SCOPE_KEY]
    store = await anyio.to_thread.run_sync(lambda: _in_thread_store(p, who, bucket, write=True))
    content_type = request.headers.get("content-type")
    info = await anyio.to_thread.run_sync(
        lambda: store.put(
            key, body_chunks(request), content_type=content_type, before_commit=check.verify
        )
    )
    return object_out(info)


@router.delete("/buckets/{bucket}/objects/{key:path}")
def delete_object(
    bucket: str, key: str, p: PlaneDep, who: Who, session: DB, recursive: bool = False
) -> dict[str, int]:
    check_key(key)
    store = _store(p, session, who, bucket, write=True)
    if recursive:
        return {"deleted": store.delete_prefix(key)}
    if not store.delete(key):
        raise ObjectNotFoundError(f"No object oss://{bucket}/{key}.")
    return {"deleted": 1}


@router.post("/buckets/{bucket}/copy")
def copy_objects(bucket: str, body: CopyIn, p: PlaneDep, who: Who, session: DB) -> CopyOut:
    source = parse_oss_uri(body.source)
    dst_store = _store(p, session, who, bucket, write=True)
    src_store = _store(p, session, who, source.bucket, write=False)
    check_key(body.key)
    if not body.recursive:
        check_key(source.key, allow_folder=False)
        return CopyOut(
            copied=[
                object_out(
                    _copy_one(src_store, source.key, dst_store, body.key, source.bucket == bucket)
                )
            ]
        )
    src_prefix = source.key if source.is_folder else source.key + "/"
    dst_prefix = body.key if body.key.endswith("/") else body.key + "/"
    copied = [
        object_out(
            _copy_one(
                src_store,
                info.key,
                dst_store,
                dst_prefix + info.key[len(src_prefix) :],
                source.bucket == bucket,
            )
        )
        for info in list(src_store.walk(src_prefix if src_prefix != "/" else ""))
    ]
    return CopyOut(copied=copied)


def _copy_one(src: Store, src_key: str, dst: Store, dst_key: str, same: bool) -> ObjectInfo:
    if same:
        return src.copy(src_key, dst_key)
    reader = src.open(src_key)
    try:
        return dst.put(dst_key, reader.chunks, content_type=reader.info.content_type)
    finally:
        reader.close()


# -- presigned URLs ---------------------------------------------------------------------------


def _presign_signature(
    p: ControlPlane, method: str, bucket: str, key: str, expires: int, access_id: str
) -> str:
    """The URL's signature; it covers the access id of the key that asked for the URL, which
    must still be active (and still allowed) whenever the URL is used."""
    secret = p.box.derive_key("presigned-url")
    text = f"{method}\n{bucket}\n{key}\n{expires}\n{access_id}".encode()
    return hmac.new(secret, text, hashlib.sha256).hexdigest()


@router.post("/buckets/{bucket}/sign")
def sign_url(
    bucket: str, body: SignIn, request: Request, p: PlaneDep, who: Who, session: DB
) -> SignOut:
    check_key(body.key, allow_folder=False)
    store = _store(p, session, who, bucket, write=body.method == "PUT")
    expires = int(time.time()) + body.expires_s
    expires_at = datetime.fromtimestamp(expires, tz=timezone.utc)
    external = store.presign(body.key, method=body.method, expires_s=body.expires_s)
    if external:
        return SignOut(url=external, method=body.method, expires_at=expires_at)
    sig = _presign_signature(p, body.method, bucket, body.key, expires, who.access_id)
    base = str(request.base_url).rstrip("/")
    query = f"expires={expires}&access_id={who.access_id}&signature={sig}"
    url = f"{base}/presigned/{bucket}/{quote(body.key)}?{query}"
    return SignOut(url=url, method=body.method, expires_at=expires_at)


def _check_presigned(
    p: ControlPlane,
    method: str,
    bucket: str,
    key: str,
    expires: int,
    access_id: str,
    signature: str,
) -> Store:
    check_key(key, allow_folder=False)
    expected = _presign_signature(p, method, bucket, key, expires, access_id)
    # bytes: compare_digest refuses str with non-ASCII characters (a TypeError, a 500)
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise AuthenticationError("This presigned URL is not valid for this object and method.")
    if expires < time.time():
        raise AuthenticationError(
            "This presigned URL has expired; ask for a new one with `liqi oss sign`."
        )
    with p.sessions() as session:
        signer = accounts.find_active_key(session, access_id)
        if signer is None:
            raise AuthenticationError(
                f"The access key {access_id} that signed this presigned URL was revoked; ask "
                "for a new one with `liqi oss sign`."
            )
        found = buckets.get_bucket(session, bucket)
        # The URL allows no more than its signer may still do.
        buckets.check_access(
            session, accounts.load_principal(session, signer), found, write=method == "PUT"
        )
        return p.stores.store_for(found)


@presigned_router.get("/presigned/{bucket}/{key:path}")
def presigned_get(
    bucket: str, key: str, expires: int, signature: str, request: Request, access_id: str = ""
) -> Response:
    p: ControlPlane = request.app.state.plane
    store = _check_presigned(p, "GET", bucket, key, expires, access_id, signature)
    return _download(store, key, request.headers.get("range"))


@presigned_router.put("/presigned/{bucket}/{key:path}")
async def presigned_put(
    bucket: str, key: str, expires: int, signature: str, request: Request, access_id: str = ""
) -> ObjectOut:
    p: ControlPlane = request.app.state.plane
    store = await anyio.to_thread.run_sync(
        lambda: _check_presigned(p, "PUT", bucket, key, expires, access_id, signature)
    )
    content_type = request.headers.get("content-type")
    info = await anyio.to_thread.run_sync(
        lambda: store.put(key, body_chunks(request), content_type=content_type)
    )
    return object_out(info)
