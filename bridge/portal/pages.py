"""What every portal page shares: the templates, the signed-in check, error pages instead of
JSON, and the security headers every page is sent with."""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from markupsafe import Markup, escape
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from bridge.api.common import get_bridge
from bridge.core import Bridge
from bridge.errors import BridgeError, Unavailable
from bridge.failures import reworded
from bridge.models import parse_rfc3339, rfc3339
from bridge.portal import sessions
from bridge.portal.sessions import Session, SignedOut

if TYPE_CHECKING:
    from starlette.templating import Jinja2Templates

log = logging.getLogger("bridge")

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "media-src 'self' https: http:; frame-ancestors 'none'; form-action 'self'; "
       "base-uri 'none'; object-src 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",  # a page's URL can carry a sign-in token
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",  # pages show secrets and the tenant's data
}

# Messages a redirect may ask a page to show, by key: never text from the query string.
NOTICES = {
    "created": "Endpoint created.",
    "updated": "Endpoint saved.",
    "enabled": "Endpoint enabled: deliveries to it start again.",
    "disabled": "Endpoint disabled: nothing is sent to it until it is enabled.",
    "deleted": "Endpoint deleted.",
    "test_sent": "A test event (endpoint.test) is on its way.",
    "replayed": "The event is queued to be sent again.",
    "recovering": "The missed events are queued to be sent again.",
    "canceled": "The job is canceled.",
}


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


_SURROGATES = re.compile("[\ud800-\udfff]")  # a pair is one character once decoded


def _showable(value: Any) -> Any:
    """Every ``{{ }}`` value as it is, but text UTF-8 cannot carry (a lone surrogate stored
    before provider answers were read strictly) with U+FFFD in its place: never a 500."""
    if isinstance(value, str) and not value.isascii():
        shown = _SURROGATES.sub("\ufffd", value)
        if shown != value:
            return Markup(shown) if isinstance(value, Markup) else shown
    return value


REFRESH_SECONDS = 3  # a page showing unfinished jobs fetches itself again this often


def _at(value: datetime | str | None, *, seconds: bool = False) -> Markup:
    """A ``<time>`` in UTC, with UTC on hover; portal.js shows it in the browser's zone."""
    if value is None:
        return Markup("—")
    if isinstance(value, str):
        try:
            value = parse_rfc3339(value)
        except ValueError:
            return Markup(escape(value))
    stamp = rfc3339(value) or ""  # 2026-12-07T22:57:04Z
    full = stamp.replace("T", " ").replace("Z", " UTC")
    text = full if seconds else f"{full[:16]} UTC"
    return Markup(f'<time datetime="{stamp}" title="{full}">{escape(text)}</time>')


@functools.cache
def templates() -> Jinja2Templates:
    """The portal's templates, loaded with Jinja2 when the first page is drawn."""
    from starlette.templating import Jinja2Templates

    made = Jinja2Templates(directory=Path(__file__).with_name("templates"))
    made.env.finalize = _showable
    made.env.filters["json"] = _json
    made.env.filters["at"] = _at
    made.env.filters["reworded"] = reworded  # attempts recorded before errors were words
    made.env.globals["refresh_seconds"] = REFRESH_SECONDS
    return made


def render(request: Request, name: str, session: Session | None, *, status_code: int = 200,
           headers: dict[str, str] | None = None, **context: Any) -> Response:
    notice = NOTICES.get(request.query_params.get("notice", ""))
    return templates().TemplateResponse(
        request, name, {"session": session, "notice": notice, **context},
        status_code=status_code, headers={**HEADERS, **(headers or {})})


def query(**params: str | None) -> dict[str, str]:
    """A page's filters, for its paging links."""
    return {name: value for name, value in params.items() if value is not None}


def back(path: str, notice: str | None = None, **params: str) -> RedirectResponse:
    """303 to a portal page after a form post (the browser then GETs it)."""
    query = urlencode({**params, **({"notice": notice} if notice else {})})
    return RedirectResponse(f"{path}?{query}" if query else path, status_code=303,
                            headers=HEADERS)


PageHandler = Callable[[Request, Bridge, Session], Awaitable[Response]]


def page(handler: PageHandler) -> Callable[[Request], Awaitable[Response]]:
    """A portal route: signed in or a 401 page; a ``BridgeError`` as a page with its
    status (404 for another tenant's ids, as in the API), never a traceback."""

    @functools.wraps(handler)
    async def route(request: Request) -> Response:
        bridge = get_bridge(request)
        session = None
        try:
            session = await sessions.current(bridge, request)
            return await handler(request, bridge, session)
        except SignedOut as exc:
            answer = render(request, "signed_out.html", None, status_code=401,
                            message=exc.message)
            sessions.clear_cookie(bridge, answer)
            return answer
        except BridgeError as exc:
            return error_page(request, exc, session)

    return route


def error_page(request: Request, exc: BridgeError, session: Session | None = None, *,
               link: bool = False) -> Response:
    """``exc`` as a page; ``link``: it refused a sign-in link (the page says how to get
    another)."""
    headers = None
    if isinstance(exc, Unavailable):
        headers = {"Retry-After": str(exc.retry_after)}
        log.warning("answered 503: %s", exc.message)
    titles = {400: "Bad request", 403: "Refused", 404: "Not found", 409: "Not now",
              410: "Link no longer valid", 413: "Too large", 422: "Not valid",
              503: "Busy, try again"}
    title = "Sign-in link refused" if link else titles.get(exc.status_code, "Error")
    return render(request, "error.html", session, status_code=exc.status_code,
                  headers=headers, title=title,
                  message=exc.message, field=exc.field, link=link)
