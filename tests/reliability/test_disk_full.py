"""A full disk under the object store: the server's store folder (LIQI_HOME/store) is a 32 MB
tmpfs that the test fills with a file of its own. An upload that does not fit, and a job whose
outputs do not fit, fail with a clear reason, leave nothing half-written and no temporary file
eating the space, and the server keeps serving; once space is freed the same upload works."""

from __future__ import annotations

import os
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from liqi.client import Client
from liqi.errors import ObjectNotFoundError, StorageFullError
from tests.support.servers import LiveServer, live_server

pytestmark = pytest.mark.timeout(180)

MB = 1024 * 1024
SLACK_BYTES = 64 * 1024  # what the filesystem's own bookkeeping may take or give back


@pytest.fixture(scope="module")
def disk_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A live server (SQLite) whose store folder is a 32 MB tmpfs, unmounted afterwards
    whatever happens."""
    home = tmp_path_factory.mktemp("disk-full") / "home"
    store = home / "store"
    store.mkdir(parents=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32m,mode=0700", "tmpfs", str(store)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    try:
        with live_server(home, None, standby=False) as live:
            yield live
    finally:
        if subprocess.run(["umount", str(store)], capture_output=True, timeout=30).returncode:
            subprocess.run(["umount", "-l", str(store)], check=True, timeout=30)


def free_bytes(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def fill_leaving(folder: Path, free: int) -> Path:
    """A filler file in ``folder`` (outside every bucket) that leaves about ``free`` bytes."""
    filler = folder / "filler.bin"
    size = free_bytes(folder) - free
    assert size > 0, f"the disk has only {free_bytes(folder)} bytes free"
    with filler.open("wb") as file:
        for _ in range(size // MB):
            file.write(b"\0" * MB)
        file.write(b"\0" * (size % MB))
    return filler


def temp_files(store: Path) -> list[str]:
    return sorted(os.listdir(store / "_tmp")) if (store / "_tmp").exists() else []


def head_status(admin: Client, bucket: str, key: str) -> int:
    answer = admin._http.request("HEAD", f"/api/v1/buckets/{bucket}/objects/{key}")
    return answer.status_code


def test_an_upload_bigger_than_the_free_space_is_refused_with_507_and_leaves_nothing_behind(
    disk_server: LiveServer,
) -> None:
    store = disk_server.settings.store_dir
    data = os.urandom(16 * MB)
    with disk_server.admin() as admin:
        admin.create_bucket("full", project="default")
        admin.put_object("full", "before.txt", b"already here")
        filler = fill_leaving(store, 2 * MB)
        try:
            free_before = free_bytes(store)
            with pytest.raises(StorageFullError) as caught:
                admin.put_object("full", "big.bin", data)
            message = caught.value.message
            assert "disk full" in message, message
            assert "free space" in message, message
            assert "'big.bin'" in message, message

            # Nothing half-written is visible, nothing is left eating the space.
            assert [o.key for o in admin.iter_objects("full")] == ["before.txt"]
            with pytest.raises(ObjectNotFoundError):
                admin.stat_object("full", "big.bin")
            assert head_status(admin, "full", "big.bin") == 404
            assert temp_files(store) == []
            freed = free_bytes(store) - free_before
            print(f"free space after the failure: {freed:+d} bytes against before")
            assert abs(freed) <= SLACK_BYTES

            # The server keeps serving, reads and small writes alike.
            assert admin.read_object("full", "before.txt") == b"already here"
            admin.put_object("full", "after.txt", b"still writable")
            assert admin.read_object("full", "after.txt") == b"still writable"
        finally:
            filler.unlink()

        # The same upload once space is freed.
        info = admin.put_object("full", "big.bin", data)
        assert info.size == len(data)
        assert admin.read_object("full", "big.bin") == data
        assert head_status(admin, "full", "big.bin") == 200
        assert temp_files(store) == []
        admin.delete_bucket("full", force=True)


OUTPUTS = """
    import argparse, os
    parser = argparse.ArgumentParser()
    parser.add_argument("--buckets")
    args, _ = parser.parse_known_args()
    os.makedirs(os.path.join(args.buckets, "1"), exist_ok=True)
    for index in range(3):
        with open(os.path.join(args.buckets, "1", f"part-{index}.bin"), "wb") as fh:
            fh.write(os.urandom(3 * 1024 * 1024))
    print("wrote 9 MB of outputs", flush=True)
"""


def test_a_job_whose_outputs_do_not_fit_fails_saying_the_disk_is_full_and_uploads_nothing(
    disk_server: LiveServer, tmp_path: Path
) -> None:
    store = disk_server.settings.store_dir
    with disk_server.admin() as admin:
        admin.create_bucket("outputs", project="default")
        admin.put_object("outputs", "out/kept.txt", b"kept")
        script_path = tmp_path / "outputs.py"
        script_path.write_text(textwrap.dedent(OUTPUTS))
        script = admin.add_resource(script_path, force=True).uri
        # Room for the first part (3 MB) but not the second: the upload fails half-way.
        filler = fill_leaving(store, 5 * MB)
        try:
            free_before = free_bytes(store)
            job = admin.submit_job(script, buckets=["oss://outputs/out/"])
            final = admin.wait_job(job.id, timeout_s=120)
            assert final.state == "FAILED", final.reason
            assert final.exit_code == 0
            assert "uploading its outputs failed" in final.reason, final.reason
            assert "disk full" in final.reason, final.reason

            # All or nothing: the part that fitted was taken back.
            assert [o.key for o in admin.iter_objects("outputs")] == ["out/kept.txt"]
            assert temp_files(store) == []
            freed = free_bytes(store) - free_before
            print(f"free space after the failure: {freed:+d} bytes against before")
            assert abs(freed) <= SLACK_BYTES

            # The server keeps serving.
            assert admin.get_job(job.id).state == "FAILED"
            admin.put_object("outputs", "out/after.txt", b"still writable")
            assert admin.read_object("outputs", "out/kept.txt") == b"kept"
        finally:
            filler.unlink()
