"""Staging's transfers, bounded: real HTTP servers on loopback that answer 404, never
answer, send a huge body or an endless one; processors from a bucket as a folder, an
archive or a script; unsafe archives refused."""

from __future__ import annotations

import http.server
import io
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from liqi.control.fetch_policy import FetchPolicy
from liqi.control.services import staging
from liqi.control.services.staging import StagingOrder
from liqi.control.services.transfer import StagingLimits, Transfer
from liqi.core.service_spec import parse_service_spec
from liqi.errors import ArchiveError, InvalidRequestError, StagingCancelledError, StoreError
from liqi.stores.local import LocalStore

pytestmark = pytest.mark.timeout(60)

LOOPBACK = FetchPolicy(private_urls=("127.0.0.0/8",))  # the test servers are on loopback
LIMITS = StagingLimits(timeout_s=20.0, read_timeout_s=0.5, max_bytes=1 << 20, max_files=50)


class _Handler(http.server.BaseHTTPRequestHandler):
    stop = threading.Event()

    def do_GET(self) -> None:
        if self.path == "/big":
            self.send_response(200)
            self.send_header("Content-Length", str(2 << 30))
            self.end_headers()
            self.stop.wait(10)
        elif self.path == "/endless":
            self.send_response(200)
            self.end_headers()
            chunk = b"\0" * 65536
            try:
                while not self.stop.is_set():
                    self.wfile.write(chunk)
            except OSError:
                return
        elif self.path == "/silent":
            self.stop.wait(10)
        elif self.path == "/proc.tar.gz":
            body = _tar({"proc/app.py": b"print('hi')\n"})
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_error(404)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        _Handler.stop.set()
        server.shutdown()
        server.server_close()


def _tar(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _order(
    tmp_path: Path, document: dict[str, object], store: LocalStore | None = None
) -> StagingOrder:
    spec = parse_service_spec({"name": "svc", **document}).spec
    return StagingOrder(
        instance_id="svc-v1-abc",
        instance_dir=tmp_path / "instance",
        cache_dir=tmp_path / "cache",
        home=tmp_path,
        spec=spec,
        token=None,
        credentials=None,
        stores={"code": store} if store is not None else {},
        policy=LOOPBACK,
    )


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "buckets" / "code", tmp_path / "tmp")


def _model(url: str) -> dict[str, object]:
    return {"model_path": url, "processor": "tensorflow_cpu_1.15"}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/missing.tar.gz", "HTTP 404"),
        ("/big", r"larger than 1 MiB, the most staging takes .* \(it says 2048 MiB\)"),
        ("/endless", "larger than 1 MiB, the most staging takes"),
        ("/silent", "ReadTimeout"),
    ],
)
def test_model_downloads_fail_fast_with_the_reason(
    tmp_path: Path, site: str, path: str, expected: str
) -> None:
    order = _order(tmp_path, _model(site + path))
    with pytest.raises(StoreError, match=expected):
        staging.stage(order, LIMITS)
    assert not list((tmp_path / "cache" / "archives").glob("*"))  # nothing half-written


def test_a_closed_port_fails_at_once(tmp_path: Path) -> None:
    order = _order(tmp_path, _model("http://127.0.0.1:9/model.tar.gz"))
    with pytest.raises(StoreError, match="ConnectError"):
        staging.stage(order, LIMITS)


def test_cancelled_staging_stops(tmp_path: Path, site: str) -> None:
    cancelled = threading.Event()
    cancelled.set()
    with pytest.raises(StagingCancelledError):
        staging.stage(_order(tmp_path, _model(site + "/endless")), LIMITS, cancelled)


def test_a_processor_archive_over_http(tmp_path: Path, site: str) -> None:
    order = _order(
        tmp_path,
        {"processor_path": site + "/proc.tar.gz", "processor_entry": "app.py"},
    )
    spec = staging.stage(order, LIMITS)
    assert spec.processor == "python"
    assert spec.processor_path is not None
    assert (Path(spec.processor_path) / "app.py").read_bytes() == b"print('hi')\n"
    assert spec.model_uri == spec.processor_path  # no model_path: the code's folder


