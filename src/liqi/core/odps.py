"""ODPS addresses and names: ``odps://<project>/resources/<name>`` and
``odps://<project>/volumes/<volume>/<partition>``, resource kinds, and the size limit.

Pure: no I/O. Every check raises :class:`InvalidRequestError` with the offending value, the
rule it breaks and the accepted forms.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from liqi.core.names import check_project_name
from liqi.errors import InvalidRequestError

MAX_RESOURCE_BYTES = 2 * 1024**3
"""ODPS's limit per resource (2048 MB); a resource over it is refused."""

RESOURCE_NAME_MAX = 256  # resources.name
VOLUME_NAME_MAX = 128  # datasets.name
PARTITION_NAME_MAX = 128  # datasets.partition

KINDS = ("file", "py", "archive", "jar")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".zip", ".tar")
_SUFFIXES = {"py": (".py",), "jar": (".jar",), "archive": ARCHIVE_SUFFIXES}

NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
FORMS = "odps://<project>/resources/<name> or odps://<project>/volumes/<volume>/<partition>"


def _check_name(what: str, name: str, max_chars: int) -> str:
    problem = None
    if not name:
        problem = "it is empty"
    elif len(name) > max_chars:
        problem = f"it is longer than {max_chars} characters"
    elif ".." in name:
        problem = "it contains '..'"
    elif not NAME_RE.fullmatch(name):
        problem = (
            "use letters, digits, '_', '-' and '.', starting with a letter, digit or '_' "
            "(no '/', spaces or other characters)"
        )
    if problem:
        raise InvalidRequestError(f"Invalid {what} name {name!r}: {problem}.")
    return name


def check_resource_name(name: str) -> str:
    """A resource name such as ``mnist_softmax.py`` (at most 256 characters)."""
    return _check_name("resource", name, RESOURCE_NAME_MAX)


def check_volume_name(name: str) -> str:
    return _check_name("volume", name, VOLUME_NAME_MAX)


def check_partition_name(name: str) -> str:
    return _check_name("partition", name, PARTITION_NAME_MAX)


def infer_kind(name: str) -> str:
    """The ODPS resource type of a file called ``name``: py, jar, archive or file."""
    lower = name.lower()
    for kind, suffixes in _SUFFIXES.items():
        if lower.endswith(suffixes):
            return kind
    return "file"


def resource_kind(name: str, kind: str | None = None) -> str:
    """``kind`` checked against ``name``, or inferred from ``name`` when None or empty.

    ``file`` fits any name; ``py``, ``jar`` and ``archive`` need the matching suffix, as in
    ODPS (``add py`` takes a ``.py`` file).
    """
    if not kind:
        return infer_kind(name)
    if kind not in KINDS:
        raise InvalidRequestError(f"Unknown resource type {kind!r}: use one of {', '.join(KINDS)}.")
    suffixes = _SUFFIXES.get(kind)
    if suffixes and not name.lower().endswith(suffixes):
        raise InvalidRequestError(
            f"Resource {name!r} cannot be of type {kind}: its name must end with "
            f"{' or '.join(suffixes)}. Rename it (--as) or use type 'file'."
        )
    return kind


@dataclass(frozen=True)
class ResourceUri:
    """``odps://<project>/resources/<name>``."""

    project: str
    name: str

    def __str__(self) -> str:
        return f"odps://{self.project}/resources/{self.name}"


@dataclass(frozen=True)
class VolumeUri:
    """``odps://<project>/volumes/<volume>/<partition>``: one partition of a volume."""

    project: str
    volume: str
    partition: str

    def __str__(self) -> str:
        return f"odps://{self.project}/volumes/{self.volume}/{self.partition}"


def _parts(text: str) -> list[str]:
    if not text.startswith("odps://"):
        raise InvalidRequestError(f"{text!r} is not an odps:// address: write {FORMS}.")
    rest = text[len("odps://") :]
    if rest.endswith("/"):
        rest = rest[:-1]
    if "?" in rest or "#" in rest:
        raise InvalidRequestError(
            f"{text!r} has a query or fragment; odps:// addresses take none: write {FORMS}."
        )
    return rest.split("/")


def parse_odps_uri(text: str) -> ResourceUri | VolumeUri:
    """Parse either form of odps:// address.

    Raises:
        InvalidRequestError: not one of the two forms, or a name breaks its rule.
    """
    parts = _parts(text)
    if len(parts) == 3 and parts[1] == "resources":
        return ResourceUri(check_project_name(parts[0]), check_resource_name(parts[2]))
    if len(parts) == 4 and parts[1] == "volumes":
        return VolumeUri(
            check_project_name(parts[0]),
            check_volume_name(parts[2]),
            check_partition_name(parts[3]),
        )
    raise InvalidRequestError(f"{text!r} is not a valid odps:// address: write {FORMS}.")


def parse_resource_uri(text: str) -> ResourceUri:
    found = parse_odps_uri(text)
    if not isinstance(found, ResourceUri):
        raise InvalidRequestError(
            f"{text!r} names a volume, not a resource: write odps://<project>/resources/<name>."
        )
    return found


def parse_volume_uri(text: str) -> VolumeUri:
    found = parse_odps_uri(text)
    if not isinstance(found, VolumeUri):
        raise InvalidRequestError(
            f"{text!r} names a resource, not a volume partition: write "
            "odps://<project>/volumes/<volume>/<partition>."
        )
    return found
