"""Tools some tests run, made once per machine under a lock (pytest-xdist workers may ask at
the same time): the real EAS SDK's venv and the JavaScript client's build."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
JS_CLIENT = ROOT / "clients" / "js"


@contextmanager
def _locked(name: str) -> Iterator[None]:
    with open(ROOT / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def eas_sdk_python() -> str:
    """The python of .venv-eas/ with the real `eas-prediction` from PyPI (scripts/eas-sdk-venv).
    Raises AssertionError with pip's output when it cannot be made."""
    env = {**os.environ, "PYTHON": sys.executable}
    with _locked("venv-eas"):
        done = subprocess.run(
            [str(ROOT / "scripts" / "eas-sdk-venv")],
            capture_output=True,
            text=True,
            env=env,
            timeout=480,
            check=False,
        )
    assert done.returncode == 0, f"scripts/eas-sdk-venv failed:\n{done.stderr[-3000:]}"
    return done.stdout.strip().splitlines()[-1]


def built_js_client() -> Path:
    """clients/js/dist/index.js, built (npm ci, npm run build) when missing; scripts/test
    builds it before pytest."""
    index = JS_CLIENT / "dist" / "index.js"
    with _locked("js-build"):
        if not index.is_file():
            npm = shutil.which("npm")
            assert npm, "building clients/js needs Node >= 18 and npm"
            if not (JS_CLIENT / "node_modules").is_dir():
                install = [npm, "ci", "--silent", "--no-audit", "--no-fund"]
                subprocess.run(install, cwd=JS_CLIENT, check=True, timeout=480)
            build = [npm, "run", "build", "--silent"]
            subprocess.run(build, cwd=JS_CLIENT, check=True, timeout=300)
    return index
