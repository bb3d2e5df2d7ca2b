"""Where the versions of a served model come from: a local path, a bucket, or the registry.

A :class:`ModelSource` answers the :class:`~liqi.serving.manager.ModelManager`'s two
questions: which versions exist now (:meth:`~ModelSource.versions`, polled) and where the
files of one version are on this machine (:meth:`~ModelSource.fetch`). The layout is TF
Serving's: ``<base>/<version>/...`` with integer version folders (other entries such as
``.tmp-3`` or ``README`` are ignored; an empty version folder is skipped until something is
in it); without version folders, ``<base>`` itself is version 1 (a bare SavedModel folder, or
a single model file).

Remote versions are downloaded once, into ``cache_dir/<bucket>/<prefix slug>/<version>/``
(registry versions: ``cache_dir/_registry/<project>/<model>/<version>/``): files are streamed
into a temp folder beside it, renamed when all arrived, and ``<version>.manifest.json`` beside
it records each object's size and ETag. A later fetch reuses the folder while the store still
lists the same objects; a failed download leaves nothing behind.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from liqi.client import Client
from liqi.config import write_private_file
from liqi.core.refs import check_key, parse_oss_uri
from liqi.errors import InvalidRequestError, NotFoundError, ObjectNotFoundError, StoreError
from liqi.stores.base import ObjectInfo

log = logging.getLogger(__name__)

ACCEPTED_FORMS = (
    "a local folder or model file (or file:///path), oss://<bucket>/<prefix>, "
    "or model:<name>[:<version>]"
)
MODEL_FILE_SUFFIXES = (".onnx", ".joblib", ".pkl", ".pickle")
_VERSION_RE = re.compile(r"[0-9]+")
_MODEL_REF_RE = re.compile(r"model:([A-Za-z0-9][A-Za-z0-9_.\-]{0,127})(?::([0-9]+))?")
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")


def default_name(parts: Sequence[str]) -> str:
    """The last path part that is not a version number, without a model-file suffix."""
    for part in reversed(parts):
        if part and part != "/" and not _VERSION_RE.fullmatch(part):
            for suffix in MODEL_FILE_SUFFIXES:
                if part.endswith(suffix) and len(part) > len(suffix):
                    return part[: -len(suffix)]
            return part
    return "model"


def _listing(versions: Iterable[int]) -> str:
    return ", ".join(str(v) for v in sorted(versions)) or "none"


class ModelSource(ABC):
    """The versions of one model. ``uri`` is as the user gave it; ``name`` the default model
    name. Methods block (the manager calls them on a thread) and raise :class:`LiqiError`s."""

    uri: str
    name: str

    @abstractmethod
    def versions(self) -> dict[int, str]:
        """Version -> where it is (a path or an ``oss://`` URI, for logs). Polled; cheap."""

    @abstractmethod
    def fetch(self, version: int) -> Path:
        """A local folder or file holding ``version``, ready for a Loader."""

    def _missing(self, version: int, found: Iterable[int]) -> NotFoundError:
        return NotFoundError(
            f"Model {self.name!r} has no version {version} at {self.uri}. "
            f"Available versions: {_listing(found)}."
        )


class LocalSource(ModelSource):
    """A folder or file on this machine; served in place (no copy)."""

    def __init__(self, path: Path | str, *, uri: str | None = None) -> None:
        self.path = Path(path).expanduser()
        self.uri = uri or str(path)
        self.name = default_name(Path(os.path.abspath(self.path)).parts)

    def versions(self) -> dict[int, str]:
        return {number: str(path) for number, path in self._scan().items()}

    def fetch(self, version: int) -> Path:
        found = self._scan()
        if version not in found:
            raise self._missing(version, found)
        return found[version]

    def _scan(self) -> dict[int, Path]:
        try:
            if self.path.is_file():
                return {1: self.path}
            if not self.path.is_dir():
                raise NotFoundError(
                    f"Model path {str(self.path)!r} does not exist. Pass {ACCEPTED_FORMS}."
                )
            found: dict[int, Path] = {}
            layout = visible = False
            with os.scandir(self.path) as entries:
                for entry in sorted(entries, key=lambda e: e.name):
                    if entry.name.startswith("."):
                        continue  # hidden, or a version still being copied (.tmp-3)
                    visible = True
                    if _VERSION_RE.fullmatch(entry.name) and entry.is_dir():
                        layout = True
                        with os.scandir(entry.path) as inside:
                            if any(True for _ in inside):
                                found[int(entry.name)] = Path(entry.path)
        except OSError as exc:
            raise StoreError(
                f"Cannot read the model path {str(self.path)!r}: {exc.strerror or exc}."
            ) from None
        if layout:
            return found
        return {1: self.path} if visible else {}


@dataclass(frozen=True)
class StoredFolder:
    """The objects of one version: those under the key prefix ``base`` (``''`` or ending in
    ``/``), or, when ``single``, the one object the URI names (fetch gives that file)."""

    bucket: str
    base: str
    objects: tuple[ObjectInfo, ...]
    single: bool = False

    @property
    def uri(self) -> str:
        return f"oss://{self.bucket}/{self.objects[0].key if self.single else self.base}"


def _relative(folder: StoredFolder, info: ObjectInfo) -> str:
    rel = info.key[len(folder.base) :] if info.key.startswith(folder.base) else info.key
    try:
        return check_key(rel, allow_folder=False)
    except InvalidRequestError:
        raise StoreError(
            f"Refusing to download oss://{folder.bucket}/{info.key}: its path {rel!r} under "
            f"{folder.uri} is not a plain relative path (no '..', '.', empty or absolute parts)."
        ) from None


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (another server filling the same cache waits)."""
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_manifest(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def download(client: Client, folder: StoredFolder, dest: Path) -> Path:
    """Download ``folder`` into the folder ``dest``, unless a complete download of the same
    objects is there already. Returns ``dest`` (or the file in it, for a single object)."""
    files = {_relative(folder, info): info for info in folder.objects}
    manifest = {
        "source": folder.uri,
        "objects": {rel: [info.size, info.etag] for rel, info in sorted(files.items())},
    }
    result = dest / next(iter(files)) if folder.single else dest
    marker = dest.with_name(f"{dest.name}.manifest.json")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with _locked(dest.with_name(f"{dest.name}.lock")):
            if dest.is_dir() and _read_manifest(marker) == manifest:
                log.debug("reusing %s, downloaded before to %s", folder.uri, dest)
                return result
            for stale in dest.parent.glob(f".tmp-{dest.name}-*"):  # left by a killed server
                shutil.rmtree(stale, ignore_errors=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{dest.name}-", dir=dest.parent))
            try:
                for rel, info in files.items():
                    target = tmp.joinpath(*rel.split("/"))
                    got = client.get_object(folder.bucket, info.key, target)
                    if target.stat().st_size != info.size or got.etag not in ("", info.etag):
                        raise StoreError(
                            f"oss://{folder.bucket}/{info.key} changed while it was downloaded; "
                            "the next try fetches it again."
                        )
                marker.unlink(missing_ok=True)
                if dest.exists():  # an incomplete or outdated download
                    shutil.rmtree(dest.rename(dest.with_name(f"{tmp.name}-old")))
                tmp.rename(dest)
                write_private_file(marker, json.dumps(manifest, indent=1).encode())
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except OSError as exc:
        raise StoreError(f"Cannot download {folder.uri} into {dest}: {exc}.") from None
    size = sum(info.size for info in files.values())
    log.info("downloaded %s to %s (%d files, %d bytes)", folder.uri, dest, len(files), size)
    return result


def _slug(prefix: str) -> str:
    """A folder name for a key prefix: readable, never hidden, unique by its hash."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", prefix.strip("/"))[:80].strip(".")
    return f"{readable or 'root'}-{hashlib.sha256(prefix.encode()).hexdigest()[:12]}"


