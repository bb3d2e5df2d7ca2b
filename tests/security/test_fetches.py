"""Issue 16, attacks 3 and 4, as a member of one project would try them through the SDK against
a real control plane: the server fetching from loopback, link-local and private addresses (a
bucket's endpoint, a model URL, a redirect), and local paths in a spec reading another
project's folder under LIQI_HOME or telling existing paths from missing ones.

The control plane here allows only 127.0.0.2 among private addresses (LIQI_ALLOW_PRIVATE_URLS),
so a site on 127.0.0.2 plays a public host whose redirect points at loopback."""

from __future__ import annotations

import http.server
import io
import tarfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from liqi.client import Client
from liqi.control.fetch_policy import FetchPolicy
from liqi.control.services import staging
from liqi.control.services.staging import StagingOrder
from liqi.control.services.transfer import StagingLimits
from liqi.core.service_spec import parse_service_spec
from liqi.errors import LiqiError, NotFoundError, PermissionDeniedError, StoreError
from tests.support.servers import LiveServer, live_server

pytestmark = pytest.mark.timeout(120)

PUBLIC_LOOKING = "127.0.0.2"  # the one private address the test plane allows


class _Site(http.server.BaseHTTPRequestHandler):
    """``/m.tar.gz``: a model archive; ``/hop``: a 302 to ``redirect_to``."""

    redirect_to = ""

    def do_GET(self) -> None:
        if self.path == "/m.tar.gz":
            body = _tar({"m/1/saved_model.pb": b"not loaded"})
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/hop":
            self.send_response(302)
            self.send_header("Location", self.redirect_to)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path.startswith("/latest/"):  # a cloud metadata service's shape
            self.send_response(200)
            self.send_header("Content-Length", "6")
            self.end_headers()
            self.wfile.write(b"SECRET")
        else:
            self.send_error(404)

    def log_message(self, format: str, *args: object) -> None:
        return


