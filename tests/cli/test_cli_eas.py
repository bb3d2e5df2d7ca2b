"""`liqi eas` / `liqi service` in process (CliRunner) against a real control plane.

The services here ask for 0 instances, so no model server starts: these tests are about
the commands, their output and their errors. Services with real instances are in
test_cli_eas_live.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from liqi.cli.main import cli
from tests.support.servers import LiveServer, live_server

pytestmark = pytest.mark.timeout(60)

OSS_CREDENTIALS = """[OSSCredentials]
host=cn-hangzhou.oss.aliyun-inc.com
accessid=AK_IGNORED
accesskey=SK_IGNORED
"""


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    home = tmp_path_factory.mktemp("eas_cli") / "home"
    # A member's key names a model folder under the tests' temporary root.
    roots = (tmp_path_factory.getbasetemp(),)
    with live_server(home, None, local_model_roots=roots) as live:
        yield live


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder in the TF Serving layout; no instance ever loads it (0 instances)."""
    folder = tmp_path_factory.mktemp("model")
    (folder / "1").mkdir()
    (folder / "1" / "saved_model.pb").write_bytes(b"not loaded by these tests")
    return folder


def run(
    plane: LiveServer, *args: str, input: str | None = None, env: dict[str, str] | None = None
) -> Result:
    return CliRunner().invoke(
        cli, ["--home", str(plane.home), *args], input=input, env=env, catch_exceptions=False
    )


def spec_file(folder: Path, name: str, model_dir: Path, **extra: Any) -> Path:
    """The seed's eas_mnist.json form, with no instance."""
    document: dict[str, Any] = {
        "name": name,
        "generate_token": "false",
        "model_path": str(model_dir),
        "processor": "tensorflow_cpu",
        "metadata": {"region": "shanghai", "instance": 0, "cpu": 1, "memory": 2000},
    }
    document.update(extra)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(document, indent=2))
    return path


def service_names(plane: LiveServer) -> list[str]:
    listed = run(plane, "eas", "list", "-o", "json")
    assert listed.exit_code == 0, listed.output
    return [s["name"] for s in json.loads(listed.stdout)]


def test_create_prints_the_endpoint_table_and_waits(
    plane: LiveServer, model_dir: Path, tmp_path: Path
) -> None:
    path = spec_file(tmp_path, "cli_token", model_dir, generate_token="true", extra_field=1)
    created = run(plane, "eas", "create", str(path))
    assert created.exit_code == 0, created.output
    lines = created.stdout.splitlines()
    assert lines[0].startswith("[RequestId]: ")
    endpoint = f"{plane.url}/api/predict/cli_token"
    assert re.search(rf"^\|\s+Endpoint \| {re.escape(endpoint)}\s+\|$", created.stdout, re.M)
    token = run(plane, "eas", "token", "cli_token").stdout.strip()
    assert len(token) == 40
    assert re.search(rf"^\|\s+Token \| {re.escape(token)}\s+\|$", created.stdout, re.M)
    assert "[OK] Creating service" in lines
    assert lines[-1] == "[OK] Service is running"
    # Ignored fields are warnings on stderr, not in the output.
    assert "[WARNING] Ignored field extra_field: accepted, not used by liqi." in created.stderr
    assert "extra_field" not in created.stdout

    desc = json.loads(run(plane, "eas", "desc", "cli_token", "-o", "json").stdout)
    assert desc["state"] == "RUNNING"
    assert desc["token_required"] is True
    assert desc["token"] is None  # only create and `token` show it


def test_create_without_a_token_and_without_waiting(
    plane: LiveServer, model_dir: Path, tmp_path: Path
) -> None:
    path = spec_file(tmp_path, "cli_no_wait", model_dir)
    created = run(plane, "eas", "create", str(path), "--no-wait")
    assert created.exit_code == 0, created.output
    assert "none (generate_token is false)" in created.stdout
    assert "[OK]" not in created.stdout
    told = run(plane, "eas", "token", "cli_no_wait")
    assert told.stdout.strip() == (
        "Service cli_no_wait takes requests without a token (generate_token is false)."
    )
    as_json = json.loads(run(plane, "eas", "token", "cli_no_wait", "-o", "json").stdout)
    assert as_json == {"service": "cli_no_wait", "token_required": False, "token": None}


