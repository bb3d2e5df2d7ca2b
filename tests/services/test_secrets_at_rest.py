"""No secret in clear at rest: a member's service with a token runs, answers, is restarted
after a crash, and neither the token nor the member's secret (which the instance uses to read
its model) is anywhere under LIQI_HOME: not in the database or its WAL, not in the instance's
spec.json or log. Only the admin's own profile (config.toml, 0600) holds a secret."""

from __future__ import annotations

import httpx
import pytest

from liqi.client import Client
from tests.services.conftest import PROJECT, seed_spec, wait_running, wait_until
from tests.support.servers import LiveServer, kill_instances

pytestmark = pytest.mark.timeout(300)

TOKEN = "tok-" + "s3cr3t" * 6


def _holders(plane: LiveServer, needles: dict[str, bytes]) -> list[str]:
    found = []
    for path in sorted(plane.home.rglob("*")):
        if not path.is_file() or path.name == "config.toml" or path.is_symlink():
            continue
        data = path.read_bytes()
        found += [f"{what} in {path}" for what, needle in needles.items() if needle in data]
    return found


def test_no_token_or_key_in_clear_under_liqi_home(plane: LiveServer, admin: Client) -> None:
    key = admin.create_key(project=PROJECT, role="member", name="secrets-at-rest")
    assert key.secret
    with plane.client(key.access_id, key.secret) as member:
        member.create_service(seed_spec("sealed", token=TOKEN), project=PROJECT)
        try:
            info = wait_running(member, "sealed")
            [instance] = info.instances
            answered = httpx.get(info.endpoint, headers={"Authorization": TOKEN}, timeout=30)
            assert answered.status_code == 200
            direct = f"{instance.url}/api/predict/sealed"
            refused = httpx.get(direct, timeout=30)  # the instance checks the token too
            assert refused.status_code == 401
            kill_instances(plane.home)  # restarted from the stored spec, secrets added back
            restarted = wait_until(
                member,
                "sealed",
                lambda i: i.state == "RUNNING" and i.instances[0].restarts >= 1,
            )
            url = f"{restarted.instances[0].url}/api/predict/sealed"
            assert httpx.get(url, timeout=30).status_code == 401
            ok = httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
            assert ok.status_code == 200
            needles = {"token": TOKEN.encode(), "member secret": key.secret.encode()}
            assert _holders(plane, needles) == []
        finally:
            member.delete_service("sealed")
            member.wait_service_deleted("sealed", timeout_s=60)
