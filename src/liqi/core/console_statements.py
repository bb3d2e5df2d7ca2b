"""The statements of ``liqi console``, an odpscmd-like REPL (sans-IO: text in, dataclasses out).

::

    add file ~/tools/mnist_softmax.py;
    pai -name tensorflow121 -Dscript="odps://my_project/resources/mnist_softmax.py" ...;
    status <job_id>;

Keywords are case-insensitive (``ADD FILE``, ``Pai``); values keep their case. Split the input
with :func:`liqi.core.pai_command.split_statements`, then parse each statement here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeAlias

from liqi.core.names import check_project_name
from liqi.core.pai_command import PaiCommand, parse_pai, split_statements, tokenize
from liqi.errors import InvalidRequestError

ResourceKind = Literal["file", "py", "archive", "jar"]
_KINDS: dict[str, ResourceKind] = {"file": "file", "py": "py", "archive": "archive", "jar": "jar"}


@dataclass(frozen=True)
class AddResource:
    """``add file|py|archive|jar <path> [as <alias>] [comment '<c>'] [-f]``; ``path`` as typed
    (``~`` is not expanded here)."""

    kind: ResourceKind
    path: str
    alias: str | None = None
    comment: str | None = None
    force: bool = False


@dataclass(frozen=True)
class ListResources:
    """``list resources``"""


@dataclass(frozen=True)
class DropResource:
    """``drop resource <name>``"""

    name: str


@dataclass(frozen=True)
class DescResource:
    """``desc resource <name>``"""

    name: str


@dataclass(frozen=True)
class Pai:
    """``pai -name <framework> -D<key>=<value> ...``"""

    command: PaiCommand


@dataclass(frozen=True)
class ShowInstances:
    """``show instances``"""


@dataclass(frozen=True)
class Status:
    """``status <job_id>``"""

    job_id: str


@dataclass(frozen=True)
class Wait:
    """``wait <job_id>``"""

    job_id: str


@dataclass(frozen=True)
class Kill:
    """``kill <job_id>``"""

    job_id: str


@dataclass(frozen=True)
class WhoAmI:
    """``whoami``"""


@dataclass(frozen=True)
class Use:
    """``use <project>``"""

    project: str


Statement: TypeAlias = (
    AddResource
    | ListResources
    | DropResource
    | DescResource
    | Pai
    | ShowInstances
    | Status
    | Wait
    | Kill
    | WhoAmI
    | Use
)

ADD_SYNTAX = "add file|py|archive|jar <path> [as <alias>] [comment '<text>'] [-f]"
ACCEPTED = (
    ADD_SYNTAX,
    "list resources",
    "desc resource <name>",
    "drop resource <name>",
    "pai -name <framework> -D<key>=<value> ...",
    "show instances",
    "status <job_id>",
    "wait <job_id>",
    "kill <job_id>",
    "whoami",
    "use <project>",
)


def _accepted() -> str:
    return "liqi console accepts (each ending in ';'):\n  " + "\n  ".join(ACCEPTED)


def _add(words: list[str]) -> AddResource:
    if not words or words[0].lower() not in _KINDS:
        kind = repr(words[0]) if words else "nothing"
        raise InvalidRequestError(
            f"Cannot add {kind}: the resource kinds are file, py, archive and jar. "
            f"Write: {ADD_SYNTAX}"
        )
    kind, rest = _KINDS[words[0].lower()], words[1:]
    if not rest or rest[0].lower() in ("as", "comment", "-f"):
        raise InvalidRequestError(
            f"'add {kind}' needs the path of a local file. Write: {ADD_SYNTAX}"
        )
    path, rest = rest[0], rest[1:]
    options: dict[str, str] = {}
    force = False
    while rest:
        typed = rest.pop(0)
        word = typed.lower()
        if word == "-f" and not force:
            force = True
        elif word in ("as", "comment") and word not in options and rest:
            options[word] = rest.pop(0)
        else:
            raise InvalidRequestError(
                f"Unexpected {typed!r} in 'add {kind} {path}' (or it is given twice, or has no "
                f"value). Write: {ADD_SYNTAX}"
            )
    return AddResource(kind, path, options.get("as"), options.get("comment"), force)


def _one(words: list[str], syntax: str) -> str:
    if len(words) != 1:
        got = " ".join(words) or "nothing"
        raise InvalidRequestError(f"'{syntax}' takes exactly one value, got {got!r}.")
    return words[0]


def _none(words: list[str], syntax: str) -> None:
    if words:
        raise InvalidRequestError(f"'{syntax}' takes no values, got {' '.join(words)!r}.")


def _use(words: list[str]) -> Use:
    return Use(check_project_name(_one(words, "use <project>")))


def _list(words: list[str]) -> ListResources:
    _none(words, "list resources")
    return ListResources()


def _show(words: list[str]) -> ShowInstances:
    _none(words, "show instances")
    return ShowInstances()


def _whoami(words: list[str]) -> WhoAmI:
    _none(words, "whoami")
    return WhoAmI()


# (keyword, second keyword or "") → parser of the remaining words
_PARSERS: dict[tuple[str, str], Callable[[list[str]], Statement]] = {
    ("add", ""): _add,
    ("list", "resources"): _list,
    ("drop", "resource"): lambda w: DropResource(_one(w, "drop resource <name>")),
    ("desc", "resource"): lambda w: DescResource(_one(w, "desc resource <name>")),
    ("pai", ""): lambda w: Pai(parse_pai(w)),
    ("show", "instances"): _show,
    ("status", ""): lambda w: Status(_one(w, "status <job_id>")),
    ("wait", ""): lambda w: Wait(_one(w, "wait <job_id>")),
    ("kill", ""): lambda w: Kill(_one(w, "kill <job_id>")),
    ("whoami", ""): _whoami,
    ("use", ""): _use,
}


def parse_statement(statement: str) -> Statement:
    """Parse one console statement; a trailing ``;``, line breaks and comment lines are fine."""
    statements = split_statements(statement)
    if len(statements) != 1:
        found = "nothing" if not statements else f"{len(statements)} statements"
        raise InvalidRequestError(f"Expected one statement, found {found} in {statement!r}.")
    words = tokenize(statements[0])
    first = words[0].lower() if words else ""
    second = words[1].lower() if len(words) > 1 else ""
    if (first, "") in _PARSERS:
        return _PARSERS[first, ""](words[1:])
    if (first, second) in _PARSERS:
        return _PARSERS[first, second](words[2:])
    raise InvalidRequestError(f"Unknown statement {statements[0]!r}. {_accepted()}")
