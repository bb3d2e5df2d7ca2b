"""The sandbox holds against a workload's attacks: real sandboxed Python processes try them.

Nothing here is skipped: on a machine that cannot sandbox, every test fails with the reason
(CI runs as root with bubblewrap installed by scripts/setup-test-env).
"""

from __future__ import annotations

import errno
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from liqi.sandbox import (
    SandboxedProcess,
    SandboxPolicy,
    safe_env,
    workload_user,
)
from liqi.sandbox.cgroups import Cgroup, detect_layout, sweep_stale

PROJECT = "sbxtest"

Run = Callable[..., tuple[int, str, SandboxedProcess]]

pytestmark = pytest.mark.usefixtures("require_sandbox")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A fake LIQI_HOME with the server's secrets and another project's folder."""
    home = tmp_path / "home"
    (home / "jobs" / "other" / "work").mkdir(parents=True)
    (home / "jobs" / "other" / "work" / "model.txt").write_text("other project's data")
    (home / "config.toml").write_text('superuser_secret = "s3cret"\n')
    (home / "secret.key").write_bytes(b"k" * 32)
    (home / "liqi.db").write_bytes(b"SQLite format 3\x00")
    (home / "jobs" / "mine" / "work").mkdir(parents=True)
    return home


@pytest.fixture
def user() -> tuple[int, int] | None:
    return workload_user(PROJECT)


def _policy(home: Path, user: tuple[int, int] | None, **kw: object) -> SandboxPolicy:
    work = home / "jobs" / "mine" / "work"
    if user is not None:
        os.chown(work, *user)
    values: dict[str, object] = {
        "name": "test",
        "uid": user[0] if user else None,
        "gid": user[1] if user else None,
        "writable": (str(work),),
        "env": safe_env(os.environ, LIQI_JOB_ID="j1"),
        "memory_mb": 256,
        "pids_max": 64,
        **kw,
    }
    return SandboxPolicy(**values)  # type: ignore[arg-type]


@pytest.fixture
def run(home: Path, user: tuple[int, int] | None) -> Iterator[Run]:
    started: list[SandboxedProcess] = []

    def _run(code: str, **kw: object) -> tuple[int, str, SandboxedProcess]:
        policy = _policy(home, user, **kw)
        out = home.parent / f"out-{len(started)}.log"
        with open(out, "wb") as log:
            proc = SandboxedProcess(
                policy,
                [sys.executable, "-c", code],
                str(home / "jobs" / "mine" / "work"),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        started.append(proc)
        code_ = proc.wait(timeout=60)
        return code_, out.read_text(), proc

    yield _run
    for proc in started:
        proc.close()


def test_server_files_are_not_visible(run: Run, home: Path) -> None:
    code, out, _ = run(
        "import os\n"
        f"for name in ('config.toml', 'secret.key', 'liqi.db'):\n"
        f"    print(name, os.path.exists(os.path.join({str(home)!r}, name)))\n"
        f"print('home', os.path.exists({str(home)!r} + '/jobs/mine'))\n"
    )
    assert code == 0, out
    assert "config.toml False" in out
    assert "secret.key False" in out
    assert "liqi.db False" in out
    assert "home True" in out  # only its own folder's path exists


def test_another_workloads_folder_is_not_visible(run: Run, home: Path) -> None:
    other = home / "jobs" / "other" / "work" / "model.txt"
    code, out, _ = run(f"print(open({str(other)!r}).read())")
    assert code != 0
    assert "FileNotFoundError" in out


def test_environment_is_only_the_allow_list(run: Run) -> None:
    os.environ["LIQI_DATABASE_URL"] = "postgresql://u:secret@db/liqi"
    try:
        code, out, _ = run("import os; print(sorted(os.environ))")
    finally:
        del os.environ["LIQI_DATABASE_URL"]
    assert code == 0, out
    names = set(eval(out))
    assert "LIQI_DATABASE_URL" not in names
    assert names <= {"PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONPATH", "PWD"} | {
        "PYTHONHASHSEED",
        "LIQI_JOB_ID",
    }
    assert "LIQI_JOB_ID" in names


def test_cannot_see_or_signal_outside_processes(run: Run) -> None:
    mine = os.getpid()
    code, out, _ = run(
        "import os, signal\n"
        "pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n"
        "print('pids', pids)\n"
        f"try:\n    os.kill({mine}, signal.SIGTERM)\n    print('signalled')\n"
        "except OSError as exc:\n    print('refused', type(exc).__name__)\n"
    )
    assert code == 0, out
    assert "signalled" not in out
    assert "refused" in out
    pids = eval(out.split("pids ", 1)[1].splitlines()[0])
    assert max(pids) < 10, pids  # its own namespace: bwrap's init, the process itself


def _escaping_workload(home: Path, user: tuple[int, int] | None) -> SandboxedProcess:
    """A workload whose grandchild forks away in a session of its own, then reports ready."""
    code = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        open('ready', 'w').write(str(os.getpid()))\n"
        "        time.sleep(600)\n"
        "    os._exit(0)\n"
        "time.sleep(600)\n"
    )
    work = home / "jobs" / "mine" / "work"
    return SandboxedProcess(_policy(home, user), [sys.executable, "-c", code], str(work))


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + 30
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert path.exists(), f"{path} never appeared"


def _all_gone(pids: set[int]) -> bool:
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            pass
    return True


def test_double_forked_child_dies_when_the_cgroup_is_killed(
    home: Path, user: tuple[int, int] | None
) -> None:
    proc = _escaping_workload(home, user)
    try:
        _wait_for(home / "jobs" / "mine" / "work" / "ready")
        members = proc.cgroup.pids()
        # bwrap, its init in the namespace, the script, and the forked-away grandchild
        assert len(members) >= 3, members
        assert proc.pid in members
        proc.kill()
        assert proc.cgroup.pids() == set()
        assert _all_gone(members), [p for p in members if psutil.pid_exists(p)]
    finally:
        proc.close()


def test_nothing_survives_the_workloads_own_end(run: Run, home: Path) -> None:
    code, out, proc = run(
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(600)\n"
        "    os._exit(0)\n"
        "time.sleep(0.3)\n"
        "print('parent done')\n"
    )
    assert code == 0, out
    deadline = time.monotonic() + 10
    while proc.cgroup.pids() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.cgroup.pids() == set()


def test_memory_past_the_limit_is_killed_out_of_memory(run: Run) -> None:
    code, out, proc = run(
        "blocks = []\nwhile True:\n    blocks.append(bytearray(16 * 1024 * 1024))\n",
        memory_mb=64,
    )
    assert code != 0, out
    reason = proc.limit_reason()
    assert reason is not None
    assert reason.startswith("out of memory"), reason


def test_fork_bomb_is_bounded_by_pids_max(run: Run) -> None:
    _code, out, proc = run(
        "import os, time\n"
        "made = 0\n"
        "try:\n"
        "    for _ in range(200):\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(30)\n"
        "            os._exit(0)\n"
        "        made += 1\n"
        "except OSError as exc:\n"
        "    print('refused', made, exc.errno, flush=True)\n"
        "os._exit(0)\n",
        pids_max=20,
    )
    assert "refused" in out, out
    made = int(out.split("refused ", 1)[1].split()[0])
    assert made < 20
    reason = proc.limit_reason()
    assert reason is not None
    assert "pids_max" in reason
    proc.kill()
    assert proc.cgroup.pids() == set()


def test_cannot_write_outside_its_folder(run: Run, home: Path) -> None:
    targets = [str(home / "jobs" / "other" / "work" / "x"), sys.prefix + "/x", "/usr/x", "/etc/x"]
    code, out, _ = run(
        "for path in " + repr(targets) + ":\n"
        "    try:\n"
        "        open(path, 'w').write('x')\n"
        "        print('wrote', path)\n"
        "    except OSError as exc:\n"
        "        print('refused', path, type(exc).__name__)\n"
    )
    assert code == 0, out
    assert "wrote" not in out
    assert out.count("refused") == len(targets)
    assert not (home / "jobs" / "other" / "work" / "x").exists()


def test_files_in_its_folder_belong_to_the_workload_user(
    run: Run,
    home: Path,
    user: tuple[int, int] | None,
) -> None:
    code, out, _ = run("open('made.txt', 'w').write('hello'); open('/tmp/t', 'w').write('x')")
    assert code == 0, out
    made = home / "jobs" / "mine" / "work" / "made.txt"
    assert made.read_text() == "hello"
    if os.geteuid() == 0:
        assert user is not None
        assert (made.stat().st_uid, made.stat().st_gid) == user
        assert user[0] != 0
    else:
        assert made.stat().st_uid == os.geteuid()


def test_the_tmp_folder_is_private_and_bounded(run: Run) -> None:
    code, out, _ = run(
        "import os\n"
        "print('entries', os.listdir('/tmp'))\n"
        "try:\n"
        "    with open('/tmp/big', 'wb') as f:\n"
        "        for _ in range(64):\n"
        "            f.write(b'x' * 1024 * 1024)\n"
        "    print('filled')\n"
        "except OSError as exc:\n"
        "    print('full', exc.errno)\n",
        tmp_mb=8,
    )
    assert code == 0, out
    assert "full" in out
    assert "filled" not in out


def test_open_files_are_bounded_by_nofile(run: Run) -> None:
    """100,000 open files are refused at the limit, which the workload cannot raise; the
    server's own limit is unchanged."""
    ours = resource.getrlimit(resource.RLIMIT_NOFILE)
    code, out, proc = run(
        "import os, resource\n"
        "print('limits', *resource.getrlimit(resource.RLIMIT_NOFILE), flush=True)\n"
        "try:\n"
        "    resource.setrlimit(resource.RLIMIT_NOFILE, (100_000, 100_000))\n"
        "    print('raised')\n"
        "except (OSError, ValueError) as exc:\n"
        "    print('not raised', type(exc).__name__)\n"
        "held = []\n"
        "try:\n"
        "    for _ in range(100_000):\n"
        "        held.append(os.open('/dev/null', os.O_RDONLY))\n"
        "    print('opened all')\n"
        "except OSError as exc:\n"
        "    print('refused', len(held), exc.errno, flush=True)\n"
        "if os.fork() == 0:\n"  # a child inherits the limit
        "    print('child', *resource.getrlimit(resource.RLIMIT_NOFILE), flush=True)\n"
        "    os._exit(0)\n"
        "os.wait()\n",
        nofile=128,
    )
    assert code == 0, out
    assert "limits 128 128" in out
    assert "child 128 128" in out
    assert "not raised" in out
    assert "opened all" not in out
    refused = out.split("refused ", 1)[1].split()
    assert int(refused[1]) == errno.EMFILE
    assert 100 < int(refused[0]) < 128  # stdin, stdout, stderr and Python's own are open too
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == ours
    assert proc.cgroup.pids() == set()


