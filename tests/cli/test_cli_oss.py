"""`liqi oss ...` in process against a real server; an s3 bucket against a real moto server."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.cli.test_cli_commands import run
from tests.support.moto_s3 import create_bucket, s3_client
from tests.support.servers import LiveServer


def test_the_seed_storage_steps(sqlite_server: LiveServer, tmp_path: Path) -> None:
    home = sqlite_server.home
    assert run(home, "oss", "mb", "oss://wuji-xwt").exit_code == 0
    assert run(home, "oss", "mkdir", "oss://wuji-xwt/models/").exit_code == 0
    model = tmp_path / "export" / "1"
    (model / "variables").mkdir(parents=True)
    (model / "saved_model.pb").write_bytes(b"\x08\x01pb")
    (model / "variables" / "variables.index").write_bytes(b"idx")
    up = run(home, "oss", "cp", "-r", str(tmp_path / "export"), "oss://wuji-xwt/models/")
    assert up.exit_code == 0, up.output
    listing = json.loads(run(home, "oss", "ls", "oss://wuji-xwt/models/", "-o", "json").output)
    assert listing["prefixes"] == ["models/1/"]
    recursive = run(home, "oss", "ls", "-r", "oss://wuji-xwt/models/")
    assert "oss://wuji-xwt/models/1/variables/variables.index" in recursive.output
    assert "2 object(s)" in recursive.output
    assert (
        run(home, "oss", "cat", "oss://wuji-xwt/models/1/saved_model.pb").stdout_bytes
        == b"\x08\x01pb"
    )
    stat = json.loads(
        run(home, "oss", "stat", "oss://wuji-xwt/models/1/saved_model.pb", "-o", "json").output
    )
    assert stat["size"] == 4
    down = run(home, "oss", "cp", "-r", "oss://wuji-xwt/models/", str(tmp_path / "back"))
    assert down.exit_code == 0, down.output
    assert (tmp_path / "back" / "1" / "variables" / "variables.index").read_bytes() == b"idx"
    url = run(
        home, "oss", "sign", "oss://wuji-xwt/models/1/saved_model.pb", "--timeout", "30"
    ).output.strip()
    assert httpx.get(url, trust_env=False).content == b"\x08\x01pb"
    buckets = json.loads(run(home, "oss", "ls", "-o", "json").output)
    assert [b["name"] for b in buckets] == ["wuji-xwt"]


def test_mv_rm_and_rb(sqlite_server: LiveServer, tmp_path: Path) -> None:
    home = sqlite_server.home
    run(home, "oss", "mb", "oss://scratch")
    src = tmp_path / "a.txt"
    src.write_text("moving")
    assert run(home, "oss", "mv", str(src), "oss://scratch/a.txt").exit_code == 0
    assert not src.exists()
    assert run(home, "oss", "mv", "oss://scratch/a.txt", "oss://scratch/b.txt").exit_code == 0
    keys = [
        o["key"]
        for o in json.loads(run(home, "oss", "ls", "-r", "oss://scratch/", "-o", "json").output)[
            "objects"
        ]
    ]
    assert keys == ["b.txt"]
    refused = run(home, "oss", "rb", "oss://scratch")
    assert refused.exit_code == 5
    assert "--force" in refused.stderr
    assert run(home, "oss", "rm", "oss://scratch/b.txt").exit_code == 0
    assert run(home, "oss", "rb", "oss://scratch").exit_code == 0
    assert json.loads(run(home, "oss", "ls", "-o", "json").output) == []


def test_cp_errors_are_clear(sqlite_server: LiveServer, tmp_path: Path) -> None:
    home = sqlite_server.home
    run(home, "oss", "mb", "oss://errs")
    folder = tmp_path / "dir"
    folder.mkdir()
    no_r = run(home, "oss", "cp", str(folder), "oss://errs/")
    assert no_r.exit_code == 2
    assert "pass -r" in no_r.stderr
    missing = run(home, "oss", "cp", str(tmp_path / "nope.txt"), "oss://errs/")
    assert "No such file" in missing.stderr
    bad_uri = run(home, "oss", "ls", "oss://Bad_Bucket/")
    assert bad_uri.exit_code == 2
    assert "Invalid bucket name" in bad_uri.stderr
    no_object = run(home, "oss", "cat", "oss://errs/missing")
    assert no_object.exit_code == 4
    assert run(home, "oss", "grant", "oss://errs", "--project", "default").exit_code == 2


def test_role_arn_query_is_accepted(sqlite_server: LiveServer) -> None:
    home = sqlite_server.home
    run(home, "oss", "mb", "oss://wuji")
    run(home, "oss", "mkdir", "oss://wuji/models/")
    uri = "oss://wuji/models/?role_arn=acs:ram::1234567890:role/aliyunodpspaidefaultrole&host=cn-hangzhou.oss.aliyun-inc.com"
    listed = run(home, "oss", "ls", uri, "-o", "json")
    assert listed.exit_code == 0, listed.output
    bad = run(home, "oss", "ls", "oss://wuji/models/?role_arn=nonsense")
    assert bad.exit_code == 2
    assert "acs:ram::<account>:role/<name>" in bad.stderr


def test_s3_backed_bucket_on_a_real_s3_server(
    sqlite_server: LiveServer, s3_server: str, tmp_path: Path
) -> None:
    home = sqlite_server.home
    external = create_bucket(s3_server)
    creds = tmp_path / ".osscredentials"
    creds.write_text("[OSSCredentials]\nhost=127.0.0.1\naccessid=testing\naccesskey=testing\n")
    made = run(home, "oss", "mb", "oss://on-s3", "--backend", "s3", "--s3-endpoint", s3_server,
               "--s3-bucket", external, "--s3-region", "us-east-1", "--prefix", "liqi/",
               "--credentials-file", str(creds))  # fmt: skip
    assert made.exit_code == 0, made.output
    data = tmp_path / "m.bin"
    data.write_bytes(b"s3 bytes" * 1000)
    assert run(home, "oss", "cp", str(data), "oss://on-s3/models/m.bin").exit_code == 0
    stored = (
        s3_client(s3_server).get_object(Bucket=external, Key="liqi/models/m.bin")["Body"].read()
    )
    assert stored == b"s3 bytes" * 1000
    assert run(home, "oss", "cat", "oss://on-s3/models/m.bin").stdout_bytes == b"s3 bytes" * 1000
    described = json.loads(run(home, "oss", "ls", "-o", "json").output)
    assert described[0]["backend"] == "s3"
    assert "testing" not in json.dumps(described)
    no_creds = run(home, "oss", "mb", "oss://on-s3-two", "--backend", "s3", "--s3-bucket", external)
    assert no_creds.exit_code == 2
    assert "--credentials-file" in no_creds.stderr
