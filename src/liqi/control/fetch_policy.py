"""What the control plane may reach on a spec's say-so: store endpoints, http(s) URLs and
paths on its own disk.

A bucket's ``endpoint``, a service's http(s) ``model_path`` or ``processor_path`` and its local
paths make the server open a connection or a file for whoever wrote the spec. Left open, a
member of one project reads the loopback and private networks (cloud metadata at
169.254.169.254, the control plane's own ports) or another project's folder under
``LIQI_HOME``. :class:`FetchPolicy` holds the server's settings and says yes or no:

- **Store endpoints**: a superuser key may name any; others only a host (or host:port) listed
  in ``LIQI_STORE_ENDPOINTS``.
- **http(s) URLs**: every address a host resolves to must be public (not loopback, link-local,
  private, unique-local, shared, multicast, unspecified or reserved) unless
  ``LIQI_ALLOW_PRIVATE_URLS`` allows it; :func:`open_url` checks each hop of a redirect chain
  itself and connects to the address it checked (no second DNS lookup to rebind).
- **Local paths** (``/x``, ``file:///x``, ``~/x``): a superuser key may name any; others only a
  path under a root listed in ``LIQI_LOCAL_MODEL_ROOTS``, never under ``LIQI_HOME``, with
  symlinks and ``..`` resolved first. The refusal is the same whether the path exists or not.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

import httpx

from liqi.errors import InvalidRequestError, PermissionDeniedError, StoreError

if TYPE_CHECKING:
    from liqi.config import ServerSettings

MAX_REDIRECTS = 5
ALLOW_ALL = "*"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class FetchPolicy:
    """The server's rules for outbound fetches and local paths (see the module's doc)."""

    home: Path | None = None  # never readable through a spec, whatever the roots say
    # Hosts, IPs and CIDRs whose non-public addresses URLs may reach; ("*",) allows every one.
    private_urls: tuple[str, ...] = ()
    store_endpoints: tuple[str, ...] = ()  # hosts or host:port, lower case
    local_roots: tuple[Path, ...] = ()

    @classmethod
    def of(cls, settings: ServerSettings) -> FetchPolicy:
        return cls(
            home=settings.home,
            private_urls=settings.allow_private_urls,
            store_endpoints=settings.store_endpoints,
            local_roots=settings.local_model_roots,
        )

    # -- store endpoints ------------------------------------------------------------------

    def check_store_endpoint(self, endpoint: str | None, *, superuser: bool) -> None:
        """Raise PermissionDeniedError unless a bucket may live at ``endpoint``."""
        if not endpoint or superuser:
            return
        host, port = _host_port(endpoint)
        listed = {e.lower() for e in self.store_endpoints}
        if host in listed or (port is not None and f"{host}:{port}" in listed):
            return
        raise PermissionDeniedError(
            f"Store endpoint {endpoint!r} is not allowed for this access key: only a superuser "
            "key may name a store endpoint the server's operator has not listed in "
            "LIQI_STORE_ENDPOINTS (comma-separated hosts or host:port). Ask the operator to "
            "list it, or use a bucket on the default store."
        )

    # -- http(s) URLs -----------------------------------------------------------------------

    def allows_address(self, host: str, address: Address) -> bool:
        if is_public(address) or ALLOW_ALL in self.private_urls:
            return True
        for entry in self.private_urls:
            if entry.lower() == host.lower():
                return True
            network = _network(entry)
            if network is not None and _unmapped(address) in network:
                return True
        return False

    def resolve(
        self, url: str, *, what: str, strict: bool = True
    ) -> tuple[str, list[Address]] | None:
        """The host of ``url`` and the addresses to connect to, once every address the host
        resolves to is allowed. Raises PermissionDeniedError for a refused address;
        StoreError when the host does not resolve (None instead when not ``strict``)."""
        try:
            parts = urlsplit(url)
        except ValueError as exc:  # an unbalanced '[' or ']' in the host
            raise InvalidRequestError(f"The {what} {url!r} is not a valid URL: {exc}.") from None
        host = parts.hostname or ""
        if parts.scheme not in ("http", "https") or not host:
            raise InvalidRequestError(f"The {what} {url!r} is not an http(s) URL with a host.")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise InvalidRequestError(f"The {what} {url!r} has an invalid port.") from None
        try:
            found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            if not strict:
                return None
            raise StoreError(
                f"Cannot download the {what} {url}: {host!r} does not resolve ({exc})."
            ) from None
        addresses: list[Address] = []
        for info in found:
            address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
            if address not in addresses:
                addresses.append(address)
        for address in addresses:
            if not self.allows_address(host, address):
                raise PermissionDeniedError(
                    f"The {what} {url} is refused: {host} is or resolves to a loopback, "
                    "link-local, private or reserved address, which the server does not fetch "
                    "from. Use a public URL, or ask the operator to allow it with "
                    "LIQI_ALLOW_PRIVATE_URLS."
                )
        if not addresses:
            raise StoreError(f"Cannot download the {what} {url}: {host!r} has no address.")
        return host, addresses

    # -- local paths -------------------------------------------------------------------------

    def check_local_path(self, uri: str, *, field: str, superuser: bool) -> Path:
        """The path ``uri`` names, once this key may read it. The refusal does not depend on
        whether the path exists (no oracle for the server's disk)."""
        path = Path(uri.removeprefix("file://")).expanduser()
        if superuser:
            return path.absolute()
        resolved = Path(os.path.realpath(path))
        roots = [Path(os.path.realpath(root)) for root in self.local_roots]
        home = Path(os.path.realpath(self.home)) if self.home is not None else None
        inside = any(resolved.is_relative_to(root) for root in roots)
        if not inside or (home is not None and resolved.is_relative_to(home)):
            raise PermissionDeniedError(
                f"'{field}' {uri!r} is a path on the server's machine: only a superuser key may "
                "use one, or a path under a folder the server's LIQI_LOCAL_MODEL_ROOTS names "
                "(never under LIQI_HOME). Upload the files to a bucket and use "
                "oss://<bucket>/<path> instead."
            )
        return resolved


def is_public(address: Address) -> bool:
    """True for an address on the public internet."""
    address = _unmapped(address)
    return address.is_global and not (
        address.is_multicast
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_unspecified
    )


def is_local_path(uri: str) -> bool:
    """True when a spec's path names a file on the server's machine."""
    return not uri.startswith(("oss://", "model:", "http://", "https://"))


@contextmanager
def open_url(
    url: str,
    policy: FetchPolicy,
    *,
    timeout: httpx.Timeout,
    what: str,
    verify: ssl.SSLContext | bool = True,
) -> Iterator[httpx.Response]:
    """GET ``url`` streamed, following at most MAX_REDIRECTS redirects; each hop's host is
    resolved once, checked by ``policy`` and connected to at an address it checked (the Host
    header, the TLS server name and the certificate's check stay the host's). Yields the last
    answer, whatever its status. Proxies from the environment are not used: a proxy would
    resolve the name again, past the check."""
    with httpx.Client(
        timeout=timeout, follow_redirects=False, trust_env=False, verify=verify
    ) as client:
        for _ in range(MAX_REDIRECTS + 1):
            answer = _send(client, url, policy, what)
            try:
                location = answer.headers.get("location")
                if answer.status_code in (301, 302, 303, 307, 308) and location:
                    url = urljoin(url, location)
                    continue
                yield answer
                return
            finally:
                answer.close()
    raise StoreError(
        f"Cannot download the {what}: more than {MAX_REDIRECTS} redirects (the last to {url})."
    )


def _send(client: httpx.Client, url: str, policy: FetchPolicy, what: str) -> httpx.Response:
    """Send GET ``url`` to the first of its checked addresses that accepts a connection."""
    checked = policy.resolve(url, what=what)
    assert checked is not None  # strict: raises instead
    host, addresses = checked
    parts = urlsplit(url)
    failed: httpx.ConnectError | None = None
    for address in addresses:
        literal = f"[{address}]" if address.version == 6 else str(address)
        netloc = literal if parts.port is None else f"{literal}:{parts.port}"
        request = client.build_request(
            "GET",
            parts._replace(netloc=netloc).geturl(),
            headers={"Host": parts.netloc.rsplit("@", 1)[-1]},
            extensions={"sni_hostname": host} if parts.scheme == "https" else {},
        )
        try:
            return client.send(request, stream=True)
        except httpx.ConnectError as exc:
            failed = exc
    assert failed is not None  # resolve returns at least one address
    raise failed


def parse_private_urls(text: str) -> tuple[str, ...]:
    """``LIQI_ALLOW_PRIVATE_URLS``: ``1``/``true``/``yes``/``*`` allow every address; a
    comma-separated list of host names, IPs and CIDRs allows those; empty or ``0`` none."""
    text = text.strip()
    if text.lower() in ("", "0", "false", "no"):
        return ()
    if text.lower() in ("1", "true", "yes", ALLOW_ALL):
        return (ALLOW_ALL,)
    entries = tuple(e.strip() for e in text.split(",") if e.strip())
    for entry in entries:
        if "/" in entry and _network(entry) is None:
            raise ValueError(f"{entry!r} is not a CIDR (e.g. 10.0.0.0/8)")
    return entries


def _network(entry: str) -> Network | None:
    try:
        return ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return None


def _unmapped(address: Address) -> Address:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _host_port(endpoint: str) -> tuple[str, int | None]:
    parts = urlsplit(endpoint if "//" in endpoint else f"//{endpoint}")
    try:
        port = parts.port
    except ValueError:
        port = None
    return (parts.hostname or "").lower(), port
