"""`liqi console`: odpscmd's console, for liqi: `add file`, `pai ...;`, `status <id>;` and more.

``liqi console -e "<statements>"`` and ``-f FILE`` run statements in order and stop at the first
failing one; without them it is a REPL (prompt ``liqi@ <project>>``), or, when stdin is not a
terminal, it reads statements from stdin the same way. The statements themselves are parsed in
:mod:`liqi.core.console_statements`; :class:`ConsoleSession` runs them against a client.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TextIO

import click

from liqi.cli.context import CliContext, pass_cli
from liqi.cli.job import FAILED_EXIT, stream_until_done
from liqi.cli.output import fields, table, when
from liqi.cli.pai import run_pai
from liqi.cli.transfer import human_size
from liqi.client import Client
from liqi.client.jobs import JobInfo
from liqi.core import console_statements as st
from liqi.core.pai_command import is_complete, split_statements
from liqi.errors import ConfigError, InvalidRequestError, LiqiError

HISTORY_FILE = "console_history"
HISTORY_LINES = 1000
SHOW_INSTANCES_LIMIT = 50

ReadLine = Callable[[str], str]  # prompt -> line; raises EOFError at the end of input


class JobNotSucceededError(click.ClickException):
    """A ``pai`` or ``wait`` statement whose job ended other than SUCCEEDED (exit 8, as
    ``liqi pai`` and ``liqi job wait``)."""

    exit_code = FAILED_EXIT

    def __init__(self, job: JobInfo) -> None:
        reason = f": {job.reason}" if job.reason else ""
        super().__init__(
            f"Job {job.id} ended {job.state}{reason}. Its output is above; "
            f"`liqi job logs {job.id}` prints it again."
        )


class ConsoleSession:
    """Runs console statements for one client; ``project`` changes with ``use <project>;``.

    Results are printed to stdout (tables, job output), job ids and states to stderr, as
    ``liqi pai`` does. Errors are raised: :class:`LiqiError`, or :class:`JobNotSucceededError`.
    """

    def __init__(self, client: Client, project: str) -> None:
        self.client = client
        self.project = project

    @property
    def prompt(self) -> str:
        return f"liqi@ {self.project}> "

    def run(self, text: str) -> bool:
        """Run the statements of ``text`` in order, all parsed before the first runs; False
        when one of them is ``exit`` or ``quit`` (those after it are not run)."""
        statements = split_statements(text)
        ends = [i for i, s in enumerate(statements) if s.lower() in ("exit", "quit")]
        for statement in [st.parse_statement(s) for s in statements[: ends[0] if ends else None]]:
            self.execute(statement)
        return not ends

    def execute(self, statement: st.Statement) -> None:
        client, project = self.client, self.project
        match statement:
            case st.AddResource(kind, path, alias, comment, force):
                source = Path(path).expanduser().absolute()
                added = client.add_resource(
                    source, alias, kind, comment or "", force, project=project
                )
                click.echo(f"OK: added {added.uri} ({added.kind}, {human_size(added.size)}).")
            case st.ListResources():
                found = client.list_resources(project)
                table(None, ["NAME", "TYPE", "SIZE", "UPDATED", "COMMENT"],
                      [(r.name, r.kind, human_size(r.size), when(r.updated_at), r.comment)
                       for r in found])  # fmt: skip
                click.echo(f"{len(found)} resource(s) in project {project}.")
            case st.DescResource(name):
                res = client.describe_resource(name, project=project)
                fields([("resource", res.uri), ("type", res.kind),
                        ("size", f"{human_size(res.size)} ({res.size} bytes)"),
                        ("sha256", res.sha256), ("created", when(res.created_at)),
                        ("updated", when(res.updated_at)), ("comment", res.comment)])  # fmt: skip
            case st.DropResource(name):
                client.drop_resource(name, project=project)
                click.echo(f"OK: dropped resource {name}.")
            case st.Pai(command):
                self._follow(run_pai(client, command, project, wait=False).id)
            case st.ShowInstances():
                jobs = client.list_jobs(project, SHOW_INSTANCES_LIMIT)
                table(None, ["ID", "NAME", "STATE", "CREATED", "REASON"],
                      [(j.id, j.name, j.state, when(j.created_at), j.reason)
                       for j in jobs])  # fmt: skip
            case st.Status(job_id):
                job = client.get_job(job_id)
                fields([("job", job.id), ("name", job.name), ("project", job.project),
                        ("state", job.state), ("reason", job.reason or None),
                        ("exit code", job.exit_code), ("created", when(job.created_at)),
                        ("started", when(job.started_at)),
                        ("ended", when(job.ended_at))])  # fmt: skip
            case st.Wait(job_id):
                self._follow(client.get_job(job_id).id)
            case st.Kill(job_id):
                job = client.kill_job(job_id)
                state = f"is {job.state}" if job.is_final else "is being stopped"
                click.echo(f"Job {job.id} {state}.")
            case st.WhoAmI():
                me = client.whoami()
                roles = ", ".join(f"{p} ({r})" for p, r in sorted(me["projects"].items()))
                fields([("access id", me["access_id"]),
                        ("superuser", "yes" if me["is_superuser"] else "no"),
                        ("projects", roles or None), ("current project", project),
                        ("endpoint", client.endpoint)])  # fmt: skip
            case st.Use(name):
                self.project = client.get_project(name).name
                click.echo(f"OK: using project {self.project}.")

    def _follow(self, job_id: str) -> None:
        """Stream the job's output to its end; Ctrl-C stops following, not the job."""
        try:
            final = stream_until_done(self.client, job_id)
        except KeyboardInterrupt:
            click.echo(
                f"\nStopped following job {job_id}; it keeps running. Stop it with: kill {job_id};",
                err=True,
            )
            raise
        if final.state != "SUCCEEDED":
            raise JobNotSucceededError(final)