def test_create_json_output_keeps_stdout_parseable(
    plane: LiveServer, model_dir: Path, tmp_path: Path
) -> None:
    path = spec_file(tmp_path, "cli_json", model_dir, generate_token=True)
    created = run(plane, "eas", "create", str(path), "-o", "json")
    assert created.exit_code == 0, created.output
    data = json.loads(created.stdout)
    assert data["name"] == "cli_json"
    assert data["state"] == "RUNNING"
    assert data["token"]  # kept from the answer to create
    assert "[OK] Service is running" in created.stderr
    assert "[RequestId]" in created.stderr


def test_json_shapes_of_list_desc_versions_events(
    plane: LiveServer, model_dir: Path, tmp_path: Path
) -> None:
    assert (
        run(plane, "eas", "create", str(spec_file(tmp_path, "cli_shapes", model_dir))).exit_code
        == 0
    )
    listed = list(json.loads(run(plane, "eas", "list", "-o", "json").stdout))
    mine = next(s for s in listed if s["name"] == "cli_shapes")
    assert mine["project"] == "default"
    assert mine["endpoint"] == f"{plane.url}/api/predict/cli_shapes"
    assert {"state", "reason", "instances_wanted", "instances_ready", "current_version"} <= set(
        mine
    )
    assert [
        s["name"]
        for s in json.loads(run(plane, "eas", "list", "-p", "default", "-o", "json").stdout)
    ] == sorted(s["name"] for s in listed)

    desc = json.loads(run(plane, "eas", "desc", "cli_shapes", "-o", "json").stdout)
    assert desc["model_path"] == str(model_dir)
    assert desc["processor"] == "tensorflow_cpu"
    assert (desc["cpu"], desc["memory_mb"]) == (1.0, 2000)
    assert desc["instances"] == []
    assert desc["direct_endpoints"] == []
    assert desc["config"]["metadata"]["region"] == "shanghai"
    assert desc["events"][0]["message"].startswith("created version 1 by ")

    versions = json.loads(run(plane, "eas", "versions", "cli_shapes", "-o", "json").stdout)
    assert [(v["version"], v["current"]) for v in versions] == [(1, True)]
    assert versions[0]["config"]["name"] == "cli_shapes"

    events = json.loads(
        run(plane, "eas", "events", "cli_shapes", "--limit", "2", "-o", "json").stdout
    )
    assert len(events) == 2
    assert set(events[0]) == {"at", "level", "message"}

    table = run(plane, "eas", "desc", "cli_shapes").stdout
    for label in ("state", "RUNNING", "endpoint", "token required", "instances", "0 ready of 0"):
        assert label in table
    assert "cli_shapes" in run(plane, "eas", "list").stdout
    assert "created version 1" in run(plane, "eas", "events", "cli_shapes").stdout


