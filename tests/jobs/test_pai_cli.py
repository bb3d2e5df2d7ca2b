"""`liqi pai ...` and `liqi job ...` through the CLI against a real server and real jobs."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from tests.cli.test_cli_commands import run
from tests.support.servers import LiveServer

FLAGS_SCRIPT = """
    import json, os, sys
    print("argv", json.dumps(sys.argv[1:]), flush=True)
    print("env", os.environ.get("LIQI_BUCKETS"), os.environ.get("LIQI_TASK"), flush=True)
    buckets = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--buckets=")]
    if buckets:
        with open(os.path.join(buckets[0], "result.txt"), "w") as fh:
            fh.write("trained")
"""


def write(tmp: Path, name: str, body: str) -> Path:
    path = tmp / name
    path.write_text(textwrap.dedent(body))
    return path


def test_pai_runs_the_seed_form_and_writes_to_the_bucket(
    sqlite_server: LiveServer, tmp_path: Path
) -> None:
    home = sqlite_server.home
    assert run(home, "oss", "mb", "oss://wuji-xwt").exit_code == 0
    script = write(tmp_path, "train.py", FLAGS_SCRIPT)
    assert run(home, "resource", "add", str(script)).exit_code == 0
    hyper = write(tmp_path, "hyper.txt", "learning_rate=0.5\n# comment\nbatch_size=100\n")
    result = run(
        home, "pai", "-name", "tensorflow2",
        "-Dscript=odps://default/resources/train.py",
        "-Dvolumes=odps://algo_platform/volumes/mnist/train,odps://algo_platform/volumes/mnist/test",
        "-Dbuckets=oss://wuji-xwt/models/?role_arn=acs:ram::123456:role/aliyunodpspaidefaultrole&host=cn-hangzhou.oss.aliyun-inc.com",
        f"-DhyperParameters={hyper}",
        '-DuserDefinedParameters=--epochs=3 --name="a b"',
        "-Dtags=dnn", "-DmaxHungTimeBeforeGCInSeconds=0",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "ID = j-" in result.stderr
    assert "SUCCEEDED" in result.stderr
    assert "Warning:" in result.stderr
    assert "-Dtags" in result.stderr
    argv_line = next(line for line in result.stdout.splitlines() if line.startswith("argv "))
    argv = json.loads(argv_line.removeprefix("argv "))
    assert any(a.startswith("--buckets=") and a.endswith("/buckets/wuji-xwt/models/") for a in argv)
    assert any(a.startswith("--volumes=") and a.count(",") == 1 for a in argv)
    assert "--learning_rate=0.5" in argv
    assert "--batch_size=100" in argv
    assert argv[-2:] == ["--epochs=3", "--name=a b"]
    assert run(home, "oss", "cat", "oss://wuji-xwt/models/result.txt").stdout_bytes == b"trained"


def test_pai_with_a_local_script_uploads_it(sqlite_server: LiveServer, tmp_path: Path) -> None:
    script = write(tmp_path, "local_train.py", "print('from a local file')\n")
    result = run(sqlite_server.home, "pai", "-name", "tensorflow2", f"-Dscript=file://{script}")
    assert result.exit_code == 0, result.output
    assert "from a local file" in result.stdout
    listed = json.loads(run(sqlite_server.home, "resource", "list", "-o", "json").output)
    assert [r["name"] for r in listed] == ["local_train.py"]


def test_pai_errors_are_clear_and_nothing_runs(sqlite_server: LiveServer) -> None:
    home = sqlite_server.home
    unknown = run(
        home, "pai", "-name", "tensorflow", "-Dscript=odps://default/resources/x.py", "-Dbogus=1"
    )
    assert unknown.exit_code == 2
    assert "-DcheckpointDir" in unknown.stderr  # the accepted keys are listed
    framework = run(home, "pai", "-name", "caffe", "-Dscript=odps://default/resources/x.py")
    assert framework.exit_code == 2
    assert "tensorflow121" in framework.stderr
    cluster = run(
        home,
        "pai",
        "-name",
        "tensorflow",
        "-Dscript=odps://default/resources/x.py",
        "-Dcluster={bad json",
    )
    assert cluster.exit_code == 2
    missing = run(
        home, "pai", "-name", "tensorflow", "-Dscript=odps://default/resources/missing.py"
    )
    assert missing.exit_code == 4
    assert json.loads(run(home, "job", "list", "-o", "json").output) == []


def test_failed_job_exits_8_and_status_shows_why(sqlite_server: LiveServer, tmp_path: Path) -> None:
    home = sqlite_server.home
    script = write(tmp_path, "fail.py", "import sys\nprint('about to fail')\nsys.exit(7)\n")
    result = run(home, "job", "submit", str(script))
    assert result.exit_code == 8
    assert "about to fail" in result.stdout
    job_id = json.loads(run(home, "job", "list", "-o", "json").output)[0]["id"]
    status = json.loads(run(home, "job", "status", job_id, "-o", "json").output)
    assert status["state"] == "FAILED"
    assert status["exit_code"] == 7
    assert "about to fail" in run(home, "job", "logs", job_id).output
    assert run(home, "job", "wait", job_id).exit_code == 8


def test_distributed_ps_and_workers(sqlite_server: LiveServer, tmp_path: Path) -> None:
    body = """
        import json, os, sys, time
        flags = dict(a.lstrip("-").split("=", 1) for a in sys.argv[1:] if "=" in a)
        config = json.loads(os.environ["TF_CONFIG"])
        print("task", flags["job_name"], flags["task_index"], "of",
              len(flags["worker_hosts"].split(",")), "workers", flush=True)
        assert config["task"] == {"type": flags["job_name"], "index": int(flags["task_index"])}
        if flags["job_name"] == "ps":
            open(MARKER, "w").close()
            time.sleep(600)  # parameter servers run until the workers are done
        for _ in range(1200):  # workers end only once the ps has said its line
            if os.path.exists(MARKER):
                break
            time.sleep(0.1)
    """.replace("MARKER", repr("ps-started"))  # the tasks share their working folder
    home = sqlite_server.home
    script = write(tmp_path, "dist.py", body)
    run(home, "resource", "add", str(script))
    result = run(home, "pai", "-name", "tensorflow", "-Dscript=odps://default/resources/dist.py",
                 '-Dcluster={"ps":{"count":1},"worker":{"count":2}}')  # fmt: skip
    assert result.exit_code == 0, result.output
    job_id = json.loads(run(home, "job", "list", "-o", "json").output)[0]["id"]
    assert "task worker 0 of 2 workers" in run(home, "job", "logs", job_id).output
    assert (
        "task worker 1 of 2 workers"
        in run(home, "job", "logs", job_id, "--task", "worker:1").output
    )
    assert "task ps 0 of 2 workers" in run(home, "job", "logs", job_id, "--task", "ps:0").output


def test_tarball_script_with_entry_file_and_tables(
    sqlite_server: LiveServer, tmp_path: Path
) -> None:
    import tarfile

    home = sqlite_server.home
    package = tmp_path / "pkg"
    (package / "trainer").mkdir(parents=True)
    (package / "trainer" / "helpers.py").write_text("GREETING = 'from the archive'\n")
    write(package, "entry.py", """
        import sys
        from trainer.helpers import GREETING
        print(GREETING, flush=True)
        print("tables", [a for a in sys.argv if a.startswith("--tables=")], flush=True)
    """)  # fmt: skip
    archive = tmp_path / "job.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(package / "entry.py", arcname="entry.py")
        tf.add(package / "trainer", arcname="trainer")
    assert run(home, "resource", "add", str(archive)).exit_code == 0
    tables = "-Dtables=odps://algo_platform/volumes/mnist/test"
    script = "-Dscript=odps://default/resources/job.tar.gz"
    result = run(home, "pai", "-name", "tensorflow2", script, "-DentryFile=entry.py", tables)
    assert result.exit_code == 0, result.output
    assert "from the archive" in result.stdout
    assert "/volumes/algo_platform/mnist/test" in result.stdout
    no_entry = run(
        home, "pai", "-name", "tensorflow2", "-Dscript=odps://default/resources/job.tar.gz"
    )
    assert no_entry.exit_code == 2
    assert "-DentryFile" in no_entry.stderr


def test_archive_with_an_entry_outside_its_folder_fails_the_job(
    sqlite_server: LiveServer, tmp_path: Path
) -> None:
    import tarfile

    home = sqlite_server.home
    evil = tmp_path / "evil.py"
    evil.write_text("print('escaped')\n")
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(evil, arcname="../../escaped.py")
        tf.add(evil, arcname="entry.py")
    assert run(home, "resource", "add", str(archive)).exit_code == 0
    result = run(home, "pai", "-name", "tensorflow2", "-Dscript=odps://default/resources/evil.tar.gz",
                 "-DentryFile=entry.py")  # fmt: skip
    assert result.exit_code == 8
    job = json.loads(run(home, "job", "list", "-o", "json").output)[0]
    assert job["state"] == "FAILED"
    assert "outside its folder" in job["reason"]
    assert not list(home.rglob("escaped.py"))
