"""Listening sockets for the servers (the control plane, ``liqi serve``) and the URLs they
print."""

from __future__ import annotations

import errno
import socket

from liqi.errors import ConfigError, PortInUseError


def bind_socket(
    host: str, port: int, *, reuse_port: bool = False, inheritable: bool = False
) -> socket.socket:
    """A listening socket on host:port; port 0 picks a free one. ``reuse_port`` lets several
    servers share the port (SO_REUSEPORT).

    Raises:
        ConfigError: the host does not resolve, or the address cannot be bound.
        PortInUseError: the port is taken.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(
            f"Cannot resolve host {host!r}: {exc.strerror}. Use --host 127.0.0.1."
        ) from None
    family, socktype, proto, _, address = infos[0]
    sock = socket.socket(family, socktype, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port and hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(
                f"Port {port} on {host} is already in use. Stop the program using it or choose "
                "another port with --port (0 picks a free one)."
            ) from None
        raise ConfigError(f"Cannot listen on {host}:{port}: {exc.strerror}.") from None
    sock.set_inheritable(inheritable)
    return sock


def url_for(host: str, port: int) -> str:
    """The URL a client on this machine uses for a server bound to host:port (a wildcard
    address becomes loopback)."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def url_of(sock: socket.socket) -> str:
    """The URL of a listening socket."""
    host, port = sock.getsockname()[:2]
    return url_for(host, port)


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports free on ``host`` now (for processes that bind them later:
    another process may take one meanwhile)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()