def test_stop_start_modify_rollback_scale(
    plane: LiveServer, model_dir: Path, tmp_path: Path
) -> None:
    assert (
        run(plane, "eas", "create", str(spec_file(tmp_path, "cli_life", model_dir))).exit_code == 0
    )
    stopped = run(plane, "eas", "stop", "cli_life")
    assert stopped.exit_code == 0, stopped.output
    assert stopped.stdout.splitlines() == ["[OK] Stopping service", "[OK] Service is stopped"]
    assert (
        json.loads(run(plane, "eas", "desc", "cli_life", "-o", "json").stdout)["state"] == "STOPPED"
    )
    started = run(plane, "eas", "start", "cli_life")
    assert started.exit_code == 0, started.output
    assert started.stdout.splitlines()[-1] == "[OK] Service is running"

    patch = tmp_path / "patch.json"
    patch.write_text('{"metadata": {"cpu": 2}}')
    modified = run(plane, "eas", "modify", "cli_life", "-s", str(patch))
    assert modified.exit_code == 0, modified.output
    assert modified.stdout.splitlines()[0] == "[OK] Updating service to version 2"
    assert modified.stdout.splitlines()[-1] == "[OK] Service is running"
    desc = json.loads(run(plane, "eas", "desc", "cli_life", "-o", "json").stdout)
    assert (desc["current_version"], desc["cpu"], desc["memory_mb"]) == (2, 2.0, 2000)

    replacement = tmp_path / "replace.json"
    replacement.write_text(
        json.dumps({"model_path": str(model_dir), "processor": "onnx", "metadata": {"instance": 0}})
    )
    replaced = run(
        plane, "eas", "modify", "cli_life", "-s", str(replacement), "--replace", "-o", "json"
    )
    assert replaced.exit_code == 0, replaced.output
    data = json.loads(replaced.stdout)
    assert (data["current_version"], data["processor"], data["memory_mb"]) == (3, "onnx", None)

    rolled = run(plane, "eas", "rollback", "cli_life", "--version", "1")
    assert rolled.exit_code == 0, rolled.output
    assert rolled.stdout.splitlines()[0] == "[OK] Switching service to version 1"
    versions = json.loads(run(plane, "eas", "versions", "cli_life", "-o", "json").stdout)
    assert [(v["version"], v["current"]) for v in versions] == [(1, True), (2, False), (3, False)]
    table = run(plane, "eas", "versions", "cli_life").stdout
    assert "onnx" not in table
    assert str(model_dir) in table
    again = run(plane, "eas", "rollback", "cli_life", "--version", "1")
    assert again.exit_code == 5
    assert "already runs version 1" in again.stderr

    scaled = run(plane, "service", "scale", "cli_life", "--instances", "0", "--no-wait")
    assert scaled.exit_code == 0, scaled.output
    assert scaled.stdout.strip() == "[OK] Scaling service to 0 instance(s)"
    missing = run(plane, "eas", "scale", "cli_life")
    assert missing.exit_code == 2
    assert "Give the number of instances" in missing.stderr
    too_many = run(plane, "eas", "scale", "cli_life", "65")
    assert too_many.exit_code == 2
    assert "Instances=65 is out of range" in too_many.stderr


def test_the_service_alias_has_the_same_commands(plane: LiveServer) -> None:
    eas = run(plane, "eas", "--help").stdout
    service = run(plane, "service", "--help").stdout
    commands = eas[eas.index("Commands:") :].split("\n\n")[0]
    assert commands in service
    # The same listing: names and fields (other tests' services may change state meanwhile).
    by_service = json.loads(run(plane, "service", "list", "-o", "json").stdout)
    by_eas = json.loads(run(plane, "eas", "list", "-o", "json").stdout)
    assert [(s["name"], sorted(s)) for s in by_service] == [(s["name"], sorted(s)) for s in by_eas]


# -- bad input --------------------------------------------------------------------------------


def test_a_missing_model_path_creates_nothing(
    plane: LiveServer, model_dir: Path, tmp_path: Path
) -> None:
    path = spec_file(tmp_path, "cli_no_model", tmp_path / "nowhere")
    result = run(plane, "eas", "create", str(path))
    assert result.exit_code == 4
    assert result.stderr.startswith("Error: Model not found: the path")
    assert str(tmp_path / "nowhere") in result.stderr
    assert "[RequestId]" not in result.stdout
    assert "cli_no_model" not in service_names(plane)

    no_path = tmp_path / "no_path.json"
    no_path.write_text('{"name": "cli_no_model", "processor": "tensorflow_cpu"}')
    result = run(plane, "eas", "create", str(no_path))
    assert result.exit_code == 2
    assert "The service needs 'model_path'" in result.stderr
    assert "cli_no_model" not in service_names(plane)


def test_bad_json_and_missing_files_name_the_file(plane: LiveServer, tmp_path: Path) -> None:
    broken = tmp_path / "eas_broken.json"
    broken.write_text('{\n  "name": "cli_broken",\n  "processor": "tensorflow_cpu",\n}\n')
    result = run(plane, "eas", "create", str(broken))
    assert result.exit_code == 2
    assert f"Error: {broken} is not valid JSON" in result.stderr
    assert "line 4, column 1" in result.stderr
    assert "Traceback" not in result.output

    result = run(plane, "eas", "create", str(tmp_path / "nope.json"))
    assert result.exit_code == 2
    assert f"Service JSON file '{tmp_path / 'nope.json'}' does not exist" in result.stderr

    array = tmp_path / "array.json"
    array.write_text("[]")
    result = run(plane, "eas", "create", str(array))
    assert result.exit_code == 2
    assert "must hold a JSON object" in result.stderr


