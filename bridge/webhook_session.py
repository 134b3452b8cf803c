"""The aiohttp session webhook attempts go out by, its connections resolved by the SSRF guard
(``bridge.targets``): a connection goes to the very address that was checked.

Imported when the first attempt is made (``Deliverer.session``), not when the service
starts: aiohttp is the largest import bridge has, and a process may never send a webhook."""

from __future__ import annotations

import socket
import ssl

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from bridge.targets import Guard

# Seconds a connection may wait idle for its next attempt: under the 5 s that Node's server,
# among others, keeps one, so that a POST seldom meets a connection closing under it.
KEEPALIVE = 4.0
ADDRESSES_TTL = 10  # seconds the guard's addresses for a host serve new connections


class GuardResolver(AbstractResolver):
    """aiohttp's resolver for webhook connections: a host's addresses are those the guard
    answers (``TargetRefused`` otherwise), each taken as a number, never looked up again."""

    def __init__(self, guard: Guard) -> None:
        self._guard = guard

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        return [ResolveResult(hostname=host, host=address, port=port,
                              family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                              proto=0, flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV)
                for address in await self._guard.addresses(host)]

    async def close(self) -> None:
        pass


def open_session(guard: Guard, limit: int,
                 ssl_context: ssl.SSLContext | None) -> aiohttp.ClientSession:
    """A session of at most ``limit`` connections, trusting ``ssl_context`` for https (None:
    the system's trust). Call it inside the running loop."""
    connector = aiohttp.TCPConnector(
        resolver=GuardResolver(guard), limit=limit, keepalive_timeout=KEEPALIVE,
        ttl_dns_cache=ADDRESSES_TTL, ssl=ssl_context if ssl_context is not None else True)
    # Only an excerpt of an answer is kept: no decoding; no cookies either.
    return aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None),
        skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent"))
