"""`liqi resource ...` and `liqi dataset ...` in process (CliRunner) against a real server."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from liqi.cli.main import cli
from liqi.datasets.mnist_reader import builtin_dir
from tests.support.servers import LiveServer

TRAIN = "odps://algo_platform/volumes/mnist/train"


def run(home: Path, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(
        cli, ["--home", str(home), *args], input=input, catch_exceptions=False
    )


def ok(home: Path, *args: str) -> Result:
    result = run(home, *args)
    assert result.exit_code == 0, result.output
    return result


def test_resource_lifecycle(server: LiveServer, tmp_path: Path) -> None:
    home = server.home
    script = tmp_path / "mnist_softmax.py"
    script.write_text("print('train')\n")
    added = ok(home, "resource", "add", str(script), "--comment", "seed script")
    assert "Added odps://default/resources/mnist_softmax.py (py, 15 B)" in added.output
    listed = json.loads(ok(home, "resource", "list", "-o", "json").output)
    assert [(r["name"], r["kind"], r["comment"]) for r in listed] == [
        ("mnist_softmax.py", "py", "seed script")
    ]
    assert "mnist_softmax.py" in ok(home, "resource", "list").output
    described = json.loads(
        ok(home, "resource", "describe", "mnist_softmax.py", "-o", "json").output
    )
    assert described["size"] == 15
    by_uri = ok(home, "resource", "describe", "odps://default/resources/mnist_softmax.py")
    assert "odps://default/resources/mnist_softmax.py" in by_uri.output
    ok(home, "resource", "get", "mnist_softmax.py", str(tmp_path / "copy.py"))
    assert (tmp_path / "copy.py").read_text() == "print('train')\n"
    refused = run(home, "resource", "drop", "mnist_softmax.py", input="n\n")
    assert refused.exit_code == 1
    ok(home, "resource", "drop", "mnist_softmax.py", "-y")
    assert json.loads(ok(home, "resource", "list", "-o", "json").output) == []


def test_resource_add_refuses_a_duplicate_without_f(
    sqlite_server: LiveServer, tmp_path: Path
) -> None:
    home = sqlite_server.home
    first = tmp_path / "job.py"
    first.write_text("v = 1\n")
    ok(home, "resource", "add", str(first), "--as", "job_main.py")
    first.write_text("v = 2, replaced\n")
    refused = run(home, "resource", "add", str(first), "--as", "job_main.py")
    assert refused.exit_code == 5
    assert "liqi resource add FILE --as job_main.py -f" in refused.stderr
    ok(home, "resource", "add", str(first), "--as", "job_main.py", "-f")
    ok(home, "resource", "get", "job_main.py", str(tmp_path))
    assert (tmp_path / "job_main.py").read_text() == "v = 2, replaced\n"


def test_resource_type_and_bad_names(sqlite_server: LiveServer, tmp_path: Path) -> None:
    home = sqlite_server.home
    archive = tmp_path / "code.tar.gz"
    archive.write_bytes(b"\x1f\x8b fake")
    made = json.loads(ok(home, "resource", "add", str(archive), "-o", "json").output)
    assert made["kind"] == "archive"
    as_file = json.loads(
        ok(
            home, "resource", "add", str(archive), "--as", "raw.tgz", "--type", "file", "-o", "json"
        ).output
    )
    assert as_file["kind"] == "file"
    wrong = run(home, "resource", "add", str(archive), "--as", "x.txt", "--type", "jar")
    assert wrong.exit_code == 2
    assert "must end with .jar" in wrong.stderr
    bad = run(home, "resource", "add", str(archive), "--as", "../escape")
    assert bad.exit_code == 2
    assert "Invalid resource name '../escape'" in bad.stderr
    missing = run(home, "resource", "describe", "nope.py")
    assert missing.exit_code == 4
    assert "Traceback" not in missing.output


def test_dataset_builtin_list_describe_ls_get(sqlite_server: LiveServer, tmp_path: Path) -> None:
    home = sqlite_server.home
    listed = json.loads(ok(home, "dataset", "list", "-o", "json").output)
    assert [d["uri"] for d in listed] == [TRAIN, "odps://algo_platform/volumes/mnist/test"]
    assert "(built-in)" in ok(home, "dataset", "list").output
    described = json.loads(ok(home, "dataset", "describe", TRAIN, "-o", "json").output)
    assert (described["builtin"], described["file_count"]) == (True, 2)
    files = json.loads(ok(home, "dataset", "ls", TRAIN, "-o", "json").output)
    assert [f["path"] for f in files] == [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
    ]
    assert "2 file(s)" in ok(home, "dataset", "ls", TRAIN).output
    ok(home, "dataset", "get", TRAIN, str(tmp_path / "mnist"))
    for f in files:
        shipped = (builtin_dir() / "train" / f["path"]).read_bytes()
        assert (tmp_path / "mnist" / f["path"]).read_bytes() == shipped
    refused = run(home, "dataset", "drop", TRAIN, "-y")
    assert refused.exit_code == 3
    assert "read-only" in refused.stderr


def test_dataset_create_recreate_drop(server: LiveServer, tmp_path: Path) -> None:
    home = server.home
    uri = "odps://default/volumes/mnist/train"
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"alpha")
    (src / "sub" / "b.txt").write_bytes(b"beta")
    made = ok(home, "dataset", "create", uri, "--from", str(src), "--comment", "mine")
    assert f"Created {uri} version 1: 2 file(s)" in made.output
    again = run(home, "dataset", "create", uri, "--from", str(src))
    assert again.exit_code == 5
    assert "-f" in again.stderr
    (src / "c.txt").write_bytes(b"gamma")
    forced = json.loads(
        ok(home, "dataset", "create", uri, "--from", str(src), "-f", "-o", "json").output
    )
    assert (forced["version"], forced["file_count"]) == (2, 3)
    assert uri in [d["uri"] for d in json.loads(ok(home, "dataset", "list", "-o", "json").output)]
    ok(home, "dataset", "drop", uri, "-y")
    gone = run(home, "dataset", "describe", uri)
    assert gone.exit_code == 4
    assert f"Dataset {uri} does not exist" in gone.stderr


def test_dataset_create_from_missing_dir_and_bad_uri(
    sqlite_server: LiveServer, tmp_path: Path
) -> None:
    home = sqlite_server.home
    missing = run(
        home, "dataset", "create", "odps://default/volumes/v/p", "--from", str(tmp_path / "nope")
    )
    assert missing.exit_code == 4
    assert "does not exist" in missing.stderr
    bad = run(home, "dataset", "describe", "odps://default/tables/t")
    assert bad.exit_code == 2
    assert "odps://<project>/volumes/<volume>/<partition>" in bad.stderr
