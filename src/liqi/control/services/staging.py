"""What an instance needs on this machine before it starts: its InstanceSpec, with the model,
the processor and the warm-up file resolved to something ``liqi serve`` reads.

This runs on the :class:`~liqi.control.services.stager.Stager`'s workers, never on the
reconciler's tick: :func:`stage` takes a :class:`StagingOrder` (everything it needs from the
database, read by the tick) and does the transfers, each bounded by :class:`StagingLimits`
(bytes, files, time) and stopped when the order is cancelled.

- ``oss://`` and ``model:`` models are fetched by the instance itself through the control
  plane (so it also sees new versions); ``http(s)://`` archives (EAS's ``model_path`` form)
  are downloaded and unpacked here once, into the cache.
- A Python processor's ``processor_path`` may be a local folder or file, an ``oss://``
  folder, an ``oss://`` archive (``.tar.gz``, ``.tgz``, ``.tar``, ``.zip``...) or ``.py`` file,
  or an ``http(s)://`` archive, as EAS documents; remote ones land in the instance's folder.
- ``oss://`` warm-up files are copied into the instance's folder.
- The order's :class:`~liqi.control.fetch_policy.FetchPolicy` is the real gate for what the
  spec makes this server reach: every hop of an http(s) download goes to a checked address,
  and a local path is read only when the version's author is a superuser or the path lies
  under ``LIQI_LOCAL_MODEL_ROOTS`` (catalog checks the same at create and modify).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from liqi.archives import extract, single_folder
from liqi.backends.instances import SANDBOX_DIR, InstanceSpec
from liqi.control.db.secretbox import SecretBox
from liqi.control.db.tables import Service, ServiceVersion
from liqi.control.fetch_policy import FetchPolicy, is_local_path
from liqi.control.identity import accounts, workload_keys
from liqi.control.identity.workload_keys import WorkloadScope
from liqi.control.services.transfer import StagingLimits, Transfer
from liqi.control.storage import buckets
from liqi.control.storage.buckets import StoreRegistry
from liqi.core.refs import parse_oss_uri
from liqi.core.service_spec import ServiceSpec
from liqi.sandbox import SandboxPolicy, safe_env, workload_user
from liqi.stores.base import Store

log = logging.getLogger(__name__)

DEFAULT_REQUEST_TIMEOUT_S = 60.0
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
CHUNK_BYTES = 1 << 20
#: What a sandboxed instance takes from the control plane's environment besides
#: :data:`liqi.sandbox.SAFE_ENV`: how ``liqi serve`` behaves, never a secret.
INSTANCE_ENV = (
    "LIQI_CORS_ORIGINS",
    "LIQI_TF_LOG_LEVEL",
    "TF_CPP_MIN_LOG_LEVEL",
    "OMP_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
)


@dataclass(frozen=True)
class Credentials:
    """How an instance reaches the control plane for ``oss://`` and ``model:`` models."""

    endpoint: str
    access_id: str
    access_key: str
    project: str


@dataclass(frozen=True)
class StagingOrder:
    """One instance to stage: what the reconciler read from the database for it."""

    instance_id: str
    instance_dir: Path
    cache_dir: Path
    home: Path
    spec: ServiceSpec
    token: str | None
    credentials: Credentials | None
    stores: dict[str, Store] = field(default_factory=dict)  # buckets of oss:// files, by name
    policy: FetchPolicy = field(default_factory=FetchPolicy)
    trusted: bool = False  # the version's author is an active superuser key
    # isolation "sandbox": the project whose workload user the instance runs as (its id)
    sandbox_project: str | None = None
    group: str = "local"  # the resource group it runs in


def written_by_superuser(session: Session, service: Service, version: int) -> bool:
    """Whether the key that wrote ``version`` of ``service`` is an active superuser key (its
    local paths are then read without the roots' check)."""
    author = session.scalars(
        select(ServiceVersion.created_by).where(
            ServiceVersion.service_id == service.id, ServiceVersion.version == version
        )
    ).first()
    key = accounts.find_active_key(session, author) if author else None
    return key is not None and key.is_superuser


def workload_credentials(
    session: Session,
    service: Service,
    box: SecretBox,
    endpoint: str,
    *,
    instance_id: str,
    spec: ServiceSpec,
    now: datetime,
) -> Credentials | None:
    """The instance's own workload key, scoped to reading its model (minted when it has
    none); None when the model is not read through the control plane."""
    project = service.project
    scope = WorkloadScope.for_model(spec.model_path or "", project.name)
    if scope is None:
        return None
    key = workload_keys.key_for(
        session, box, workload=instance_id, project=project, scope=scope, now=now
    )
    return Credentials(
        endpoint=endpoint, access_id=key.access_id, access_key=key.secret, project=project.name
    )


