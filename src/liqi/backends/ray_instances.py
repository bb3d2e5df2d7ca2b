"""The Ray Backend for service instances: each instance is a detached, named Ray actor that
runs ``liqi serve`` on its node (:mod:`liqi.backends.ray_instance_actor`).

The control plane never becomes a Ray driver: it talks to the cluster's dashboard over HTTP
only, so a lost head makes instances unreachable but never stops the control plane.

- **Start**: the spec, with its token and workload key, is written to ``launch.json`` (mode
  0600) in the instance's folder, and a short Ray job (``ray_instance_actor launch``) reads
  and removes it and creates the actor. Secrets never go into the Ray job's entrypoint,
  metadata or runtime env, which ``ray job list`` shows to anyone with the dashboard.
- **Handle**: ``Handle(<group>, "liqi-<instance id>-<4 hex>")``: the actor's name in the
  namespace ``liqi``, which is also the launch job's submission id. A restarted control plane
  finds the actor again by that name.
- **Status**: from Ray's State API (``/api/v0/actors``): one listing of the namespace's live
  actors serves every instance for ``listing_ttl_s``. An actor waiting for a node is
  STARTING; an ALIVE one is STARTING until its server answers ``/readyz`` at the URL in the
  actor's ``repr`` (probed once; READY afterwards while the actor lives), a DEAD one is
  EXITED with the reason its watcher wrote (``exit.json``, out of memory...) or, when the
  folder is not on this machine, with Ray's cause (the node died, killed...). Before the
  actor exists, the launch job's state says whether it is on its way or failed.
- **Stop**: a short Ray job (``ray_instance_actor stop``, ``<handle>-stop``) SIGTERMs the
  server and kills the actor after ``grace_s``. Returns at once. Once the actor is DEAD its
  launch and stop jobs are deleted from Ray's job list (best effort).

Files: the instance's folder (staged processor, warm-up file, ``instance.log``, ``state.json``)
is the control plane's ``LIQI_HOME/services/...``: the nodes must see it at the same path,
which holds for a head on this machine (CI, a development head) and for a shared
``LIQI_HOME``. Models given as ``oss://`` or ``model:`` are fetched by the instance through
the control plane's store API, from any node.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shlex
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from liqi.backends.instances import (
    InstanceBackend,
    InstanceHandle,
    InstancePhase,
    InstanceSpec,
    InstanceStatus,
)
from liqi.backends.ray_instance_actor import EXIT_FILE, LAUNCH_FILE, NAMESPACE, url_of
from liqi.backends.ray_jobs import _connect
from liqi.errors import BackendError

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

log = logging.getLogger(__name__)

WAITING = frozenset({"DEPENDENCIES_UNREADY", "PENDING_CREATION", "RESTARTING"})
JOB_RUNNING = frozenset({"PENDING", "RUNNING"})
ACTOR_MODULE = "liqi.backends.ray_instance_actor"
LAUNCH_GRACE_S = 30.0  # a launch job that succeeded this long ago must have made its actor


class RayInstanceBackend(InstanceBackend):
    """Runs instances as actors on the Ray cluster whose dashboard is at ``address``."""

    name = "ray"

    def __init__(
        self,
        address: str,
        *,
        request_timeout_s: float = 10.0,
        listing_ttl_s: float = 0.5,
        python: str = sys.executable,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.address = address
        # A dashboard on loopback: every node is on this machine, so serve on loopback too.
        loopback = urlsplit(address).hostname in ("127.0.0.1", "::1", "localhost")
        self.host = "127.0.0.1" if loopback else ""  # "": the node's address
        self.request_timeout_s = request_timeout_s
        self.listing_ttl_s = listing_ttl_s
        self.python = python
        self.clock = clock
        self._client: JobSubmissionClient | None = None
        self._http = httpx.Client(timeout=request_timeout_s, trust_env=False)
        self._lock = threading.Lock()
        self._listing: dict[str, dict[str, Any]] = {}
        self._listed_at = -1e9
        self._ready: dict[str, str] = {}  # ref -> URL, once /readyz answered
        self._launched_at: dict[str, float] = {}
        self._asked_at: dict[str, float] = {}  # when Ray was last asked about one instance

    def _jobs(self) -> JobSubmissionClient:
        with self._lock:
            if self._client is None:
                self._client = _connect(self.address, self.request_timeout_s)
            return self._client

    def _submit(self, ref: str, argv: list[str], what: str, *, again_ok: bool = False) -> None:
        """Submit the Ray job ``ref``; ``again_ok``: one of that id already exists (asked
        before) is fine."""
        try:
            self._jobs().submit_job(
                entrypoint=shlex.join([self.python, "-m", ACTOR_MODULE, *argv]),
                submission_id=ref,
                metadata={"liqi": what},
                entrypoint_num_cpus=0,
            )
        except (OSError, RuntimeError, ValueError) as exc:
            if again_ok and "already exists" in str(exc):
                return
            with self._lock:
                self._client = None
            raise BackendError(
                f"Cannot reach the Ray cluster at {self.address} to {what}: "
                f"{str(exc).rstrip('.')}. Is its head running (docs/ray.md)?"
            ) from None

    def _forget_jobs(self, ref: str) -> None:
        """Delete the ended launch and stop jobs of a gone instance (best effort), so that
        ``ray job list`` does not grow by two entries for every instance ever started."""
        for job in (ref, f"{ref}-stop"):
            try:
                self._jobs().delete_job(job)
            except (OSError, RuntimeError, ValueError, BackendError) as exc:
                log.debug("ray job %s not deleted: %s", job, exc)

    # -- start ----------------------------------------------------------------------------

    def start(self, spec: InstanceSpec) -> InstanceHandle:
        ref = f"liqi-{spec.instance_id}-{secrets.token_hex(2)}"
        folder = Path(spec.dir)
        launch_file = folder / LAUNCH_FILE
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / EXIT_FILE).unlink(missing_ok=True)
            launch_file.unlink(missing_ok=True)
            fd = os.open(launch_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(replace(spec, host=self.host, port=0).to_json())
        except OSError as exc:
            raise BackendError(
                f"Cannot prepare instance {spec.instance_id} in {folder}: {exc}"
            ) from None
        try:
            self._submit(ref, ["launch", str(folder), ref], f"launch instance {spec.instance_id}")
        except BackendError:
            launch_file.unlink(missing_ok=True)
            raise
        self._launched_at[ref] = self.clock()
        log.info("instance %s launching on Ray at %s as %s", spec.instance_id, self.address, ref)
        return InstanceHandle(self.name, ref)

    # -- status ---------------------------------------------------------------------------

    def status(self, handle: InstanceHandle, spec: InstanceSpec) -> InstanceStatus:
        """As Ray's State API tells. A dashboard that does not answer changes nothing: a
        READY instance stays READY (its node may well serve on), another stays STARTING,
        with the reason; a head that comes back without its state ends them (no record)."""
        ref = handle.ref
        try:
            return self._status(ref, spec)
        except BackendError as exc:
            url = self._ready.get(ref)
            phase = InstancePhase.STARTING if url is None else InstancePhase.READY
            return InstanceStatus(phase, url=url, reason=exc.message)

    def _status(self, ref: str, spec: InstanceSpec) -> InstanceStatus:
        actor = self._live_actors().get(ref)
        if actor is None:
            # Not among the live ones: ask Ray about this one (DEAD, or not made yet), at most
            # every ``listing_ttl_s`` * 2 while it is launching.
            now = self.clock()
            if now - self._asked_at.get(ref, -1e9) < 2 * self.listing_ttl_s:
                return InstanceStatus(InstancePhase.STARTING)
            self._asked_at[ref] = now
            actor = self._actor_named(ref)
        if actor is None:
            status = self._before_actor(ref, spec)
            if status.phase is InstancePhase.EXITED:
                self._asked_at.pop(ref, None)
            return status
        state = actor.get("state", "")
        if state in WAITING:
            return InstanceStatus(InstancePhase.STARTING)
        if state == "ALIVE":
            url = url_of(str(actor.get("repr_name") or ""))
            if url is None:
                return InstanceStatus(InstancePhase.STARTING)
            if self._ready.get(ref) == url or self._answers_ready(url):
                self._ready[ref] = url
                return InstanceStatus(InstancePhase.READY, url=url)
            return InstanceStatus(InstancePhase.STARTING, url=url)
        self._ready.pop(ref, None)
        self._launched_at.pop(ref, None)
        self._asked_at.pop(ref, None)
        self._forget_jobs(ref)
        return _dead(actor, spec)

    def _before_actor(self, ref: str, spec: InstanceSpec) -> InstanceStatus:
        """No actor of that name yet: the launch job says whether one is coming."""
        launch_file = Path(spec.dir) / LAUNCH_FILE
        try:
            info = self._jobs().get_job_info(ref)
        except (OSError, RuntimeError, ValueError, BackendError) as exc:
            if "does not exist" in str(exc) or "404" in str(exc):
                launch_file.unlink(missing_ok=True)
                return InstanceStatus(
                    InstancePhase.EXITED,
                    reason=f"the Ray cluster at {self.address} has no record of it (its "
                    "head restarted, or its state was deleted)",
                )
            raise BackendError(f"Cannot ask the Ray cluster at {self.address}: {exc}") from None
        state = str(info.status.value if hasattr(info.status, "value") else info.status)
        if state in JOB_RUNNING:
            return InstanceStatus(InstancePhase.STARTING)
        launch_file.unlink(missing_ok=True)  # a launch that never read it
        launched = self._launched_at.get(ref)
        if state == "SUCCEEDED" and launched and self.clock() - launched < LAUNCH_GRACE_S:
            return InstanceStatus(InstancePhase.STARTING)  # the listing lags
        message = (info.message or "").strip().splitlines()
        return InstanceStatus(
            InstancePhase.EXITED,
            reason=f"could not be launched on Ray (launch job {state}"
            + (f": {message[0]}" if message else "")
            + ")",
        )

    def _answers_ready(self, url: str) -> bool:
        try:
            return self._http.get(f"{url}/readyz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    # -- the State API --------------------------------------------------------------------

    def _query(self, filters: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
        params: list[tuple[str, str | int | float | bool | None]] = [
            ("detail", "true"),
            ("limit", 10000),
        ]
        for key, predicate, value in filters:
            params += [
                ("filter_keys", key),
                ("filter_predicates", predicate),
                ("filter_values", value),
            ]
        url = f"{self.address}/api/v0/actors"
        try:
            answer = self._http.get(url, params=params)
            answer.raise_for_status()
            found = answer.json()["data"]["result"]["result"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            raise BackendError(f"Cannot list actors at {url}: {exc}") from None
        return [a for a in found if isinstance(a, dict)]

    def _live_actors(self) -> dict[str, dict[str, Any]]:
        """liqi's actors that are not DEAD, by name: one listing per ``listing_ttl_s``."""
        with self._lock:
            if self.clock() - self._listed_at < self.listing_ttl_s:
                return self._listing
        found = self._query([("ray_namespace", "=", NAMESPACE), ("state", "!=", "DEAD")])
        listing = {str(a.get("name")): a for a in found}
        with self._lock:
            self._listing, self._listed_at = listing, self.clock()
        return listing

    def _actor_named(self, ref: str) -> dict[str, Any] | None:
        """The actor ``ref`` in any state (the latest, if the name was reused)."""
        found = self._query([("ray_namespace", "=", NAMESPACE), ("name", "=", ref)])
        live = [a for a in found if a.get("state") != "DEAD"]
        return (live or found)[-1] if found else None

    # -- stop -----------------------------------------------------------------------------

    def stop(self, handle: InstanceHandle, spec: InstanceSpec, *, grace_s: float = 30.0) -> None:
        ref = handle.ref
        self._ready.pop(ref, None)
        what = f"stop instance {spec.instance_id}"
        self._submit(f"{ref}-stop", ["stop", ref, repr(grace_s)], what, again_ok=True)
        with self._lock:
            self._listed_at = -1e9

    def close(self) -> None:
        self._http.close()


def _dead(actor: dict[str, Any], spec: InstanceSpec) -> InstanceStatus:
    """EXITED, with what the actor's watcher wrote, else what Ray says of its death."""
    try:
        ended = json.loads((Path(spec.dir) / EXIT_FILE).read_text())
        code = ended.get("code")
        return InstanceStatus(
            InstancePhase.EXITED,
            reason=str(ended.get("reason") or "exited"),
            exit_code=code if isinstance(code, int) else None,
        )
    except (OSError, ValueError, AttributeError):
        pass
    cause = actor.get("death_cause") or {}
    context = cause.get("actor_died_error_context") or {}
    if cause.get("creation_task_failure_context") is not None:
        reason = "its Ray actor failed to start; see instance.log"
    elif context.get("reason") == "NODE_DIED":
        reason = f"its Ray node {context.get('node_ip_address', '')} died".replace("  ", " ")
    elif context.get("reason") == "RAY_KILL":
        reason = "its Ray actor was killed (ray.kill)"
    else:
        message = str(context.get("error_message") or "its Ray actor died")
        reason = message.split(". ")[0].rstrip(".")
    return InstanceStatus(InstancePhase.EXITED, reason=reason)
