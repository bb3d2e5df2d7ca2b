"""The seed's three configuration files, parsed as written (sans-IO: text in, facts out).

``odps_config.ini``::

    project_name=my_project
    access_id=...
    access_key=...
    end_point=http://service-corp.odps.aliyun-inc.com/api

``eas_config.ini``: ``access_id=`` and ``access_key=`` lines (an ``[eas]`` header is accepted).

``.osscredentials``::

    [OSSCredentials]
    host=cn-hangzhou.oss.aliyun-inc.com
    accessid=...
    accesskey=...

Lines starting with ``#`` or ``;`` are comments, and so is the rest of a line from a ``#``
that follows a blank (``end_point=http://... # internal``); blanks around keys and values are
ignored, and so are matching quotes around a value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from liqi.errors import ConfigError, PlaceholderError

PLACEHOLDER_RE = re.compile(r"\$\{[^}]*\}")


class SeedFileKind(str, Enum):
    ODPS = "odps_config.ini"
    EAS = "eas_config.ini"
    OSS = ".osscredentials"


@dataclass(frozen=True)
class Line:
    number: int
    key: str
    value: str


@dataclass(frozen=True)
class SeedConfig:
    """What one file says. ``project`` is set only by odps_config.ini, ``oss_host`` only by
    .osscredentials; ``end_point`` is kept for the record (liqi talks to its own server)."""

    kind: SeedFileKind
    source: str
    access_id: str
    access_key: str
    project: str | None = None
    end_point: str | None = None
    oss_host: str | None = None


_FIELDS = {
    SeedFileKind.ODPS: {"access_id": "access_id", "access_key": "access_key"},
    SeedFileKind.EAS: {"access_id": "access_id", "access_key": "access_key"},
    SeedFileKind.OSS: {"access_id": "accessid", "access_key": "accesskey"},
}


def _lines(text: str, source: str) -> tuple[list[str], list[Line]]:
    sections: list[str] = []
    lines: list[Line] = []
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        if stripped.startswith("[") and stripped.endswith("]"):
            sections.append(stripped[1:-1].strip())
            continue
        key, sep, value = stripped.partition("=")
        if not sep:
            raise ConfigError(f"{source} line {number}: expected key=value, got {stripped!r}.")
        lines.append(Line(number, key.strip().lower(), _clean_value(value)))
    return sections, lines


INLINE_COMMENT_RE = re.compile(r"\s+[#;].*$")


def _clean_value(raw: str) -> str:
    value = INLINE_COMMENT_RE.sub("", raw).strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return value


def detect_kind(text: str, filename: str) -> SeedFileKind:
    """Which of the three files ``text`` is: by content first, then by file name."""
    sections, lines = _lines(text, filename)
    keys = {line.key for line in lines}
    if any(s.lower() == "osscredentials" for s in sections) or {"accessid", "accesskey"} & keys:
        return SeedFileKind.OSS
    if {"project_name", "end_point"} & keys:
        return SeedFileKind.ODPS
    if {"access_id", "access_key"} & keys:
        return SeedFileKind.ODPS if "odps" in filename.lower() else SeedFileKind.EAS
    raise ConfigError(
        f"{filename}: not an odps_config.ini, eas_config.ini or .osscredentials file (no "
        "access_id/access_key or accessid/accesskey lines found)."
    )


def parse_seed_config(text: str, source: str) -> SeedConfig:
    """Parse one file. ``source`` names it in messages.

    Raises:
        PlaceholderError: a value is still a ``${...}`` placeholder; the message names the line.
        ConfigError: a required line is missing or malformed.
    """
    kind = detect_kind(text, source)
    _, lines = _lines(text, source)
    by_key: dict[str, Line] = {}
    for line in lines:
        by_key[line.key] = line
        if PLACEHOLDER_RE.search(line.value):
            raise PlaceholderError(
                f"{source} line {line.number}: {line.key} is still the placeholder "
                f"{line.value!r}. Replace it with your real {line.key.replace('_', ' ')}."
            )

    def need(key: str) -> str:
        line = by_key.get(key)
        if line is None or not line.value:
            raise ConfigError(f"{source}: missing {key}= line ({kind.value} needs it).")
        return line.value

    def maybe(key: str) -> str | None:
        line = by_key.get(key)
        return line.value if line and line.value else None

    fields = _FIELDS[kind]
    return SeedConfig(
        kind=kind,
        source=source,
        access_id=need(fields["access_id"]),
        access_key=need(fields["access_key"]),
        project=need("project_name") if kind is SeedFileKind.ODPS else None,
        end_point=maybe("end_point"),
        oss_host=maybe("host") if kind is SeedFileKind.OSS else None,
    )