def with_secrets(
    spec: InstanceSpec, token: str | None, credentials: Credentials | None
) -> InstanceSpec:
    """A stored (redacted) spec with its secrets back: what a restart starts."""
    env = dict(spec.env)
    if credentials is not None:
        env |= {"LIQI_ACCESS_ID": credentials.access_id, "LIQI_ACCESS_KEY": credentials.access_key}
    return replace(spec, token=token, env=env)


def stores_for(session: Session, spec: ServiceSpec, registry: StoreRegistry) -> dict[str, Store]:
    """The stores of the buckets staging reads (a processor or warm-up file on ``oss://``)."""
    found: dict[str, Store] = {}
    uris = [spec.warm_up_data_path, spec.processor_path if _is_python(spec) else None]
    for uri in uris:
        if uri and uri.startswith("oss://"):
            name = parse_oss_uri(uri).bucket
            if name not in found:
                found[name] = registry.store_for(buckets.get_bucket(session, name))
    return found


def stage(
    order: StagingOrder, limits: StagingLimits, cancelled: threading.Event | None = None
) -> InstanceSpec:
    """Fetch what the instance needs and return its spec.

    Raises:
        StoreError: a download or copy failed (the reason says which and why).
        ArchiveError: an archive is unsafe or corrupt.
        StagingCancelledError: ``cancelled`` was set, or ``limits.timeout_s`` passed.
    """
    transfer = Transfer(limits, cancelled or threading.Event(), order.policy)
    spec = order.spec
    # Local paths as checked (symlinks and ".." resolved for a non-superuser author), so the
    # instance reads what was checked.
    local = {
        name: str(order.policy.check_local_path(uri, field=name, superuser=order.trusted))
        for name, uri in _paths(spec)
        if is_local_path(uri)
    }
    if order.sandbox_project is not None:
        local = {name: _copy_in(name, path, order, transfer) for name, path in local.items()}
    model_path = local.get("model_path", spec.model_path)
    model = model_path or local.get("processor_path", spec.processor_path) or "."
    model_uri = resolve_model(model, order.cache_dir, transfer)
    python = _is_python(spec)
    processor_path = local.get("processor_path", spec.processor_path) if python else None
    if processor_path:
        processor_path = _fetch_processor(processor_path, order, transfer)
        if not spec.model_path:
            model_uri = processor_path
    warmup = local.get("warm_up_data_path", spec.warm_up_data_path)
    if warmup and warmup.startswith("oss://"):
        name = parse_oss_uri(warmup).key.rsplit("/", 1)[-1] or "warmup.bin"
        warmup = str(transfer.copy_object(warmup, order.stores, order.instance_dir / name))
    elif warmup:
        warmup = str(Path(warmup.removeprefix("file://")).expanduser().absolute())
    staged = instance_spec(
        spec,
        instance_id=order.instance_id,
        instance_dir=order.instance_dir,
        model_uri=model_uri,
        processor_path=processor_path,
        token=order.token,
        home=order.home,
        credentials=order.credentials,
        warmup_file=warmup,
    )
    staged = replace(staged, group=order.group, cpu=spec.cpu)
    if order.sandbox_project is None:
        return staged
    user = workload_user(order.sandbox_project)
    env = safe_env(os.environ, **{k: os.environ[k] for k in INSTANCE_ENV if k in os.environ})
    return instance_sandbox(staged, user, env, order.home, order.cache_dir)


