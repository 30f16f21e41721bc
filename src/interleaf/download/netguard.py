"""Where a fetch may connect: private, loopback, link-local and reserved addresses refused after resolution.

A URL taken from a web page can name any host, and a host name can resolve to an address inside the
network the crawler runs in (cloud metadata at 169.254.169.254, a database on 10.x, a service on
127.0.0.1). The guard resolves the name itself, refuses such addresses unless explicitly allowed, and hands
the caller the checked address to connect to, so that a second resolution (DNS rebinding) cannot swap it
for another one between the check and the connection. The fetcher calls it again on every redirect.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
from dataclasses import dataclass

ALLOWED_SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}


class GuardError(Exception):
    """A URL the guard will not connect to. `status` is a reason from schemas.image.FETCH_STATUSES."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Target:
    """A checked place to connect to: the host name (for the Host header and TLS) and the pinned address."""

    scheme: str  # "http" or "https"
    host: str  # host name as written in the URL (lower case, IPv6 without brackets)
    port: int
    address: str  # the resolved IP address the connection must use


def refusal(address: str) -> str | None:
    """Why an IP address must not be fetched from (private, loopback, ...), or None when it is public.

    IPv4-mapped and 6to4/Teredo-embedded IPv4 addresses are judged by the IPv4 address they carry, so that
    ::ffff:127.0.0.1 is loopback like 127.0.0.1.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone index ("fe80::1%eth0")
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None:
            ip = embedded
    for what in ("loopback", "private", "link_local", "multicast", "reserved", "unspecified"):
        if getattr(ip, f"is_{what}"):
            return f"{what.replace('_', '-')} address {ip}"
    # is_global is False for what the checks above miss, such as 100.64.0.0/10 (carrier-grade NAT)
    if not ip.is_global:
        return f"non-global address {ip}"
    return None


def resolve(scheme: str, host: str, port: int | None, *, allow_private: bool,
            allowed_networks: tuple[str, ...] = ()) -> Target:
    """Resolve `host` and return a Target pinned to an address the guard accepts.

    `allowed_networks` (CIDR blocks such as "10.20.0.0/16") are accepted even though private: a known
    intranet mirror, or 127.0.0.1/32 for a test server while the guard stays on for everything else.

    Raises GuardError with status "unsupported_scheme", "dns" or "private_address". Every address the name
    resolves to is checked; the first acceptable one is used. A literal IP address in the URL is checked
    the same way (getaddrinfo also turns forms such as "2130706433" or "0x7f.1" into the address they mean).
    """
    scheme = scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise GuardError("unsupported_scheme", f"scheme {scheme!r} is not fetched (only http and https)")
    if not host:
        raise GuardError("dns", "URL without a host")
    port = port or DEFAULT_PORTS[scheme]
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise GuardError("dns", f"cannot resolve {host!r}: {e}") from None
    refused = []
    networks = [ipaddress.ip_network(n, strict=False) for n in allowed_networks]
    for _family, _type, _proto, _canon, sockaddr in infos:
        address = sockaddr[0]
        why = None if allow_private else refusal(address)
        if why is not None and any(ipaddress.ip_address(address.split("%", 1)[0]) in n for n in networks):
            why = None
        if why is None:
            return Target(scheme=scheme, host=host.lower(), port=port, address=address)
        refused.append(why)
    raise GuardError("private_address",
                     f"{host} resolves only to refused addresses ({'; '.join(sorted(set(refused)))}); "
                     "fetching from private networks needs allow_private_hosts")


class PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTPConnection that connects to the Target's checked address, not to a fresh resolution of its
    host name; the Host header still names the host. `on_socket` sees the raw socket once connected (the
    fetcher registers it with its deadline watchdog)."""

    def __init__(self, target: Target, *, timeout: float, on_socket=None):
        super().__init__(target.host, target.port, timeout=timeout)
        self.target = target
        self._on_socket = on_socket

    def connect(self) -> None:
        self.sock = socket.create_connection((self.target.address, self.target.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._on_socket is not None:
            self._on_socket(self.sock)


class PinnedHTTPSConnection(PinnedHTTPConnection):
    """TLS over a pinned connection: the certificate is verified against the host name from the URL."""

    default_port = 443

    def __init__(self, target: Target, *, timeout: float, context: ssl.SSLContext, on_socket=None):
        super().__init__(target, timeout=timeout, on_socket=on_socket)
        self._context = context

    def connect(self) -> None:
        super().connect()
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self.target.host)


def open_connection(target: Target, *, timeout: float, context: ssl.SSLContext | None = None,
                    on_socket=None) -> PinnedHTTPConnection:
    if target.scheme == "https":
        return PinnedHTTPSConnection(target, timeout=timeout, context=context or ssl.create_default_context(),
                                     on_socket=on_socket)
    return PinnedHTTPConnection(target, timeout=timeout, on_socket=on_socket)
