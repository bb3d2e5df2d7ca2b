"""The PAI-TF command as the seed typed it, parsed (sans-IO: text in, frozen dataclasses out).

::

    pai -name tensorflow121
        -Dscript="odps://my_project/resources/mnist_softmax.py"
        -Dvolumes="odps://algo_platform/volumes/mnist/train,odps://algo_platform/volumes/mnist/test"
        -Dbuckets="oss://wuji-xwt/models/?role_arn=acs:ram::123456:role/aliyunodpspaidefaultrole&host=...";

The lexer here (:func:`split_statements`, :func:`is_complete`, :func:`tokenize`) is the
console's too: statements end in ``;`` outside quotes, may span lines, and ``--`` or ``#``
starts a comment line. Every error is an :class:`InvalidRequestError` that shows the offending
value and what is accepted.
"""

from __future__ import annotations

import difflib
import json
import re
import shlex
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from liqi.errors import InvalidRequestError

FrameworkKind = Literal["tf1", "tf2"]

# --- lexing ------------------------------------------------------------------------------------


@dataclass
class _Scan:
    statements: list[str] = field(default_factory=list)
    tail: str = ""
    terminated: bool = False  # a ';' is the last thing that is not blank or a comment
    open_quote: str | None = None
    quote_line: int = 0
    quote_text: str = ""


def _comment_end(text: str, i: int) -> int | None:
    """Where the comment that starts at ``i`` (after blanks) ends, or None if none starts."""
    j = i
    while j < len(text) and text[j] in " \t\r":
        j += 1
    if not text.startswith(("--", "#"), j):
        return None
    end = text.find("\n", j)
    return len(text) if end == -1 else end


def _scan(text: str) -> _Scan:
    scan = _Scan()
    buf: list[str] = []
    quote: str | None = None
    quote_at = line = 0
    comment_may_start = True  # at the start of a line or of a statement, outside quotes
    i, n = 0, len(text)
    while i < n:
        if comment_may_start and quote is None and (end := _comment_end(text, i)) is not None:
            i = end
            continue
        c, nxt = text[i], text[i + 1 : i + 2]
        comment_may_start = False
        if quote is None and c == "\\" and nxt == "\n":  # shell-style line continuation
            buf.append(" ")
            i, line, comment_may_start = i + 2, line + 1, True
            continue
        if c == "\\" and nxt and quote != "'":  # the escape stays for tokenize() to read
            buf.append(c + nxt)
            line += nxt == "\n"
            scan.terminated = False
            i += 2
            continue
        if quote is not None:
            quote = None if c == quote else quote
            buf.append(c)
        elif c == ";":
            if statement := "".join(buf).strip():
                scan.statements.append(statement)
            buf, scan.terminated, comment_may_start = [], True, True
        elif c in "\r\n":
            buf.append(" ")
        else:
            if c in "'\"":
                quote, quote_at, scan.quote_line = c, i, line + 1
            buf.append(c)
            scan.terminated = scan.terminated and c.isspace()
        if c == "\n":
            line += 1
            comment_may_start = comment_may_start or quote is None
        i += 1
    scan.tail = "".join(buf).strip()
    if quote is not None:
        scan.open_quote, scan.quote_text = quote, text[quote_at : quote_at + 60]
    return scan


def split_statements(text: str) -> list[str]:
    """Split console input into statements (without their ``;``).

    Newlines outside quotes become spaces; a final statement without ``;`` is returned too.
    """
    scan = _scan(text)
    if scan.open_quote is not None:
        kind = "single" if scan.open_quote == "'" else "double"
        raise InvalidRequestError(
            f"Unterminated {kind} quote ({scan.open_quote}) opened on line {scan.quote_line}: "
            f"{scan.quote_text!r}. Close it with a matching {scan.open_quote}; inside double "
            'quotes write \\" for a literal quote.'
        )
    return [*scan.statements, scan.tail] if scan.tail else scan.statements


def is_complete(buffer: str) -> bool:
    """Whether a REPL should run ``buffer`` now: no quote is open and the buffer ends with a
    ``;`` (blanks and comment lines after it aside). Otherwise it waits for another line."""
    scan = _scan(buffer)
    return scan.open_quote is None and scan.terminated


def tokenize(statement: str) -> list[str]:
    """Shell-like words with the quotes removed: ``-Dkey="a,b"`` → ``-Dkey=a,b``."""
    try:
        return shlex.split(statement, comments=False, posix=True)
    except ValueError as exc:
        raise InvalidRequestError(
            f"Cannot split {statement!r} into words: {exc}. Close every quote and do not end "
            "with a lone backslash."
        ) from exc


