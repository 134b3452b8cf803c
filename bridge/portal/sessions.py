"""Who is signed in to the portal: magic links, session cookies and CSRF tokens.

A magic link carries an itsdangerous-signed token naming a link id and its expiry; the
database keeps the link by the SHA-256 of its id, and using it marks it used and opens a
session in one transaction, so a link works once. The session cookie carries only the
session's id, signed; the session is kept in the database (by hash too), so logging out ends
it for every copy of the cookie. Each session's forms carry a CSRF token, an HMAC of its id.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from starlette.requests import Request
from starlette.responses import Response

from bridge.core import LINKS_PER_MINUTE, Bridge
from bridge.errors import BridgeError, InvalidRequest, RateLimited
from bridge.models import Tenant, utcnow
from bridge.signing import TokenExpired, TokenInvalid

COOKIE = "bridge_portal"
COOKIE_PATH = "/portal"
SESSION_TTL = timedelta(hours=12)
LINK_TTL = timedelta(minutes=15)
MIN_LINK_TTL = timedelta(minutes=1)
MAX_LINK_TTL = timedelta(hours=24)


class LinkRefused(BridgeError):
    """A magic link that cannot sign anyone in; the message says why, for the person."""

    code = "link_refused"

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class SignedOut(BridgeError):
    """No open session: a missing, forged, expired or ended cookie."""

    status_code = 401
    code = "signed_out"


class CsrfRefused(BridgeError):
    status_code = 403
    code = "csrf_refused"


@dataclass(frozen=True)
class Session:
    tenant: Tenant
    id: str
    csrf: str  # the token this session's forms carry


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def check_ttl(ttl: timedelta, field: str = "ttl") -> timedelta:
    if not MIN_LINK_TTL <= ttl <= MAX_LINK_TTL:
        raise InvalidRequest(f"{field} must be from 1 minute to 24 hours", field=field)
    return ttl


async def issue_link(bridge: Bridge, tenant: str, ttl: timedelta = LINK_TTL,
                     now: datetime | None = None) -> tuple[str, datetime] | None:
    """A single-use sign-in URL for ``tenant`` on the public URL, and when it expires;
    ``None`` when there is no such tenant. ``RateLimited`` past ``LINKS_PER_MINUTE`` links
    for one tenant (counted in this process)."""
    now = now or utcnow()
    expires_at = datetime.fromtimestamp(int((now + check_ttl(ttl)).timestamp()), UTC)
    wait = bridge.portal_links.take(tenant)
    if wait:
        raise RateLimited(f"at most {LINKS_PER_MINUTE} sign-in links a minute for one tenant; "
                          "try again later", retry_after=wait)
    link_id = secrets.token_urlsafe(24)
    if not await bridge.store.create_portal_link(_hash(link_id), tenant, now, expires_at):
        return None
    token = bridge.signer.portal_link_token(link_id, expires_at.timestamp())
    return f"{bridge.settings.public_url}/portal/login/{token}", expires_at


async def redeem_link(bridge: Bridge, token: str) -> tuple[str, datetime]:
    """Use a magic link: a new session's cookie value and when it ends, or ``LinkRefused``."""
    now = utcnow()
    try:
        link_id = bridge.signer.portal_link_id(token, now.timestamp())
    except TokenExpired:
        raise LinkRefused("This sign-in link has expired.", 410) from None
    except TokenInvalid:
        raise LinkRefused("This sign-in link is not valid: it may have been cut short when "
                          "it was copied.", 400) from None
    session_id = secrets.token_urlsafe(32)
    ends = now + SESSION_TTL
    if await bridge.store.redeem_portal_link(_hash(link_id), now, _hash(session_id),
                                             ends) is None:
        raise LinkRefused("This sign-in link has been used already: each link signs in "
                          "once.", 410)
    return bridge.signer.portal_session_token(session_id), ends


def set_cookie(bridge: Bridge, response: Response, value: str, ends: datetime) -> None:
    response.set_cookie(
        COOKIE, value, max_age=max(0, int(ends.timestamp() - time.time())), path=COOKIE_PATH,
        httponly=True, samesite="lax",
        secure=not bridge.settings.public_url.startswith("http://"))


def clear_cookie(bridge: Bridge, response: Response) -> None:
    response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="lax",
                           secure=not bridge.settings.public_url.startswith("http://"))


async def current(bridge: Bridge, request: Request) -> Session:
    """The request's open session, or ``SignedOut``."""
    cookie = request.cookies.get(COOKIE)
    if not cookie:
        raise SignedOut("You are not signed in.")
    try:
        session_id = bridge.signer.portal_session_id(cookie)
    except TokenInvalid:
        raise SignedOut("You are not signed in.") from None
    tenant = await bridge.store.portal_session(_hash(session_id), utcnow())
    if tenant is None:
        raise SignedOut("Your session has ended.")
    return Session(tenant, session_id, bridge.signer.csrf_token(session_id))


def check_csrf(session: Session, token: str | None) -> None:
    """403 unless ``token`` is the session's own CSRF token."""
    if not token or not hmac.compare_digest(token.encode(), session.csrf.encode()):
        raise CsrfRefused("This form is out of date or did not come from the portal. "
                          "Reload the page and try again.")


async def end(bridge: Bridge, session: Session) -> None:
    await bridge.store.end_portal_session(_hash(session.id), utcnow())
