"""Resource groups: where the server runs jobs and service instances. ``local`` (this
machine's local backend) always exists; Ray clusters are added by their dashboard address in
``LIQI_RESOURCE_GROUPS``. A workload names its group (``-DresourceGroup``, EAS's
``metadata.resource``) or runs in its project's (``LIQI_PROJECT_RESOURCE_GROUPS``), else in
the server's default (``LIQI_RESOURCE_GROUP``): :class:`Placement` decides.

Parsing is pure (:func:`parse_resource_groups`); :func:`probe` is the one bit of I/O, a GET of
a Ray dashboard's ``/api/version`` that ``liqi server status`` shows as the group's health.
:class:`GroupHealth` asks it before a job is accepted, remembering a good answer briefly.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from liqi.errors import (
    ConfigError,
    InvalidRequestError,
    PermissionDeniedError,
    ResourceGroupUnavailableError,
)

#: The backends a group may name: ``local`` is built in, ``ray`` needs an address.
GROUP_BACKENDS = ("ray",)
NAME_MAX = 16  # the name is stored in jobs.backend, a String(16)
LOCAL = "local"
EXAMPLE = "ray=ray:http://127.0.0.1:8265,gpu=ray:http://10.0.0.5:8265"
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")


@dataclass(frozen=True)
class ResourceGroup:
    """A named place jobs run: ``backend`` is ``local`` or ``ray``; ``address`` a Ray
    dashboard's URL (empty for ``local``)."""

    name: str
    backend: str
    address: str = ""

    def describe(self) -> str:
        """``'ray' (ray at http://...)``: how messages name the group."""
        where = f"{self.backend} at {self.address}" if self.address else self.backend
        return f"{self.name!r} ({where})"


LOCAL_GROUP = ResourceGroup(LOCAL, LOCAL)


ProjectGroups = tuple[tuple[str, str], ...]  # (project, its default group), sorted


@dataclass(frozen=True)
class Placement:
    """Where a server lets a workload run: its groups, its default, and whether it sandboxes
    user code (then a Ray group, which runs code as the cluster's user, is for superusers)."""

    groups: tuple[ResourceGroup, ...] = (LOCAL_GROUP,)
    default: str = LOCAL
    sandboxed: bool = False
    # project name -> its default group, set by the operator (LIQI_PROJECT_RESOURCE_GROUPS)
    projects: ProjectGroups = ()

    def default_of(self, project: str) -> str:
        """The group a workload of ``project`` runs in when it names none."""
        return dict(self.projects).get(project, self.default)

    def choose(
        self, wanted: str | None, *, project: str, superuser: bool, flag: str
    ) -> ResourceGroup:
        """The group named ``wanted`` (by ``flag``), else ``project``'s default, else the
        server's; raises before anything is created when it does not exist or the caller may
        not use it: under the sandbox, a Ray group is for superusers and for the projects the
        operator gave it to."""
        name = wanted or self.default_of(project)
        group = next((g for g in self.groups if g.name == name), None)
        if group is None:
            known = ", ".join(g.name for g in self.groups)
            raise InvalidRequestError(
                f"Resource group {name!r} does not exist. Resource groups: {known} (name one "
                f"with {flag}, or leave it out for the default; `liqi server status` lists them)."
            )
        assigned = dict(self.projects).get(project) == group.name
        if group.backend != LOCAL and self.sandboxed and not (superuser or assigned):
            raise PermissionDeniedError(
                f"Resource group {group.describe()} runs user code as the Ray cluster's user, "
                "without liqi's sandbox, so on this server (isolation 'sandbox') only a "
                "superuser key, or a project the operator gave it to "
                "(LIQI_PROJECT_RESOURCE_GROUPS), may use it. Use the 'local' group or ask the "
                "operator (docs/ray.md, Security)."
            )
        return group


def _bad(text: str, problem: str) -> ConfigError:
    return ConfigError(
        f"LIQI_RESOURCE_GROUPS={text!r}: {problem}. Give comma-separated "
        f"name=backend:address entries, e.g. LIQI_RESOURCE_GROUPS={EXAMPLE!r} (names: "
        f"lowercase letters, digits, '-' and '_', at most {NAME_MAX} characters; backend: "
        f"{', '.join(GROUP_BACKENDS)})."
    )


def parse_resource_groups(text: str) -> tuple[ResourceGroup, ...]:
    """``local`` followed by the groups ``text`` (``LIQI_RESOURCE_GROUPS``) defines."""
    groups = [LOCAL_GROUP]
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        name, eq, rest = entry.partition("=")
        name = name.strip()
        backend, colon, address = rest.strip().partition(":")
        if not eq or not colon:
            raise _bad(text, f"{entry!r} is not name=backend:address")
        if not _NAME_RE.fullmatch(name) or len(name) > NAME_MAX:
            raise _bad(text, f"{name!r} is not a group name")
        if any(g.name == name for g in groups):
            raise _bad(text, f"group {name!r} is given twice ('local' is built in)")
        if backend not in GROUP_BACKENDS:
            raise _bad(text, f"{entry!r} names the backend {backend!r}")
        url = urlsplit(address.strip())
        if url.scheme not in ("http", "https") or not url.hostname:
            raise _bad(text, f"{address!r} is not an http(s) address of a Ray dashboard")
        groups.append(ResourceGroup(name, backend, address.strip().rstrip("/")))
    return tuple(groups)