def _tar(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@pytest.fixture(scope="module")
def site() -> Iterator[Callable[[str], str]]:
    """Two sites: ``site("127.0.0.1")`` (loopback, refused) and ``site("127.0.0.2")``."""
    servers = [
        http.server.ThreadingHTTPServer((host, 0), _Site) for host in ("127.0.0.1", "127.0.0.2")
    ]
    for server in servers:
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
    urls = {
        str(s.server_address[0]): f"http://{s.server_address[0]}:{s.server_address[1]}"
        for s in servers
    }
    _Site.redirect_to = urls["127.0.0.1"] + "/m.tar.gz"
    try:
        yield urls.__getitem__
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


@dataclass
class World:
    plane: LiveServer
    admin: Client
    member: Client  # a member of team_a only
    root: Path  # listed in LIQI_LOCAL_MODEL_ROOTS
    theirs: Path  # team_b's bucket folder under LIQI_HOME


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("fetches")
    home = base / "home"
    root = base / "models"
    (root / "mine" / "1").mkdir(parents=True)
    (root / "mine" / "1" / "saved_model.pb").write_bytes(b"not loaded")
    roots = (root, home)  # LIQI_HOME listed too: still never readable through a spec
    with (
        live_server(
            home, None, allow_private_urls=(PUBLIC_LOOKING,), local_model_roots=roots
        ) as live,
        live.admin() as admin,
    ):
        admin.create_project("team_a")
        admin.create_project("team_b")
        admin.create_bucket("team-b-models", project="team_b")
        admin.put_object("team-b-models", "models/1/saved_model.pb", b"team b's model")
        key = admin.create_key(project="team_a", role="member", name="member")
        assert key.secret
        (root / "escape").symlink_to(home / "store" / "team-b-models")
        with live.client(key.access_id, key.secret) as member:
            yield World(live, admin, member, root, home / "store" / "team-b-models")


def _service(name: str, **paths: object) -> dict[str, object]:
    return {
        "name": name,
        "processor": "tensorflow_cpu_1.15",
        "metadata": {"instance": 0},
        **paths,
    }


def _naming(world: World, name: str, field: str, path: str) -> dict[str, object]:
    """A service whose ``field`` is ``path`` (the rest valid for the member)."""
    if field == "processor_path":
        return {
            "name": name,
            "processor_type": "python",
            "processor_path": path,
            "processor_entry": "app.py",
            "metadata": {"instance": 0},
        }
    if field == "warm_up_data_path":
        return _service(name, model_path=str(world.root / "mine"), warm_up_data_path=path)
    return _service(name, model_path=path)


def _refusal(client: Client, document: dict[str, object]) -> LiqiError:
    with pytest.raises(LiqiError) as caught:
        client.create_service(document, project="team_a")
    with pytest.raises(NotFoundError):
        client.get_service(str(document["name"]))  # nothing was written
    return caught.value


# -- store endpoints ----------------------------------------------------------------------------


def test_a_member_cannot_put_a_bucket_on_a_loopback_endpoint(world: World, s3_server: str) -> None:
    with pytest.raises(PermissionDeniedError) as caught:
        world.member.create_bucket(
            "via-loopback",
            project="team_a",
            backend="s3",
            endpoint=s3_server,
            external_bucket="anything",
            credentials=("testing", "testing"),
        )
    assert caught.value.http_status == 403
    assert "LIQI_STORE_ENDPOINTS" in caught.value.message
    assert "via-loopback" not in [b.name for b in world.admin.list_buckets()]


def test_the_superuser_still_can(world: World, s3_server: str) -> None:
    from tests.support.moto_s3 import create_bucket

    external = create_bucket(s3_server)
    world.admin.create_bucket(
        "su-on-s3",
        project="team_a",
        backend="s3",
        endpoint=s3_server,
        external_bucket=external,
        region="us-east-1",
        credentials=("testing", "testing"),
    )
    world.admin.put_object("su-on-s3", "a.txt", b"hello")
    listed = world.member.list_objects("su-on-s3")  # a member reads what the superuser made
    assert [o.key for o in listed.objects] == ["a.txt"]


def test_a_store_that_answers_garbage_is_a_502_with_the_reason(world: World) -> None:
    class Garbage(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<<this is not S3>>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_PUT(self) -> None:
            self.do_GET()

        def log_message(self, format: str, *args: object) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Garbage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        world.admin.create_bucket(
            "garbage-store",
            project="team_a",
            backend="s3",
            endpoint=f"http://127.0.0.1:{server.server_address[1]}",
            external_bucket="x",
            region="us-east-1",
            credentials=("testing", "testing"),
        )
        with pytest.raises(StoreError) as caught:
            world.admin.list_objects("garbage-store")
        assert caught.value.http_status == 502
        assert "S3" in caught.value.message
    finally:
        server.shutdown()
        server.server_close()


# -- http(s) model and processor URLs -----------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "{loopback}/m.tar.gz",
        "http://localhost:9/m.tar.gz",  # a name that resolves to loopback
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/m.tar.gz",
        "http://[::1]:9/m.tar.gz",
        "http://[::ffff:127.0.0.1]:9/m.tar.gz",
        "http://0.0.0.0:9/m.tar.gz",
    ],
)
def test_a_member_cannot_make_the_server_fetch_a_private_url(
    world: World, site: Callable[[str], str], url: str
) -> None:
    url = url.format(loopback=site("127.0.0.1"))
    for field in ("model_path", "processor_path", "warm_up_data_path"):
        refused = _refusal(world.member, _naming(world, "ssrf", field, url))
        assert isinstance(refused, PermissionDeniedError), refused.message
        assert url in refused.message
        assert "LIQI_ALLOW_PRIVATE_URLS" in refused.message


def test_a_redirect_to_loopback_fails_at_staging_with_the_reason(
    world: World, site: Callable[[str], str]
) -> None:
    url = site(PUBLIC_LOOKING) + "/hop"  # allowed; it answers 302 to loopback
    document = _service("redirected", model_path=url, metadata={"instance": 1})
    world.member.create_service(document, project="team_a")
    try:
        info = world.member.wait_service("redirected", timeout_s=60, until={"FAILED"})
        assert info.state == "FAILED"
        assert "127.0.0.1" in info.reason, info.reason
        assert "LIQI_ALLOW_PRIVATE_URLS" in info.reason, info.reason
    finally:
        world.member.delete_service("redirected")


def test_an_allowed_host_is_fetched(world: World, site: Callable[[str], str]) -> None:
    """What the settings allow works for a member and the superuser alike."""
    url = site(PUBLIC_LOOKING) + "/m.tar.gz"
    for who, name in ((world.member, "allowed_member"), (world.admin, "allowed_admin")):
        created = who.create_service(_service(name, model_path=url), project="team_a")
        assert created.name == name
        who.delete_service(name)


# -- local paths ---------------------------------------------------------------------------------


