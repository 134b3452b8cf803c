"""The portal's jobs: the list (filtered, paged), a job's page and its cancel button."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bridge import actions
from bridge.core import Bridge
from bridge.errors import InvalidRequest
from bridge.jobs import is_link
from bridge.models import TERMINAL, JobStatus
from bridge.portal.forms import read_form
from bridge.portal.pages import back, page, query, render
from bridge.portal.sessions import Session
from bridge.settings import PROVIDERS

PAGE_SIZE = 25
SEARCH_MAX = 200  # characters of a search


def _choice(request: Request, name: str, allowed: tuple[str, ...]) -> str | None:
    value = request.query_params.get(name) or None
    if value is not None and value not in allowed:
        raise InvalidRequest(f"{name} must be one of {', '.join(allowed)}", field=name,
                             status_code=400)
    return value


@page
async def jobs(request: Request, bridge: Bridge, session: Session) -> Response:
    statuses = tuple(str(status) for status in JobStatus)
    status = _choice(request, "status", statuses)
    provider = _choice(request, "provider", PROVIDERS)
    q = (request.query_params.get("q") or "").strip() or None
    if q is not None and len(q) > SEARCH_MAX:
        raise InvalidRequest(f"q must be at most {SEARCH_MAX} characters", field="q",
                             status_code=400)
    cursor = request.query_params.get("cursor") or None
    if q is None:
        found = await bridge.store.list_jobs(session.tenant.id, status=status,
                                             provider=provider, limit=PAGE_SIZE, cursor=cursor)
    else:
        found = await bridge.store.search_jobs(session.tenant.id, q, status=status,
                                               provider=provider, limit=PAGE_SIZE,
                                               cursor=cursor)
    return render(request, "jobs.html", session, title="Jobs", active="jobs", jobs=found.data,
                  next_cursor=found.next_cursor, paged=cursor is not None, status=status,
                  provider=provider, q=q, search_max=SEARCH_MAX, statuses=statuses,
                  providers=PROVIDERS,
                  unfinished=any(job.status not in TERMINAL for job in found.data),
                  query=query(q=q, status=status, provider=provider))


@page
async def job(request: Request, bridge: Bridge, session: Session) -> Response:
    found = await actions.job(bridge, session.tenant, request.path_params["job_id"])
    events = await bridge.store.job_events(found.id)
    video_url = (found.result or {}).get("video_url")
    if not isinstance(video_url, str) or not is_link(video_url):
        video_url = None  # only http(s) links go into an href (one kept from before, say)
    return render(request, "job.html", session, title=f"Job {found.id}", active="jobs",
                  job=found, events=events, video_url=video_url,
                  cancelable=found.status not in TERMINAL)


@page
async def cancel(request: Request, bridge: Bridge, session: Session) -> Response:
    await read_form(request, session)
    canceled = await actions.cancel_job(bridge, session.tenant, request.path_params["job_id"])
    return back(f"/portal/jobs/{canceled.id}", "canceled")


routes = [
    Route("/portal", jobs, methods=["GET"]),
    Route("/portal/jobs/{job_id}", job, methods=["GET"]),
    Route("/portal/jobs/{job_id}/cancel", cancel, methods=["POST"]),
]
