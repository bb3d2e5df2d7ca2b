"""The CLI in process (CliRunner) against a real server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from liqi.cli.main import cli
from liqi.config import ProfileFile
from tests.support.servers import LiveServer


def run(home: Path, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(
        cli, ["--home", str(home), *args], input=input, catch_exceptions=False
    )


def test_project_lifecycle_through_the_cli(server: LiveServer) -> None:
    created = run(server.home, "project", "create", "algo_platform", "-d", "the seed's project")
    assert created.exit_code == 0, created.output
    assert "algo_platform created" in created.output
    listed = run(server.home, "project", "list", "--output", "json")
    assert [p["name"] for p in json.loads(listed.output)] == ["algo_platform", "default"]
    described = run(server.home, "project", "describe", "algo_platform", "-o", "json")
    assert json.loads(described.output)["description"] == "the seed's project"
    deleted = run(server.home, "project", "delete", "algo_platform", "--yes")
    assert deleted.exit_code == 0
    assert "algo_platform" not in run(server.home, "project", "list").output


def test_delete_asks_for_confirmation(sqlite_server: LiveServer) -> None:
    run(sqlite_server.home, "project", "create", "keep_me")
    refused = run(sqlite_server.home, "project", "delete", "keep_me", input="n\n")
    assert refused.exit_code == 1
    assert "keep_me" in run(sqlite_server.home, "project", "list").output


def test_missing_project_prints_one_line_error_without_traceback(sqlite_server: LiveServer) -> None:
    result = run(sqlite_server.home, "project", "describe", "nope_nope")
    assert result.exit_code == 4
    assert result.stderr.startswith("Error: Project 'nope_nope' does not exist")
    assert "Traceback" not in result.output


def test_key_create_list_revoke(sqlite_server: LiveServer) -> None:
    made = run(
        sqlite_server.home, "key", "create", "--project", "default", "--name", "ci", "-o", "json"
    )
    assert made.exit_code == 0, made.output
    key = json.loads(made.output)
    assert key["secret"]
    assert key["roles"] == {"default": "member"}
    listed = json.loads(run(sqlite_server.home, "key", "list", "-o", "json").output)
    assert key["access_id"] in [k["access_id"] for k in listed]
    table = run(sqlite_server.home, "key", "list").output
    assert key["access_id"] in table  # ids are not truncated in tables
    revoked = run(sqlite_server.home, "key", "revoke", key["access_id"], "-y")
    assert revoked.exit_code == 0
    after = {
        k["access_id"]: k
        for k in json.loads(run(sqlite_server.home, "key", "list", "-o", "json").output)
    }
    assert after[key["access_id"]]["revoked_at"] is not None


def test_key_grant_through_the_cli(sqlite_server: LiveServer) -> None:
    run(sqlite_server.home, "project", "create", "other_proj")
    key = json.loads(
        run(sqlite_server.home, "key", "create", "--project", "default", "-o", "json").output
    )
    granted = run(
        sqlite_server.home,
        "key",
        "grant",
        key["access_id"],
        "--project",
        "other_proj",
        "--role",
        "admin",
    )
    assert granted.exit_code == 0, granted.output
    listed = {
        k["access_id"]: k
        for k in json.loads(run(sqlite_server.home, "key", "list", "-o", "json").output)
    }
    assert listed[key["access_id"]]["roles"] == {"default": "member", "other_proj": "admin"}


def test_no_profile_is_a_config_error(tmp_path: Path) -> None:
    result = run(tmp_path / "empty", "project", "list")
    assert result.exit_code == 2
    assert "No access key configured" in result.stderr


def test_unreachable_server_names_the_endpoint(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["--home", str(tmp_path), "project", "list"],
        env={
            "LIQI_ENDPOINT": "http://127.0.0.1:9",
            "LIQI_ACCESS_ID": "LQX1",
            "LIQI_ACCESS_KEY": "k" * 12,
        },
    )
    assert result.exit_code == 6
    assert "Cannot reach the liqi server at http://127.0.0.1:9" in result.stderr


def test_unknown_flag_is_a_usage_error(tmp_path: Path) -> None:
    result = run(tmp_path, "project", "list", "--colour")
    assert result.exit_code == 2
    assert "No such option '--colour'" in result.stderr


def test_wrong_secret_from_env_is_reported(sqlite_server: LiveServer) -> None:
    profile = sqlite_server.admin_profile().get("default")
    result = CliRunner().invoke(
        cli,
        ["--home", str(sqlite_server.home), "project", "list"],
        env={"LIQI_ACCESS_KEY": "definitely-wrong"},
    )
    assert result.exit_code == 3
    assert f"Signature mismatch for access id '{profile.access_id}'" in result.stderr


def test_version_json() -> None:
    result = CliRunner().invoke(cli, ["version", "--output", "json"])
    assert result.exit_code == 0
    assert json.loads(result.output)["client"]


def test_config_show_masks_secrets(sqlite_server: LiveServer) -> None:
    profile = sqlite_server.admin_profile().get("default")
    assert profile.access_key
    shown = run(sqlite_server.home, "config", "show")
    assert profile.access_key not in shown.output
    assert profile.access_key[-4:] in shown.output
    data = json.loads(
        run(sqlite_server.home, "config", "show", "-o", "json", "--show-secrets").output
    )
    assert data["effective"]["access_key"] == profile.access_key
    assert data["current"] == "default"


def test_config_set_and_use(tmp_path: Path) -> None:
    assert (
        run(
            tmp_path, "--profile", "other", "config", "set", "endpoint", "http://127.0.0.1:9999"
        ).exit_code
        == 0
    )
    assert run(tmp_path, "config", "use", "other").exit_code == 0
    data = json.loads(run(tmp_path, "config", "show", "-o", "json").output)
    assert data["current"] == "other"
    assert data["effective"]["endpoint"] == "http://127.0.0.1:9999"
    missing = run(tmp_path, "config", "use", "ghost")
    assert missing.exit_code == 2
    assert "No profile named 'ghost'" in missing.stderr
    assert (tmp_path / "config.toml").stat().st_mode & 0o777 == 0o600


ODPS = """# 指定进入的 ODPS 项目空间
project_name={project}

