from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from liqi.datasets.mnist_reader import builtin_dir
from tests.support.moto_s3 import moto_s3_server
from tests.support.postgres import PostgresCluster
from tests.support.servers import LiveServer, live_server
from tests.support.tools import eas_sdk_python

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "mnist"
TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Markers follow the layout: everything under tests/e2e/ is ``e2e``, under tests/ray/
    ``ray``, under tests/reliability/ ``reliability``; a test that loads the exported MNIST
    model (the ``mnist_saved_model`` fixture) needs TensorFlow: ``tf``."""
    for item in items:
        if item.path.is_relative_to(TESTS / "e2e"):
            item.add_marker(pytest.mark.e2e)
        if item.path.is_relative_to(TESTS / "ray"):
            item.add_marker(pytest.mark.ray)
        if item.path.is_relative_to(TESTS / "reliability"):
            item.add_marker(pytest.mark.reliability)
        if "mnist_saved_model" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.tf)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """None (SQLite under LIQI_HOME) or the URL of a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return None
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    return cluster.create_database()


@pytest.fixture
def server(tmp_path: Path, database_url: str | None) -> Iterator[LiveServer]:
    """A real control plane on uvicorn (port 0), on SQLite and on PostgreSQL."""
    with live_server(tmp_path / "home", database_url) as live:
        yield live


@pytest.fixture
def sqlite_server(tmp_path: Path) -> Iterator[LiveServer]:
    """A real control plane on SQLite only, for tests that are not about the database."""
    with live_server(tmp_path / "home", None) as live:
        yield live


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """The endpoint URL of a real moto S3 server (credentials testing/testing, us-east-1)."""
    with moto_s3_server() as endpoint_url:
        yield endpoint_url


@pytest.fixture(scope="session")
def mnist_saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seed's MNIST softmax model, exported once per session by the real TF1 example."""
    out = tmp_path_factory.mktemp("mnist_export")
    # pytest's folders are private to root; a sandboxed instance reads a local model path as
    # its project's workload user, so the path must be readable by others (docs/services.md)
    out.chmod(0o755)
    volumes = f"{builtin_dir() / 'train'},{builtin_dir() / 'test'}"
    script = str(EXAMPLES / "mnist_softmax.py")
    command = [sys.executable, "-m", "liqi.training.launcher", "--tf1", script]
    command += [f"--volumes={volumes}", f"--buckets={out}/"]
    subprocess.run(command, check=True, capture_output=True, timeout=240)
    return out / "1"


@pytest.fixture(scope="session")
def eas_python() -> str:
    """The python of .venv-eas/: the real eas-prediction SDK (it pins an old protobuf)."""
    return eas_sdk_python()
