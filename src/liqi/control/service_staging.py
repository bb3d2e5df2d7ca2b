"""What an instance needs on this machine before it starts: its InstanceSpec, with the model
and warm-up file resolved to something ``liqi serve`` reads.

``oss://`` models are fetched by the instance itself through the control plane (with the
service owner's key in its environment), so it also sees new versions; ``http(s)://``
tarballs (EAS's ``model_path`` form) are downloaded and unpacked here once, into the cache;
``oss://`` warm-up files are copied into the instance's folder.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx

from liqi.archives import extract, single_folder
from liqi.backends.instances import InstanceSpec
from liqi.control.buckets import StoreRegistry
from liqi.control.models import Bucket
from liqi.core.refs import parse_oss_uri
from liqi.core.service_spec import ServiceSpec
from liqi.errors import StoreError

log = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 300.0
DEFAULT_REQUEST_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Credentials:
    """How an instance reaches the control plane for ``oss://`` and ``model:`` models."""

    endpoint: str
    access_id: str
    access_key: str
    project: str


def instance_spec(
    spec: ServiceSpec,
    *,
    instance_id: str,
    instance_dir: Path,
    model_uri: str,
    token: str | None,
    home: Path,
    credentials: Credentials | None,
    warmup_file: str | None,
) -> InstanceSpec:
    rpc = spec.rpc
    batching = rpc.get("batching")
    if batching is None:  # EAS says nothing: liqi's adaptive batching costs no latency
        max_batch_size, max_wait_ms = 256, 0.0
    elif batching:
        max_batch_size = int(rpc.get("max_batch_size", 32))
        max_wait_ms = float(rpc.get("max_batch_timeout", 0))
    else:
        max_batch_size, max_wait_ms = 1, 0.0
    env = {"LIQI_HOME": str(home)}
    if credentials is not None:
        env |= {
            "LIQI_ENDPOINT": credentials.endpoint,
            "LIQI_ACCESS_ID": credentials.access_id,
            "LIQI_ACCESS_KEY": credentials.access_key,
            "LIQI_PROJECT": credentials.project,
        }
    python = spec.processor_entry is not None or (spec.processor_type or "") == "python"
    workers = rpc.get("worker_threads")
    return InstanceSpec(
        instance_id=instance_id,
        service=spec.name,
        model_uri=model_uri,
        dir=str(instance_dir),
        processor="python" if python else spec.processor,
        processor_path=spec.processor_path if python else None,
        processor_entry=spec.processor_entry if python else None,
        worker_threads=int(workers) if workers and python else None,
        max_batch_size=max(max_batch_size, 1),
        max_batch_wait_ms=max(max_wait_ms, 0.0),
        max_queue_size=int(rpc.get("max_queue_size", 1024)) or 1024,
        request_timeout_s=spec.request_timeout_s or DEFAULT_REQUEST_TIMEOUT_S,
        token=token,
        memory_mb=spec.memory_mb,
        warmup_file=warmup_file,
        env=env,
    )


def resolve_model(uri: str, cache_dir: Path) -> str:
    """A URI ``liqi serve`` takes: tarballs are unpacked into ``cache_dir``, once."""
    if uri.startswith(("http://", "https://")):
        return str(fetch_archive(uri, cache_dir))
    if uri.startswith(("oss://", "model:")):
        return uri
    return str(Path(uri.removeprefix("file://")).expanduser().absolute())


def fetch_archive(url: str, cache_dir: Path) -> Path:
    """Download a .tar.gz/.tgz/.tar/.zip model and unpack it; reused while it is there."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    dest = cache_dir / "archives" / digest
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{digest}-", dir=dest.parent))
    try:
        archive = tmp / "archive"
        try:
            with httpx.stream("GET", url, timeout=DOWNLOAD_TIMEOUT_S, follow_redirects=True) as got:
                if got.status_code != 200:
                    raise StoreError(f"Cannot download the model {url}: HTTP {got.status_code}.")
                with open(archive, "wb") as out:
                    for chunk in got.iter_bytes():
                        out.write(chunk)
        except httpx.HTTPError as exc:
            raise StoreError(f"Cannot download the model {url}: {exc}.") from None
        unpacked = tmp / "model"
        extract(archive, unpacked, what=url)
        root = single_folder(unpacked)
        root.rename(dest)
        log.info("downloaded and unpacked %s into %s", url, dest)
        return dest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def copy_object(uri: str, dest: Path, stores: StoreRegistry, bucket: Bucket) -> Path:
    """Copy the object ``uri`` (an ``oss://`` URI in ``bucket``) to ``dest``, atomically."""
    ref = parse_oss_uri(uri)
    reader = stores.store_for(bucket).open(ref.key)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".tmp-{dest.name}")
    try:
        with open(tmp, "wb") as out:
            for chunk in reader.chunks:
                out.write(chunk)
        tmp.rename(dest)
    finally:
        reader.close()
        tmp.unlink(missing_ok=True)
    return dest