def test_wrong_types_name_the_field(plane: LiveServer, model_dir: Path, tmp_path: Path) -> None:
    path = spec_file(tmp_path, "cli_types", model_dir, metadata={"instance": "two"})
    result = run(plane, "eas", "create", str(path))
    assert result.exit_code == 2
    assert "'metadata.instance' must be a number, received 'two'" in result.stderr
    path = spec_file(tmp_path, "cli_types", model_dir, generate_token="yes please")
    result = run(plane, "eas", "create", str(path))
    assert result.exit_code == 2
    assert "'generate_token' must be true or false" in result.stderr
    assert "cli_types" not in service_names(plane)


def test_a_duplicate_name_is_a_conflict(plane: LiveServer, model_dir: Path, tmp_path: Path) -> None:
    path = spec_file(tmp_path, "cli_twice", model_dir)
    assert run(plane, "eas", "create", str(path), "--no-wait").exit_code == 0
    again = run(plane, "eas", "create", str(path))
    assert again.exit_code == 5
    assert "Error: Service 'cli_twice' already exists" in again.stderr
    assert "liqi eas modify cli_twice -s <json>" in again.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["desc"],
        ["stop"],
        ["start"],
        ["scale", "1"],
        ["delete", "--yes"],
        ["token"],
        ["versions"],
        ["events"],
        ["logs"],
        ["rollback", "--version", "1"],
    ],
)
def test_an_unknown_service_is_not_found(plane: LiveServer, command: list[str]) -> None:
    result = run(plane, "eas", command[0], "cli_ghost", *command[1:])
    assert result.exit_code == 4, result.output
    assert result.stderr.startswith("Error: Service 'cli_ghost' does not exist")


def test_modify_of_an_unknown_service(plane: LiveServer, tmp_path: Path) -> None:
    patch = tmp_path / "patch.json"
    patch.write_text('{"metadata": {"instance": 2}}')
    result = run(plane, "eas", "modify", "cli_ghost", "-s", str(patch))
    assert result.exit_code == 4
    assert "Service 'cli_ghost' does not exist" in result.stderr


def test_osscredentials_is_checked_but_not_used(
    plane: LiveServer, model_dir: Path, tmp_path: Path
) -> None:
    missing = spec_file(tmp_path, "cli_oss", model_dir, osscredentials="~/tools/.osscredentials")
    result = run(plane, "eas", "create", str(missing), env={"HOME": str(tmp_path)})
    assert result.exit_code == 2
    assert "'osscredentials' in" in result.stderr
    assert "'~/tools/.osscredentials' does not exist" in result.stderr
    assert "cli_oss" not in service_names(plane)

    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / ".osscredentials").write_text("access_id=a\naccess_key=b\n")  # an eas_config.ini
    result = run(plane, "eas", "create", str(missing), env={"HOME": str(tmp_path)})
    assert result.exit_code == 2
    assert "is a eas_config.ini, not a .osscredentials file" in result.stderr

    (tools / ".osscredentials").write_text(OSS_CREDENTIALS)
    result = run(plane, "eas", "create", str(missing), env={"HOME": str(tmp_path)})
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "[OK] Service is running"
    assert "cli_oss" in service_names(plane)


