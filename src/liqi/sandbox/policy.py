"""What a sandboxed workload may see and use: a frozen, JSON-serialisable policy."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class SandboxPolicy:
    """The limits and the view of one workload.

    ``uid``/``gid`` name the workload user the process runs as (None: the caller's own user,
    when liqi does not run as root). ``writable`` folders are bound read-write, ``readable``
    paths read-only; nothing else of the host's files exists in the sandbox except the Python
    environment and the system's libraries (read-only) and a private ``/tmp`` of ``tmp_mb``.
    ``binds`` maps a path inside to a host folder bound read-write there (a model-server
    instance sees its folder at ``/instance``, whatever the host calls it).
    ``env`` is the whole environment of the process: never ``os.environ``; it reaches the
    process through its starter's environment, never its command line. ``hidden`` paths
    (LIQI_HOME) are covered by an empty folder should anything bound contain them (a Python
    environment installed above LIQI_HOME); the ``writable``/``readable`` folders inside them
    still show. ``nofile`` bounds the files each of its processes may have open (soft and hard
    limit: the workload cannot raise it).
    """

    name: str
    uid: int | None = None
    gid: int | None = None
    writable: tuple[str, ...] = ()
    readable: tuple[str, ...] = ()
    hidden: tuple[str, ...] = ()
    binds: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    memory_mb: int | None = None
    pids_max: int | None = 2048  # threads count too (TensorFlow starts many)
    cpu: float | None = None
    tmp_mb: int = 256
    nofile: int = 4096

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SandboxPolicy:
        return cls(
            **{
                **data,
                "writable": tuple(data.get("writable", ())),
                "readable": tuple(data.get("readable", ())),
                "hidden": tuple(data.get("hidden", ())),
                "env": dict(data.get("env", {})),
                "binds": dict(data.get("binds", {})),
            }
        )
