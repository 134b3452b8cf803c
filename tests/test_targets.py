"""The SSRF guard, table-driven: hostile webhook URLs are refused, public ones pass, and the
delivery client may connect only to the addresses that were checked. Names resolve through a
table here (numeric forms and ``localhost`` through the C library), so nothing leaves the
machine."""

from __future__ import annotations

import asyncio
import socket

import pytest

from bridge.delivery import Deliverer
from bridge.endpoints import check_url
from bridge.errors import InvalidRequest
from bridge.targets import Guard, TargetRefused, system_resolve
from tests.test_webhook_client import outgoing

FAKE_DNS = {
    "metadata.google.internal": ["169.254.169.254"],
    "hooks.example.com": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"],
    "mixed.example.com": ["93.184.216.34", "10.0.0.7"],
    "v6-loopback.example.com": ["::1"],
    "127.0.0.1.nip.io": ["127.0.0.1"],
    "internal.corp.example": ["172.20.1.5"],
    "mapped.example.com": ["::ffff:169.254.169.254"],
    "cgnat.example.com": ["100.100.100.200"],
    "fe80.example.com": ["fe80::1"],
}


async def fake_resolve(host: str) -> list[str]:
    if host in FAKE_DNS:
        return FAKE_DNS[host]
    if host == "localhost" or host[0].isdigit():
        return await system_resolve(host)  # numeric forms and /etc/hosts: no network
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


HOSTILE = [
    # scheme and form
    "http://hooks.example.com/x",  # plain http without the flag
    "ftp://hooks.example.com/x",
    "file:///etc/passwd",
    "gopher://127.0.0.1:70/_",
    "javascript:alert(1)",
    "https:///no-host",
    "https://user:pass@hooks.example.com/x",
    "https://hooks.example.com:0/x",
    "https://hooks.example.com:99999/x",
    # loopback, in every spelling the C library accepts
    "https://127.0.0.1/x",
    "https://127.1/x",
    "https://2130706433/x",
    "https://0x7f000001/x",
    "https://0177.0.0.1/x",
    "https://localhost/x",
    "https://[::1]/x",
    "https://v6-loopback.example.com/x",
    "https://127.0.0.1.nip.io/x",
    # unspecified
    "https://0.0.0.0/x",
    "https://0/x",
    "https://[::]/x",
    # private, CGNAT, link-local and cloud metadata
    "https://10.0.0.1/x",
    "https://172.16.5.4/x",
    "https://192.168.1.1/x",
    "https://internal.corp.example/x",
    "https://100.64.0.1/x",
    "https://cgnat.example.com/x",
    "https://169.254.169.254/latest/meta-data/",
    "https://metadata.google.internal/computeMetadata/v1/",
    "https://[fe80::1]/x",
    "https://[fd00:ec2::254]/latest/meta-data/",
    "https://[fc00::1]/x",
    # multicast, reserved, broadcast, special blocks
    "https://224.0.0.1/x",
    "https://[ff02::1]/x",
    "https://240.0.0.1/x",
    "https://255.255.255.255/x",
    "https://192.0.0.192/x",
    "https://198.18.0.1/x",
    # IPv6 forms that carry an IPv4 address
    "https://[::ffff:127.0.0.1]/x",
    "https://[::ffff:a9fe:a9fe]/x",
    "https://mapped.example.com/x",
    "https://[::127.0.0.1]/x",
    "https://[64:ff9b::7f00:1]/x",
    "https://[64:ff9b:1::a00:1]/x",
    "https://[2002:7f00:1::]/x",
    "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/x",
    # a name with one private address among public ones; a name that does not resolve
    "https://mixed.example.com/x",
    "https://no-such-host.invalid/x",
]


@pytest.mark.parametrize("url", HOSTILE)
async def test_hostile_urls_are_refused(url: str) -> None:
    with pytest.raises(TargetRefused):
        await Guard(allow_private=False, resolve=fake_resolve).check(url)


def test_the_table_is_long_enough() -> None:
    assert len(HOSTILE) >= 30


@pytest.mark.parametrize("url", [
    "https://hooks.example.com/x",
    "https://hooks.example.com:8443/a?b=c",
    "https://93.184.216.34/x",
    "https://[2606:4700:4700::1111]/x",
])
async def test_public_https_urls_pass(url: str) -> None:
    await Guard(allow_private=False, resolve=fake_resolve).check(url)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8080/x", "https://localhost/x", "http://10.0.0.1/x",
    "http://[::1]:9000/x", "http://metadata.google.internal/x",
])
async def test_the_flag_lifts_the_address_rules_and_allows_http(url: str) -> None:
    await Guard(allow_private=True, resolve=fake_resolve).check(url)


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x", "https://u:p@localhost/x"])
async def test_the_flag_keeps_the_form_rules(url: str) -> None:
    with pytest.raises(TargetRefused):
        await Guard(allow_private=True, resolve=fake_resolve).check(url)


