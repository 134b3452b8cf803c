"""Where webhooks may go: the guard against server-side request forgery.

A webhook URL is chosen by a user, so without a guard the bridge would POST wherever it is
told: to its own loopback services, the private network it runs in, or a cloud metadata
endpoint. The rules:

- ``https`` only (``http`` too with ``BRIDGE_ALLOW_PRIVATE_TARGETS=1``); no user:password.
- The host is resolved (A and AAAA); if any address is not a public unicast address, the URL
  is refused. Refused: loopback, private (RFC 1918, ULA), link-local (and with it the
  169.254.169.254 metadata service), CGNAT 100.64/10 (Alibaba's metadata at 100.100.100.200),
  multicast, reserved, unspecified, benchmarking, the IETF 192.0.0/24 block, and IPv6 forms
  that embed an IPv4 address (IPv4-mapped, IPv4-compatible, NAT64, 6to4, Teredo), since they
  can reach an internal IPv4 host through a translator.
- The check runs when a URL is registered and again at every delivery attempt, where the
  delivery client (``bridge.http1``) asks :meth:`Guard.addresses` for the addresses
  to connect to: the addresses that passed are the only ones it may connect to, so a DNS
  answer that changes between check and connect (DNS rebinding) has no window.

``BRIDGE_ALLOW_PRIVATE_TARGETS=1`` lifts the address rules (local development, tests).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from bridge.http1 import ascii_host

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# host -> every address it resolves to (A and AAAA)
Resolve = Callable[[str], Awaitable[list[str]]]

_REFUSED_NETWORKS = [
    (ipaddress.ip_network(net), reason)
    for net, reason in [
        ("0.0.0.0/8", "unspecified"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "carrier-grade NAT"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local (cloud metadata)"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "IETF protocol assignments"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "6to4 relay"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
        ("::/96", "IPv4-compatible IPv6"),
        ("::ffff:0:0/96", "IPv4-mapped IPv6"),
        ("64:ff9b::/96", "NAT64"),
        ("64:ff9b:1::/48", "NAT64"),
        ("2001::/32", "Teredo"),
        ("2001:db8::/32", "documentation"),
        ("2002::/16", "6to4"),
        ("fc00::/7", "private (unique local)"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("ff00::/8", "multicast"),
    ]
]


class TargetRefused(OSError):
    """A webhook URL or address the guard does not allow; the message says why."""


@functools.lru_cache(maxsize=4096)
def is_address(host: str) -> bool:
    """Whether ``host`` is a literal IP address (remembered: every attempt asks again)."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def address_problem(address: IPAddress) -> str | None:
    """Why ``address`` may not receive webhooks, or ``None`` if it may."""
    for network, reason in _REFUSED_NETWORKS:
        if address.version == network.version and address in network:
            return reason
    if address.is_loopback or address.is_unspecified:
        return "loopback" if address.is_loopback else "unspecified"
    if not address.is_global or address.is_multicast or address.is_reserved:
        return "not a public address"
    return None


async def system_resolve(host: str) -> list[str]:
    """Every address ``host`` resolves to, A and AAAA (numeric forms such as ``127.1`` or
    ``2130706433`` resolve as the C library reads them, which is what a client would do)."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, None, family=socket.AF_UNSPEC, type=socket.SOCK_STREAM
    )
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@functools.lru_cache(maxsize=4096)
def check_form(url: str, allow_private: bool) -> str:
    """Refuse (``TargetRefused``) a URL that is malformed or of the wrong scheme; answer its
    host. Needs no network; remembered, since every attempt to a target checks the same URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise TargetRefused("not a valid URL") from None
    schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in schemes:
        raise TargetRefused(
            "must be an https URL" if parts.scheme in ("http", "https") or not parts.scheme
            else f"scheme {parts.scheme!r} is not allowed; use https"
        )
    if not parts.hostname:
        raise TargetRefused("has no host")
    try:
        host = ascii_host(parts.hostname)  # the name DNS and the delivery client use
    except ValueError:
        raise TargetRefused("the host is not a valid internationalized domain name") from None
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("must not carry a user name or password")
    if port == 0:
        raise TargetRefused("port 0 is not allowed")
    return host


class Guard:
    def __init__(self, *, allow_private: bool, resolve: Resolve = system_resolve) -> None:
        self.allow_private = allow_private
        self._resolve = resolve

    def check_form(self, url: str) -> str:
        """Refuse (``TargetRefused``) a URL that is malformed or of the wrong scheme; answer
        its host name. Needs no network."""
        return check_form(url, self.allow_private)

    async def addresses(self, host: str) -> list[str]:
        """The addresses of ``host`` that a delivery may connect to: all of them, or
        ``TargetRefused`` naming the first one that is not allowed."""
        try:
            literal: IPAddress | None = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            found = [str(literal)]
        else:
            try:
                found = await self._resolve(host)
            except (OSError, UnicodeError):
                raise TargetRefused(f"host {host!r} does not resolve") from None
            if not found:
                raise TargetRefused(f"host {host!r} does not resolve")
        if self.allow_private:
            return found
        for text in found:
            problem = address_problem(ipaddress.ip_address(text.split("%")[0]))
            if problem is not None:
                # A name's addresses are not shown: the answer must not map internal DNS.
                if literal is not None:
                    raise TargetRefused(f"{text}, a {problem} address, is not allowed")
                raise TargetRefused(f"host {host!r} resolves to a {problem} address, "
                                    "which is not allowed")
        return found

    async def check(self, url: str) -> None:
        """The registration-time check: form, then every address of the host (no lookup at
        all when private targets are allowed: nothing it could find would be refused)."""
        host = self.check_form(url)
        if not self.allow_private:
            await self.addresses(host)
