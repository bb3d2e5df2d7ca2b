"""Checks of a service's spec against what its author may use, before anything is written:
the processor is one liqi serves, the sizes are sane, the model, processor and warm-up file
exist and may be read by the caller (bucket grants, the server's fetch policy for URLs and
local paths)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy.orm import Session

from liqi.control.fetch_policy import FetchPolicy, is_local_path
from liqi.control.identity.accounts import Principal
from liqi.control.storage import buckets, model_registry
from liqi.control.storage.buckets import StoreRegistry
from liqi.core.refs import parse_oss_uri
from liqi.core.service_spec import (
    ServiceSpec,
)
from liqi.errors import (
    InvalidRequestError,
    NotFoundError,
)
from liqi.resource_groups import Placement, ResourceGroup
from liqi.stores.base import Store

MAX_INSTANCES = 64
# What the server checks of the group a spec lands in, beyond the spec itself: the control
# plane's (api/services.py) asks that a Ray head answers and has a node the instance fits on.
GroupGate = Callable[[ResourceGroup, ServiceSpec], None]


def check_spec(
    session: Session,
    who: Principal,
    spec: ServiceSpec,
    stores: StoreRegistry,
    project: str,
    fetches: FetchPolicy | None = None,
    placement: Placement | None = None,
    gate: GroupGate | None = None,
) -> None:
    """Raise before anything is written when the spec cannot run: an unknown resource group
    (``metadata.resource``) or one ``who`` may not use, or one ``gate`` refuses (a Ray head
    that does not answer, no node an instance fits on), an unknown processor, a
    model path that does not exist or may not be read (a local path outside what ``fetches``
    allows ``who``, a URL whose host is not public), a missing warm-up file."""
    fetches = fetches or FetchPolicy()
    group = (placement or Placement()).choose(
        spec.resource_group, project=project, superuser=who.is_superuser, flag="metadata.resource"
    )
    if gate is not None:
        gate(group, spec)
    from liqi.serving.processors import normalize  # the serving stack only when needed

    if spec.processor is not None:
        normalize(spec.processor)
    if spec.instance > MAX_INSTANCES:
        raise InvalidRequestError(
            f"metadata.instance={spec.instance} is more than this server runs for one service "
            f"({MAX_INSTANCES})."
        )
    if spec.memory_mb is not None and spec.memory_mb < 64:
        raise InvalidRequestError(
            f"metadata.memory={spec.memory_mb} MB is too little for a model server: give at "
            "least 64 (the seed's eas_mnist.json uses 2000)."
        )
    for field, uri in (
        ("model_path", spec.model_path),
        ("processor_path", spec.processor_path),
        ("warm_up_data_path", spec.warm_up_data_path),
    ):  # permission first: a refusal must not tell whether a path exists
        if uri and is_local_path(uri):
            fetches.check_local_path(uri, field=field, superuser=who.is_superuser)
        elif uri and uri.startswith(("http://", "https://")):
            fetches.resolve(uri, what=field.removesuffix("_path"), strict=False)
    if spec.model_path is not None:
        check_model_path(session, who, spec.model_path, stores, project)
    if spec.warm_up_data_path:
        check_file_path(session, who, spec.warm_up_data_path, stores, "warm_up_data_path")
    if spec.processor_path and not spec.processor_path.startswith(("http://", "https://")):
        check_processor_path(session, who, spec.processor_path, stores)


def check_model_path(
    session: Session, who: Principal, uri: str, stores: StoreRegistry, project: str
) -> None:
    if uri.startswith("oss://"):
        store, key = _readable(session, who, uri, stores)
        if not any(True for _ in store.walk(key)):
            raise NotFoundError(
                f"Model not found: {uri} holds no objects. Check the path with "
                f"`liqi oss ls -r {uri}` (a training job writes "
                "<prefix>/<version>/saved_model.pb)."
            )
    elif uri.startswith("model:"):
        name, _, version = uri.removeprefix("model:").partition(":")
        model = model_registry.get_model(session, who, project, name)
        found = sorted(v.version for v in model.versions)
        if version and int(version) not in found:
            raise NotFoundError(
                f"Model {name!r} has no version {version}. Available versions: "
                f"{', '.join(map(str, found)) or 'none'}."
            )
    elif uri.startswith(("http://", "https://")):
        return  # downloaded when an instance starts; a failure shows in desc
    else:
        path = Path(uri.removeprefix("file://")).expanduser()
        if not path.exists():
            raise NotFoundError(
                f"Model not found: the path {uri!r} does not exist on the server's machine. "
                "Use oss://<bucket>/<prefix>/, a path on this machine, or an http(s):// tarball."
            )


def check_file_path(
    session: Session, who: Principal, uri: str, stores: StoreRegistry, field: str
) -> None:
    if uri.startswith("oss://"):
        store, key = _readable(session, who, uri, stores)
        if not store.exists(key):
            raise NotFoundError(f"'{field}' {uri} does not exist.")
    elif not Path(uri.removeprefix("file://")).expanduser().exists():
        raise NotFoundError(f"'{field}' {uri!r} does not exist on the server's machine.")


def check_processor_path(session: Session, who: Principal, uri: str, stores: StoreRegistry) -> None:
    """A processor is a file (a script or an archive) or a folder, on oss:// or here."""
    if not uri.startswith("oss://"):
        check_file_path(session, who, uri, stores, "processor_path")
        return
    store, key = _readable(session, who, uri, stores)
    folder = key if not key or key.endswith("/") else key + "/"
    if not (key and store.exists(key)) and not any(True for _ in store.walk(folder)):
        raise NotFoundError(
            f"'processor_path' {uri} does not exist: give an object (app.py, app.tar.gz) or a "
            f"folder holding the processor's files (see `liqi oss ls -r {uri}`)."
        )


def _readable(
    session: Session, who: Principal, uri: str, stores: StoreRegistry
) -> tuple[Store, str]:
    """The store and key of ``uri`` once ``who`` may read its bucket."""
    ref = parse_oss_uri(uri)
    bucket = buckets.get_bucket(session, ref.bucket)
    buckets.check_access(session, who, bucket)
    return stores.store_for(bucket), ref.key


# -- changing ---------------------------------------------------------------------------------