async def test_the_refusal_says_why_without_mapping_internal_dns() -> None:
    guard = Guard(allow_private=False, resolve=fake_resolve)
    with pytest.raises(TargetRefused) as named:
        await guard.check("https://metadata.google.internal/x")
    assert "cloud metadata" in str(named.value)
    assert "169.254" not in str(named.value)  # a name's addresses are not revealed
    with pytest.raises(TargetRefused) as literal:
        await guard.check("https://10.1.2.3/x")
    assert "10.1.2.3" in str(literal.value) and "private" in str(literal.value)


FLAG = "BRIDGE_ALLOW_PRIVATE_TARGETS=1 allows it, for local development only"
ONLY_PUBLIC = f"; webhooks may only go to public addresses ({FLAG})"
MESSAGES = [
    # the form of the URL
    ("http://hooks.example.com/x", f"url must be an https URL (http: {FLAG})"),
    ("ftp://hooks.example.com/x",
     f"url must be an https URL (http: {FLAG}); the scheme 'ftp' is not allowed"),
    ("https:///no-host", "url has no host"),
    ("http://[::1/x", "url is not a valid URL"),
    ("https://user:pass@hooks.example.com/x", "url must not carry a user name or password"),
    ("https://hooks.example.com:0/x", "url has a port that is not a number from 1 to 65535"),
    ("https://hooks.example.com:99999/x",
     "url has a port that is not a number from 1 to 65535"),
    ("https://a\u200db.example/x",
     "url has a host that is not a valid internationalized domain name"),
    ("https://no-such-host.invalid/x", "url names host 'no-such-host.invalid', which does not "
                                       "resolve"),
    # a literal address of each kind
    ("https://127.0.0.1/x", "url points at 127.0.0.1, a loopback address" + ONLY_PUBLIC),
    ("https://[::1]/x", "url points at ::1, a loopback address" + ONLY_PUBLIC),
    ("https://10.0.0.1/x", "url points at 10.0.0.1, a private address" + ONLY_PUBLIC),
    ("https://192.168.1.1/x", "url points at 192.168.1.1, a private address" + ONLY_PUBLIC),
    ("https://[fc00::1]/x", "url points at fc00::1, a private (unique local) address"
     + ONLY_PUBLIC),
    ("https://169.254.10.1/x", "url points at 169.254.10.1, a link-local address"
     + ONLY_PUBLIC),
    ("https://[fe80::1]/x", "url points at fe80::1, a link-local address" + ONLY_PUBLIC),
    ("https://169.254.169.254/latest/meta-data/",
     "url points at 169.254.169.254, a cloud metadata address" + ONLY_PUBLIC),
    ("https://100.100.100.200/x", "url points at 100.100.100.200, a cloud metadata address"
     + ONLY_PUBLIC),
    ("https://[fd00:ec2::254]/x", "url points at fd00:ec2::254, a cloud metadata address"
     + ONLY_PUBLIC),
    ("https://100.64.0.1/x", "url points at 100.64.0.1, a carrier-grade NAT address"
     + ONLY_PUBLIC),
    ("https://[::ffff:127.0.0.1]/x",
     "url points at ::ffff:127.0.0.1, an IPv4-mapped IPv6 address" + ONLY_PUBLIC),
    ("https://[::127.0.0.1]/x", "url points at ::127.0.0.1, an IPv4-compatible IPv6 address"
     + ONLY_PUBLIC),
    ("https://[64:ff9b::7f00:1]/x", "url points at 64:ff9b::7f00:1, a NAT64 address"
     + ONLY_PUBLIC),
    ("https://[2002:7f00:1::]/x", "url points at 2002:7f00:1::, a 6to4 address" + ONLY_PUBLIC),
    ("https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/x",
     "url points at 2001:0:4136:e378:8000:63bf:3fff:fdd2, a Teredo address" + ONLY_PUBLIC),
    ("https://0.0.0.0/x", "url points at 0.0.0.0, an unspecified address" + ONLY_PUBLIC),
    ("https://[::]/x", "url points at ::, an unspecified address" + ONLY_PUBLIC),
    ("https://224.0.0.1/x", "url points at 224.0.0.1, a multicast address" + ONLY_PUBLIC),
    ("https://[ff02::1]/x", "url points at ff02::1, a multicast address" + ONLY_PUBLIC),
    ("https://240.0.0.1/x", "url points at 240.0.0.1, a reserved address" + ONLY_PUBLIC),
    ("https://255.255.255.255/x", "url points at 255.255.255.255, the broadcast address"
     + ONLY_PUBLIC),
    ("https://192.0.2.1/x", "url points at 192.0.2.1, an address reserved for documentation"
     + ONLY_PUBLIC),
    ("https://198.18.0.1/x", "url points at 198.18.0.1, an address reserved for benchmarking"
     + ONLY_PUBLIC),
    ("https://192.0.0.192/x",
     "url points at 192.0.0.192, an address reserved for IETF protocol assignments"
     + ONLY_PUBLIC),
    ("https://[100::1]/x", "url points at 100::1, an address reserved for special use"
     + ONLY_PUBLIC),
    # a name that resolves to such an address: the kind is told, the address is not
    ("https://localhost/x", "url names host 'localhost', which resolves to a loopback address"
     + ONLY_PUBLIC),
    ("https://internal.corp.example/x",
     "url names host 'internal.corp.example', which resolves to a private address"
     + ONLY_PUBLIC),
    ("https://mixed.example.com/x",
     "url names host 'mixed.example.com', which resolves to a private address" + ONLY_PUBLIC),
    ("https://fe80.example.com/x",
     "url names host 'fe80.example.com', which resolves to a link-local address" + ONLY_PUBLIC),
    ("https://metadata.google.internal/x",
     "url names host 'metadata.google.internal', which resolves to a cloud metadata address"
     + ONLY_PUBLIC),
    ("https://mapped.example.com/x",
     "url names host 'mapped.example.com', which resolves to an IPv4-mapped IPv6 address"
     + ONLY_PUBLIC),
]


