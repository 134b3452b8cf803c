"""Signed tokens in URLs: provider callbacks and hosted media links (itsdangerous).

A callback token names the job (and provider) it belongs to, so the receiver can refuse a
forged callback before it touches the database. A media token names a file and carries its
own expiry time.
"""

from __future__ import annotations

import time
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer
from itsdangerous import Signer as _ItsSigner


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


class Signer:
    def __init__(self, secret_key: str) -> None:
        self._callbacks = _Serializer(secret_key, salt="bridge.callback")
        self._media = _Serializer(secret_key, salt="bridge.media")

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
