"""Job overhead: submit -> the script's first line, against a bare `python script.py`; and the
wall time of mnist_softmax.py inside a job against running it directly.

Run: .venv/bin/python benchmarks/jobs_overhead.py [--rounds N] [--isolation]
Prints a Markdown table; numbers are medians over the rounds, measured in one run.
With --isolation it measures only submit -> first line, with the sandbox and without
(``isolation`` "sandbox" and "none"), rounds interleaved.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.servers import live_server  # noqa: E402

from liqi.client import Client  # noqa: E402
from liqi.datasets.mnist_reader import builtin_dir  # noqa: E402
from liqi.sandbox import SandboxedProcess, SandboxPolicy, safe_env, workload_user  # noqa: E402

FIRST_LINE = "import time\nprint('FIRST', time.time(), flush=True)\n"


def first_line_time(output: str) -> float:
    for line in output.splitlines():
        if line.startswith("FIRST "):
            return float(line.split()[1])
    raise RuntimeError(f"no FIRST line in {output!r}")


def bare_first_line(script: Path) -> float:
    start = time.time()
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True)
    return first_line_time(out.stdout) - start


def submit_to_first_line(client: Client, uri: str) -> float:
    start = time.time()
    job = client.submit_job(uri)
    done = client.wait_job(job.id, timeout_s=60)
    assert done.state == "SUCCEEDED", done.reason
    return first_line_time("".join(client.follow_logs(job.id, follow=False))) - start


def compare_isolation(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        script = tmp / "first.py"
        script.write_text(FIRST_LINE)
        times: dict[str, list[float]] = {"none": [], "sandbox": []}
        with (
            live_server(tmp / "a", None, isolation="none") as plain,
            live_server(tmp / "b", None, isolation="sandbox") as boxed,
            plain.admin() as plain_client,
            boxed.admin() as boxed_client,
        ):
            clients = {"none": plain_client, "sandbox": boxed_client}
            uris = {name: c.add_resource(script).uri for name, c in clients.items()}
            for name in times:  # one warm-up job each
                submit_to_first_line(clients[name], uris[name])
            for _ in range(rounds):
                for name in times:
                    times[name].append(submit_to_first_line(clients[name], uris[name]))
        spawned: dict[str, list[float]] = {"none": [], "sandbox": []}
        for _ in range(rounds):
            for name in spawned:
                spawned[name].append(spawn_to_first_line(script, name == "sandbox"))
    none, boxed_ms = (statistics.median(times[n]) * 1000 for n in ("none", "sandbox"))
    bare, boxed_spawn = (statistics.median(spawned[n]) * 1000 for n in ("none", "sandbox"))
    print("| measure | isolation none | isolation sandbox | sandbox adds |")
    print("|---|---|---|---|")
    print(
        f"| `submit` to first line | {none:.0f} ms | {boxed_ms:.0f} ms | {boxed_ms - none:.0f} ms |"
    )
    print(
        f"| process start to first line | {bare:.0f} ms | {boxed_spawn:.0f} ms | "
        f"{boxed_spawn - bare:.0f} ms |"
    )


def spawn_to_first_line(script: Path, sandboxed: bool) -> float:
    """The script's first line after starting it directly, or in a SandboxedProcess (its
    cgroup made and removed, the workload user and bwrap's namespaces)."""
    argv = [sys.executable, str(script)]
    start = time.time()
    if not sandboxed:
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        return first_line_time(out) - start
    folder = Path(tempfile.mkdtemp())
    script.parent.chmod(0o755)  # the workload user reads it (a TemporaryDirectory is 0700)
    user = workload_user("bench")
    policy = SandboxPolicy(
        name="bench",
        uid=user[0] if user else None,
        gid=user[1] if user else None,
        readable=(str(script.parent),),
        env=safe_env({}),
    )
    with open(folder / "out", "wb") as log:
        process = SandboxedProcess(policy, argv, "/", stdout=log)
    process.wait()
    process.close()
    return first_line_time((folder / "out").read_text()) - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--isolation", action="store_true", help="sandbox against none only")
    args = parser.parse_args()
    rounds = args.rounds
    if args.isolation:
        compare_isolation(rounds)
        return
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        script = tmp / "first.py"
        script.write_text(FIRST_LINE)
        bare = [bare_first_line(script) for _ in range(rounds)]
        volumes = f"{builtin_dir() / 'train'},{builtin_dir() / 'test'}"
        example = ROOT / "examples" / "mnist" / "mnist_softmax.py"
        direct = []
        for i in range(max(2, rounds // 3)):
            out_dir = tmp / f"direct{i}"
            out_dir.mkdir()
            start = time.monotonic()
            subprocess.run(
                [sys.executable, "-m", "liqi.training.launcher", "--tf1", str(example),
                 f"--volumes={volumes}", f"--buckets={out_dir}/"],
                capture_output=True, check=True,
            )  # fmt: skip
            direct.append(time.monotonic() - start)
        with live_server(tmp / "home", None) as server, server.admin() as client:
            uri = client.add_resource(script).uri
            in_job = []
            for _ in range(rounds):
                start = time.time()
                job = client.submit_job(uri)
                client.wait_job(job.id, timeout_s=60)
                text = "".join(client.follow_logs(job.id, follow=False))
                in_job.append(first_line_time(text) - start)
            client.create_bucket("bench", project="default")
            softmax = client.add_resource(example).uri
            job_runs = []
            for i in range(max(2, rounds // 3)):
                job = client.submit_job(
                    softmax,
                    datasets=["odps://algo_platform/volumes/mnist/train",
                              "odps://algo_platform/volumes/mnist/test"],
                    buckets=[f"oss://bench/run{i}/"],
                    tf1_compat=True,
                )  # fmt: skip
                done = client.wait_job(job.id, timeout_s=300)
                assert done.state == "SUCCEEDED", done.reason
                # The supervisor's own record: the script's process lifetime inside the job.
                result = json.loads((server.home / "jobs" / job.id / "result.json").read_text())
                started = datetime.fromisoformat(result["started_at"])
                ended = datetime.fromisoformat(result["ended_at"])
                job_runs.append((ended - started).total_seconds())
    b, j = statistics.median(bare), statistics.median(in_job)
    d, r = statistics.median(direct), statistics.median(job_runs)
    print("| measure | median | ratio |")
    print("|---|---|---|")
    print(f"| bare `python script.py` to first line | {b * 1000:.0f} ms | |")
    overhead_ms = (j - b) * 1000
    print(f"| `submit` to first line in a job | {j * 1000:.0f} ms | overhead {overhead_ms:.0f} ms|")
    print(f"| mnist_softmax.py run directly | {d:.2f} s | |")
    print(
        f"| mnist_softmax.py inside a job (the task's lifetime) | {r:.2f} s | "
        f"direct / job = {d / r:.2f} |"
    )


if __name__ == "__main__":
    main()
