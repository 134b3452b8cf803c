"""``/v1/jobs``: create, read, list and cancel jobs."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from bridge import actions
from bridge.api.common import (
    JSONResponse,
    authenticate,
    get_bridge,
    page,
    page_params,
    read_json,
)
from bridge.errors import InvalidRequest
from bridge.inline import MAX_JOB_BODY, check_size
from bridge.jobs import check_idempotency_key, fingerprint
from bridge.models import JobStatus
from bridge.settings import PROVIDERS


async def create_job(request: Request) -> JSONResponse:
    """The body is read strictly, then checked: the key (400), the sizes (413), the model
    (422), in that order."""
    from bridge.schemas import JobRequest, parse  # pydantic: at the first body read

    tenant = await authenticate(request)
    bridge = get_bridge(request)
    body = await read_json(request, MAX_JOB_BODY)
    key = request.headers.get("idempotency-key")
    check_idempotency_key(key)
    check_size(body)
    parsed = parse(JobRequest, body, enabled=bridge.providers)
    job, created = await bridge.create_job(tenant, parsed, key,
                                           fingerprint(body) if key is not None else None)
    return JSONResponse(job.to_json(), status_code=202 if created else 200)


async def get_job(request: Request) -> JSONResponse:
    tenant = await authenticate(request)
    job = await actions.job(get_bridge(request), tenant, request.path_params["job_id"])
    return JSONResponse(job.to_json())


async def list_jobs(request: Request) -> JSONResponse:
    tenant = await authenticate(request)
    limit, cursor = page_params(request)
    status = request.query_params.get("status") or None
    if status is not None and status not in set(JobStatus):
        raise InvalidRequest(f"status must be one of {', '.join(JobStatus)}", field="status",
                             status_code=400)
    provider = request.query_params.get("provider") or None
    if provider is not None and provider not in PROVIDERS:
        raise InvalidRequest(f"provider must be one of {', '.join(PROVIDERS)}",
                             field="provider", status_code=400)
    result = await get_bridge(request).store.list_jobs(
        tenant.id, status=status, provider=provider, limit=limit, cursor=cursor
    )
    return page([job.to_json() for job in result.data], result.next_cursor)


async def cancel_job(request: Request) -> JSONResponse:
    tenant = await authenticate(request)
    canceled = await actions.cancel_job(get_bridge(request), tenant,
                                        request.path_params["job_id"])
    return JSONResponse(canceled.to_json())


routes = [
    Route("/v1/jobs", create_job, methods=["POST"]),
    Route("/v1/jobs", list_jobs, methods=["GET"]),
    Route("/v1/jobs/{job_id}", get_job, methods=["GET"]),
    Route("/v1/jobs/{job_id}/cancel", cancel_job, methods=["POST"]),
]
