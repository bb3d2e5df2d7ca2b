"""The addresses of a distributed TensorFlow job's tasks, as its tasks are told them.

PAI's ``-Dcluster`` jobs run ``ps`` and ``worker`` tasks. Each task learns the cluster the way
PAI-TF told it, in two forms: ``TF_CONFIG`` (``{"cluster": {"worker": [...], "ps": [...]},
"task": {"type": "worker", "index": 0}}``, read by ``tf.distribute``) and the flags
``--ps_hosts --worker_hosts --job_name --task_index`` (read by TF1 between-graph scripts).
Task names are ``<role>:<index>`` (``worker:0`` is the chief). Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: The flags a cluster task is given, in this order; a task's old ones are replaced.
CLUSTER_FLAGS = ("ps_hosts", "worker_hosts", "job_name", "task_index")


@dataclass(frozen=True)
class ClusterHosts:
    """``host:port`` of every task, by role, in index order."""

    ps: tuple[str, ...]
    worker: tuple[str, ...]

    def spec(self) -> dict[str, list[str]]:
        """TF_CONFIG's ``cluster``: the workers, and the ps when there are any."""
        return {"worker": list(self.worker), **({"ps": list(self.ps)} if self.ps else {})}


def task_role(name: str) -> tuple[str, int]:
    """``("worker", 1)`` for the task named ``worker:1``.

    Raises:
        ValueError: the name is not ``ps:<n>`` or ``worker:<n>``.
    """
    role, _, index = name.partition(":")
    if role not in ("ps", "worker") or not index.isdigit():
        raise ValueError(f"task {name!r} is not named ps:<n> or worker:<n>")
    return role, int(index)


def tf_config(hosts: ClusterHosts, role: str, index: int) -> str:
    """The ``TF_CONFIG`` value of task ``role:index``."""
    return json.dumps({"cluster": hosts.spec(), "task": {"type": role, "index": index}})


def cluster_flags(hosts: ClusterHosts, role: str, index: int) -> tuple[str, ...]:
    """PAI-TF's cluster flags of task ``role:index``."""
    return (
        f"--ps_hosts={','.join(hosts.ps)}",
        f"--worker_hosts={','.join(hosts.worker)}",
        f"--job_name={role}",
        f"--task_index={index}",
    )


def addressed(
    argv: Sequence[str], env: Mapping[str, str], hosts: ClusterHosts, name: str
) -> tuple[tuple[str, ...], dict[str, str]]:
    """Task ``name``'s argv and environment told ``hosts``: the cluster flags it had (as
    ``--flag=value``) replaced by new ones at the end, and ``TF_CONFIG`` set."""
    role, index = task_role(name)
    kept = tuple(a for a in argv if a.partition("=")[0].lstrip("-") not in CLUSTER_FLAGS)
    new_env = {**env, "TF_CONFIG": tf_config(hosts, role, index)}
    return (*kept, *cluster_flags(hosts, role, index)), new_env