def test_the_cgroup_is_removed_on_close(home: Path, user: tuple[int, int] | None) -> None:
    proc = SandboxedProcess(
        _policy(home, user), [sys.executable, "-c", "import time; time.sleep(60)"], "/"
    )
    deadline = time.monotonic() + 10
    while not proc.cgroup.pids() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.cgroup.pids()
    proc.close()
    assert proc.poll() is not None
    assert not any(folder.exists() for folder in proc.cgroup.dirs.values())


def test_empty_cgroups_left_by_a_killed_supervisor_are_swept() -> None:
    layout = detect_layout()
    assert not isinstance(layout, str), layout
    left = Cgroup(layout, "left-behind-by-a-kill")
    left.create(memory_mb=64, pids_max=8, cpu=None)
    assert all(folder.is_dir() for folder in left.dirs.values())
    assert sweep_stale(layout, min_age_s=3600) == 0  # too young: its process may be joining
    assert sweep_stale(layout, min_age_s=0) >= len(left.dirs)
    assert not any(folder.exists() for folder in left.dirs.values())


def test_liqi_home_stays_hidden_under_a_readable_folder(run: Run, home: Path) -> None:
    """A Python environment installed above LIQI_HOME is bound whole; the home is not."""
    home.parent.chmod(0o755)  # as a Python environment's folder would be
    code, out, _ = run(
        "import os\n"
        f"print('home', sorted(os.listdir({str(home)!r})))\n"
        f"print('config', os.path.exists({str(home / 'config.toml')!r}))\n"
        "open('made.txt', 'w').write('x')\n"
        f"print('parent', os.path.isdir({str(home.parent)!r}))\n",
        readable=(str(home.parent),),
        hidden=(str(home),),
    )
    assert code == 0, out
    assert "home ['jobs']" in out
    assert "config False" in out
    assert "parent True" in out
    assert (home / "jobs" / "mine" / "work" / "made.txt").exists()
