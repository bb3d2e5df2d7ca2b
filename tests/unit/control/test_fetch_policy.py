"""FetchPolicy's rules on their own: which addresses are public, what the allow-lists match,
how local paths resolve, and how the settings parse."""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from liqi.config import load_server_settings
from liqi.control.fetch_policy import FetchPolicy, is_public, open_url, parse_private_urls
from liqi.errors import ConfigError, PermissionDeniedError

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",  # shared (carrier-grade NAT)
        "0.0.0.0",
        "224.0.0.1",
        "239.1.1.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd12:3456::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
    ],
)
def test_non_public_addresses(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["1.1.1.1", "93.184.216.34", "2606:4700:4700::1111"])
def test_public_addresses(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


def test_the_private_url_allow_list_matches_hosts_ips_and_cidrs() -> None:
    policy = FetchPolicy(private_urls=("10.0.0.0/8", "models.internal", "127.0.0.2"))
    allowed = policy.allows_address
    assert allowed("x", ipaddress.ip_address("10.9.9.9"))
    assert allowed("models.internal", ipaddress.ip_address("192.168.0.5"))
    assert allowed("127.0.0.2", ipaddress.ip_address("127.0.0.2"))
    assert not allowed("x", ipaddress.ip_address("127.0.0.1"))
    assert not allowed("x", ipaddress.ip_address("169.254.169.254"))
    assert FetchPolicy(private_urls=("*",)).allows_address("x", ipaddress.ip_address("::1"))


def test_store_endpoints_need_the_superuser_or_the_list() -> None:
    policy = FetchPolicy(store_endpoints=("minio.internal:9000", "oss-cn-hangzhou.aliyuncs.com"))
    policy.check_store_endpoint("http://minio.internal:9000", superuser=False)
    policy.check_store_endpoint("oss-cn-hangzhou.aliyuncs.com", superuser=False)
    policy.check_store_endpoint("https://OSS-cn-hangzhou.aliyuncs.com:443", superuser=False)
    policy.check_store_endpoint(None, superuser=False)  # the provider's default endpoint
    policy.check_store_endpoint("http://127.0.0.1:9", superuser=True)
    for endpoint in ("http://minio.internal:9001", "http://127.0.0.1:9000", "minio.internal"):
        with pytest.raises(PermissionDeniedError, match="LIQI_STORE_ENDPOINTS"):
            policy.check_store_endpoint(endpoint, superuser=False)


def test_local_paths_resolve_before_the_roots_are_checked(tmp_path: Path) -> None:
    root = tmp_path / "root"
    home = root / "home"  # LIQI_HOME inside a listed root stays out
    (home / "store").mkdir(parents=True)
    (root / "model").mkdir()
    (root / "link").symlink_to(home / "store")
    policy = FetchPolicy(home=home, local_roots=(root,))
    assert policy.check_local_path(str(root / "model"), field="model_path", superuser=False) == (
        root / "model"
    )
    assert policy.check_local_path(f"file://{root}/absent", field="f", superuser=False) == (
        root / "absent"
    )
    messages = set()
    for path in (home / "store", root / "link", root / "model" / ".." / "..", tmp_path / "x"):
        with pytest.raises(PermissionDeniedError) as caught:
            policy.check_local_path(str(path), field="model_path", superuser=False)
        messages.add(caught.value.message.replace(repr(str(path)), "<path>"))
    assert len(messages) == 1
    assert policy.check_local_path(str(home), field="f", superuser=True) == home


def test_settings_parse(tmp_path: Path) -> None:
    settings = load_server_settings(
        {
            "LIQI_HOME": str(tmp_path),
            "LIQI_ALLOW_PRIVATE_URLS": "10.0.0.0/8, models.internal",
            "LIQI_STORE_ENDPOINTS": "Minio.internal:9000,oss-cn-hangzhou.aliyuncs.com",
            "LIQI_LOCAL_MODEL_ROOTS": "/srv/models:/data/models,/opt/m",
        }
    )
    assert settings.allow_private_urls == ("10.0.0.0/8", "models.internal")
    assert settings.store_endpoints == ("minio.internal:9000", "oss-cn-hangzhou.aliyuncs.com")
    assert settings.local_model_roots == (Path("/srv/models"), Path("/data/models"), Path("/opt/m"))
    default = load_server_settings({"LIQI_HOME": str(tmp_path)})
    assert (default.allow_private_urls, default.store_endpoints, default.local_model_roots) == (
        (),
        (),
        (),
    )
    assert parse_private_urls("1") == ("*",)
    assert parse_private_urls("0") == ()


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("LIQI_ALLOW_PRIVATE_URLS", "10.0.0.0/99", "is not a CIDR"),
        ("LIQI_STORE_ENDPOINTS", "http://minio:9000/", "is not a host or host:port"),
        ("LIQI_LOCAL_MODEL_ROOTS", "models", "is not an absolute path"),
    ],
)
def test_bad_settings_are_refused_at_start(
    tmp_path: Path, variable: str, value: str, says: str
) -> None:
    with pytest.raises(ConfigError, match=says):
        load_server_settings({"LIQI_HOME": str(tmp_path), variable: value})


class _Hello(http.server.BaseHTTPRequestHandler):
    hosts: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.hosts.append(self.headers.get("Host", ""))
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, format: str, *args: object) -> None:
        return


def _certificate(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for ``name`` and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / f"{name}.pem", folder / f"{name}.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@contextmanager
def _https_site(cert_file: Path, key_file: Path) -> Iterator[int]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("certified", "ok"), [("localhost", True), ("other.invalid", False)])
def test_https_connects_to_the_checked_address_and_verifies_the_host_name(
    tmp_path: Path, certified: str, ok: bool
) -> None:
    """open_url connects to the address it checked, yet the Host header, the TLS server name
    and the certificate's check are the URL's host name's."""
    cert_file, key_file = _certificate(tmp_path, certified)
    trusted = ssl.create_default_context(cafile=str(cert_file))
    trusted.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)
    policy = FetchPolicy(private_urls=("localhost",))
    timeout = httpx.Timeout(5.0)
    _Hello.hosts.clear()
    with _https_site(cert_file, key_file) as port:
        url = f"https://localhost:{port}/m.tar.gz"
        if ok:
            with open_url(url, policy, timeout=timeout, what="model", verify=trusted) as got:
                assert got.status_code == 200
                assert got.read() == b"hello"
            assert _Hello.hosts == [f"localhost:{port}"]
        else:
            with (
                pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
                open_url(url, policy, timeout=timeout, what="model", verify=trusted),
            ):
                pass
            assert _Hello.hosts == []
