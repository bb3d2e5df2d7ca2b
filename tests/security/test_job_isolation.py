"""A member's job script attacks the server it runs on, through a real control plane; it must
fail.

The server runs with its default isolation (the sandbox: CI has root and bubblewrap); a
machine that cannot sandbox fails these tests with the reason instead of skipping them.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from liqi.cli.main import cli
from liqi.sandbox import workload_user_name
from tests.security.conftest import Member
from tests.support.waiting import wait_until
from tests.support.workloads import processes_in, workload_cgroups

pytestmark = pytest.mark.usefixtures("require_sandbox")

ATTACK = """
    import json, os, time
    home = {home!r}
    seen = {{}}
    for name in ("config.toml", "secret.key", "liqi.db", "store", "jobs"):
        seen[name] = os.path.exists(os.path.join(home, name))
    seen["env"] = sorted(os.environ)
    seen["uid"] = os.getuid()
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            open("escaped", "w").close()
            time.sleep(600)
        os._exit(0)
    while not os.path.exists("escaped"):
        time.sleep(0.01)
    print("SEEN " + json.dumps(seen), flush=True)
"""


def test_a_jobs_script_sees_nothing_of_the_server_and_leaves_nothing_behind(
    member: Member, tmp_path: Path
) -> None:
    home = member.live.home
    os.environ["LIQI_DATABASE_URL_PROBE"] = "secret-from-the-control-plane"
    try:
        script = tmp_path / "attack.py"
        script.write_text(textwrap.dedent(ATTACK.format(home=str(home))))
        uri = member.client.add_resource(script, project=member.project).uri
        submitted = member.client.submit_job(uri, project=member.project)
        job = member.client.wait_job(submitted.id, timeout_s=90)
        out = "".join(member.client.follow_logs(job.id, follow=False))
    finally:
        del os.environ["LIQI_DATABASE_URL_PROBE"]
    assert job.state == "SUCCEEDED", (job.reason, out)
    seen = json.loads(out.split("SEEN ", 1)[1].splitlines()[0])
    # only its own job folder's path exists under LIQI_HOME
    assert seen["config.toml"] is False
    assert seen["secret.key"] is False
    assert seen["liqi.db"] is False
    assert seen["store"] is False
    assert seen["jobs"] is True
    assert "LIQI_DATABASE_URL_PROBE" not in seen["env"]
    assert "LIQI_JOB_ID" in seen["env"]
    if os.geteuid() == 0:
        assert seen["uid"] != 0
    # The double-forked child died with the job (which succeeded): no process runs in the
    # job's folder, and its cgroups are gone.
    work = home / "jobs" / job.id / "work"
    wait_until(lambda: not processes_in(work), "no process in the job's folder", interval_s=0.05)
    assert workload_cgroups(f"job-{job.id}") == []


def test_server_status_says_which_isolation(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"LIQI_HOME": str(tmp_path / "home")}
    default = runner.invoke(cli, ["server", "status", "-o", "json"], env=env)
    assert default.exit_code == 0, default.output
    assert json.loads(default.stdout)["isolation"] == "sandbox"
    none = runner.invoke(
        cli, ["server", "status", "-o", "json"], env={**env, "LIQI_ISOLATION": "none"}
    )
    assert json.loads(none.stdout)["isolation"] == "none"
    assert json.loads(none.stdout)["isolation_warning"]
    bad = runner.invoke(cli, ["server", "status"], env={**env, "LIQI_ISOLATION": "jail"})
    assert bad.exit_code != 0
    assert "'jail'" in bad.output


def test_workload_user_names_are_valid_unix_names() -> None:
    assert workload_user_name("1") == "liqi-p1"
    assert workload_user_name("My Project/../x" * 5).startswith("liqi-pmyproject")
    assert len(workload_user_name("p" * 100)) <= 32
