"""The Ray side of a service instance: a detached, named actor that runs ``liqi serve``.

:class:`~liqi.backends.ray_instances.RayInstanceBackend` never connects to Ray as a driver (a
driver dies with a lost head, and would take the control plane with it); it submits short
Ray jobs whose entrypoint is this module:

- ``python -m liqi.backends.ray_instance_actor launch INSTANCE_DIR NAME`` reads the instance's
  spec (with its token and workload key) from ``INSTANCE_DIR/launch.json``, removes the file,
  and creates the actor ``NAME`` in the namespace ``liqi``: detached (it outlives this job),
  never restarted by Ray (the reconciler replaces it), with ``num_cpus`` from
  ``metadata.cpu`` (1 by default) and ``memory`` from ``metadata.memory``.
- ``python -m liqi.backends.ray_instance_actor stop NAME GRACE_S`` asks the actor to stop its
  server (SIGTERM, SIGKILL after ``GRACE_S``) and kills the actor.

The actor starts ``liqi serve`` on its node's address (or on the spec's ``host``: loopback for
a cluster whose dashboard is on loopback, all of whose nodes are on this machine) and a free
port, with the same command
line and environment as the local backend, and reports its URL as its ``repr``, which Ray's
State API shows (``repr_name``); the backend reads it there. The server gets SIGKILL when the
actor's worker dies (``setpriv --pdeathsig``), so a killed actor or a lost node never leaves
it running. A watcher thread enforces ``memory_mb`` on the server's process tree and, when
the server ends, writes ``exit.json`` (its code and reason, as the local backend words them)
into the instance's folder and ends the actor's process, so that Ray shows the actor DEAD.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

from liqi.backends.instances import InstanceSpec
from liqi.backends.local_instances import (
    LOG_FILE,
    OOM_FILE,
    SPEC_FILE,
    STATE_FILE,
    exit_status,
    serve_command,
    tree_rss,
)

NAMESPACE = "liqi"
LAUNCH_FILE = "launch.json"  # the spec with its secrets, for the launch job only (0600)
EXIT_FILE = "exit.json"  # how the server ended: {"code": int | null, "reason": str}
WATCH_S = 0.2
LAUNCH_WAIT_S = 60.0  # how long a stop waits for an actor whose launch job is still running
MB = 1024 * 1024


def url_of(repr_name: str) -> str | None:
    """The server's URL in an actor's ``repr`` (``LiqiInstance(http://host:port)``)."""
    if repr_name.startswith("LiqiInstance(") and repr_name.endswith(")"):
        return repr_name[len("LiqiInstance(") : -1] or None
    return None


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class InstanceActor:
    """One ``liqi serve`` process on this Ray node (decorated with ``ray.remote`` by
    :func:`launch`, so that importing this module does not need Ray)."""

    def __init__(self, spec_json: str) -> None:
        import ray

        spec = InstanceSpec.from_json(spec_json)
        host = spec.host or str(ray.util.get_node_ip_address())  # type: ignore[no-untyped-call]
        self.spec = replace(spec, host=host, port=_free_port(host))
        self.url = f"http://{host}:{self.spec.port}"
        self.stopping = False
        folder = Path(spec.dir)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in (STATE_FILE, OOM_FILE, EXIT_FILE):
            (folder / stale).unlink(missing_ok=True)
        (folder / SPEC_FILE).write_text(self.spec.redacted().to_json())
        env = {k: v for k, v in os.environ.items() if k != "LIQI_SERVE_TOKEN"}
        env.update(spec.env)
        env["PYTHONUNBUFFERED"] = "1"
        if spec.token:
            env["LIQI_SERVE_TOKEN"] = spec.token
        setpriv = shutil.which("setpriv")
        # SIGKILL when this worker dies; setpriv execs the server, which keeps its pid.
        prefix = [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []
        with open(folder / LOG_FILE, "ab") as log:
            self.proc = subprocess.Popen(
                [*prefix, *serve_command(self.spec)],
                cwd=spec.dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        threading.Thread(target=self._watch, name="liqi-instance-watch", daemon=True).start()

    def __repr__(self) -> str:
        return f"LiqiInstance({self.url})"

    def _watch(self) -> None:
        limit = self.spec.memory_mb
        while True:
            code = self.proc.poll()
            if code is not None:
                self._record_exit(code)
                sys.stdout.flush()
                os._exit(0)  # the actor ends with its server: Ray shows it DEAD
            rss = tree_rss(self.proc.pid)
            if limit is not None and rss > limit * MB and not self.stopping:
                with contextlib.suppress(OSError):
                    (Path(self.spec.dir) / OOM_FILE).write_text(
                        f"out of memory: RSS {math.ceil(rss / MB)} MB exceeded the limit of "
                        f"{limit} MB (metadata.memory)"
                    )
                self._signal(signal.SIGKILL)
            time.sleep(WATCH_S)

    def _record_exit(self, code: int) -> None:
        folder = Path(self.spec.dir)
        if (folder / EXIT_FILE).exists():
            return
        status = exit_status(self.proc.pid, folder, code, self.spec)
        with contextlib.suppress(OSError):
            (folder / EXIT_FILE).write_text(
                json.dumps({"code": status.exit_code, "reason": status.reason})
            )

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def stop(self, grace_s: float) -> None:
        """SIGTERM the server, SIGKILL after ``grace_s``; its exit is recorded before the
        caller kills the actor."""
        self.stopping = True
        self._signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            code = self.proc.wait(timeout=10)
        self._record_exit(code)


def _say(line: str) -> None:
    """A line in the Ray job's log."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def launch(instance_dir: Path, name: str) -> None:
    import ray

    launch_file = instance_dir / LAUNCH_FILE
    text = launch_file.read_text()
    launch_file.unlink()
    spec = InstanceSpec.from_json(text)
    ray.init(namespace=NAMESPACE, log_to_driver=False)
    options: dict[str, object] = {
        "name": name,
        "namespace": NAMESPACE,
        "lifetime": "detached",
        "max_restarts": 0,
        "max_concurrency": 2,  # stop() while nothing else runs; the watcher is a thread
        "num_cpus": spec.cpu if spec.cpu is not None else 1,
        # A model server at the normal priority, not Ray's workers' nice 15 (the priority of
        # Ray's job drivers, which the Jobs API sets the same way).
        "runtime_env": {"env_vars": {"RAY_worker_niceness": "0"}},
    }
    if spec.memory_mb is not None:
        options["memory"] = spec.memory_mb * MB
    actor_class = ray.remote(InstanceActor)
    actor_class.options(**options).remote(text)
    ray.get_actor(name, namespace=NAMESPACE)  # registered (named actors are, synchronously)
    _say(f"liqi: created actor {name} in namespace {NAMESPACE}")


def stop(name: str, grace_s: float) -> None:
    import ray

    ray.init(namespace=NAMESPACE, log_to_driver=False)
    actor = None
    # An instance may be stopped while its launch job still runs: wait for the actor (bounded)
    # rather than miss it and let it start after the stop.
    deadline = time.monotonic() + LAUNCH_WAIT_S
    while actor is None:
        try:
            actor = ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            if time.monotonic() > deadline:
                _say(f"liqi: no actor {name} after {LAUNCH_WAIT_S:g} s (gone, or never made)")
                return
            time.sleep(0.2)
    with contextlib.suppress(Exception):  # dead already, or its server ignored SIGTERM
        ray.get(actor.stop.remote(grace_s), timeout=grace_s + 10)
    with contextlib.suppress(Exception):
        ray.kill(actor, no_restart=True)
    _say(f"liqi: stopped actor {name}")


def main(argv: list[str]) -> int:
    usage = (
        "usage: python -m liqi.backends.ray_instance_actor launch INSTANCE_DIR NAME | "
        "stop NAME GRACE_S"
    )
    if len(argv) == 4 and argv[1] == "launch":
        launch(Path(argv[2]), argv[3])
        return 0
    if len(argv) == 4 and argv[1] == "stop":
        stop(argv[2], float(argv[3]))
        return 0
    sys.stderr.write(usage + "\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
