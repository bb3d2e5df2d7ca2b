"""A standby model server: a process that has imported TensorFlow and the serving stack and
waits to become an instance, so a new instance starts without paying for that import
(seconds) after `create`, `scale` or a wake from zero.

``python -m liqi.serving.standby DIR`` imports, writes ``DIR/ready`` (its pid), then reads
its claim from stdin, one JSON line the instance backend writes (never a file: it carries
the instance's token and key): ``{"instance_id", "argv", "env", "cwd", "log"}``. It then
takes the instance's folder as its working folder, its log as stdout and stderr, its
environment, and runs ``liqi <argv>`` (a ``liqi serve`` command line) in this very process.
Unclaimed, it exits at the end of its stdin: when the control plane that started it is gone.
It may run in the sandbox (:mod:`liqi.backends.standby_pool`).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import select
import sys
from pathlib import Path

from liqi.serving.state_file import READY_FILE

MAX_IDLE_S = 24 * 3600.0


def _preload() -> None:
    if importlib.util.find_spec("tensorflow") is not None:
        importlib.import_module("tensorflow")
    for module in ("liqi.cli.main", "liqi.serving.server", "liqi.serving.loaders"):
        importlib.import_module(module)


def _read_claim() -> dict[str, object] | None:
    """The claim, one JSON line on stdin; None at its end (the control plane is gone) or
    after MAX_IDLE_S."""
    stdin = sys.stdin.buffer
    ready, _, _ = select.select([stdin], [], [], MAX_IDLE_S)
    if not ready:
        return None
    line = stdin.readline()
    try:
        claim = json.loads(line) if line.strip() else None
    except ValueError:
        return None  # cut short: the control plane died while writing it
    return claim if isinstance(claim, dict) else None


def _become(claim: dict[str, object]) -> int:
    env = claim.get("env")
    if isinstance(env, dict):
        os.environ.update({str(k): str(v) for k, v in env.items()})
    os.chdir(str(claim["cwd"]))
    log = os.open(str(claim["log"]), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    argv = claim.get("argv")
    if not isinstance(argv, list):
        sys.stderr.write("Error: the claim has no argv\n")
        return 2
    from liqi.cli.main import cli

    try:
        cli.main(args=[str(a) for a in argv], prog_name="liqi", standalone_mode=True)
    except SystemExit as exc:  # click's main always ends this way in standalone mode
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)


def main() -> int:
    if len(sys.argv) != 2:
        sys.stderr.write("usage: python -m liqi.serving.standby DIR\n")
        return 2
    folder = Path(sys.argv[1])
    from liqi.errors import ConfigError
    from liqi.logs.tensorflow_noise import quiet_tensorflow, tf_log_level

    try:
        level = tf_log_level(os.environ)
    except ConfigError:
        level = None  # the instance it becomes says what is wrong
    quiet_tensorflow(os.environ, level)  # before TensorFlow is imported
    _preload()
    tmp = folder / f".{READY_FILE}.tmp"
    tmp.write_text(str(os.getpid()))
    tmp.rename(folder / READY_FILE)
    claim = _read_claim()
    if claim is None:
        return 0
    return _become(claim)


if __name__ == "__main__":
    sys.exit(main())
