"""Staging with real instances: a Python processor in EAS's usual form (an app.tar.gz in a
bucket beside an oss:// model) answers through the gateway, and a service whose model URL
cannot be fetched reaches FAILED with the reason and deletes."""

from __future__ import annotations

import io
import tarfile
import textwrap

import httpx
import pytest

from liqi.client import Client
from liqi.errors import NotFoundError
from tests.services.conftest import BUCKET, PROJECT, wait_failed, wait_running

pytestmark = pytest.mark.timeout(300)

APP = textwrap.dedent(
    """
    import os
    import allspark

    class Echo(allspark.BaseProcessor):
        def initialize(self):
            model = self.get_model_path().decode()
            self.files = sorted(os.listdir(model))

        def process(self, data):
            return b"model files: " + ",".join(self.files).encode() + b"; you said " + data, 200
    """
)


def _archive(files: dict[str, str]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_a_python_processor_from_an_oss_archive_beside_an_oss_model(admin: Client) -> None:
    admin.put_object(BUCKET, "proc/app.tar.gz", _archive({"app.py": APP}))
    spec = {
        "name": "pyproc",
        "processor_type": "python",
        "generate_token": "false",
        "processor_path": f"oss://{BUCKET}/proc/app.tar.gz",
        "processor_entry": "app.py",
        "model_path": f"oss://{BUCKET}/models/",
        "metadata": {"instance": 1, "cpu": 1},
    }
    admin.create_service(spec, project=PROJECT)
    try:
        info = wait_running(admin, "pyproc")
        answer = httpx.post(info.endpoint, content=b"hello", timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.content.startswith(b"model files: ")
        assert b"saved_model.pb" in answer.content
        assert answer.content.endswith(b"; you said hello")
        # The same code as a folder in the bucket: a new version rolls out and answers.
        admin.put_object(BUCKET, "procdir/app.py", APP.replace("you said", "folder says").encode())
        changed = admin.modify_service("pyproc", {"processor_path": f"oss://{BUCKET}/procdir/"})
        assert changed.current_version == 2
        assert wait_running(admin, "pyproc").current_version == 2
        again = httpx.post(info.endpoint, content=b"hi", timeout=30)
        assert again.status_code == 200, again.text
        assert again.content.endswith(b"; folder says hi")
    finally:
        admin.delete_service("pyproc")


def test_an_unreachable_model_url_fails_the_service_which_then_deletes(admin: Client) -> None:
    spec = {
        "name": "nowhere",
        "model_path": "http://127.0.0.1:9/model.tar.gz",
        "processor": "tensorflow_cpu_1.15",
        "metadata": {"instance": 1},
    }
    admin.create_service(spec, project=PROJECT)
    info = wait_failed(admin, "nowhere", timeout_s=60)
    assert (
        "could not stage: Cannot download the model http://127.0.0.1:9/model.tar.gz" in info.reason
    )
    admin.delete_service("nowhere")
    admin.wait_service_deleted("nowhere", timeout_s=30)
    with pytest.raises(NotFoundError):
        admin.get_service("nowhere")
