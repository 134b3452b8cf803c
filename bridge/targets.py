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
- The check runs when a URL is registered and again for the delivery client's connections:
  its resolver (``bridge.webhook_session.GuardResolver``) asks :meth:`Guard.addresses` (an
  answer is kept a few seconds), so the addresses that passed are the only ones it may
  connect to, and a DNS answer that changes between check and connect (DNS rebinding) has
  no window.

``BRIDGE_ALLOW_PRIVATE_TARGETS=1`` lifts the address rules (local development, tests).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import idna

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# host -> every address it resolves to (A and AAAA)
Resolve = Callable[[str], Awaitable[list[str]]]

# Each refused network with what to call its addresses in a refusal; the first network that
# holds an address names it, so the most specific come first.
_REFUSED_NETWORKS = [
    (ipaddress.ip_network(net), kind)
    for net, kind in [
        ("169.254.169.254/32", "a cloud metadata address"),
        ("100.100.100.200/32", "a cloud metadata address"),  # Alibaba Cloud
        ("fd00:ec2::254/128", "a cloud metadata address"),  # AWS over IPv6
        ("255.255.255.255/32", "the broadcast address"),
        ("::1/128", "a loopback address"),
        ("::/128", "an unspecified address"),
        ("0.0.0.0/8", "an unspecified address"),
        ("10.0.0.0/8", "a private address"),
        ("100.64.0.0/10", "a carrier-grade NAT address"),
        ("127.0.0.0/8", "a loopback address"),
        ("169.254.0.0/16", "a link-local address"),
        ("172.16.0.0/12", "a private address"),
        ("192.0.0.0/24", "an address reserved for IETF protocol assignments"),
        ("192.0.2.0/24", "an address reserved for documentation"),
        ("192.88.99.0/24", "a 6to4 relay address"),
        ("192.168.0.0/16", "a private address"),
        ("198.18.0.0/15", "an address reserved for benchmarking"),
        ("198.51.100.0/24", "an address reserved for documentation"),
        ("203.0.113.0/24", "an address reserved for documentation"),
        ("224.0.0.0/4", "a multicast address"),
        ("240.0.0.0/4", "a reserved address"),
        ("::/96", "an IPv4-compatible IPv6 address"),
        ("::ffff:0:0/96", "an IPv4-mapped IPv6 address"),
        ("64:ff9b::/96", "a NAT64 address"),
        ("64:ff9b:1::/48", "a NAT64 address"),
        ("2001::/32", "a Teredo address"),
        ("2001:db8::/32", "an address reserved for documentation"),
        ("2002::/16", "a 6to4 address"),
        ("fc00::/7", "a private (unique local) address"),
        ("fe80::/10", "a link-local address"),
        ("fec0::/10", "a site-local address"),
        ("ff00::/8", "a multicast address"),
    ]
]
_PRIVATE_FLAG = "BRIDGE_ALLOW_PRIVATE_TARGETS=1 allows it, for local development only"
_ONLY_PUBLIC = f"webhooks may only go to public addresses ({_PRIVATE_FLAG})"


class TargetRefused(OSError):
    """A webhook URL or address the guard does not allow. The message says why as the rest
    of a sentence whose subject is the URL: ``f"url {exc}"`` reads as one."""


class NotResolved(TargetRefused):
    """The URL's host name has no address."""


@functools.lru_cache(maxsize=4096)
def ascii_host(host: str) -> str:
    """``host`` as DNS has it: IDNA 2008 with the UTS 46 mapping for a name that is not
    ASCII (``straße.de`` is ``xn--strae-oqa.de``, not IDNA 2003's ``strasse.de``, a
    different domain). ``ValueError`` for a name IDNA refuses."""
    if host.isascii():
        return host
    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError:
        raise ValueError("the host is not a valid internationalized domain name") from None


@functools.lru_cache(maxsize=4096)
def is_address(host: str) -> bool:
    """Whether ``host`` is a literal IP address (remembered: every attempt asks again)."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def address_problem(address: IPAddress) -> str | None:
    """What kind of address ``address`` is, with its article (``"a private address"``),
    if it may not receive webhooks; ``None`` if it may."""
    for network, kind in _REFUSED_NETWORKS:
        if address.version == network.version and address in network:
            return kind
    if address.is_loopback:
        return "a loopback address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_multicast:
        return "a multicast address"
    if not address.is_global or address.is_reserved:
        return "an address reserved for special use"
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
    """Refuse (``TargetRefused``) a URL that is malformed or of the wrong scheme, or whose
    host is an address not allowed; answer its host. Needs no network; remembered, since
    every attempt to a target checks the same URL."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise TargetRefused("is not a valid URL") from None
    allowed = "an http or https URL" if allow_private else f"an https URL (http: {_PRIVATE_FLAG})"
    schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in schemes:
        if parts.scheme in ("http", "https") or not parts.scheme:
            raise TargetRefused(f"must be {allowed}")
        raise TargetRefused(f"must be {allowed}; the scheme {parts.scheme!r} is not allowed")
    if not parts.hostname:
        raise TargetRefused("has no host")
    try:
        host = ascii_host(parts.hostname)  # the name DNS and the delivery client use
    except ValueError:
        raise TargetRefused("has a host that is not a valid internationalized domain name"
                            ) from None
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("must not carry a user name or password")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise TargetRefused("has a port that is not a number from 1 to 65535")
    if not allow_private and is_address(host):  # the delivery client looks up names only
        problem = address_problem(ipaddress.ip_address(host.split("%")[0]))
        if problem is not None:
            raise TargetRefused(f"points at {host}, {problem}; {_ONLY_PUBLIC}")
    return host


class Guard:
    def __init__(self, *, allow_private: bool, resolve: Resolve = system_resolve) -> None:
        self.allow_private = allow_private
        self._resolve = resolve

    def check_form(self, url: str) -> str:
        """Refuse (``TargetRefused``) a URL that is malformed or of the wrong scheme, or
        whose host is an address not allowed; answer its host name. Needs no network."""
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
                raise NotResolved(f"names host {host!r}, which does not resolve") from None
            if not found:
                raise NotResolved(f"names host {host!r}, which does not resolve")
        if self.allow_private:
            return found
        for text in found:
            problem = address_problem(ipaddress.ip_address(text.split("%")[0]))
            if problem is not None:
                # A name's addresses are not shown: the answer must not map internal DNS.
                if literal is not None:  # as the URL spells it
                    raise TargetRefused(f"points at {host.strip('[]')}, {problem}; "
                                        f"{_ONLY_PUBLIC}")
                raise TargetRefused(f"names host {host!r}, which resolves to {problem}; "
                                    f"{_ONLY_PUBLIC}")
        return found

    async def check(self, url: str) -> None:
        """The registration-time check: form, then every address of the host (no lookup at
        all when private targets are allowed: nothing it could find would be refused)."""
        host = self.check_form(url)
        if not self.allow_private:
            await self.addresses(host)