def test_delete_asks_unless_yes(plane: LiveServer, model_dir: Path, tmp_path: Path) -> None:
    assert (
        run(plane, "eas", "create", str(spec_file(tmp_path, "cli_del", model_dir))).exit_code == 0
    )
    refused = run(plane, "eas", "delete", "cli_del")  # no stdin
    assert refused.exit_code == 2
    assert "Service 'cli_del' was not deleted: no answer" in refused.stderr
    assert "Pass --yes" in refused.stderr
    declined = run(plane, "eas", "delete", "cli_del", input="n\n")
    assert declined.exit_code == 1
    assert "Service cli_del was not deleted." in declined.stdout
    assert "cli_del" in service_names(plane)

    deleted = run(plane, "eas", "delete", "cli_del", input="y\n")
    assert deleted.exit_code == 0, deleted.output
    assert "Delete service cli_del (RUNNING, 0 ready instance(s), 1 version(s))?" in deleted.stdout
    assert deleted.stdout.splitlines()[-1] == "[OK] Service is deleted"
    assert "cli_del" not in service_names(plane)

    assert (
        run(plane, "eas", "create", str(spec_file(tmp_path, "cli_del2", model_dir))).exit_code == 0
    )
    assert run(plane, "eas", "delete", "cli_del2", "--yes").exit_code == 0
    assert "cli_del2" not in service_names(plane)


def test_logs_of_a_service_without_instances(
    plane: LiveServer, model_dir: Path, tmp_path: Path
) -> None:
    assert (
        run(plane, "eas", "create", str(spec_file(tmp_path, "cli_logs", model_dir))).exit_code == 0
    )
    result = run(plane, "eas", "logs", "cli_logs", "--follow")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "Service cli_logs has no instance log yet." in result.stderr
    result = run(plane, "eas", "logs", "cli_logs", "--instance", "i-nope")
    assert result.exit_code == 4
    assert "has no instance 'i-nope'" in result.stderr


# -- -c eas_config.ini ------------------------------------------------------------------------


def test_config_file_keys_sign_the_requests(
    plane: LiveServer, model_dir: Path, tmp_path: Path
) -> None:
    with plane.admin() as admin:
        key = admin.create_key(project="default", role="member", name="eas-cli")
    assert key.secret
    ini = tmp_path / "eas_config.ini"
    ini.write_text(f"# 用户的云账号信息\naccess_id={key.access_id}\naccess_key={key.secret}\n")
    path = spec_file(tmp_path, "cli_signed", model_dir)
    created = run(plane, "eas", "-c", str(ini), "create", str(path), "-o", "json")
    assert created.exit_code == 0, created.output
    assert json.loads(created.stdout)["created_by"] == key.access_id
    # The alias takes -c too; the profile's key would be the admin's.
    desc = json.loads(
        run(plane, "service", "-c", str(ini), "desc", "cli_signed", "-o", "json").stdout
    )
    assert desc["created_by"] == key.access_id

    wrong = tmp_path / "wrong.ini"
    wrong.write_text(f"access_id={key.access_id}\naccess_key={'x' * len(key.secret)}\n")
    result = run(plane, "eas", "-c", str(wrong), "list")
    assert result.exit_code == 3
    assert f"Signature mismatch for access id '{key.access_id}'" in result.stderr

    placeholder = tmp_path / "placeholder.ini"
    placeholder.write_text("access_id=${your_access_id}\naccess_key=${your_access_key}\n")
    result = run(plane, "eas", "-c", str(placeholder), "list")
    assert result.exit_code == 2
    assert "line 1: access_id is still the placeholder '${your_access_id}'" in result.stderr

    result = run(plane, "eas", "-c", str(tmp_path / "absent.ini"), "list")
    assert result.exit_code == 2
    assert "absent.ini: no such file" in result.stderr


def test_a_member_key_without_the_project_cannot_see_services(
    plane: LiveServer, model_dir: Path, tmp_path: Path
) -> None:
    with plane.admin() as admin:
        admin.create_project("eas_other")
        key = admin.create_key(project="eas_other", role="member")
    assert key.secret
    ini = tmp_path / "eas_config.ini"
    ini.write_text(f"access_id={key.access_id}\naccess_key={key.secret}\n")
    path = spec_file(tmp_path, "cli_private", model_dir)
    assert run(plane, "eas", "create", str(path), "--no-wait").exit_code == 0
    result = run(plane, "eas", "-c", str(ini), "desc", "cli_private")
    assert result.exit_code == 4
    assert f"your access key {key.access_id} has no role in its project" in result.stderr
    listed = json.loads(run(plane, "eas", "-c", str(ini), "list", "-o", "json").stdout)
    assert listed == []
