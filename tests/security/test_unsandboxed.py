"""Where a server runs user code without a sandbox (isolation "none"), only superuser keys may
run code on it: a member's job or service is refused with the setting named; the superuser's
are accepted."""

from __future__ import annotations

from pathlib import Path

import pytest

from liqi.errors import PermissionDeniedError
from tests.support.servers import live_server

pytestmark = pytest.mark.timeout(120)


def test_without_a_sandbox_members_may_not_run_code(tmp_path: Path) -> None:
    with live_server(tmp_path / "home", None, isolation="none") as live, live.admin() as admin:
        admin.create_project("nobox")
        key = admin.create_key(project="nobox", role="member")
        assert key.secret
        script = tmp_path / "hello.py"
        script.write_text("print('hello')\n")
        admin.add_resource(script, project="nobox")
        resource = "odps://nobox/resources/hello.py"
        service = {"name": "nobox_svc", "model_path": "oss://nobox-models/m/", "metadata": {}}
        with live.client(key.access_id, key.secret) as member:
            with pytest.raises(PermissionDeniedError, match="LIQI_ISOLATION=sandbox"):
                member.submit_job(resource, project="nobox")
            with pytest.raises(PermissionDeniedError, match="only a superuser key may deploy"):
                member.create_service(service, project="nobox")
        job = admin.submit_job(resource, project="nobox")
        assert admin.wait_job(job.id, timeout_s=60).state == "SUCCEEDED"