# --- the command -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterSpec:
    """``-Dcluster``: ps and worker tasks. ``cpu`` and ``gpu`` are PAI units (100 = one core or
    one GPU), ``memory_mb`` megabytes; None where the JSON does not say."""

    ps_count: int
    worker_count: int
    ps_cpu: int | None = None
    ps_memory_mb: int | None = None
    ps_gpu: int | None = None
    worker_cpu: int | None = None
    worker_memory_mb: int | None = None
    worker_gpu: int | None = None
    # liqi's own key: how a cluster resource group (Ray) places the tasks on its nodes.
    placement: str = "PACK"


@dataclass(frozen=True)
class PaiCommand:
    """One ``pai -name ... -D...`` command. ``warnings`` name the accepted keys that have no
    effect in liqi."""

    framework: str
    framework_kind: FrameworkKind
    script: str
    entry_file: str | None = None
    volumes: tuple[str, ...] = ()
    buckets: tuple[str, ...] = ()
    checkpoint_dir: str | None = None
    tables: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    hyper_parameters: str | None = None
    user_defined_parameters: tuple[str, ...] = ()
    cluster: ClusterSpec | None = None
    gpu_required: int = 0
    job_name: str | None = None
    resource_group: str | None = None
    project: str | None = None
    warnings: tuple[str, ...] = ()

    @property
    def gpus(self) -> int:
        """Whole GPUs asked for by ``-DgpuRequired`` (PAI counts 100 per GPU)."""
        return self.gpu_required // 100


_TF1_RE = re.compile(r"tensorflow(1\d*(_[a-z0-9]+)*)?")
_TF2_RE = re.compile(r"tensorflow2\d*(_[a-z0-9]+)*")
FRAMEWORKS = (
    "tensorflow, tensorflow1xx[_suffix] (tensorflow121, tensorflow140, tensorflow180, "
    "tensorflow1120, tensorflow1120_ext, tensorflow1120_cpu_ext, tensorflow1150) for TF 1.x "
    "scripts, or tensorflow2 / tensorflow2xx for TF 2 scripts"
)
SEED_EXAMPLE = (
    'pai -name tensorflow -Dscript="odps://my_project/resources/training_test.py" '
    '-Dvolumes="odps://algo_platform/volumes/mnist/train,odps://algo_platform/volumes/mnist/test";'
)
CLUSTER_EXAMPLE = '{"ps":{"count":1},"worker":{"count":2,"cpu":800,"memory":30000,"gpu":100}}'
SCRIPT_FORMS = (
    "odps://<project>/resources/<name>, file:///<absolute path>, a local path, or "
    "oss://<bucket>/<path>; a .py file, or a .tar.gz with -DentryFile=<file in it>"
)
_ARCHIVES = (".tar.gz", ".tgz")


def framework_kind(name: str) -> FrameworkKind:
    """``tf1`` for ``tensorflow`` and ``tensorflow1xx...``, ``tf2`` for ``tensorflow2xx...``."""
    lowered = name.lower()
    if _TF1_RE.fullmatch(lowered):
        return "tf1"
    if _TF2_RE.fullmatch(lowered):
        return "tf2"
    raise InvalidRequestError(
        f"Unknown framework -name {name!r}: liqi runs TensorFlow jobs. Accepted: {FRAMEWORKS}."
    )


# --- -Dcluster ---------------------------------------------------------------------------------

_ROLE_KEYS = {"count": "count", "cpu": "cpu", "memory": "memory_mb", "gpu": "gpu"}
#: ``-Dcluster``'s ``placement`` (liqi's, not PAI's): Ray placement-group strategies.
PLACEMENTS = ("PACK", "SPREAD")


# A -Dcluster is two levels deep ({"worker": {"count": 2}}); deeper nesting is refused before
# parsing, so that a hostile value cannot exhaust the parser's recursion.
_MAX_CLUSTER_DEPTH = 8


def _cluster_error(value: str, problem: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"Invalid -Dcluster {value!r:.200}: {problem}. Give a JSON object of ps and worker "
        f"tasks, for example -Dcluster='{CLUSTER_EXAMPLE}'."
    )


