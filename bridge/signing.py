"""Signatures: Standard Webhooks' for every delivery, and signed tokens in URLs (provider
callbacks, hosted media links and the portal's magic links and session cookies, with
itsdangerous).

A callback token names the job (and provider) it belongs to, so the receiver can refuse a
forged callback before it touches the database. A media token names a file and carries its
own expiry time, and so does a portal link. A portal session cookie carries only the
session's id, signed; the session itself is kept in the database.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import time
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer
from itsdangerous import Signer as _ItsSigner


@functools.lru_cache(maxsize=1024)
def _webhook_key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


def sign_webhook(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """One Standard Webhooks signature: ``v1,`` and the base64 HMAC-SHA256, keyed with the
    base64 key after ``whsec_``, of ``"{id}.{timestamp}.{body}"``."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.digest(_webhook_key(secret), signed, hashlib.sha256)
    return "v1," + base64.b64encode(digest).decode()


class TokenInvalid(Exception):
    """A token that was not made with our key, or was altered."""


class TokenExpired(Exception):
    """A genuine token whose time is up."""


class _KeptKeySigner(_ItsSigner):
    """itsdangerous' signer with its derived key worked out once rather than per token (the
    derivation is a hash of its own)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._derived: dict[str | bytes | None, bytes] = {}

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        key = self._derived.get(secret_key)
        if key is None:
            key = self._derived[secret_key] = super().derive_key(secret_key)
        return key


class _Serializer(URLSafeSerializer):
    """Tokens signed with HMAC-SHA256; those signed with itsdangerous' default SHA-1 (as
    earlier releases made them) are still read, until they expire. One signer per salt for
    the serializer's lifetime (itsdangerous makes one per token)."""

    def __init__(self, secret_key: str, salt: str) -> None:
        super().__init__(secret_key, salt=salt, signer=_KeptKeySigner,
                         signer_kwargs={"digest_method": hashlib.sha256},
                         fallback_signers=[{"digest_method": hashlib.sha1}])
        self._signers: dict[str | bytes | None, _ItsSigner] = {}

    def make_signer(self, salt: str | bytes | None = None) -> _ItsSigner:
        signer = self._signers.get(salt)
        if signer is None:
            signer = self._signers[salt] = super().make_signer(salt)
        return signer


class Signer:
    def __init__(self, secret_key: str) -> None:
        self._callbacks = _Serializer(secret_key, salt="bridge.callback")
        self._media = _Serializer(secret_key, salt="bridge.media")
        self._portal_links = _Serializer(secret_key, salt="bridge.portal-link")
        self._portal_sessions = _Serializer(secret_key, salt="bridge.portal-session")
        self._csrf = _ItsSigner(secret_key, salt="bridge.portal-csrf")

    def callback_token(self, provider: str, job_id: str) -> str:
        return self._callbacks.dumps([provider, job_id])

    def callback_job(self, provider: str, token: str) -> str:
        """The job id a callback token names; ``TokenInvalid`` if it is not ours or not
        for ``provider``."""
        try:
            value = self._callbacks.loads(token)
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
