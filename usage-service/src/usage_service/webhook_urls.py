"""Where webhooks may be sent: the SSRF rules, checked when a URL is set and at every delivery.

A user chooses the URL, and this service sends to it from inside the network, so a URL must not
reach what only the inside can: http(s) only, no credentials in it, and every address its host
resolves to must be public (not private, loopback, link-local, multicast, unspecified, reserved,
or otherwise not globally routable). DNS can change after the check, so a delivery checks again,
in the resolver of the client that connects (`GuardedResolver`): the addresses checked are the
addresses connected to, and a name that now points inside is refused (no rebinding between check
and connect). aiohttp does not call the resolver for an IP literal: `check_destination` covers it.

The operator can allow what would be refused: QUOTA_WEBHOOK_ALLOW_PRIVATE=true (everything), or
QUOTA_WEBHOOK_ALLOWED_HOSTS, a comma-separated list of host[:port] allowed whatever they resolve to.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from infergate_common.errors import BadRequestError

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Within the gateway's timeout for its calls here (3 s by default).
_RESOLVE_TIMEOUT_S = 2.0


class RefusedUrlError(BadRequestError):
    code = "webhook_url_refused"


class AddressRefusedError(OSError):
    """Raised in the resolver: every address the host resolves to is refused (a connection
    error of its own for the delivery log)."""


@dataclass(frozen=True, slots=True)
class Destination:
    scheme: str
    host: str  # lower-case; an IPv6 literal without brackets
    port: int

    @property
    def origin(self) -> str:
        """What logs may show of a URL: never its path or query (they may hold tokens)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_url(url: str) -> Destination:
    """The URL's destination; RefusedUrlError when it is not an http(s) URL without credentials."""
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise RefusedUrlError("The webhook URL must not contain spaces or control characters")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise RefusedUrlError("The webhook URL must be an http:// or https:// URL")
    if "@" in parts.netloc:
        raise RefusedUrlError("The webhook URL must not contain credentials (user:password@)")
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        raise RefusedUrlError("The webhook URL's port is not valid") from None
    if not parts.hostname:
        raise RefusedUrlError("The webhook URL has no host")
    return Destination(scheme, parts.hostname.lower(), port)


def refused_kind(address: IpAddress) -> str | None:
    """Why a delivery must not connect to `address` (None: it is public)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for kind, refused in (
        ("loopback", address.is_loopback),
        ("private", address.is_private),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("unspecified", address.is_unspecified),
        ("reserved", address.is_reserved),
        # e.g. 100.64.0.0/10 (carrier-grade NAT): not private, not public either.
        ("non-public", not address.is_global),
    ):
        if refused:
            return kind
    return None


def _host_port(entry: str) -> tuple[str, int | None]:
    parts = urlsplit(f"//{entry.strip()}")
    if not parts.hostname:
        raise ValueError(f"not a host[:port]: {entry!r}")
    return parts.hostname.lower(), parts.port


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """The operator's allowances (see the module docstring)."""

    allow_private: bool = False
    allowed_hosts: frozenset[tuple[str, int | None]] = frozenset()

    @classmethod
    def of(cls, *, allow_private: bool, allowed_hosts: Iterable[str]) -> AddressPolicy:
        return cls(allow_private, frozenset(_host_port(entry) for entry in allowed_hosts))

    def trusts(self, host: str, port: int) -> bool:
        """The host is allowed whatever it resolves to."""
        return (
            self.allow_private
            or (host, None) in self.allowed_hosts
            or (host, port) in self.allowed_hosts
        )

    def refusal(self, destination: Destination, address: str) -> str | None:
        """Why `destination` must not be reached at `address` (None: it may)."""
        if self.trusts(destination.host, destination.port):
            return None
        try:
            kind = refused_kind(ipaddress.ip_address(address.split("%", 1)[0]))
        except ValueError:
            return f"{address} is not an IP address"
        if kind is None:
            return None
        return (
            f"The webhook URL's host resolves to a {kind} address ({address}); webhooks are only "
            "sent to public addresses"
        )


def _literal(host: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def check_destination(destination: Destination, policy: AddressPolicy) -> None:
    """Refuse an IP-literal host that is not public (names are checked when resolved)."""
    if _literal(destination.host) is not None:
        reason = policy.refusal(destination, destination.host)
        if reason is not None:
            raise RefusedUrlError(reason)


async def check_url(url: str, policy: AddressPolicy) -> Destination:
    """The URL's destination once it and every address it resolves to now are allowed;
    RefusedUrlError (400) with the reason otherwise."""
    destination = parse_url(url)
    check_destination(destination, policy)
    if policy.trusts(destination.host, destination.port) or _literal(destination.host):
        return destination
    try:
        async with asyncio.timeout(_RESOLVE_TIMEOUT_S):
            infos = await asyncio.get_running_loop().getaddrinfo(
                destination.host, destination.port, type=socket.SOCK_STREAM
            )
    except (socket.gaierror, UnicodeError, TimeoutError):
        raise RefusedUrlError("The webhook URL's host could not be resolved") from None
    for *_, sockaddr in infos:
        reason = policy.refusal(destination, str(sockaddr[0]))
        if reason is not None:
            raise RefusedUrlError(reason)
    return destination


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, keeping only the addresses the policy allows for the host."""

    def __init__(self, policy: AddressPolicy) -> None:
        self._policy = policy
        self._resolver = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._resolver.resolve(host, port, family)
        destination = Destination("http", host.lower().rstrip("."), port)
        allowed = [r for r in found if self._policy.refusal(destination, r["host"]) is None]
        if not allowed:
            reason = self._policy.refusal(destination, found[0]["host"]) if found else None
            raise AddressRefusedError(reason or "the host resolved to no address")
        return allowed

    async def close(self) -> None:
        await self._resolver.close()
