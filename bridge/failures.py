"""A failed webhook attempt's transport error in plain words ("connection refused", "timed
out after 15 s"), as the API's delivery objects and the portal show it. The words name
what went wrong, never the URL, its host or a header: a URL may carry a credential."""

from __future__ import annotations

import errno
import re
import ssl
from typing import TYPE_CHECKING

from bridge.targets import NotResolved, TargetRefused

# OS errors of a connect, by errno, in words; any other says "could not connect".
_CONNECT_ERRORS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "connection timed out",
}
HOSTNAME_MISMATCH = 62  # X509_V_ERR_HOSTNAME_MISMATCH

if TYPE_CHECKING:
    import aiohttp


def _certificate(exc: aiohttp.ClientConnectorCertificateError) -> str:
    cause = exc.certificate_error
    if isinstance(cause, ssl.SSLCertVerificationError):
        if cause.verify_code == HOSTNAME_MISMATCH:
            return "TLS certificate not valid for this host name"
        if "expired" in (cause.verify_message or ""):
            return "TLS certificate expired"
    return "TLS certificate not trusted"


def describe(exc: BaseException, within: float) -> str:
    """``exc``, raised by an attempt given ``within`` seconds, in words."""
    import aiohttp  # loaded already: the attempt that failed went by it

    if isinstance(exc, aiohttp.ClientConnectorDNSError) and isinstance(exc.os_error,
                                                                       TargetRefused):
        exc = exc.os_error  # the guard refused the connection
    if isinstance(exc, NotResolved):
        return "name not resolved"
    if isinstance(exc, TargetRefused):  # the guard's refusal says why, never the URL itself
        return f"refused: the URL {exc}"
    if isinstance(exc, TimeoutError):  # before OSError, of which it is a kind
        return f"timed out after {within:g} s"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return _certificate(exc)
    if isinstance(exc, aiohttp.ClientConnectorSSLError | ssl.SSLError):
        return "TLS handshake failed"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "name not resolved"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _CONNECT_ERRORS.get(exc.os_error.errno or 0, "could not connect")
    if isinstance(exc, aiohttp.ServerDisconnectedError | ConnectionResetError):
        return "connection closed before an answer"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "connection closed in the middle of the answer"
    if isinstance(exc, aiohttp.ClientResponseError):
        return "the answer was not valid HTTP"
    return f"could not send it ({type(exc).__name__})"


# What attempts recorded before these words (class names, aiohttp's messages), reworded
# when shown: the first pattern found in a stored error names it.
_EARLIER = (
    (re.compile(r"^no answer within ([\d.]+) s$"), r"timed out after \1 s"),
    (re.compile(r"^TimeoutError\b.*"), "timed out"),
    (re.compile(r"^ClientConnectorCertificateError\b.*"), "TLS certificate not trusted"),
    (re.compile(r"^ClientConnectorSSLError\b.*"), "TLS handshake failed"),
    (re.compile(r"^ClientConnectorDNSError\b.*"), "name not resolved"),
    (re.compile(r"^ClientConnectorError\b.*(Connect call failed|refused)"), "connection refused"),
    (re.compile(r"^ClientConnectorError\b.*"), "could not connect"),
    (re.compile(r"^(ServerDisconnectedError|ClientOSError)\b.*"),
     "connection closed before an answer"),
    (re.compile(r"^ClientPayloadError\b.*"), "connection closed in the middle of the answer"),
)


def reworded(stored: str) -> str:
    """A stored attempt error as these words would say it (new ones are already)."""
    for pattern, words in _EARLIER:
        if pattern.search(stored):
            return pattern.sub(words, stored) if "\\1" in words else words
    return stored
