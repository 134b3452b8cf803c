"""Callback, media and portal tokens: itsdangerous' own, signed with HMAC-SHA256, and those
an earlier release signed with itsdangerous' default SHA-1 still read."""

from __future__ import annotations

import hashlib

import pytest
from itsdangerous import URLSafeSerializer

from bridge.signing import Signer, TokenExpired, TokenInvalid

KEY = "signing-test-secret-key-0123456789"
JOB = "job_0HzT1qB7w3kPp9XfRa2LmQ"


def earlier_release(salt: str = "bridge.callback", key: str = KEY) -> URLSafeSerializer:
    """itsdangerous as it is (SHA-1), as the earlier release made tokens."""
    return URLSafeSerializer(key, salt=salt)


def itsdangerous_sha256(salt: str = "bridge.callback", key: str = KEY) -> URLSafeSerializer:
    return URLSafeSerializer(key, salt=salt, signer_kwargs={"digest_method": hashlib.sha256})


def test_a_callback_token_is_itsdangerous_own_sha256_token_for_the_provider_and_job() -> None:
    token = Signer(KEY).callback_token("apixo", JOB)
    assert token == itsdangerous_sha256().dumps(["apixo", JOB])
    assert itsdangerous_sha256().loads(token) == ["apixo", JOB]
    assert token != earlier_release().dumps(["apixo", JOB])


def test_a_callback_token_names_its_job() -> None:
    signer = Signer(KEY)
    assert signer.callback_job("apixo", signer.callback_token("apixo", JOB)) == JOB


def test_a_callback_token_of_the_earlier_release_still_names_its_job() -> None:
    signer = Signer(KEY)
    assert signer.callback_job("apixo", earlier_release().dumps(["apixo", JOB])) == JOB
    forged = earlier_release(key="another-secret-key-entirely-000").dumps(["apixo", JOB])
    with pytest.raises(TokenInvalid):
        signer.callback_job("apixo", forged)


def test_any_token_itsdangerous_makes_with_our_key_is_read_as_it_reads_it() -> None:
    signer = Signer(KEY)
    # A long, repetitive payload is one itsdangerous compresses (a leading "."): that form
    # is read by itsdangerous itself.
    long_job = "job_" + "a" * 300
    compressed = itsdangerous_sha256().dumps(["apixo", long_job])
    assert compressed.startswith(".")
    assert signer.callback_job("apixo", compressed) == long_job
    assert signer.callback_job("apixo", itsdangerous_sha256().dumps(["apixo", "j"])) == "j"


@pytest.mark.parametrize("tamper", [
    lambda t: t[:-2] + ("A" if t[-2] != "A" else "B") + t[-1],  # the signature
    lambda t: ("B" if t[0] != "B" else "C") + t[1:],  # the payload
    lambda t: t.replace(".", ""),  # no separator
    lambda t: t.split(".")[0] + ".",  # no signature
    lambda t: "." + t.split(".")[1],  # no payload
    lambda t: "",
    lambda t: ".",
    lambda t: t + "." + t,
])
def test_an_altered_callback_token_is_refused(tamper) -> None:  # type: ignore[no-untyped-def]
    signer = Signer(KEY)
    with pytest.raises(TokenInvalid):
        signer.callback_job("apixo", tamper(signer.callback_token("apixo", JOB)))


def test_a_token_signed_with_another_key_is_refused() -> None:
    forged = Signer("another-secret-key-entirely-000").callback_token("apixo", JOB)
    with pytest.raises(TokenInvalid):
        Signer(KEY).callback_job("apixo", forged)
    forged = itsdangerous_sha256(key="another-secret-key-entirely-000").dumps(["apixo", JOB])
    with pytest.raises(TokenInvalid):
        Signer(KEY).callback_job("apixo", forged)


def test_a_callback_token_of_another_provider_or_shape_is_refused() -> None:
    signer = Signer(KEY)
    with pytest.raises(TokenInvalid):
        signer.callback_job("venice", signer.callback_token("apixo", JOB))
    for value in (["apixo"], ["apixo", 7], {"apixo": JOB}, "apixo", ["apixo", JOB, "x"]):
        with pytest.raises(TokenInvalid):
            signer.callback_job("apixo", itsdangerous_sha256().dumps(value))


def test_a_media_token_is_not_a_callback_token() -> None:
    signer = Signer(KEY)
    media = signer.media_token(f"{JOB}.mp4", 4e9)
    with pytest.raises(TokenInvalid):
        signer.callback_job("apixo", media)


def test_a_media_token_names_its_file_until_it_expires() -> None:
    signer = Signer(KEY)
    token = signer.media_token(f"{JOB}.mp4", 2_000)
    assert signer.media_name(token, now=1_999) == f"{JOB}.mp4"
    with pytest.raises(TokenExpired):
        signer.media_name(token, now=2_000)
    with pytest.raises(TokenInvalid):
        signer.media_name(token[:-2] + "xx", now=1_000)


def test_media_tokens_are_sha256_and_those_of_the_earlier_release_still_read() -> None:
    signer = Signer(KEY)
    token = signer.media_token(f"{JOB}.mp4", 2_000)
    assert itsdangerous_sha256("bridge.media").loads(token) == [f"{JOB}.mp4", 2_000]
    earlier = earlier_release("bridge.media").dumps([f"{JOB}.mp4", 2_000])
    assert signer.media_name(earlier, now=1_999) == f"{JOB}.mp4"
    with pytest.raises(TokenExpired):
        signer.media_name(earlier, now=2_000)
    for forged in (earlier_release("bridge.media", "another-secret-key-entirely-000"),
                   itsdangerous_sha256("bridge.media", "another-secret-key-entirely-000"),
                   itsdangerous_sha256("bridge.callback")):
        with pytest.raises(TokenInvalid):
            signer.media_name(forged.dumps([f"{JOB}.mp4", 2_000]), now=1_000)


def test_portal_links_and_sessions_of_the_earlier_release_still_read() -> None:
    signer = Signer(KEY)
    link = earlier_release("bridge.portal-link").dumps(["lnk_1", 2_000])
    assert signer.portal_link_id(link, now=1_999) == "lnk_1"
    session = earlier_release("bridge.portal-session").dumps("ses_1")
    assert signer.portal_session_id(session) == "ses_1"
    assert signer.portal_session_id(signer.portal_session_token("ses_2")) == "ses_2"
    with pytest.raises(TokenInvalid):
        signer.portal_session_id(earlier_release("bridge.portal-link").dumps("ses_1"))


@pytest.mark.parametrize("body", [b'{"id":"evt_1","type":"job.succeeded","data":{}}', b"{}",
                                  '{"prompt":"Füchse im Schnee"}'.encode()])
def test_a_webhook_signature_verifies_with_the_standard_webhooks_library(body: bytes) -> None:
    import base64
    import time

    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    from bridge.signing import sign_webhook

    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    now = int(time.time())
    headers = {"webhook-id": "evt_1", "webhook-timestamp": str(now),
               "webhook-signature": sign_webhook(secret, "evt_1", now, body)}
    Webhook(secret).verify(body, headers)  # raises if it does not verify
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", headers)