def instance_sandbox(
    spec: InstanceSpec,
    user: tuple[int, int] | None,
    env: dict[str, str],
    home: Path,
    cache_dir: Path,
) -> InstanceSpec:
    """``spec`` run in liqi.sandbox: its folder writable (seen at ``/instance`` inside, so a
    standby server made before the instance can become it), the cache of unpacked archives
    read-only, nothing else of LIQI_HOME (``home``); its local paths were copied into its
    folder. It fetches ``oss://`` and ``model:`` models into a cache of its own
    (``LIQI_HOME`` is ``/instance/home`` inside). The network is shared: it reaches the
    control plane. ``env`` is the allow-list its environment starts from (no secret: the
    policy is written to ``spec.json``); the spec's own ``env`` and token are added at start.
    """
    folder = Path(spec.dir)
    (folder / "home").mkdir(parents=True, exist_ok=True)
    local_model = spec.model_uri if not spec.model_uri.startswith(("oss://", "model:")) else None
    readable = [local_model, spec.processor_path, spec.warmup_file, str(cache_dir / "archives")]
    policy = SandboxPolicy(
        name=f"instance-{spec.instance_id}",
        uid=user[0] if user else None,
        gid=user[1] if user else None,
        binds={SANDBOX_DIR: str(folder)},
        # what its folder holds is seen there, at SANDBOX_DIR
        readable=tuple(p for p in readable if p and not Path(p).is_relative_to(folder)),
        hidden=(str(home),),
        env=env,
        memory_mb=spec.memory_mb,
    )
    as_json = json.loads(json.dumps(policy.to_dict()))  # as spec.json gives it back
    return replace(spec, env={**spec.env, "LIQI_HOME": f"{SANDBOX_DIR}/home"}, sandbox=as_json)


def instance_spec(
    spec: ServiceSpec,
    *,
    instance_id: str,
    instance_dir: Path,
    model_uri: str,
    processor_path: str | None,
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
    python = _is_python(spec)
    workers = rpc.get("worker_threads")
    return InstanceSpec(
        instance_id=instance_id,
        service=spec.name,
        model_uri=model_uri,
        dir=str(instance_dir),
        processor="python" if python else spec.processor,
        processor_path=processor_path if python else None,
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


def resolve_model(uri: str, cache_dir: Path, transfer: Transfer) -> str:
    """A URI ``liqi serve`` takes: http(s) archives are unpacked into ``cache_dir``, once."""
    if uri.startswith(("http://", "https://")):
        return str(fetch_archive(uri, cache_dir, transfer, what="model"))
    if uri.startswith(("oss://", "model:")):
        return uri
    return str(Path(uri.removeprefix("file://")).expanduser().absolute())


def fetch_archive(url: str, cache_dir: Path, transfer: Transfer, *, what: str) -> Path:
    """Download a .tar.gz/.tgz/.tar/.zip and unpack it into the cache; reused while it is
    there."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    dest = cache_dir / "archives" / digest
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{digest}-", dir=dest.parent))
    try:
        archive = tmp / "archive"
        transfer.download(url, archive, what=what)
        unpacked = tmp / "unpacked"
        extract(archive, unpacked, what=url, limits=transfer.archive_limits)
        single_folder(unpacked).rename(dest)
        log.info("downloaded and unpacked %s into %s", url, dest)
        return dest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fetch_processor(uri: str, order: StagingOrder, transfer: Transfer) -> str:
    """A local path for ``processor_path``: remote code lands in the instance's folder."""
    if uri.startswith(("http://", "https://")):
        return str(fetch_archive(uri, order.cache_dir, transfer, what="processor"))
    if not uri.startswith("oss://"):
        return str(Path(uri.removeprefix("file://")).expanduser().absolute())
    ref = parse_oss_uri(uri)
    dest = order.instance_dir / "processor"
    shutil.rmtree(dest, ignore_errors=True)
    if ref.key.endswith(ARCHIVE_SUFFIXES):
        archive = order.instance_dir / ".processor-archive"
        try:
            transfer.copy_object(uri, order.stores, archive)
            extract(archive, dest, what=uri, limits=transfer.archive_limits)
        finally:
            archive.unlink(missing_ok=True)
        return str(single_folder(dest))
    if ref.key.endswith(".py"):
        return str(transfer.copy_object(uri, order.stores, dest / ref.key.rsplit("/", 1)[-1]))
    transfer.copy_folder(uri, order.stores, dest)
    return str(dest)


def _copy_in(name: str, path: str, order: StagingOrder, transfer: Transfer) -> str:
    """A local path of a sandboxed instance, copied into its folder: the sandbox shows it
    nothing else of the server's disk, and its workload user may not read the original."""
    source = Path(path)
    dest = order.instance_dir / "local" / name / (source.name or "root")
    return str(transfer.copy_local(source, dest, what=name.replace("_", " ")))


def _paths(spec: ServiceSpec) -> list[tuple[str, str]]:
    """The spec's paths that staging or the instance reads, by field name."""
    named = [
        ("model_path", spec.model_path),
        ("processor_path", spec.processor_path),
        ("warm_up_data_path", spec.warm_up_data_path),
    ]
    return [(name, uri) for name, uri in named if uri]


def _is_python(spec: ServiceSpec) -> bool:
    return spec.processor_entry is not None or (spec.processor_type or "") == "python"