class StoreSource(ModelSource):
    """``oss://<bucket>/<prefix>``, listed and downloaded through the liqi SDK."""

    def __init__(
        self,
        client: Client,
        bucket: str,
        prefix: str,
        cache_dir: Path,
        *,
        uri: str | None = None,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.key = prefix
        self.prefix = prefix if prefix == "" or prefix.endswith("/") else prefix + "/"
        self.uri = uri or f"oss://{bucket}/{prefix}"
        self.name = default_name([bucket, *prefix.split("/")])
        self.cache = cache_dir / bucket / _slug(self.prefix)

    def versions(self) -> dict[int, str]:
        return {number: folder.uri for number, folder in self.scan().items()}

    def fetch(self, version: int) -> Path:
        found = self.scan()
        if version not in found:
            raise self._missing(version, found)
        return download(self.client, found[version], self.cache / str(version))

    def scan(self) -> dict[int, StoredFolder]:
        """The versions under the prefix, each with its objects (one listing)."""
        numbered: dict[int, list[ObjectInfo]] = {}
        bases: dict[int, str] = {}
        rest: list[ObjectInfo] = []
        visible = False
        for info in self.client.iter_objects(self.bucket, self.prefix):
            first, sep, _ = info.key[len(self.prefix) :].partition("/")
            if sep and _VERSION_RE.fullmatch(first):
                numbered.setdefault(int(first), []).append(info)
                bases[int(first)] = f"{self.prefix}{first}/"
            else:
                rest.append(info)
                visible = visible or not first.startswith(".")
        if numbered:
            return {
                n: StoredFolder(self.bucket, bases[n], tuple(objs)) for n, objs in numbered.items()
            }
        if visible:
            return {1: StoredFolder(self.bucket, self.prefix, tuple(rest))}
        if self.key and not self.key.endswith("/"):  # maybe one object: oss://b/m/model.onnx
            try:
                info = self.client.stat_object(self.bucket, self.key)
            except ObjectNotFoundError:
                return {}
            parent = self.key.rpartition("/")[0]
            base = parent + "/" if parent else ""
            return {1: StoredFolder(self.bucket, base, (info,), single=True)}
        return {}


class RegistrySource(ModelSource):
    """``model:<name>[:<version>]``: the versions registered in the control plane."""

    def __init__(
        self,
        client: Client,
        name: str,
        version: int | None,
        cache_dir: Path,
        *,
        project: str | None = None,
        uri: str | None = None,
    ) -> None:
        self.client = client
        self.name = name
        self.version = version
        self.project = project
        self.cache_dir = cache_dir
        self.uri = uri or f"model:{name}" + ("" if version is None else f":{version}")

    def _registered(self) -> tuple[str, dict[int, str]]:
        model = self.client.get_model(self.name, project=self.project)
        found = {v.version: v.uri for v in model.versions}
        if self.version is None:
            return model.project, found
        if self.version not in found:
            raise NotFoundError(
                f"Model {self.name!r} has no version {self.version}. "
                f"Available versions: {_listing(found)}."
            )
        return model.project, {self.version: found[self.version]}

    def versions(self) -> dict[int, str]:
        return self._registered()[1]

    def fetch(self, version: int) -> Path:
        project, found = self._registered()
        if version not in found:
            raise self._missing(version, found)
        ref = parse_oss_uri(found[version])
        base = ref.key if ref.is_folder else ref.key + "/"
        objects = tuple(self.client.iter_objects(ref.bucket, base))
        if not objects:
            raise NotFoundError(
                f"Model {self.name!r} version {version} points at {found[version]}, which holds "
                "no objects. Was it deleted from the bucket?"
            )
        dest = self.cache_dir / "_registry" / project / self.name / str(version)
        return download(self.client, StoredFolder(ref.bucket, base, objects), dest)


def open_source(
    uri: str, *, cache_dir: Path, client_factory: Callable[[], Client] | None = None
) -> ModelSource:
    """The source for ``uri``: a path or ``file://`` URI, ``oss://...`` or ``model:...``.

    ``client_factory`` is called once, for remote sources only; by default it builds a
    :class:`~liqi.Client` from ``LIQI_*`` variables and the current profile (as the CLI does).

    Raises:
        InvalidRequestError: ``uri`` is none of the accepted forms.
    """
    factory: Callable[[], Client] = client_factory or Client
    text = uri.strip()
    if text.startswith("oss://"):
        ref = parse_oss_uri(text)
        return StoreSource(factory(), ref.bucket, ref.key, cache_dir, uri=uri)
    if text.startswith("model:"):
        match = _MODEL_REF_RE.fullmatch(text)
        if match is None:
            raise InvalidRequestError(
                f"Invalid model reference {uri!r}: write model:<name> or model:<name>:<version> "
                "(for example model:mnist:2)."
            )
        version = int(match[2]) if match[2] else None
        return RegistrySource(factory(), match[1], version, cache_dir, uri=uri)
    if text.startswith("file://"):
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost") or not parts.path:
            raise InvalidRequestError(
                f"Invalid file URI {uri!r}: write file:///absolute/path (three slashes)."
            )
        return LocalSource(Path(unquote(parts.path)), uri=uri)
    if not text or _SCHEME_RE.match(text):
        raise InvalidRequestError(f"Cannot serve {uri!r}: pass {ACCEPTED_FORMS}.")
    return LocalSource(Path(text), uri=uri)
