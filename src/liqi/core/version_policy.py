"""Which versions of a model to serve, and labels naming them (TF Serving's
``model_version_policy`` and ``version_labels``).

Pure: no I/O. The server polls its source for the versions that exist, asks
:meth:`VersionPolicy.select` which of them to serve, and :func:`plan` says what to load and
what to unload to get there.

Policies, as written on the command line (``liqi serve --versions ...``):

- ``latest`` or ``latest:N``: the N highest versions that exist (default: the newest one);
- ``all``: every version that exists;
- ``specific:1,3`` or just ``1,3`` / ``2``: those of the listed versions that exist.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from liqi.errors import InvalidRequestError

POLICY_FORMS = "latest, latest:N (N >= 1), all, specific:1,3, or a list of versions such as 1,3"
LABEL_RE = re.compile(r"[A-Za-z0-9_]+")
_NUMBER_RE = re.compile(r"[0-9]+")


def _numbers(text: str) -> tuple[int, ...] | None:
    parts = [part.strip() for part in text.split(",")]
    if not all(_NUMBER_RE.fullmatch(part) for part in parts):
        return None
    return tuple(int(part) for part in parts)


def _listing(versions: Iterable[int]) -> str:
    return ", ".join(str(v) for v in sorted(set(versions))) or "none"


@dataclass(frozen=True)
class VersionPolicy:
    """One of three modes: ``latest`` N (the default, N=1), ``specific`` versions, or ``all``.

    To choose ``specific`` or ``all``, leave ``latest`` at its default (or pass None);
    ``specific`` is kept sorted without duplicates.
    """

    latest: int | None = 1
    specific: tuple[int, ...] = ()
    all: bool = False

    def __post_init__(self) -> None:
        if self.all or self.specific:
            if self.all and self.specific:
                raise InvalidRequestError(
                    "A version policy is 'all' or 'specific', not both: choose one of "
                    f"{POLICY_FORMS}."
                )
            if self.latest not in (None, 1):
                raise InvalidRequestError(
                    f"A version policy has one mode, but got latest={self.latest} together with "
                    f"{'all' if self.all else 'specific'}: choose one of {POLICY_FORMS}."
                )
            if any(v < 0 for v in self.specific):
                raise InvalidRequestError(
                    f"Versions are 0 or more; got specific={list(self.specific)}."
                )
            object.__setattr__(self, "latest", None)
            object.__setattr__(self, "specific", tuple(sorted(set(self.specific))))
        elif self.latest is None or self.latest < 1:
            raise InvalidRequestError(
                f"A version policy needs latest >= 1, specific versions or all; got "
                f"latest={self.latest}. Use {POLICY_FORMS}."
            )

    @classmethod
    def parse(cls, text: str) -> VersionPolicy:
        """``latest``, ``latest:N``, ``all``, ``specific:1,3``, ``1,3`` or ``2``.

        Raises:
            InvalidRequestError: anything else (the message lists the accepted forms).
        """
        cleaned = text.strip().lower()
        head, sep, rest = cleaned.partition(":")
        head, rest = head.strip(), rest.strip()
        if cleaned == "all":
            return cls(all=True)
        if head == "latest" and not sep:
            return cls()
        if head == "latest" and _NUMBER_RE.fullmatch(rest) and int(rest) >= 1:
            return cls(latest=int(rest))
        listed = _numbers(cleaned) if not sep else _numbers(rest) if head == "specific" else None
        if listed:
            return cls(specific=listed)
        raise InvalidRequestError(f"Invalid version policy {text!r}: use {POLICY_FORMS}.")

    def describe(self) -> str:
        """The canonical text (``VersionPolicy.parse(p.describe()) == p``)."""
        if self.all:
            return "all"
        if self.specific:
            return "specific:" + ",".join(str(v) for v in self.specific)
        return "latest" if self.latest == 1 else f"latest:{self.latest}"

    def select(self, available: Iterable[int]) -> list[int]:
        """The versions to serve among ``available``, ascending."""
        found = sorted(set(available))
        if self.all:
            return found
        if self.specific:
            wanted = set(self.specific)
            return [v for v in found if v in wanted]
        assert self.latest is not None  # guaranteed by __post_init__
        return found[-self.latest :] if found else []


def check_label(label: str) -> str:
    if not LABEL_RE.fullmatch(label):
        raise InvalidRequestError(
            f"Invalid version label {label!r}: use letters, digits and '_' (for example "
            "stable or canary)."
        )
    return label


def resolve_labels(labels: Mapping[str, int], served: Collection[int]) -> dict[str, int]:
    """Check that every label has a valid name and points at a served version.

    Raises:
        InvalidRequestError: "Label 'canary' points at version 3, which is not served. Served
            versions: 1, 2."
    """
    for label, version in labels.items():
        check_label(label)
        if version not in served:
            raise InvalidRequestError(
                f"Label {label!r} points at version {version}, which is not served. "
                f"Served versions: {_listing(served)}."
            )
    return dict(labels)


def parse_labels(text: str) -> dict[str, int]:
    """``stable=1,canary=2`` (the CLI's ``--label`` values joined by commas)."""
    found: dict[str, int] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        label, sep, number = (p.strip() for p in item.partition("="))
        if not sep or not _NUMBER_RE.fullmatch(number):
            raise InvalidRequestError(
                f"Invalid version label {item!r}: write LABEL=VERSION, for example stable=1."
            )
        check_label(label)
        if found.get(label, int(number)) != int(number):
            raise InvalidRequestError(
                f"Label {label!r} is given twice, for versions {found[label]} and {number}: "
                "give each label once."
            )
        found[label] = int(number)
    return found


@dataclass(frozen=True)
class VersionPlan:
    """What to do to go from the versions served to the versions wanted."""

    load: tuple[int, ...] = ()  # ascending: the newest is loaded last
    unload: tuple[int, ...] = ()


def plan(current: Collection[int], wanted: Collection[int]) -> VersionPlan:
    have, want = set(current), set(wanted)
    return VersionPlan(load=tuple(sorted(want - have)), unload=tuple(sorted(have - want)))
