"""The operations: every route with its parameters, request body and answers."""

from __future__ import annotations

from bridge.inline import MAX_INLINE_MEDIA, MAX_JOB_BODY, MAX_JOB_JSON
from bridge.jobs import MAX_IDEMPOTENCY_KEY
from bridge.jsoninput import MAX_DEPTH
from bridge.openapi.schemas import (
    EVENT_TYPE,
    JOB_STATUS,
    PROVIDER,
    STR,
    Schema,
    ref,
)
from bridge.schemas.responses import DEFAULT_LIMIT, MAX_LIMIT

_ERRORS = {
    "400": "The request is malformed: a query parameter or cursor, or the body is not strict "
           "JSON (not UTF-8, a lone surrogate, NaN or Infinity, arrays and objects nested "
           f"more than {MAX_DEPTH} deep, a key repeated in one object); error.message says "
           "which, error.field where.",
    "401": "No valid API key.",
    "404": "No such object for this tenant.",
    "409": "The object is in a state that does not allow this.",
    "413": "The body is too large.",
    "422": "A field is not valid; error.field names it.",
    "429": "Too many requests (error.code rate_limited); try again after Retry-After.",
    "503": "The database is locked or full; nothing was kept. Try again after Retry-After.",
}


def _json(schema: Schema, description: str = "OK") -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _op(op_id: str, tag: str, summary: str, responses: dict[str, Schema], *,
        errors: tuple[str, ...] = ("401",), body: Schema | None = None,
        params: list[Schema] | None = None, auth: bool = True, body_required: bool = True,
        description: str | None = None, notes: dict[str, str] | None = None) -> Schema:
    """An operation; ``op_id`` names it for client generators (stable: clients' function
    names), ``notes`` are its own descriptions of some of its ``errors``."""
    operation: Schema = {"operationId": op_id, "tags": [tag], "summary": summary,
                         "responses": dict(responses)}
    if description is not None:
        operation["description"] = description
    for code in errors:
        operation["responses"][code] = _json(ref("Error"), (notes or {}).get(code,
                                                                             _ERRORS[code]))
        if code == "429":
            operation["responses"][code]["headers"] = {"Retry-After": {
                "description": "seconds to wait", "required": True,
                "schema": {"type": "integer", "minimum": 1}}}
    if auth:  # every authenticated route reads or writes the database
        operation["responses"]["503"] = _json(ref("Error"), (notes or {}).get(
            "503", _ERRORS["503"])) | {
            "headers": {"Retry-After": {"description": "seconds to wait",
                                        "schema": {"type": "integer"}}}}
    if body is not None:
        operation["requestBody"] = {"required": body_required,
                                    "content": {"application/json": {"schema": body}}}
    if params:
        operation["parameters"] = params
    if not auth:
        operation["security"] = []
    return operation


def _binary(description: str) -> Schema:
    return {"description": description,
            "content": {"video/mp4": {"schema": {"type": "string", "format": "binary"}}}}


def _path(name: str, description: str) -> Schema:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string"}}


def _query(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema}


PAGING = [_query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                 f"at most this many, newest first (default {DEFAULT_LIMIT})"),
          _query("cursor", STR, "next_cursor of the page before, for the page after it")]
JOB_ID = _path("job_id", "the job's id (job_...)")
EVENT_ID = _path("event_id", "the event's id (evt_...)")
ENDPOINT_ID = _path("endpoint_id", "the endpoint's id (ep_...)")
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "description": "any string of yours: the same key and body within 24 hours answers the "
                   "first job and submits nothing again",
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY}}


JOB_LIMITS = (
    f"A job body is at most {MAX_JOB_JSON >> 10} KiB of JSON besides its data: URLs (each "
    "counted as the InlineMedia summary the job shows of it), and its data: URLs (in images "
    f"and options) total at most {MAX_INLINE_MEDIA >> 20} MiB; beyond either, 413 "
    "payload_too_large naming the field. A body over "
    f"{MAX_JOB_BODY >> 20} MiB is refused (413) before it is read. The same "
    "Idempotency-Key within 24 hours answers 200 with the first job when the body is the "
    "same JSON (key order and whitespace aside), 409 idempotency_conflict when it is not."
)