def test_processors_from_a_bucket_folder_archive_or_script(
    tmp_path: Path, store: LocalStore
) -> None:
    store.put("proc/app.py", [b"import helper\n"])
    store.put("proc/helper.py", [b"X = 1\n"])
    store.put("proc/data/table.csv", [b"a,b\n"])
    store.put("pkg/app.tar.gz", [_tar({"app/app.py": b"# packed\n"})])
    model = {"model_path": "oss://models/m/", "processor_entry": "app.py"}

    folder = staging.stage(
        _order(tmp_path, {**model, "processor_path": "oss://code/proc/"}, store), LIMITS
    )
    assert folder.processor_path is not None
    staged = Path(folder.processor_path)
    assert sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file()) == [
        "app.py",
        "data/table.csv",
        "helper.py",
    ]
    assert folder.model_uri == "oss://models/m/"  # the instance fetches the model itself

    packed = staging.stage(
        _order(tmp_path, {**model, "processor_path": "oss://code/pkg/app.tar.gz"}, store), LIMITS
    )
    assert packed.processor_path is not None
    assert (Path(packed.processor_path) / "app.py").read_bytes() == b"# packed\n"

    script = staging.stage(
        _order(tmp_path, {**model, "processor_path": "oss://code/proc/app.py"}, store), LIMITS
    )
    assert script.processor_path is not None
    assert Path(script.processor_path).read_bytes() == b"import helper\n"


def test_unsafe_or_oversized_processors_are_refused(tmp_path: Path, store: LocalStore) -> None:
    store.put("evil/app.tar.gz", [_tar({"../escape.py": b"x"})])
    model = {"model_path": "oss://models/m/", "processor_entry": "app.py"}
    with pytest.raises(ArchiveError, match=r"\.\./escape\.py"):
        staging.stage(
            _order(tmp_path, {**model, "processor_path": "oss://code/evil/app.tar.gz"}, store),
            LIMITS,
        )
    assert not (tmp_path / "escape.py").exists()
    for i in range(60):
        store.put(f"many/f{i}.py", [b""])
    with pytest.raises(StoreError, match="more than 50 files"):
        staging.stage(
            _order(tmp_path, {**model, "processor_path": "oss://code/many/"}, store), LIMITS
        )
    with pytest.raises(InvalidRequestError, match="is empty"):
        staging.stage(
            _order(tmp_path, {**model, "processor_path": "oss://code/nothing/"}, store), LIMITS
        )


def test_a_local_folder_is_copied_with_links_as_links_and_within_the_limits(
    tmp_path: Path,
) -> None:
    """Sandboxed instances get their local paths copied in (transfer.copy_local): a link is
    copied as a link (it resolves in the sandbox's view, not the server's), and a folder
    over the limits is refused while it is walked, leaving nothing behind."""
    transfer = Transfer(LIMITS, threading.Event(), FetchPolicy())
    model = tmp_path / "model"
    (model / "1").mkdir(parents=True)
    (model / "1" / "saved_model.pb").write_bytes(b"pb")
    (model / "secret").symlink_to("/etc/shadow")
    copied = transfer.copy_local(model, tmp_path / "inst" / "model", what="model path")
    assert (copied / "1" / "saved_model.pb").read_bytes() == b"pb"
    assert (copied / "secret").is_symlink()
    assert str((copied / "secret").readlink()) == "/etc/shadow"

    many = tmp_path / "many"
    many.mkdir()
    for i in range(LIMITS.max_files + 1):
        (many / f"f{i}").write_bytes(b"x")
    with pytest.raises(StoreError, match="more than 50 files"):
        transfer.copy_local(many, tmp_path / "inst" / "many", what="model path")
    assert not (tmp_path / "inst" / "many").exists()
    assert not (tmp_path / "inst" / ".tmp-many").exists()
    with pytest.raises(StoreError, match="does not exist"):
        transfer.copy_local(tmp_path / "nowhere", tmp_path / "inst" / "x", what="model path")
