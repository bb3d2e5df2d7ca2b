"""No secret in clear at rest: a member's service with a token runs, answers, is restarted
after a crash, and neither the token nor the member's secret (which the instance uses to read
its model) is anywhere under LIQI_HOME: not in the database or its WAL, not in the instance's
spec.json or log. Only the admin's own profile (config.toml, 0600) holds a secret."""

from __future__ import annotations

import textwrap

import httpx
import pytest

from liqi.client import Client
from liqi.errors import AuthenticationError, PermissionDeniedError
from tests.services.conftest import BUCKET, PROJECT, seed_spec, wait_running, wait_until
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


LEAK = textwrap.dedent(
    """
    import json
    import os
    import allspark

    class Leak(allspark.BaseProcessor):
        def process(self, data):
            env = {k: os.environ.get(k, "") for k in ("LIQI_ACCESS_ID", "LIQI_ACCESS_KEY")}
            return json.dumps(env).encode(), 200
    """
)


def _leaky(name: str) -> dict[str, object]:
    """A member's Python processor (LEAK, in the bucket) beside the bucket's model."""
    return {
        "name": name,
        "generate_token": "false",
        "processor_type": "python",
        "processor_path": f"oss://{BUCKET}/leak/",
        "processor_entry": "app.py",
        "model_path": f"oss://{BUCKET}/models/",
        "metadata": {"instance": 1},
    }


def test_a_processor_that_prints_its_key_gets_only_a_scoped_workload_key(
    plane: LiveServer, admin: Client
) -> None:
    """The attack: a member deploys (or modifies a service into) a Python processor that
    hands out the key in its environment. That key is the instance's own: it reads the
    service's model and nothing else, and it dies with the instance."""
    key = admin.create_key(project=PROJECT, role="member", name="leaker")
    assert key.secret
    admin.put_object(BUCKET, "leak/app.py", LEAK.encode())
    with plane.client(key.access_id, key.secret) as member:
        member.create_service(_leaky("leaky"), project=PROJECT)
        try:
            info = wait_running(member, "leaky")
            leaked = httpx.post(info.endpoint, content=b"", timeout=30).json()
        finally:
            member.delete_service("leaky")
            member.wait_service_deleted("leaky", timeout_s=60)
    assert leaked["LIQI_ACCESS_ID"] != key.access_id
    assert leaked["LIQI_ACCESS_KEY"] not in (key.secret, "")
    stolen = plane.client(leaked["LIQI_ACCESS_ID"], leaked["LIQI_ACCESS_KEY"])
    with stolen, pytest.raises(AuthenticationError, match="revoked"):
        stolen.list_objects(BUCKET, prefix="models/")  # the instance is gone: revoked
    assert leaked["LIQI_ACCESS_ID"] not in [k.access_id for k in admin.list_keys()]


def test_a_workload_key_reads_its_model_and_nothing_else(plane: LiveServer, admin: Client) -> None:
    key = admin.create_key(project=PROJECT, role="member", name="scoped")
    assert key.secret
    admin.put_object(BUCKET, "leak/app.py", LEAK.encode())
    admin.put_object(BUCKET, "private/secret.txt", b"not for instances")
    with plane.client(key.access_id, key.secret) as member:
        member.create_service(_leaky("leaky2"), project=PROJECT)
        try:
            info = wait_running(member, "leaky2")
            leaked = httpx.post(info.endpoint, content=b"", timeout=30).json()
            with plane.client(leaked["LIQI_ACCESS_ID"], leaked["LIQI_ACCESS_KEY"]) as stolen:
                listed = stolen.list_objects(BUCKET, prefix="models/")
                assert any(o.key.endswith("saved_model.pb") for o in listed.objects)
                with pytest.raises(PermissionDeniedError, match="workload key"):
                    stolen.list_objects(BUCKET, prefix="private/")
                with pytest.raises(PermissionDeniedError, match="workload key"):
                    stolen.stat_object(BUCKET, "private/secret.txt")
                with pytest.raises(PermissionDeniedError, match="workload key"):
                    stolen.put_object(BUCKET, "models/evil.bin", b"x")
                with pytest.raises(PermissionDeniedError, match="workload key"):
                    stolen.list_services()
                with pytest.raises(PermissionDeniedError, match="workload key"):
                    stolen.create_key(project=PROJECT)
        finally:
            member.delete_service("leaky2")
            member.wait_service_deleted("leaky2", timeout_s=60)
