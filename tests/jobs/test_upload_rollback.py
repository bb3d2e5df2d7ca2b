"""Outputs reach the buckets all or nothing: a kill or a failure during the upload restores
what the buckets held before."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from liqi.config import ServerSettings
from liqi.control.db.tables import Project
from liqi.control.jobs import staging
from liqi.control.server.plane import ControlPlane, open_plane
from liqi.control.storage import buckets
from liqi.errors import ConflictError, UploadCancelledError


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[ControlPlane]:
    settings = ServerSettings(home=tmp_path / "home")
    settings.store_dir.mkdir(parents=True)
    found = open_plane(settings)
    with found.sessions.begin() as session:
        project = Project(name="proj", description="")
        session.add(project)
        session.flush()
        buckets.create_bucket(
            session, found.box, name="models", project=project, backend="local",
            external=buckets.ExternalStore(), credentials=None,
        )  # fmt: skip
    try:
        yield found
    finally:
        found.close()


def job_outputs(plane: ControlPlane, tmp_path: Path, files: dict[str, bytes]) -> Path:
    """A job folder whose bucket folder holds ``files`` (as if the job wrote them)."""
    job_dir = tmp_path / "job"
    local = job_dir / "buckets" / "models" / "out"
    for name, data in files.items():
        (local / name).parent.mkdir(parents=True, exist_ok=True)
        (local / name).write_bytes(data)
    manifest = {"buckets": [{"uri": "oss://models/out/", "local_dir": f"{local}/"}], "staged": {}}
    (job_dir / staging.MANIFEST).write_text(json.dumps(manifest))
    return job_dir


def store(plane: ControlPlane):  # type: ignore[no-untyped-def]
    with plane.sessions() as session:
        return plane.stores.store_for(session.scalars(select(buckets.Bucket)).one())


def contents(plane: ControlPlane) -> dict[str, bytes]:
    s = store(plane)
    found = {}
    for info in s.walk(""):
        reader = s.open(info.key)
        found[info.key] = b"".join(reader.chunks)
        reader.close()
    return found


FILES = {f"1/part-{i:02d}.bin": f"new {i}".encode() for i in range(10)}


def test_all_outputs_uploaded(plane: ControlPlane, tmp_path: Path) -> None:
    job_dir = job_outputs(plane, tmp_path, FILES)
    written = staging.upload_outputs(plane.sessions, plane.stores, job_dir)
    assert len(written) == 10
    assert contents(plane) == {f"out/{k}": v for k, v in FILES.items()}


def test_kill_during_upload_restores_the_bucket(plane: ControlPlane, tmp_path: Path) -> None:
    s = store(plane)
    s.put("out/1/part-03.bin", [b"old three"])
    s.put("out/keep.txt", [b"untouched"])
    before = contents(plane)
    job_dir = job_outputs(plane, tmp_path, FILES)
    asked = []

    def stop_after_five() -> bool:
        asked.append(1)
        return len(asked) > 5

    with pytest.raises(UploadCancelledError) as caught:
        staging.upload_outputs(plane.sessions, plane.stores, job_dir, stop_after_five)
    assert "5 of 10 written" in caught.value.message
    assert contents(plane) == before
    assert not (job_dir / "replaced").exists()


def test_failed_upload_restores_the_bucket(plane: ControlPlane, tmp_path: Path) -> None:
    s = store(plane)
    s.put("out/1/part-00.bin", [b"old zero"])
    # A folder where the job wrote a file: the last upload fails after ten succeeded.
    s.put("out/1/zz-clash/inner.txt", [b"inner"])
    before = contents(plane)
    job_dir = job_outputs(plane, tmp_path, {**FILES, "1/zz-clash": b"a file"})
    with pytest.raises(ConflictError):
        staging.upload_outputs(plane.sessions, plane.stores, job_dir)
    assert contents(plane) == before