# 用户的云账号信息
access_id={access_id}
access_key={access_key}

# ODPS 服务的访问链接
end_point=http://service-corp.odps.aliyun-inc.com/api
"""
EAS = """# 用户的云账号信息
access_id={access_id}
access_key={access_key}
"""
OSS = """[OSSCredentials]
host=cn-hangzhou.oss.aliyun-inc.com

# 用户的云账号信息
accessid={access_id}
accesskey={access_key}
"""


def write_seed_files(folder: Path, **values: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {"odps_config.ini": ODPS, "eas_config.ini": EAS, ".osscredentials": OSS}
    paths = []
    for name, template in files.items():
        path = folder / name
        path.write_text(template.format(**values), encoding="utf-8")
        paths.append(path)
    return paths


def test_config_import_of_the_seed_files_gives_a_working_profile(
    server: LiveServer, tmp_path: Path
) -> None:
    files = write_seed_files(
        tmp_path / "tools",
        project="wuji_mnist",
        access_id="LTAI5tSeedAccessId",
        access_key="SeedSecretKey1234",
    )
    result = run(server.home, "config", "import", *map(str, files))
    assert result.exit_code == 0, result.output
    assert "Created project wuji_mnist" in result.output
    assert "end_point http://service-corp.odps.aliyun-inc.com/api" in result.output
    saved = ProfileFile.load(server.home / "config.toml")
    assert saved.current == "wuji_mnist"
    profile = saved.get("wuji_mnist")
    assert (profile.access_id, profile.access_key, profile.project) == (
        "LTAI5tSeedAccessId",
        "SeedSecretKey1234",
        "wuji_mnist",
    )
    assert profile.oss_host == "cn-hangzhou.oss.aliyun-inc.com"
    # The CLI now signs with the imported key and sees its project only.
    listed = json.loads(run(server.home, "project", "list", "-o", "json").output)
    assert [(p["name"], p["role"]) for p in listed] == [("wuji_mnist", "admin")]
    # Importing again is harmless, with the admin profile named explicitly.
    again = run(server.home, "config", "import", "--admin-profile", "default", *map(str, files))
    assert again.exit_code == 0, again.output


def test_config_import_without_superuser_profile_is_refused(
    sqlite_server: LiveServer, tmp_path: Path
) -> None:
    files = write_seed_files(
        tmp_path / "a", project="proj_one", access_id="LTAIfirst1", access_key="FirstSecret123"
    )
    assert run(sqlite_server.home, "config", "import", *map(str, files)).exit_code == 0
    files2 = write_seed_files(
        tmp_path / "b", project="proj_two", access_id="LTAIsecond", access_key="SecondSecret123"
    )
    result = run(sqlite_server.home, "config", "import", *map(str, files2))
    assert result.exit_code == 3
    assert "--admin-profile" in result.stderr
    with sqlite_server.admin() as admin:
        assert "proj_two" not in [p.name for p in admin.list_projects()]


@pytest.mark.parametrize("which", ["odps_config.ini", "eas_config.ini", ".osscredentials"])
def test_config_import_with_placeholders_names_the_line(
    sqlite_server: LiveServer, tmp_path: Path, which: str
) -> None:
    files = write_seed_files(
        tmp_path, project="proj_x", access_id="LTAIfilled1", access_key="FilledSecret1"
    )
    target = tmp_path / which
    target.write_text(target.read_text().replace("LTAIfilled1", "${your_access_id}"))
    result = run(sqlite_server.home, "config", "import", *map(str, files))
    assert result.exit_code == 2
    assert f"{which} line" in result.stderr
    assert "${your_access_id}" in result.stderr
    with sqlite_server.admin() as admin:
        assert "proj_x" not in [p.name for p in admin.list_projects()]
    assert "proj_x" not in ProfileFile.load(sqlite_server.home / "config.toml").profiles
