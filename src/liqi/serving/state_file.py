"""The state file of a model server (``liqi serve --state-file PATH``).

A supervisor, the local instance backend, learns from it how the server it started is doing
without an HTTP call: the server writes it (atomically: temp file + rename) when it listens,
when it is ready, and on the way out. Both sides read and write it through this module, so
the format lives in one place; so do the names of a standby server's files
(:mod:`liqi.serving.standby`), which the backend writes and watches.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

READY_FILE = "ready"  # a standby server's pid: it waits to be claimed
CLAIM_FILE = "claim.json"  # the backend's claim of a standby: the instance it becomes

# listening: bound, loading or warming up; ready: every model serves and the warm-up file (if
# any) replayed fine; failed: a fatal start error, ``reason`` says which; stopped: drained after
# SIGTERM/SIGINT, exiting 0.
State = Literal["listening", "ready", "failed", "stopped"]


@dataclass(frozen=True)
class ServerState:
    pid: int
    state: State
    url: str | None = None
    reason: str = ""
    exit_code: int | None = None  # failed or stopped: the code the process exits with

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServerState:
        data: dict[str, Any] = json.loads(text)
        return cls(**data)


def write_state(path: Path | None, state: ServerState) -> None:
    """Replace ``path`` with ``state`` (no-op without a path). A file that cannot be written is
    logged, not raised: serving matters more than reporting."""
    if path is None:
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(state.to_json())
        os.replace(tmp, path)
    except OSError as exc:
        log.error("cannot write the state file %s: %s", path, exc)


def read_state(path: Path) -> ServerState | None:
    """The state in ``path``; None when it is missing or unreadable."""
    try:
        return ServerState.from_json(path.read_text())
    except (OSError, ValueError, TypeError):
        return None
