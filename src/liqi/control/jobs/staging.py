"""Staging a job on this machine: its script, datasets and buckets as local paths, and the
upload of its outputs to the buckets once it has succeeded.

Layout of ``LIQI_HOME/jobs/<job_id>/``::

    work/                 the tasks' working directory (an archive script is unpacked here)
    inputs/               the script as fetched
    volumes/<project>/<volume>/<partition>/   datasets, read-only
    buckets/<bucket>/<prefix>                 what the job reads from and writes to a bucket
    logs/<task>.log       each task's output
    manifest.json         the bucket files as staged, to find what the job wrote
    upload-journal.jsonl  while its outputs are uploaded: each object, before it is written
    replaced/             while its outputs are uploaded: copies of the objects they replace
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from sqlalchemy.orm import Session, sessionmaker

from liqi.archives import extract
from liqi.asgi.listen import free_ports
from liqi.backends.jobs import LaunchPlan, TaskSpec
from liqi.control.db.tables import Project
from liqi.control.identity.accounts import Principal
from liqi.control.storage import buckets, datasets, resources
from liqi.core.jobs import JobSpec
from liqi.core.odps import parse_resource_uri, parse_volume_uri
from liqi.core.refs import parse_oss_uri
from liqi.core.tf_cluster import ClusterHosts, addressed
from liqi.errors import InvalidRequestError, UploadCancelledError
from liqi.sandbox import SandboxPolicy
from liqi.stores.base import ObjectReader, Store, file_chunks

# The runner acts for the control plane: access was checked when the job was submitted.
SYSTEM = Principal(key_id=0, access_id="liqi-job-runner", is_superuser=True, roles={})
MANIFEST = "manifest.json"
JOURNAL = "upload-journal.jsonl"  # the outputs being uploaded, to undo a killed upload
BACKUPS = "replaced"  # copies of the objects the outputs replace, until the upload is done

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StagedBucket:
    uri: str
    local_dir: str


def _write(reader: ObjectReader, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(dest, "wb") as fh:
            for chunk in reader.chunks:
                fh.write(chunk)
    finally:
        reader.close()


def stage_script(
    sessions: sessionmaker[Session], stores: buckets.StoreRegistry, spec: JobSpec, job_dir: Path
) -> Path:
    inputs = job_dir / "inputs"
    with sessions() as session:
        if spec.script.startswith("odps://"):
            ref = parse_resource_uri(spec.script)
            project = session.query(Project).filter_by(name=ref.project).one()
            reader = resources.open_content(stores.system_store("resources"), project, ref.name)
            local = inputs / ref.name
        else:
            target = parse_oss_uri(spec.script)
            store = stores.store_for(buckets.get_bucket(session, target.bucket))
            reader = store.open(target.key)
            local = inputs / PurePosixPath(target.key).name
    _write(reader, local)
    if local.name.endswith((".tar.gz", ".tgz", ".zip")):
        extract(local, job_dir / "work", what=spec.script)
        entry = (job_dir / "work" / (spec.entry_file or "")).resolve()
        if not entry.is_file() or (job_dir / "work").resolve() not in entry.parents:
            raise InvalidRequestError(f"Entry file {spec.entry_file!r} is not in {local.name}.")
        return entry
    return local


def stage_datasets(
    sessions: sessionmaker[Session],
    stores: buckets.StoreRegistry,
    uris: tuple[str, ...],
    job_dir: Path,
) -> list[Path]:
    dirs = []
    for text in uris:
        uri = parse_volume_uri(text)
        with sessions() as session:
            _, tree = datasets.open_partition(session, SYSTEM, uri, stores.system_store("volumes"))
        local = job_dir / "volumes" / uri.project / uri.volume / uri.partition
        for info in tree.files():
            _write(tree.open(info.key), local / info.key)
            os.chmod(local / info.key, 0o444)
        local.mkdir(parents=True, exist_ok=True)
        dirs.append(local)
    return dirs


def stage_bucket(
    sessions: sessionmaker[Session], stores: buckets.StoreRegistry, text: str, job_dir: Path
) -> tuple[StagedBucket, dict[str, list[int]]]:
    """Download what the bucket holds under the prefix; returns the files as staged."""
    target = parse_oss_uri(text)
    local = job_dir / "buckets" / target.bucket / target.key
    local.mkdir(parents=True, exist_ok=True)
    with sessions() as session:
        store = stores.store_for(buckets.get_bucket(session, target.bucket))
    staged: dict[str, list[int]] = {}
    for info in store.walk(target.key):
        dest = local / info.key[len(target.key) :]
        _write(store.open(info.key), dest)
        st = dest.stat()
        staged[str(dest)] = [st.st_size, st.st_mtime_ns]
    return StagedBucket(uri=str(target), local_dir=str(local) + "/"), staged


def _outputs(
    sessions: sessionmaker[Session], stores: buckets.StoreRegistry, job_dir: Path
) -> list[tuple[str, Store, str, Path]]:
    """(bucket, store, key, local file) for every file the job wrote or changed."""
    manifest = json.loads((job_dir / MANIFEST).read_text())
    found = []
    for entry in manifest["buckets"]:
        target = parse_oss_uri(entry["uri"])
        local = Path(entry["local_dir"])
        with sessions() as session:
            store = stores.store_for(buckets.get_bucket(session, target.bucket))
        for path in sorted(p for p in local.rglob("*") if p.is_file() and not p.is_symlink()):
            st = path.stat()
            if manifest["staged"].get(str(path)) == [st.st_size, st.st_mtime_ns]:
                continue
            found.append(
                (target.bucket, store, target.key + path.relative_to(local).as_posix(), path)
            )
    return found


def upload_outputs(
    sessions: sessionmaker[Session],
    stores: buckets.StoreRegistry,
    job_dir: Path,
    should_stop: Callable[[], bool] = lambda: False,
) -> list[tuple[str, str]]:
    """Upload every file the job wrote or changed under its staged buckets; returns the
    (bucket, key) pairs written. Files staged in and left unchanged are not uploaded.

    Each object is written atomically. The set is all or nothing as far as a kill goes:
    ``should_stop`` is asked between objects, and when it says stop (or an upload fails) the
    objects written so far are deleted and the ones they replaced are put back from a copy
    taken just before, so the buckets are as they were. Each object is named in a journal
    (``upload-journal.jsonl``) before it is written: an upload cut short by a killed control
    plane is undone from it when the next one starts.

    Raises:
        UploadCancelledError: ``should_stop`` said stop; the buckets were restored.
        StoreError: an upload failed; the buckets were restored.
    """
    undo_interrupted_upload(sessions, stores, job_dir)
    outputs = _outputs(sessions, stores, job_dir)
    backups = job_dir / BACKUPS
    done: list[tuple[Store, str, Path | None]] = []
    try:
        with open(job_dir / JOURNAL, "a") as journal:
            for index, (bucket, store, key, path) in enumerate(outputs):
                if should_stop():
                    raise UploadCancelledError(
                        f"killed while uploading outputs ({index} of {len(outputs)} written); "
                        "the buckets were restored"
                    )
                backup: Path | None = None
                if store.exists(key):
                    backup = backups / f"{index}"
                    _write(store.open(key), backup)
                entry = {"bucket": bucket, "key": key, "backup": backup and backup.name}
                journal.write(json.dumps(entry) + "\n")
                journal.flush()
                os.fsync(journal.fileno())
                store.put(key, file_chunks(path))
                done.append((store, key, backup))
    except BaseException:
        _restore(reversed(done))
        raise
    finally:
        (job_dir / JOURNAL).unlink(missing_ok=True)  # before the copies it points to
        shutil.rmtree(backups, ignore_errors=True)
    return [(bucket, key) for bucket, _, key, _ in outputs]


def undo_interrupted_upload(
    sessions: sessionmaker[Session], stores: buckets.StoreRegistry, job_dir: Path
) -> None:
    """Put the buckets back as they were before an upload of outputs that a killed control
    plane left half done (its journal is still there); nothing when there is none."""
    journal = job_dir / JOURNAL
    try:
        lines = journal.read_text().splitlines()
    except FileNotFoundError:
        return
    written: list[tuple[Store, str, Path | None]] = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:  # a line cut by the kill: its object was not written yet
            continue
        with sessions() as session:
            store = stores.store_for(buckets.get_bucket(session, entry["bucket"]))
        backup = job_dir / BACKUPS / entry["backup"] if entry["backup"] else None
        written.append((store, entry["key"], backup))
    logger.warning(
        "job folder %s: undoing an upload of outputs cut short (%d object(s))",
        job_dir,
        len(written),
    )
    _restore(reversed(written))
    journal.unlink()
    shutil.rmtree(job_dir / BACKUPS, ignore_errors=True)


def _restore(written: Iterable[tuple[Store, str, Path | None]]) -> None:
    """Delete each object written, or put back the one it replaced from its copy."""
    for store, key, backup in written:
        if backup is None:
            store.delete(key)
        else:
            store.put(key, file_chunks(backup))


def build_plan(
    job_id: str,
    spec: JobSpec,
    job_dir: Path,
    script: Path,
    volumes: dict[str, list[Path]],
    staged: list[StagedBucket],
    checkpoint: StagedBucket | None,
    sandbox: SandboxPolicy | None = None,
) -> LaunchPlan:
    flags: list[str] = []
    env = {"LIQI_JOB_ID": job_id, **spec.env}
    if staged:
        value = ",".join(b.local_dir for b in staged)
        flags.append(f"--buckets={value}")
        env["LIQI_BUCKETS"] = value
    for flag, dirs in volumes.items():
        if dirs:
            value = ",".join(str(d) for d in dirs)
            flags.append(f"--{flag}={value}")
            env[f"LIQI_{flag.upper()}"] = value
    if checkpoint:
        flags.append(f"--checkpointDir={checkpoint.local_dir}")
        env["LIQI_CHECKPOINT_DIR"] = checkpoint.local_dir
    flags += [f"--{k}={v}" for k, v in spec.hyper_parameters.items()]
    flags += list(spec.args)
    base = [sys.executable, "-m", "liqi.training.launcher"]
    if spec.tf1_compat:
        base.append("--tf1")
    base.append(str(script))
    logs = job_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    work = str(job_dir / "work")
    if spec.cluster is None:
        task = TaskSpec(
            "chief", (*base, *flags), {**env, "LIQI_TASK": "chief"}, work, str(logs / "chief.log")
        )
        return _plan(job_id, job_dir, spec, (task,), sandbox)
    # Addresses on this machine; a cluster backend (Ray) gives the tasks their own instead.
    ports = [f"127.0.0.1:{p}" for p in free_ports(spec.cluster.ps + spec.cluster.workers)]
    hosts = ClusterHosts(ps=tuple(ports[: spec.cluster.ps]), worker=tuple(ports[spec.cluster.ps :]))
    tasks = []
    for role, count in (("worker", len(hosts.worker)), ("ps", len(hosts.ps))):
        for index in range(count):
            name = f"{role}:{index}"
            argv, task_env = addressed((*base, *flags), {**env, "LIQI_TASK": name}, hosts, name)
            log = str(logs / f"{role}-{index}.log")
            cpu, memory_mb = (
                (spec.cluster.ps_cpu, spec.cluster.ps_memory_mb)
                if role == "ps"
                else (spec.cluster.worker_cpu, spec.cluster.worker_memory_mb)
            )
            tasks.append(TaskSpec(name, argv, task_env, work, log, role == "ps", cpu, memory_mb))
    plan = _plan(job_id, job_dir, spec, tuple(tasks), sandbox)
    return replace(plan, placement=spec.cluster.placement)


def _plan(
    job_id: str,
    job_dir: Path,
    spec: JobSpec,
    tasks: tuple[TaskSpec, ...],
    sandbox: SandboxPolicy | None,
) -> LaunchPlan:
    return LaunchPlan(
        job_id=job_id,
        job_dir=str(job_dir),
        tasks=tasks,
        timeout_s=spec.resources.timeout_s,
        memory_mb=spec.resources.memory_mb,
        cpu=spec.resources.cpu,
        sandbox=sandbox.to_dict() if sandbox else None,
    )


def job_sandbox(
    job_id: str,
    job_dir: Path,
    spec: JobSpec,
    user: tuple[int, int] | None,
    env: dict[str, str],
    home: Path,
) -> SandboxPolicy:
    """The sandbox of a job's tasks: ``work/`` and ``buckets/`` writable, ``inputs/`` and
    ``volumes/`` read-only, nothing else of the job's folder (its manifest, its logs, its plan)
    nor of LIQI_HOME (``home``, hidden even if a readable path holds it). ``env`` is the base
    of every task's environment (an allow-list)."""
    for name in ("work", "buckets", "inputs", "volumes"):
        (job_dir / name).mkdir(parents=True, exist_ok=True)
    return SandboxPolicy(
        name=f"job-{job_id}",
        uid=user[0] if user else None,
        gid=user[1] if user else None,
        writable=(str(job_dir / "work"), str(job_dir / "buckets")),
        readable=(str(job_dir / "inputs"), str(job_dir / "volumes")),
        hidden=(str(home),),
        env=env,
        memory_mb=spec.resources.memory_mb,
    )


