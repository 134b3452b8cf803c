"""Signed tokens in URLs: provider callbacks, hosted media links and the portal's magic
links and session cookies (itsdangerous).

A callback token names the job (and provider) it belongs to, so the receiver can refuse a
forged callback before it touches the database. A media token names a file and carries its
own expiry time, and so does a portal link. A portal session cookie carries only the
session's id, signed; the session itself is kept in the database.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import time
from typing import Any

from itsdangerous import BadPayload, BadSignature, URLSafeSerializer
from itsdangerous import Signer as _ItsSigner

from bridge import jsoncodec


class TokenInvalid(Exception):
    """A token that was not made with our key, or was altered."""


class TokenExpired(Exception):
    """A genuine token whose time is up."""


class _KeptKeySigner(_ItsSigner):
    """itsdangerous' signer with each derived key worked out once, not at every token:
    the derivation is an HMAC of its own, as dear as checking the token."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._derived: dict[bytes | None, bytes] = {}

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        cache_key = secret_key.encode() if isinstance(secret_key, str) else secret_key
        key = self._derived.get(cache_key)
        if key is None:
            key = self._derived[cache_key] = super().derive_key(secret_key)
        return key


class _Serializer(URLSafeSerializer):
    """One signer per salt for the serializer's lifetime (itsdangerous makes one per
    call); its tokens are itsdangerous' own, byte for byte."""

    def __init__(self, secret_key: str, salt: str) -> None:
        super().__init__(secret_key, salt=salt, signer=_KeptKeySigner)
        self._signers: dict[str | bytes | None, _ItsSigner] = {}

    def make_signer(self, salt: str | bytes | None = None) -> _ItsSigner:
        signer = self._signers.get(salt)
        if signer is None:
            signer = self._signers[salt] = super().make_signer(salt)
        return signer


class _CallbackSerializer(_Serializer):
    """Callback tokens, checked on the bridge's busiest route: ``loads`` in one C HMAC.

    itsdangerous' own ``loads`` passes a token through a dozen layers of Python and a
    pure-Python HMAC (its SHA-1 is a wrapper function that ``hmac`` cannot hand to
    OpenSSL): about twice the instructions of this check. A callback token is always
    what ``dumps`` makes of a short list: ``payload.signature``, both unpadded URL-safe
    base64, the payload uncompressed. That form is checked here, with the key
    itsdangerous derives; the answer is the same as ``loads``'s for every token that form
    can take (tests/test_signing.py), except that a token must be just what ``dumps``
    writes: itsdangerous also takes a signature padded or with other characters about it.
    Any other token (a compressed payload, say) goes to ``loads``.
    """

    def __init__(self, secret_key: str, salt: str) -> None:
        super().__init__(secret_key, salt)
        self._key = self.make_signer(self.salt).derive_key()
        # Checked once here rather than assumed: should itsdangerous ever sign otherwise
        # (another digest, another key derivation), every token takes ``loads``'s path.
        self._quick = False
        with contextlib.suppress(BadSignature):
            self._quick = self._quick_loads(self.dumps(["probe", "token"])) == ["probe", "token"]

    def check(self, token: str) -> Any:
        """``loads(token)``: the token's value, or ``BadSignature``."""
        value = self._quick_loads(token) if self._quick else _ELSEWHERE
        return self.loads(token) if value is _ELSEWHERE else value

    def _quick_loads(self, token: str) -> Any:
        if not token.isascii():
            raise BadSignature("not a token we make")
        payload, dot, signature = token.rpartition(".")
        if not dot or not payload or payload[0] == ".":
            return _ELSEWHERE
        mac = hmac.digest(self._key, payload.encode(), "sha1")
        if not hmac.compare_digest(base64.urlsafe_b64encode(mac).rstrip(b"="),
                                   signature.encode()):
            raise BadSignature("signature does not match")
        # Signed with our key: the payload is the compact JSON that ``dumps`` encoded.
        try:
            return jsoncodec.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except ValueError as exc:  # binascii.Error and JSONDecodeError are ValueErrors
            raise BadPayload("the payload does not decode") from exc


_ELSEWHERE = object()  # a token of a form ``_quick_loads`` leaves to itsdangerous


class Signer:
    def __init__(self, secret_key: str) -> None:
        self._callbacks = _CallbackSerializer(secret_key, salt="bridge.callback")
        self._media = _Serializer(secret_key, salt="bridge.media")
        self._portal_links = _Serializer(secret_key, salt="bridge.portal-link")
        self._portal_sessions = _Serializer(secret_key, salt="bridge.portal-session")
        self._csrf = _KeptKeySigner(secret_key, salt="bridge.portal-csrf")

    def callback_token(self, provider: str, job_id: str) -> str:
        return self._callbacks.dumps([provider, job_id])

    def callback_job(self, provider: str, token: str) -> str:
        """The job id a callback token names; ``TokenInvalid`` if it is not ours or not
        for ``provider``."""
        try:
            value = self._callbacks.check(token)
        except BadSignature:
            raise TokenInvalid("bad callback token") from None
        if not (isinstance(value, list) and len(value) == 2 and value[0] == provider
                and isinstance(value[1], str)):
            raise TokenInvalid("bad callback token")
        return value[1]

    def media_token(self, name: str, expires_at: float) -> str:
        return self._media.dumps([name, int(expires_at)])

    def media_name(self, token: str, now: float | None = None) -> str:
        """The file a media token names; ``TokenInvalid`` or ``TokenExpired`` otherwise."""
        try:
            value = self._media.loads(token)
        except BadSignature:
            raise TokenInvalid("bad media token") from None
        if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
                and isinstance(value[1], int)):
            raise TokenInvalid("bad media token")
        if (time.time() if now is None else now) >= value[1]:
            raise TokenExpired("media link expired")
        return value[0]

    def portal_link_token(self, link_id: str, expires_at: float) -> str:
        return self._portal_links.dumps([link_id, int(expires_at)])

    def portal_link_id(self, token: str, now: float | None = None) -> str:
        """The link id a portal link names; ``TokenInvalid`` or ``TokenExpired`` otherwise."""
        try:
            value = self._portal_links.loads(token)
        except BadSignature:
            raise TokenInvalid("bad portal link") from None
        if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
                and isinstance(value[1], int)):
            raise TokenInvalid("bad portal link")
        if (time.time() if now is None else now) >= value[1]:
            raise TokenExpired("portal link expired")
        return value[0]

    def portal_session_token(self, session_id: str) -> str:
        return self._portal_sessions.dumps(session_id)

    def portal_session_id(self, token: str) -> str:
        """The session id a portal cookie carries; ``TokenInvalid`` if it is not ours."""
        try:
            value = self._portal_sessions.loads(token)
        except BadSignature:
            raise TokenInvalid("bad portal session") from None
        if not isinstance(value, str):
            raise TokenInvalid("bad portal session")
        return value

    def csrf_token(self, session_id: str) -> str:
        """The token every form of a portal session carries: an HMAC of the session id."""
        return self._csrf.get_signature(session_id).decode()