def _nesting(text: str) -> int:
    """The deepest nesting of JSON arrays and objects in ``text`` (strings skipped)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _role(value: str, role: str, spec: Any) -> dict[str, int]:
    if not isinstance(spec, dict):
        raise _cluster_error(value, f'{role!r} must be an object like {{"count": 1}}')
    out: dict[str, int] = {}
    for key, number in spec.items():
        if key not in _ROLE_KEYS:
            raise _cluster_error(
                value, f"unknown key {key!r} in {role!r} (accepted: {', '.join(_ROLE_KEYS)})"
            )
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            raise _cluster_error(
                value, f"{role}.{key} must be a whole number of 0 or more, not {number!r}"
            )
        out[_ROLE_KEYS[key]] = number
    if "count" not in out:
        raise _cluster_error(value, f'{role!r} has no "count"')
    return out


def parse_cluster(value: str) -> ClusterSpec:
    """Parse ``-Dcluster`` JSON: roles ``ps`` (optional) and ``worker`` (count ≥ 1)."""
    if _nesting(value) > _MAX_CLUSTER_DEPTH:
        raise _cluster_error(
            value, f"it nests arrays or objects more than {_MAX_CLUSTER_DEPTH} levels deep"
        )
    try:
        data = json.loads(value)
    except (ValueError, RecursionError) as exc:
        raise _cluster_error(value, f"it is not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise _cluster_error(value, "it is not a JSON object")
    unknown = sorted(set(data) - {"ps", "worker", "placement"})
    if unknown:
        raise _cluster_error(value, f"unknown role {unknown[0]!r} (accepted: 'ps', 'worker')")
    placement = data.get("placement", "PACK")
    if placement not in PLACEMENTS:
        raise _cluster_error(
            value, f"placement must be one of {', '.join(PLACEMENTS)}, not {placement!r}"
        )
    ps = _role(value, "ps", data["ps"]) if "ps" in data else {"count": 0}
    worker = _role(value, "worker", data.get("worker", {"count": 0}))
    if worker["count"] == 0:
        raise _cluster_error(value, "it needs at least one worker")
    return ClusterSpec(
        ps_count=ps.pop("count"),
        worker_count=worker.pop("count"),
        **{f"ps_{key}": number for key, number in ps.items()},
        **{f"worker_{key}": number for key, number in worker.items()},
        placement=placement,
    )


def _items(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _count(value: str) -> int:
    if not re.fullmatch(r"\d+", value.strip()):
        raise InvalidRequestError(
            f"-DgpuRequired={value!r} is not a whole number: give PAI's GPU count times 100, "
            "for example -DgpuRequired=100 for one GPU or 0 for none."
        )
    return int(value)


def _args(value: str) -> tuple[str, ...]:
    try:
        return tuple(shlex.split(value, posix=True))
    except ValueError as exc:
        raise InvalidRequestError(
            f"-DuserDefinedParameters={value!r} cannot be split into flags ({exc}); write "
            'them like -DuserDefinedParameters="--batch_size=10 --learning_rate=0.01".'
        ) from exc


# -D key → (PaiCommand field, converter).
_KEYS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "script": ("script", str),
    "entryFile": ("entry_file", str),
    "volumes": ("volumes", _items),
    "buckets": ("buckets", _items),
    "checkpointDir": ("checkpoint_dir", str),
    "tables": ("tables", _items),
    "outputs": ("outputs", _items),
    "hyperParameters": ("hyper_parameters", str),
    "userDefinedParameters": ("user_defined_parameters", _args),
    "cluster": ("cluster", parse_cluster),
    "gpuRequired": ("gpu_required", _count),
    "jobName": ("job_name", str),
    "resourceGroup": ("resource_group", str),
}
_MAY_BE_EMPTY = frozenset({"volumes", "buckets", "tables", "outputs", "userDefinedParameters"})
_IGNORED = {
    "tags": "job tags are a PAI platform setting",
    "maxHungTimeBeforeGCInSeconds": "PAI's hung-job collector; give the job a timeout instead",
    "arn": "liqi reaches buckets with its own credentials",
    "ossHost": "liqi reaches buckets with its own credentials",
}


def _accepted_keys() -> str:
    used = ", ".join(f"-D{key}" for key in _KEYS)
    ignored = ", ".join(f"-D{key}" for key in _IGNORED)
    return f"{used}; accepted but ignored: -project, {ignored}"


def _unknown_key(key: str) -> InvalidRequestError:
    known = [*_KEYS, *_IGNORED]
    same_case = [k for k in known if k.lower() == key.lower()]
    close = same_case or difflib.get_close_matches(key, known, n=1)
    hint = f" Did you mean -D{close[0]}? Keys are case-sensitive." if close else ""
    return InvalidRequestError(
        f"Unknown PAI parameter -D{key}.{hint} Accepted: {_accepted_keys()}."
    )


def _read_words(words: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """``(-name/-project values, -D values by key)`` from the words, checked for form only."""
    rest = deque(words[1:] if words and words[0].lower() == "pai" else words)
    options: dict[str, str] = {}
    params: dict[str, str] = {}
    while rest:
        word = rest.popleft()
        flag, eq, value = word.partition("=")
        if flag.lower() in ("-name", "-project"):
            name = flag.lower()[1:]
            if not eq and rest and not rest[0].startswith("-"):
                value = rest.popleft()
            if not value:
                example = "tensorflow" if name == "name" else "algo_public"
                raise InvalidRequestError(f"-{name} needs a value, for example -{name} {example}.")
            if name in options:
                raise InvalidRequestError(f"-{name} is given twice ({options[name]!r}, {value!r}).")
            options[name] = value
            continue
        if not word.startswith("-D"):
            raise InvalidRequestError(
                f"Unexpected word {word!r} in the pai command: use -name <framework>, "
                f"-project <project> and -D<key>=<value> words, as in: {SEED_EXAMPLE}"
            )
        key, eq, value = (word[2:] or (rest.popleft() if rest else "")).partition("=")
        if not eq or not key:
            raise InvalidRequestError(
                f"PAI parameter {word!r} has no value: write -D<key>=<value>, for example "
                '-Dscript="odps://my_project/resources/training_test.py".'
            )
        if key not in _KEYS and key not in _IGNORED:
            raise _unknown_key(key)
        if key in params:
            raise InvalidRequestError(f"-D{key} is given twice ({params[key]!r}, {value!r}).")
        if not value.strip() and key not in _MAY_BE_EMPTY and key not in _IGNORED:
            raise InvalidRequestError(f"-D{key} is empty: give it a value or leave it out.")
        params[key] = value
    return options, params


def _check_script(script: str, entry_file: str | None) -> None:
    scheme, sep, _ = script.partition("://")
    if sep and scheme.lower() not in ("odps", "file", "oss"):
        raise InvalidRequestError(f"-Dscript={script!r} has an unknown scheme: use {SCRIPT_FORMS}.")
    if script.split("?", 1)[0].lower().endswith(_ARCHIVES) and entry_file is None:
        raise InvalidRequestError(
            f"-Dscript={script!r} is an archive: say which file in it to run with "
            "-DentryFile, for example -Dscript=job.tar.gz -DentryFile=entry.py."
        )


def parse_pai(words: list[str]) -> PaiCommand:
    """Parse the words of a ``pai`` command, as a shell or :func:`tokenize` splits them; a
    leading ``pai`` word is skipped."""
    options, params = _read_words(words)
    if "name" not in options:
        raise InvalidRequestError(f"The pai command needs -name <framework>, as in: {SEED_EXAMPLE}")
    kind = framework_kind(options["name"])
    if "script" not in params:
        raise InvalidRequestError(
            f"The pai command needs -Dscript, the script to run ({SCRIPT_FORMS}), as in: "
            f"{SEED_EXAMPLE}"
        )
    warnings: list[str] = []
    if "project" in options:
        warnings.append(
            f"-project {options['project']} has no effect in liqi: jobs run in the current "
            "project (change it with `use <project>`)."
        )
    fields: dict[str, Any] = {}
    for key, value in params.items():
        if key in _IGNORED:
            warnings.append(f"-D{key}={value} has no effect in liqi: {_IGNORED[key]}.")
        else:
            target, convert = _KEYS[key]
            fields[target] = convert(value)
    _check_script(fields["script"], fields.get("entry_file"))
    return PaiCommand(
        framework=options["name"].lower(),
        framework_kind=kind,
        project=options.get("project"),
        warnings=tuple(warnings),
        **fields,
    )


def parse_pai_text(text: str) -> PaiCommand:
    """Parse one ``pai`` command typed as text: line breaks, quotes and ``;`` as the seed has
    them; the leading ``pai`` is optional."""
    statements = split_statements(text)
    if len(statements) != 1:
        raise InvalidRequestError(
            f"Expected one pai command, found {len(statements)} statements in {text!r}."
        )
    return parse_pai(tokenize(statements[0]))


# --- -DhyperParameters ------------------------------------------------------------------------

_HYPER_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_.\-]*)\s*=(.*)")


def parse_hyper_parameters(text: str, source: str) -> dict[str, str]:
    """``key=value`` lines of a ``-DhyperParameters`` file; ``#`` comments and blank lines are
    skipped. ``source`` names the file in errors."""
    params: dict[str, str] = {}
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _HYPER_RE.fullmatch(line)
        if match is None:
            raise InvalidRequestError(
                f"{source}, line {number}: {raw!r} is not a key=value line. Write one "
                "hyper-parameter per line, like batch_size=10; start comments with #."
            )
        key = match.group(1)
        if key in seen:
            raise InvalidRequestError(
                f"{source}, line {number}: {key!r} is already set on line {seen[key]}."
            )
        seen[key] = number
        params[key] = match.group(2).strip()
    return params