def _blank(buffer: str) -> bool:
    """Only blanks and comment lines (so a REPL does not wait for a ';' after them)."""
    try:
        return not split_statements(buffer)
    except InvalidRequestError:
        return False  # an open quote


def _report(exc: LiqiError | click.ClickException) -> None:
    message = exc.message if isinstance(exc, LiqiError) else exc.format_message()
    click.echo(f"Error: {message}", err=True)


def _run(session: ConsoleSession, text: str, *, interactive: bool) -> bool:
    """``session.run(text)``; interactively, errors and Ctrl-C are reported, not raised."""
    if not interactive:
        return session.run(text)
    try:
        return session.run(text)
    except (LiqiError, click.ClickException) as exc:
        _report(exc)
    except KeyboardInterrupt:
        click.echo()
    return True


def console_loop(session: ConsoleSession, read_line: ReadLine, *, interactive: bool) -> None:
    """Read lines with ``read_line(prompt)`` and run each statement once its ``;`` arrives.

    ``interactive``: errors are printed and the loop goes on, Ctrl-C drops the current buffer,
    and a statement left without ``;`` at the end of input is dropped. Otherwise (a pipe) the
    first error is raised and a last statement without ``;`` still runs, as with ``-f``.
    """
    buffer = ""
    while True:
        prompt = session.prompt
        try:
            line = read_line(" " * (len(prompt) - 2) + "> " if buffer else prompt)
        except EOFError:
            if interactive:
                click.echo()
            elif buffer.strip():
                session.run(buffer)
            return
        except KeyboardInterrupt:
            if not interactive:
                raise
            click.echo()
            buffer = ""
            continue
        buffer += line + "\n"
        if _blank(buffer):
            buffer = ""
        elif is_complete(buffer):
            text, buffer = buffer, ""
            if not _run(session, text, interactive=interactive):
                return


def stream_reader(stream: TextIO) -> ReadLine:
    """A ``ReadLine`` over a non-terminal stream: prints no prompt."""

    def read(_prompt: str) -> str:
        line = stream.readline()
        if not line:
            raise EOFError
        return line.rstrip("\n")

    return read


class TerminalReader:
    """``input`` for a terminal; with ``readline``, a statement typed over several lines is
    recalled as one history entry (its comment lines left out)."""

    def __init__(self) -> None:
        self._start = 0  # history length when the statement being typed began
        self._lines: list[str] = []

    def __call__(self, prompt: str) -> str:
        if not prompt.lstrip().startswith(">"):  # a new statement: the last one is complete
            self._join_history()
        line = input(prompt)
        self._lines.append(line)
        return line

    def _join_history(self) -> None:
        lines, self._lines = self._lines, []
        try:
            import readline
        except ImportError:
            return
        end = readline.get_current_history_length()
        if end - self._start > 1:
            for index in reversed(range(self._start, end)):
                readline.remove_history_item(index)
            kept = [t for line in lines if (t := line.strip()) and not t.startswith(("--", "#"))]
            readline.add_history(" ".join(kept))
        self._start = readline.get_current_history_length()


@contextmanager
def history(path: Path) -> Iterator[None]:
    """Line editing and a bounded history file, when the ``readline`` module exists."""
    try:
        import readline
    except ImportError:
        yield
        return
    readline.set_history_length(HISTORY_LINES)
    with suppress(OSError):  # no history yet, or unreadable: start empty
        readline.read_history_file(path)
    try:
        yield
    finally:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            readline.write_history_file(path)
        except OSError as exc:
            click.echo(f"Warning: could not save the console history to {path}: {exc}", err=True)


@click.command()
@click.option("-e", "execute", metavar="STATEMENTS", help="Run these statements, then exit.")
@click.option(
    "-f",
    "file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Run the statements in FILE, then exit.",
)
@click.option("--project", "-p", help="Project to start in [default: the profile's].")
@pass_cli
def console(obj: CliContext, execute: str | None, file: Path | None, project: str | None) -> None:
    """odpscmd's console: add file, list resources, pai -name ..., show instances, status, ...

    \b
    Statements end in ';' and may span lines; '--' or '#' starts a comment line:
      add file|py|archive|jar <path> [as <alias>] [comment '<text>'] [-f];
      list resources;  desc resource <name>;  drop resource <name>;
      pai -name <framework> -D<key>=<value> ...;
      show instances;  status <job_id>;  wait <job_id>;  kill <job_id>;
      whoami;  use <project>;
    With -e or -f (or statements piped to stdin) it stops at the first error, and exits 8
    when a pai or wait job did not succeed. Without them it is a REPL: exit; or Ctrl-D
    leaves, Ctrl-C drops the statement being typed or stops following a job (which keeps
    running).

    \b
    Example (the seed's connectivity test):
      liqi console -e "add file training_test.py;
        pai -name tensorflow -Dscript=\\"odps://default/resources/training_test.py\\";"
    """
    if execute is not None and file is not None:
        raise click.UsageError("Give -e or -f, not both.")
    with obj.client() as client:
        chosen = project or client.project
        if not chosen:
            raise ConfigError(
                "liqi console needs a project: pass --project NAME or set one in the profile "
                "(`liqi config set project NAME`)."
            )
        session = ConsoleSession(client, client.get_project(chosen).name)
        if execute is not None:
            session.run(execute)
        elif file is not None:
            session.run(file.read_text(encoding="utf-8"))
        elif not sys.stdin.isatty():
            console_loop(session, stream_reader(sys.stdin), interactive=False)
        else:
            with history(obj.liqi_home / HISTORY_FILE):
                console_loop(session, TerminalReader(), interactive=True)