def stage(
    sessions: sessionmaker[Session],
    stores: buckets.StoreRegistry,
    job_id: str,
    spec: JobSpec,
    job_dir: Path,
    sandbox: Callable[[Path], SandboxPolicy] | None = None,
) -> LaunchPlan:
    """Fetch everything the job needs into ``job_dir`` and return its launch plan; with
    ``sandbox`` (the job folder -> its policy) the plan runs the tasks sandboxed."""
    if job_dir.exists():
        shutil.rmtree(job_dir)
    (job_dir / "work").mkdir(parents=True)
    script = stage_script(sessions, stores, spec, job_dir)
    volumes = {
        flag: stage_datasets(sessions, stores, uris, job_dir)
        for flag, uris in (
            ("volumes", spec.datasets),
            ("tables", spec.tables),
            ("outputs", spec.outputs),
        )
    }
    staged_files: dict[str, list[int]] = {}
    staged: list[StagedBucket] = []
    for text in spec.buckets:
        entry, files = stage_bucket(sessions, stores, text, job_dir)
        staged.append(entry)
        staged_files.update(files)
    checkpoint = None
    if spec.checkpoint_dir:
        checkpoint, files = stage_bucket(sessions, stores, spec.checkpoint_dir, job_dir)
        staged_files.update(files)
    all_buckets = [*staged, *([checkpoint] if checkpoint else [])]
    manifest = {"buckets": [b.__dict__ for b in all_buckets], "staged": staged_files}
    (job_dir / MANIFEST).write_text(json.dumps(manifest))
    policy = sandbox(job_dir) if sandbox else None
    return build_plan(job_id, spec, job_dir, script, volumes, staged, checkpoint, policy)