def check_default(name: str, groups: tuple[ResourceGroup, ...]) -> str:
    """``name`` (``LIQI_RESOURCE_GROUP``) when it is one of ``groups``; else a ConfigError."""
    if any(g.name == name for g in groups):
        return name
    known = ", ".join(g.name for g in groups)
    raise ConfigError(
        f"LIQI_RESOURCE_GROUP={name!r} is not a resource group; the groups are {known}. Name "
        f"one of them, or define it in LIQI_RESOURCE_GROUPS, e.g. LIQI_RESOURCE_GROUP=ray "
        f"with LIQI_RESOURCE_GROUPS='ray=ray:http://127.0.0.1:8265'."
    )


def parse_project_groups(
    text: str, groups: tuple[ResourceGroup, ...]
) -> tuple[tuple[str, str], ...]:
    """``LIQI_PROJECT_RESOURCE_GROUPS`` (``project=group,...``): each project's default group,
    which must be one of ``groups``."""
    known = {g.name for g in groups}
    found: dict[str, str] = {}
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        project, eq, group = (x.strip() for x in entry.partition("="))
        if not eq or not project or group not in known or project in found:
            problem = (
                f"{entry!r} names the project {project!r} twice"
                if project in found
                else f"{entry!r} is not project=group with a group of {', '.join(sorted(known))}"
            )
            raise ConfigError(
                f"LIQI_PROJECT_RESOURCE_GROUPS={text!r}: {problem}. Give comma-separated "
                "project=group entries, e.g. "
                "LIQI_PROJECT_RESOURCE_GROUPS='vision=ray,default=local'."
            )
        found[project] = group
    return tuple(sorted(found.items()))


def probe(group: ResourceGroup, timeout_s: float = 2.0) -> str:
    """``"ok"`` when the group can take jobs as far as a quick look tells, else the error:
    ``local`` is always ok; a Ray group's dashboard must answer ``GET /api/version``."""
    if group.backend == LOCAL:
        return "ok"
    import httpx

    url = f"{group.address}/api/version"
    try:
        answer = httpx.get(url, timeout=timeout_s, trust_env=False)
    except httpx.HTTPError as exc:
        return f"cannot reach {url}: {exc or type(exc).__name__}"
    if answer.status_code != 200:
        return f"{url} answered HTTP {answer.status_code}"
    return "ok"


JOB_ELSEWHERE = "-DresourceGroup=NAME (liqi pai) or --resource-group NAME (liqi job submit)"
SERVICE_ELSEWHERE = '"metadata": {"resource": "NAME"} in the service\'s JSON'


@dataclass
class GroupHealth:
    """Can a group take a job now? :func:`probe`'s answer, remembered ``ok_ttl_s`` when it was
    ok (a burst of submissions probes once) and ``failed_ttl_s`` when it was not (a head just
    started is seen at once). Thread-safe: one probe per group at a time; the others wait for
    its answer, at most ``timeout_s``."""

    # A head that is down refuses at once; a busy dashboard (load, a cold start) may take a
    # second: it must not be taken for a dead one.
    timeout_s: float = 2.0
    ok_ttl_s: float = 5.0
    failed_ttl_s: float = 1.0
    probe: Callable[[ResourceGroup, float], str] = probe
    clock: Callable[[], float] = time.monotonic
    _answers: dict[str, tuple[float, str]] = field(default_factory=dict, repr=False)
    _locks: dict[str, threading.Lock] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def check(self, group: ResourceGroup) -> str:
        """``"ok"`` or what is wrong, from the last answer while it holds, else a new probe."""
        if group.backend == LOCAL:
            return "ok"
        with self._lock:
            lock = self._locks.setdefault(group.name, threading.Lock())
        with lock:
            at, answer = self._answers.get(group.name, (0.0, ""))
            ttl_s = self.ok_ttl_s if answer == "ok" else self.failed_ttl_s
            if answer and self.clock() - at < ttl_s:
                return answer
            answer = self.probe(group, self.timeout_s)
            self._answers[group.name] = (self.clock(), answer)
            return answer

    def require(
        self,
        group: ResourceGroup,
        groups: tuple[ResourceGroup, ...],
        *,
        work: str = "jobs",
        elsewhere: str = JOB_ELSEWHERE,
    ) -> None:
        """Raise ResourceGroupUnavailableError unless ``group`` can take ``work`` now; the
        message says where it was looked for and what to do (``elsewhere``: how to pick
        another of ``groups``)."""
        answer = self.check(group)
        if answer == "ok":
            return
        others = ", ".join(g.name for g in groups if g.name != group.name) or "none"
        raise ResourceGroupUnavailableError(
            f"Resource group {group.describe()} cannot take {work}: {answer}. Nothing was "
            f"created. Start its Ray head with its dashboard at {group.address} (ray start "
            f"--head --include-dashboard=true), or use another group with {elsewhere}; other "
            f"groups: {others}.",
            details={"resource_group": group.name, "address": group.address},
        )
