"""A model-server instance runs user code (a Python processor): it attacks the server it runs
on, through a real control plane with its default isolation (the sandbox), and must fail.

A processor that reads LIQI_HOME's secrets, the database, another instance's folder and the
control plane's environment answers with what it got; it got nothing of them. A machine that
cannot sandbox fails these tests with the reason instead of skipping them.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from liqi.sandbox import workload_user_name
from tests.support.servers import LiveServer, kill_instances
from tests.support.workloads import deploy_processor

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("require_sandbox")]

ATTACK = """
    import json, os
    import allspark

    HOME = {home!r}

    def attempt(path):
        try:
            if os.path.isdir(path):
                return sorted(os.listdir(path))
            with open(path, "rb") as f:
                return f.read(64).decode("latin-1")
        except OSError as exc:
            return type(exc).__name__

    class Attack(allspark.BaseProcessor):
        def process(self, data):
            seen = {{
                name: attempt(os.path.join(HOME, name))
                for name in ("config.toml", "secret.key", "liqi.db", "services", "store")
            }}
            seen["victim"] = attempt(data.decode())
            seen["own"] = attempt("/instance")
            seen["env"] = sorted(os.environ)
            seen["uid"] = os.getuid()
            seen["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
            return json.dumps(seen).encode(), 200
"""

ECHO = """
    import allspark

    class Echo(allspark.BaseProcessor):
        def process(self, data):
            return data, 200
"""


def test_a_processor_sees_nothing_of_the_server_or_another_instance(
    sqlite_server: LiveServer, tmp_path: Path
) -> None:
    home = sqlite_server.home
    os.environ["LIQI_DATABASE_URL_PROBE"] = "secret-from-the-control-plane"
    try:
        with sqlite_server.admin() as admin:
            deploy_processor(admin, "victim", tmp_path / "victim", ECHO)
            [victim_dir] = (home / "services" / "victim").iterdir()
            assert (victim_dir / "spec.json").exists()
            attack = ATTACK.format(home=str(home))
            url = deploy_processor(admin, "attacker", tmp_path / "attacker", attack).endpoint
            answer = httpx.post(url, content=str(victim_dir / "spec.json").encode(), timeout=30)
            for name in ("attacker", "victim"):
                admin.delete_service(name)
                admin.wait_service_deleted(name, timeout_s=60)
    finally:
        del os.environ["LIQI_DATABASE_URL_PROBE"]
        kill_instances(home)  # instances outlive the control plane: none may outlive the test
    assert answer.status_code == 200, answer.text
    seen = answer.json()
    assert (home / "config.toml").exists()
    assert (home / "secret.key").exists()
    assert seen["config.toml"] == "FileNotFoundError"
    assert seen["secret.key"] == "FileNotFoundError"
    assert seen["liqi.db"] == "FileNotFoundError"
    assert seen["store"] == "FileNotFoundError"
    assert seen["services"] == "FileNotFoundError"  # nothing of LIQI_HOME exists
    assert "spec.json" in seen["own"]  # its own folder, at /instance
    assert seen["victim"] == "FileNotFoundError"
    assert "LIQI_DATABASE_URL_PROBE" not in seen["env"]
    assert max(seen["pids"]) < 100  # its own PID namespace: none of the host's processes
    if os.geteuid() == 0:
        assert seen["uid"] != 0
        import pwd

        assert pwd.getpwuid(seen["uid"]).pw_name.startswith(workload_user_name("")[:6])
