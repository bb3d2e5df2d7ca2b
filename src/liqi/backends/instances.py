"""The Backend seam for service instances: start a model server somewhere, watch it, stop it.

The reconciler hands the backend an :class:`InstanceSpec` (frozen, JSON-serialisable) and
keeps the returned :class:`InstanceHandle` in the database, so a restarted control plane can
re-adopt instances it did not start. Everything the backend learns about an instance comes
back as an :class:`InstanceStatus`; it never blocks for long.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from typing import Any, ClassVar

SECRET_ENV = frozenset({"LIQI_ACCESS_KEY"})  # environment variables that hold a secret
SANDBOX_DIR = "/instance"  # where a sandboxed instance sees its own folder


@dataclass(frozen=True)
class InstanceSpec:
    """One model-server process of a service (``liqi serve`` with these options)."""

    instance_id: str  # unique, e.g. "mnist-v2-3f9a1c"; also the process's marker
    service: str  # the model name in URLs: /api/predict/<service>, /v1/models/<service>
    model_uri: str  # a local path, oss://bucket/prefix or model:name[:version]
    dir: str  # the instance's own folder: log, state file
    processor: str | None = None  # None: detected from the files
    processor_path: str | None = None
    processor_entry: str | None = None
    worker_threads: int | None = None
    max_batch_size: int = 256
    max_batch_wait_ms: float = 0.0
    max_queue_size: int = 1024
    request_timeout_s: float = 60.0
    max_body_mb: int = 64
    token: str | None = None  # required on the instance's own (direct) endpoint
    memory_mb: int | None = None  # RSS limit: over it, the instance is killed (OOM)
    warmup_file: str | None = None  # local file of requests replayed before ready
    env: dict[str, str] = field(default_factory=dict)  # extra environment (LIQI_ENDPOINT...)
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port, reported in InstanceStatus.url
    # A SandboxPolicy.to_dict() (isolation "sandbox"): the process runs in liqi.sandbox and
    # sees ``dir`` at SANDBOX_DIR; None: as the control plane's user, unconfined.
    sandbox: dict[str, Any] | None = None
    group: str = "local"  # the resource group it runs in (liqi.resource_groups)
    cpu: float | None = None  # CPUs to reserve where the group schedules (metadata.cpu)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def redacted(self) -> InstanceSpec:
        """This spec without its secrets (the token, the key in ``env``): what is written to
        the database and the instance's folder. The reconciler adds them back from the
        service (the token is kept encrypted) when it starts the process again."""
        env = {k: v for k, v in self.env.items() if k not in SECRET_ENV}
        return replace(self, token=None, env=env)

    @classmethod
    def from_json(cls, text: str) -> InstanceSpec:
        data: dict[str, Any] = json.loads(text)
        return cls(**data)


@dataclass(frozen=True)
class InstanceHandle:
    backend: str
    ref: str  # local: the pid


class InstancePhase(str, Enum):
    STARTING = "STARTING"  # the process runs; not listening yet, or loading, or warming up
    READY = "READY"  # /readyz answers 200: it may take traffic
    EXITED = "EXITED"  # the process is gone; ``reason`` says why


@dataclass(frozen=True)
class InstanceStatus:
    phase: InstancePhase
    url: str | None = None  # http://host:port once it listens
    reason: str = ""  # EXITED: exit code and the last error line, "out of memory (...)", ...
    exit_code: int | None = None
    rss_mb: int | None = None


class InstanceBackend(ABC):
    """Runs model-server instances. Thread-safe; holds no state a restart would lose."""

    name: ClassVar[str]

    @abstractmethod
    def start(self, spec: InstanceSpec) -> InstanceHandle:
        """Start the instance and return at once. Raises BackendError when it cannot start."""

    @abstractmethod
    def status(self, handle: InstanceHandle, spec: InstanceSpec) -> InstanceStatus:
        """Where the instance stands (enforcing ``memory_mb`` on the way)."""

    @abstractmethod
    def stop(self, handle: InstanceHandle, spec: InstanceSpec, *, grace_s: float = 30.0) -> None:
        """Ask it to finish its requests and exit (SIGTERM); SIGKILL after ``grace_s``.
        Returns at once; ``status`` shows EXITED when it is gone."""

    def close(self) -> None:  # noqa: B027  (optional: most backends hold nothing)
        """Release what the backend holds for itself (never the instances: they outlive
        the control plane)."""