def test_a_member_cannot_read_another_projects_folder_and_learns_nothing(world: World) -> None:
    """The folder that exists, one that does not, one outside every root, a symlink and a
    ``..`` out of the root: one answer, whatever the disk holds."""
    paths = [
        str(world.theirs / "models"),  # exists, under LIQI_HOME (listed, still refused)
        str(world.theirs / "missing"),  # does not exist
        "file://" + str(world.theirs / "models"),
        "/nonexistent/liqi/model",
        "/etc",
        str(world.root / "escape" / "models"),  # a symlink in the root into LIQI_HOME
        str(world.root / ".." / "home" / "store" / "team-b-models" / "models"),
        "relative/model",
    ]
    answers = set()
    for path in paths:
        for field in ("model_path", "processor_path", "warm_up_data_path"):
            refused = _refusal(world.member, _naming(world, "local", field, path))
            assert isinstance(refused, PermissionDeniedError), (path, refused.message)
            assert refused.http_status == 403
            assert "LIQI_LOCAL_MODEL_ROOTS" in refused.message
            answers.add(refused.message.replace(repr(path), "<path>"))
    assert len(answers) == 3  # one per field, the same for every path


def test_a_member_cannot_modify_a_service_onto_a_local_path(world: World) -> None:
    mine = str(world.root / "mine")
    world.member.create_service(_service("modified", model_path=mine), project="team_a")
    try:
        with pytest.raises(PermissionDeniedError, match="LIQI_LOCAL_MODEL_ROOTS"):
            world.member.modify_service("modified", {"model_path": str(world.theirs / "models")})
        assert len(world.member.list_service_versions("modified")) == 1
    finally:
        world.member.delete_service("modified")


def test_under_a_listed_root_a_member_may_and_the_superuser_may_anywhere(world: World) -> None:
    world.member.create_service(
        _service("rooted", model_path=str(world.root / "mine")), project="team_a"
    )
    world.member.delete_service("rooted")
    with pytest.raises(NotFoundError):  # inside a listed root, a missing path may say so
        world.member.create_service(
            _service("rooted_absent", model_path=str(world.root / "absent")), project="team_a"
        )
    world.admin.create_service(
        _service("su_local", model_path=str(world.theirs / "models")), project="team_a"
    )
    world.admin.delete_service("su_local")


# -- staging, the real gate ----------------------------------------------------------------------

LIMITS = StagingLimits(timeout_s=20.0, read_timeout_s=2.0, max_bytes=1 << 20, max_files=50)


def _order(
    tmp_path: Path, document: dict[str, object], policy: FetchPolicy, *, trusted: bool
) -> StagingOrder:
    return StagingOrder(
        instance_id="svc-v1-abc",
        instance_dir=tmp_path / "instance",
        cache_dir=tmp_path / "cache",
        home=tmp_path / "home",
        spec=parse_service_spec(
            {"name": "svc", "processor": "tensorflow_cpu_1.15", **document}
        ).spec,
        token=None,
        credentials=None,
        policy=policy,
        trusted=trusted,
    )


def test_staging_checks_every_redirect_hop(tmp_path: Path, site: Callable[[str], str]) -> None:
    hop = site(PUBLIC_LOOKING) + "/hop"
    scoped = FetchPolicy(private_urls=(PUBLIC_LOOKING,))
    with pytest.raises(PermissionDeniedError, match=r"127\.0\.0\.1.*LIQI_ALLOW_PRIVATE_URLS"):
        staging.stage(_order(tmp_path, {"model_path": hop}, scoped, trusted=True), LIMITS)
    assert not list((tmp_path / "cache" / "archives").glob("*"))
    both = FetchPolicy(private_urls=(PUBLIC_LOOKING, "127.0.0.1/32"))
    spec = staging.stage(_order(tmp_path, {"model_path": hop}, both, trusted=True), LIMITS)
    assert (Path(spec.model_uri) / "1" / "saved_model.pb").read_bytes() == b"not loaded"


def test_staging_refuses_a_local_path_an_untrusted_author_wrote(tmp_path: Path) -> None:
    model = tmp_path / "home" / "store" / "b" / "models"
    model.mkdir(parents=True)
    policy = FetchPolicy(home=tmp_path / "home", local_roots=(tmp_path,))
    for path in (str(model), str(tmp_path / "home" / "absent")):
        with pytest.raises(PermissionDeniedError, match="LIQI_LOCAL_MODEL_ROOTS"):
            staging.stage(_order(tmp_path, {"model_path": path}, policy, trusted=False), LIMITS)
    spec = staging.stage(_order(tmp_path, {"model_path": str(model)}, policy, trusted=True), LIMITS)
    assert spec.model_uri == str(model)
    mine = tmp_path / "mine"
    mine.mkdir()
    (tmp_path / "link").symlink_to(mine)
    order = _order(tmp_path, {"model_path": str(tmp_path / "link")}, policy, trusted=False)
    assert staging.stage(order, LIMITS).model_uri == str(mine)  # what was checked is served