def paths() -> dict[str, Schema]:
    return {
        "/v1/jobs": {
            "post": _op("createJob", "Jobs", "Create a job", {
                "202": _json(ref("Job"), "A new job."),
                "200": _json(ref("Job"), "The job an earlier request with the same "
                                          "Idempotency-Key created."),
            }, errors=("400", "401", "409", "413", "422"), body=ref("JobRequest"),
                params=[IDEMPOTENCY_KEY], description=JOB_LIMITS, notes={
                    "409": "idempotency_conflict: the Idempotency-Key was used with another "
                           "body in the last 24 hours; nothing was submitted.",
                    "413": "payload_too_large: over the limits above; error.field names the "
                           "field.",
                    "503": "unavailable: the database is locked or full; or "
                           "provider_unavailable: the provider's models cannot be read now "
                           "(error.message says why). Nothing was kept; try again after "
                           "Retry-After."}),
            "get": _op("listJobs", "Jobs", "List jobs, newest first",
                       {"200": _json(ref("JobPage"))}, errors=("400", "401"), params=[
                           *PAGING,
                           _query("status", JOB_STATUS, "only jobs in this status"),
                           _query("provider", PROVIDER, "only jobs at this provider")]),
        },
        "/v1/jobs/{job_id}": {"get": _op("getJob", "Jobs", "Get a job",
                                         {"200": _json(ref("Job"))},
                                         errors=("401", "404"), params=[JOB_ID])},
        "/v1/jobs/{job_id}/cancel": {"post": _op(
            "cancelJob", "Jobs",
            "Cancel a job (at the provider where it can; elsewhere it stops being followed)",
            {"200": _json(ref("Job"))}, errors=("401", "404", "409"), params=[JOB_ID])},
        "/v1/events": {"get": _op(
            "listEvents", "Events", "List events, newest first",
            {"200": _json(ref("EventPage"))}, errors=("400", "401"), params=[
                *PAGING, _query("type", EVENT_TYPE, "only events of this type"),
                _query("job_id", STR, "only this job's events")])},
        "/v1/events/{event_id}": {"get": _op("getEvent", "Events", "Get an event",
                                             {"200": _json(ref("Event"))},
                                             errors=("401", "404"), params=[EVENT_ID])},
        "/v1/events/{event_id}/replay": {"post": _op(
            "replayEvent", "Events",
            "Send an event again, to one endpoint or to all that want it",
            {"202": _json(ref("DeliveryList"), "The deliveries queued.")},
            errors=("400", "401", "404", "409", "413", "422"), params=[EVENT_ID],
            body=ref("Replay"), body_required=False)},
        "/v1/endpoints": {
            "post": _op("createEndpoint", "Endpoints", "Register a webhook endpoint",
                        {"201": _json(ref("EndpointWithSecret"), "Created; the secret is "
                                                                  "shown only here.")},
                        errors=("400", "401", "413", "422"), body=ref("EndpointCreate")),
            "get": _op("listEndpoints", "Endpoints", "List endpoints, newest first",
                       {"200": _json(ref("EndpointPage"))}, errors=("400", "401"),
                       params=PAGING),
        },
        "/v1/endpoints/{endpoint_id}": {
            "get": _op("getEndpoint", "Endpoints", "Get an endpoint",
                       {"200": _json(ref("Endpoint"))}, errors=("401", "404"),
                       params=[ENDPOINT_ID]),
            "patch": _op("updateEndpoint", "Endpoints",
                         "Change an endpoint (disabled=false enables it again)",
                         {"200": _json(ref("Endpoint"))},
                         errors=("400", "401", "404", "413", "422"), params=[ENDPOINT_ID],
                         body=ref("EndpointUpdate")),
            "delete": _op("deleteEndpoint", "Endpoints",
                          "Delete an endpoint and its deliveries",
                          {"204": {"description": "Deleted."}}, errors=("401", "404"),
                          params=[ENDPOINT_ID]),
        },
        "/v1/endpoints/{endpoint_id}/rotate-secret": {"post": _op(
            "rotateEndpointSecret", "Endpoints",
            "Make a new secret; the old one keeps signing beside it for 24 hours",
            {"200": _json(ref("EndpointWithSecret"))}, errors=("401", "404", "409"),
            params=[ENDPOINT_ID])},
        # Not testEndpoint: a generated test_endpoint() would look like a test to pytest.
        "/v1/endpoints/{endpoint_id}/test": {"post": _op(
            "sendTestEvent", "Endpoints",
            "Send an endpoint.test event to the endpoint (a burst of 5 per endpoint, then 1 a "
            "second)",
            {"202": _json(ref("Delivery"), "The delivery queued.")},
            errors=("401", "404", "409", "429"), params=[ENDPOINT_ID])},
        "/v1/endpoints/{endpoint_id}/deliveries": {"get": _op(
            "listEndpointDeliveries", "Endpoints",
            "Every delivery attempt to the endpoint, newest first",
            {"200": _json(ref("DeliveryPage"))}, errors=("400", "401", "404"),
            params=[ENDPOINT_ID, *PAGING])},
        "/v1/endpoints/{endpoint_id}/recover": {"post": _op(
            "recoverEndpoint", "Endpoints", "Send again what the endpoint missed since a time",
            {"202": _json(ref("Recovering"))},
            errors=("400", "401", "404", "409", "413", "422"), params=[ENDPOINT_ID],
            body=ref("Recover"))},
        "/v1/hooks": {"post": _op(
            "createHook", "Hooks", "Subscribe a REST hook (Zapier): one event type to a URL",
            {"201": _json(ref("Hook"))}, errors=("400", "401", "413", "422"),
            body=ref("HookCreate"))},
        "/v1/hooks/{hook_id}": {"delete": _op(
            "deleteHook", "Hooks", "Unsubscribe a REST hook",
            {"204": {"description": "Deleted."}}, errors=("401", "404"),
            params=[_path("hook_id", "the hook's id (ep_...), as its subscription answered")])},
        "/v1/me": {"get": _op("getMe", "Account",
                              "Who the key belongs to, and the tenant's signing secret",
                              {"200": _json(ref("Me"))})},
        "/v1/me/rotate-signing-secret": {"post": _op(
            "rotateSigningSecret", "Account",
            "Make a new tenant signing secret; the old one keeps signing beside it for 24 "
            "hours", {"200": _json(ref("Me"))})},
        "/v1/keys": {"get": _op(
            "listKeys", "Keys", "The tenant's active API keys, newest first (never the keys)",
            {"200": _json(ref("ApiKeyPage"))})},
        "/v1/keys/{prefix}": {"delete": _op(
            "revokeKey", "Keys", "Revoke an API key at once; answers the revoked key",
            {"200": _json(ref("ApiKey"), "Revoked.")}, errors=("401", "404"),
            params=[_path("prefix", "the key's prefix, as GET /v1/keys lists it")])},
        "/v1/portal-sessions": {"post": _op(
            "createPortalSession", "Portal sessions",
            "A single-use sign-in link to the portal for the key's tenant",
            {"201": _json(ref("PortalSession"))},
            errors=("400", "401", "404", "413", "422", "429"),
            body=ref("PortalSessionCreate"), body_required=False, notes={
                "429": "rate_limited: more than 10 links a minute for this tenant (counted "
                       "per process); try again after Retry-After."})},
        "/v1/models": {"get": _op("listModels", "Models",
                                  "Every enabled provider's models and capabilities",
                                  {"200": _json(ref("ModelPage"))})},
        "/v1/tick": {method: {**_op(
            op_id, "Operations",
            "One bounded round of due submissions, polls and deliveries (serverless mode)",
            {"200": _json(ref("Tick"))}, errors=("401", "404")),
            "security": [{"tickSecret": []}]}
            # GET for schedulers that only send GET (Vercel's cron).
            for method, op_id in (("post", "tick"), ("get", "tickByGet"))},
        "/callbacks/{provider}/{token}": {"post": _op(
            "receiveCallback", "Callbacks",
            "Where providers call back (the URL bridge gave them)",
            {"200": _json(ref("CallbackReceived"))},
            errors=("400", "401", "404", "409", "413"), auth=False,
            notes={"401": "The token was not made by bridge for this provider, or has "
                          "expired: its job ended more than a day ago."},
            params=[_path("provider", "the provider calling back"),
                    _path("token", "the signed token in the URL bridge gave the provider")],
            body={"type": "object"}, body_required=False)},
        "/media/{token}": {"get": _op(
            "getMedia", "Media",
            "A video bridge hosts, behind an expiring signed link (Range requests work)", {
                "200": _binary("The video."),
                "206": _binary("Part of the video (a Range request)."),
                "302": {"description": "The video is in an object store "
                        "(BRIDGE_MEDIA_STORE=s3://...): Location is a freshly presigned URL of it.",
                        "headers": {"Location": {"schema": {"type": "string", "format": "uri"}}}},
                "403": _json(ref("Error"), "The link was not made by bridge."),
                "416": {"description": "The range is not satisfiable."},
            }, errors=("404",), auth=False,
            params=[_path("token", "the signed token of a job's result.video_url")])},
        "/healthz": {"get": _op("getHealth", "Operations", "The process answers",
                                {"200": _json(ref("Health"))}, errors=(), auth=False)},
        "/readyz": {"get": _op(
            "getReadiness", "Operations",
            "The database answers, its schema is current and every background worker runs", {
                "200": _json(ref("Ready")), "503": _json(ref("Unready"), "Not ready.")},
            errors=(), auth=False)},
        "/metrics": {"get": {**_op(
            "getMetrics", "Operations",
            "Prometheus metrics (with BRIDGE_METRICS_TOKEN set, only with it as a Bearer "
            "token)", {"200": {
                "description": "Prometheus text format.",
                "content": {"text/plain": {"schema": {"type": "string"}}}},
                "401": _json(ref("Error"), "BRIDGE_METRICS_TOKEN is set and the request "
                                            "does not carry it.")}, errors=()),
            "security": [{}, {"metricsToken": []}]}},
        "/openapi.json": {"get": _op("getOpenApi", "Operations", "This document",
                                     {"200": _json({"type": "object"})}, errors=(),
                                     auth=False)},
    }
