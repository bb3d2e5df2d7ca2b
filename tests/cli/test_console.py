"""`liqi console` against a real server: statements, jobs through the local backend, the REPL."""

from __future__ import annotations

import _thread
import re
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from liqi.cli.console import ConsoleSession, TerminalReader, console_loop, history
from liqi.cli.main import cli
from tests.support.servers import LiveServer

PRINTER = "print('hello from the console job', flush=True)\n"


def run(home: Path, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(
        cli, ["--home", str(home), "console", *args], input=input, catch_exceptions=False
    )


def job_id(output: str) -> str:
    found = re.search(r"^ID = (\S+)$", output, re.MULTILINE)
    assert found, output
    return found.group(1)


@pytest.fixture
def script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """x.py in the current directory, so `add file x.py` finds it by its relative path."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "x.py"
    path.write_text(PRINTER)
    return path


def test_e_adds_a_resource_lists_it_and_says_who_i_am(
    sqlite_server: LiveServer, script: Path
) -> None:
    result = run(sqlite_server.home, "-e", "add file x.py; list resources; whoami;")
    assert result.exit_code == 0, result.output
    assert "OK: added odps://default/resources/x.py (file, " in result.output
    assert re.search(r"x\.py\s.*file", result.output)
    assert "1 resource(s) in project default." in result.output
    with sqlite_server.admin() as admin:
        me = admin.whoami()
        assert admin.describe_resource("x.py").size == len(PRINTER)
    assert me["access_id"] in result.output
    assert re.search(r"superuser\s+yes", result.output)
    assert re.search(r"projects\s+default \(", result.output)
    assert sqlite_server.url in result.output


def test_add_expands_the_home_directory(
    sqlite_server: LiveServer, script: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(script.parent))
    result = run(sqlite_server.home, "-e", "add py ~/x.py as y.py;")
    assert result.exit_code == 0, result.output
    with sqlite_server.admin() as admin:
        assert admin.describe_resource("y.py").kind == "py"


def test_f_runs_multi_line_statements_with_quotes_and_comments(
    sqlite_server: LiveServer, script: Path
) -> None:
    statements = script.parent / "steps.sql"
    statements.write_text(
        textwrap.dedent(
            """\
            -- the seed's first step, spread over lines
            add file x.py
                as renamed.py
                comment 'kept; with a semicolon'   ;
            # what is there now
            list resources;
            desc resource renamed.py; drop resource renamed.py;
            list resources
            """
        )
    )
    result = run(sqlite_server.home, "-f", str(statements))
    assert result.exit_code == 0, result.output
    assert "OK: added odps://default/resources/renamed.py" in result.output
    assert "1 resource(s) in project default." in result.output
    assert re.search(r"comment\s+kept; with a semicolon", result.output)
    assert "OK: dropped resource renamed.py." in result.output
    assert result.output.rstrip().endswith("0 resource(s) in project default.")
    with sqlite_server.admin() as admin:
        assert admin.list_resources() == []


def test_pai_streams_the_job_then_show_status_and_kill(
    sqlite_server: LiveServer, script: Path
) -> None:
    pai = 'pai -name tensorflow2\n  -Dscript="odps://default/resources/x.py";'
    result = run(sqlite_server.home, "-e", f"add file x.py; {pai}")
    assert result.exit_code == 0, result.output
    ran = job_id(result.output)
    assert "hello from the console job" in result.output
    assert f"Job {ran} SUCCEEDED" in result.output
    with sqlite_server.admin() as admin:
        assert admin.get_job(ran).state == "SUCCEEDED"

    after = run(sqlite_server.home, "-e", f"show instances; status {ran}; kill {ran};")
    assert after.exit_code == 0, after.output
    assert re.search(rf"{ran}\s.*x\.py\s.*SUCCEEDED", after.output)
    assert re.search(r"state\s+SUCCEEDED", after.output)
    assert re.search(r"exit code\s+0", after.output)
    assert f"Job {ran} is SUCCEEDED." in after.output


def test_a_failing_job_stops_the_run_with_exit_8(sqlite_server: LiveServer, script: Path) -> None:
    script.write_text("print('about to fail', flush=True)\nraise SystemExit(3)\n")
    result = run(
        sqlite_server.home,
        "-e",
        'add file x.py; pai -name tensorflow2 -Dscript="odps://default/resources/x.py"; '
        "list resources;",
    )
    assert result.exit_code == 8, result.output
    failed = job_id(result.output)
    assert "about to fail" in result.output
    assert f"Error: Job {failed} ended FAILED" in result.output
    assert "resource(s) in project" not in result.output  # the statement after it did not run

    waited = run(sqlite_server.home, "-e", f"wait {failed};")
    assert waited.exit_code == 8
    assert "about to fail" in waited.output
    assert f"Job {failed} FAILED" in waited.output


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("whoami; frobnicate the model;", "Error: Unknown statement 'frobnicate the model'"),
        ('whoami; pai -name tensorflow2 -Dscript="odps://x;', "Error: Unterminated double quote"),
    ],
    ids=["unknown-statement", "unterminated-quote"],
)
def test_bad_statements_are_refused_before_anything_runs(
    sqlite_server: LiveServer, text: str, expected: str
) -> None:
    result = run(sqlite_server.home, "-e", text)
    assert result.exit_code == 2
    assert expected in result.stderr
    if "Unknown" in expected:
        assert "list resources" in result.stderr  # the accepted statements
    assert "superuser" not in result.output  # whoami did not run
    assert "Traceback" not in result.output


def test_use_switches_projects_and_refuses_a_missing_one(sqlite_server: LiveServer) -> None:
    with sqlite_server.admin() as admin:
        admin.create_project("other_proj")
    used = run(sqlite_server.home, "-e", "use other_proj; list resources;")
    assert used.exit_code == 0, used.output
    assert "OK: using project other_proj." in used.output
    assert "0 resource(s) in project other_proj." in used.output

    missing = run(sqlite_server.home, "-e", "use nope_nope; list resources;")
    assert missing.exit_code == 4
    assert "Error: Project 'nope_nope' does not exist" in missing.stderr
    assert "resource(s)" not in missing.output

    started_missing = run(sqlite_server.home, "--project", "nope_nope", "-e", "whoami;")
    assert started_missing.exit_code == 4


def test_statements_piped_to_stdin_run_without_prompts(
    sqlite_server: LiveServer, script: Path
) -> None:
    result = run(sqlite_server.home, input="add file\n  x.py;\nlist resources;\n")
    assert result.exit_code == 0, result.output
    assert "OK: added odps://default/resources/x.py" in result.output
    assert "1 resource(s) in project default." in result.output
    assert "liqi@" not in result.output

    stopped = run(sqlite_server.home, input="whoami;\nbogus;\nlist resources;\n")
    assert stopped.exit_code == 2
    assert "superuser" in stopped.output
    assert "Error: Unknown statement 'bogus'" in stopped.stderr
    assert "resource(s)" not in stopped.output

    assert run(sqlite_server.home, input="").exit_code == 0  # EOF ends it, nothing to wait for
    last = run(sqlite_server.home, input="-- no ';' after the last one\nlist resources")
    assert last.exit_code == 0, last.output
    assert "1 resource(s) in project default." in last.output


class FakeTerminal:
    """Stands in for ``input``: records each prompt and answers with the next line."""

    def __init__(self, *lines: str | type[BaseException]) -> None:
        self.lines = list(lines)
        self.prompts: list[str] = []

    def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        if not self.lines:
            raise EOFError
        line = self.lines.pop(0)
        if isinstance(line, str):
            return line
        raise line()


@pytest.fixture
def session(sqlite_server: LiveServer) -> Iterator[ConsoleSession]:
    with sqlite_server.admin() as admin:
        admin.create_project("other_proj")
        yield ConsoleSession(admin, "default")


def test_repl_prompts_continues_after_errors_and_follows_use(
    session: ConsoleSession, capsys: pytest.CaptureFixture[str]
) -> None:
    terminal = FakeTerminal(
        "whoami;", "bogus;", "use", "  nope_nope;", "-- a comment line", "use", "other_proj;",
        "list", "resources;", "exit;", "whoami;",
    )  # fmt: skip
    console_loop(session, terminal, interactive=True)
    top, more = "liqi@ default> ", "             > "
    assert len(more) == len(top)
    assert terminal.prompts == [top, top, top, more, top, top, more, "liqi@ other_proj> ",
                                "                > ", "liqi@ other_proj> "]  # fmt: skip
    assert terminal.lines == ["whoami;"]  # exit; ended the loop
    out, err = capsys.readouterr()
    assert "Error: Unknown statement 'bogus'" in err
    assert "Error: Project 'nope_nope' does not exist" in err
    assert "0 resource(s) in project other_proj." in out
    assert session.project == "other_proj"


def test_repl_ctrl_c_drops_the_buffer_and_ctrl_d_leaves(
    session: ConsoleSession, capsys: pytest.CaptureFixture[str]
) -> None:
    terminal = FakeTerminal("drop resource", KeyboardInterrupt, "list resources;", "whoami")
    console_loop(session, terminal, interactive=True)  # returns at EOF (Ctrl-D)
    assert terminal.prompts[-1].strip() == ">"  # "whoami" was left without its ';'
    out, err = capsys.readouterr()
    assert "0 resource(s) in project default." in out
    assert "superuser" not in out  # an unfinished statement is not run at Ctrl-D
    assert err == ""


def test_ctrl_c_while_a_job_streams_stops_following_not_the_job(
    sqlite_server: LiveServer, session: ConsoleSession, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    hang = tmp_path / "hang.py"
    hang.write_text("import time\nprint('started', flush=True)\ntime.sleep(600)\n")
    session.client.add_resource(hang)

    def interrupt_once_started() -> None:
        with sqlite_server.admin() as admin:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                jobs = admin.list_jobs()
                if jobs and "started" in "".join(admin.follow_logs(jobs[0].id, follow=False)):
                    break
                time.sleep(0.05)
        _thread.interrupt_main()

    watcher = threading.Thread(target=interrupt_once_started, daemon=True)
    watcher.start()
    terminal = FakeTerminal('pai -name tensorflow2 -Dscript="odps://default/resources/hang.py";')
    console_loop(session, terminal, interactive=True)
    watcher.join(timeout=10)
    (job,) = session.client.list_jobs()
    try:
        assert job.state == "RUNNING"
        assert len(terminal.prompts) == 2  # back at the prompt after Ctrl-C
        err = capsys.readouterr().err
        assert f"Stopped following job {job.id}; it keeps running." in err
        assert f"kill {job.id};" in err
    finally:
        session.client.kill_job(job.id)
        assert session.client.wait_job(job.id, timeout_s=30).state == "CANCELLED"


def test_history_is_kept_in_a_bounded_file(tmp_path: Path) -> None:
    import readline

    readline.clear_history()
    path = tmp_path / "home" / "console_history"
    with history(path):
        for i in range(1100):
            readline.add_history(f"status job{i};")
    kept = path.read_text().splitlines()
    assert kept[-1] == "status job1099;"
    assert 0 < len(kept) <= 1000
    readline.clear_history()
    with history(path):
        assert readline.get_history_item(readline.get_current_history_length()) == kept[-1]
    readline.clear_history()


def test_a_statement_typed_over_lines_is_recalled_as_one(
    session: ConsoleSession, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import readline

    readline.clear_history()
    typed = ["list", "-- a comment line", "  resources;", "whoami;"]

    def terminal_input(prompt: str) -> str:  # what input() does on a terminal with readline
        if not typed:
            raise EOFError
        line = typed.pop(0)
        readline.add_history(line)
        return line

    monkeypatch.setattr("builtins.input", terminal_input)
    console_loop(session, TerminalReader(), interactive=True)
    entries = [
        readline.get_history_item(i + 1) for i in range(readline.get_current_history_length())
    ]
    readline.clear_history()
    assert entries == ["list resources;", "whoami;"]
    assert "0 resource(s) in project default." in capsys.readouterr().out