@pytest.mark.parametrize(("url", "message"), MESSAGES, ids=[url for url, _ in MESSAGES])
async def test_each_refusal_is_one_plain_sentence(url: str, message: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        await check_url(Guard(allow_private=False, resolve=fake_resolve), url)
    assert (refused.value.message, refused.value.field) == (message, "url")


async def test_with_the_flag_the_form_refusal_names_both_schemes() -> None:
    with pytest.raises(InvalidRequest) as refused:
        await check_url(Guard(allow_private=True, resolve=fake_resolve), "ftp://x.example/h",
                        "webhook_url")
    assert refused.value.message == ("webhook_url must be an http or https URL; the scheme "
                                      "'ftp' is not allowed")


async def test_an_overlong_host_label_is_refused_not_a_crash() -> None:
    with pytest.raises(TargetRefused):
        await Guard(allow_private=False).check("https://" + "a" * 80 + ".example.com/x")


async def test_the_delivery_client_connects_only_to_the_checked_addresses() -> None:
    # A DNS server that changes its answer: public when the URL is registered, loopback when
    # the delivery is attempted (DNS rebinding).
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])

    async def rebinding(host: str) -> list[str]:
        return next(answers)

    connections: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    guard = Guard(allow_private=False, resolve=rebinding)
    deliverer = Deliverer(store=None, guard=guard, schedule=(60.0,))  # type: ignore[arg-type]
    url = f"https://rebind.example.com:{port}/hook"
    try:
        await guard.check(url)  # passes: public
        result = await deliverer.attempt(outgoing(url), within=5.0)
        assert not result.ok and result.response_status is None
        assert result.error == ("refused: the URL names host 'rebind.example.com', which "
                                "resolves to a loopback address" + ONLY_PUBLIC)
        assert result.retry_at is not None
        assert connections == []  # refused before any connection was made
    finally:
        await deliverer.stop()
        server.close()
        await server.wait_closed()


async def test_an_international_name_is_checked_as_dns_has_it() -> None:
    asked: list[str] = []

    async def resolve(host: str) -> list[str]:
        asked.append(host)
        return ["93.184.216.34"]

    guard = Guard(allow_private=False, resolve=resolve)
    await guard.check("https://stra\u00dfe.de/hook")
    assert asked == ["xn--strae-oqa.de"]  # IDNA 2008: not strasse.de, another domain
    with pytest.raises(TargetRefused, match="internationalized"):
        await guard.check("https://a\u200db.example/hook")
