"""The OpenAPI 3.1 description of the API, served at ``GET /openapi.json``.

Written out rather than inferred: every route with its request and response schemas, both
ways to present an API key, and a ``webhooks`` section with a schema and an example for every
event type (the same examples as ``docs/events/*.json``, checked by the tests).
"""

from __future__ import annotations

from typing import Any

from bridge.inline import MAX_INLINE_MEDIA, MAX_JOB_BODY, MAX_JOB_JSON
from bridge.jsoninput import MAX_DEPTH
from bridge.models import DEFAULT_MAX_CONCURRENCY, EVENT_TYPES, MAX_CONCURRENCY, JobStatus
from bridge.providers.base import MODES
from bridge.settings import PROVIDERS

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def _obj(properties: dict[str, Schema], required: list[str] | None = None,
         additional: bool = True) -> Schema:
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    if not additional:
        schema["additionalProperties"] = False
    return schema


TIME = {"type": "string", "format": "date-time"}
STR = {"type": "string"}
EVENT_TYPE = {"type": "string", "enum": list(EVENT_TYPES)}
MAX_IN_FLIGHT = {"type": "integer", "minimum": 1, "maximum": MAX_CONCURRENCY,
                 "default": DEFAULT_MAX_CONCURRENCY,
                 "description": "delivery attempts in flight to this endpoint at once"}

def _optional_nullable(schema: Schema, required: list[str]) -> Schema:
    """Every property not in ``required`` may also be null (the API reads null as absent)."""
    schema["properties"] = {
        name: value if name in required else _nullable(value)
        for name, value in schema["properties"].items()
    }
    return schema


SCHEMAS: dict[str, Schema] = {
    "Error": _obj({"error": _obj({
        "code": {"type": "string", "examples": ["invalid_request"]},
        "message": STR,
        "field": STR,
    }, ["code", "message"])}, ["error"]),
    "JobError": _obj({
        "code": {"type": "string", "examples": ["generation_failed", "needs_consent"]},
        "message": STR,
        "provider_code": _nullable(STR),
        "details": {},
    }, ["code", "message"]),
    "JobResult": _obj({
        "video_url": _nullable({"type": "string", "format": "uri"}),
        "expires_at": _nullable(TIME),
    }),
    "JobRequest": _optional_nullable(_obj({
        "provider": {"type": "string", "enum": list(PROVIDERS)},
        "model": STR,
        "prompt": {"type": "string", "minLength": 1, "maxLength": 20000},
        "mode": {"type": "string", "enum": list(MODES), "default": "text"},
        "duration_seconds": {"type": "integer", "minimum": 1, "maximum": 600},
        "aspect_ratio": {"type": "string", "examples": ["16:9"]},
        "resolution": {"type": "string", "examples": ["720p"]},
        "images": {"type": "array", "maxItems": 16, "items": STR,
                   "description": "http(s) URLs or data: URLs (base64 ones must decode); "
                                  "the job shows each data: URL as an InlineMedia summary"},
        "negative_prompt": STR,
        "seed": {"type": "integer"},
        "audio": {"type": "boolean"},
        "options": {"type": "object", "description": "provider-specific extras; data: URLs "
                                                     "in it are shown as InlineMedia too"},
        "webhook_url": {"type": "string", "format": "uri",
                        "description": "this job's own webhook, signed with the tenant's "
                                       "signing_secret"},
        "events": {"type": "array", "items": EVENT_TYPE,
                   "description": "the event types webhook_url gets"},
        "metadata": {"type": "object", "description": "yours, returned as given (16 KiB)"},
    }, ["provider", "prompt"]), ["provider", "prompt"]),
    "InlineMedia": _obj({
        "media_type": {"type": "string", "examples": ["image/png"]},
        "bytes": {"type": "integer", "minimum": 0},
        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
    }, ["media_type", "bytes", "sha256"]),
    "Job": _obj({
        "id": {"type": "string", "pattern": "^job_"},
        "object": {"const": "job"},
        "provider": STR,
        "model": _nullable(STR),
        "provider_job_id": _nullable(STR),
        "status": {"type": "string", "enum": [str(s) for s in JobStatus]},
        "progress": _nullable({"type": "integer"}),
        "tracking": {"type": "string", "enum": ["callback", "stream", "poll"]},
        "request": {"type": "object", "description": "the request as accepted; each data: "
                                                     "URL in images and options is shown as "
                                                     "an InlineMedia summary of its bytes"},
        "result": _nullable(_ref("JobResult")),
        "error": _nullable(_ref("JobError")),
        "cost": _nullable({"type": "object"}),
        "metadata": _nullable({"type": "object"}),
        "created_at": TIME,
        "updated_at": TIME,
        "completed_at": _nullable(TIME),
    }, ["id", "object", "provider", "status", "tracking", "created_at", "updated_at"]),
    "Event": _obj({
        "id": {"type": "string", "pattern": "^evt_"},
        "type": EVENT_TYPE,
        "timestamp": TIME,
        "data": {"type": "object", "description": "the job at that moment, with its sequence "
                                                  "(endpoint.test: the endpoint's id)"},
    }, ["id", "type", "timestamp", "data"]),
    "Endpoint": _obj({
        "id": {"type": "string", "pattern": "^ep_"},
        "url": {"type": "string"},
        "events": _nullable({"type": "array", "items": EVENT_TYPE}),
        "description": _nullable(STR),
        "headers": {"type": "object", "additionalProperties": STR},
        "disabled": {"type": "boolean"},
        "disabled_reason": _nullable(STR),
        "max_concurrency": MAX_IN_FLIGHT,
        "created_at": TIME,
    }, ["id", "url", "events", "headers", "disabled", "max_concurrency", "created_at"]),
    "EndpointWithSecret": {"allOf": [_ref("Endpoint"), _obj({
        "secret": {"type": "string", "pattern": "^whsec_"}}, ["secret"])]},
    "EndpointCreate": _obj({
        "url": {"type": "string", "format": "uri", "description": "https (http only with "
                                                                  "BRIDGE_ALLOW_PRIVATE_TARGETS=1)"},
        "events": _nullable({"type": "array", "items": EVENT_TYPE, "minItems": 1}),
        "description": _nullable({"type": "string", "maxLength": 500}),
        "headers": {"type": "object", "additionalProperties": STR,
                    "description": "sent with every delivery; never the signature headers"},
        "max_concurrency": MAX_IN_FLIGHT,
    }, ["url"], additional=False),
    "EndpointUpdate": _obj({
        "url": {"type": "string", "format": "uri"},
        "events": _nullable({"type": "array", "items": EVENT_TYPE, "minItems": 1}),
        "description": _nullable({"type": "string", "maxLength": 500}),
        "headers": {"type": "object", "additionalProperties": STR},
        "disabled": {"type": "boolean"},
        "max_concurrency": MAX_IN_FLIGHT,
    }, additional=False),
    "Delivery": _obj({
        "id": {"type": "string", "pattern": "^del_"},
        "event_id": STR,
        "endpoint_id": _nullable(STR),
        "attempt": {"type": "integer", "minimum": 1},
        "status": {"type": "string", "enum": ["succeeded", "failed", "pending", "skipped"]},
        "response_status": _nullable({"type": "integer"}),
        "duration_ms": _nullable({"type": "integer"}),
        "error": _nullable(STR),
        "response_excerpt": _nullable(STR),
        "created_at": TIME,
        "next_attempt_at": _nullable(TIME),
    }, ["id", "event_id", "attempt", "status", "created_at"]),
    "Model": _obj({
        "provider": STR, "id": STR,
        "modes": {"type": "array", "items": STR},
        "aspect_ratios": {"type": "array", "items": STR},
        "resolutions": {"type": "array", "items": STR},
        "durations": {"type": "array", "items": {"type": "integer"}},
        "min_duration_seconds": _nullable({"type": "integer"}),
        "max_duration_seconds": _nullable({"type": "integer"}),
        "price_per_second_usd": {"type": "number"},
        "tracking": STR,
    }, ["provider", "id"]),
    "Me": _obj({"tenant": STR, "signing_secret": {"type": "string", "pattern": "^whsec_"}},
               ["tenant", "signing_secret"]),
    "ApiKey": _obj({
        "prefix": {"type": "string", "description": "names the key; not secret",
                   "examples": ["brk_Xq2v9LmA", "sha256:3f9a0c1e"]},
        "tenant": STR,
        "source": {"type": "string", "enum": ["cli", "env", "unknown"],
                   "description": "cli: bridge keys create; env: BRIDGE_API_KEY"},
        "created_at": TIME,
        "last_used_at": _nullable({**TIME, "description": "kept to the minute"}),
        "revoked_at": _nullable(TIME),
    }, ["prefix", "tenant", "source", "created_at", "last_used_at", "revoked_at"]),
    "Hook": _obj({"id": {"type": "string", "pattern": "^ep_"}, "target_url": STR,
                  "event": EVENT_TYPE}, ["id"]),
    "PortalSession": _obj({
        "url": {"type": "string", "format": "uri",
                "description": "signs in once, then opens the portal"},
        "expires_at": TIME}, ["url", "expires_at"]),
    "PortalSessionCreate": _obj({
        "ttl_seconds": {"type": "number", "minimum": 60, "maximum": 86400, "default": 900,
                        "description": "how long the link may be used"}}, additional=False),
    "Tick": _obj({"jobs": {"type": "integer"}, "deliveries": {"type": "integer"},
                  "rounds": {"type": "integer"}, "finished": {"type": "boolean"},
                  "seconds": {"type": "number"}},
                 ["jobs", "deliveries", "finished", "seconds"]),
}
for name, item in (("JobPage", "Job"), ("EventPage", "Event"), ("EndpointPage", "Endpoint"),
                   ("DeliveryPage", "Delivery"), ("ModelPage", "Model"),
                   ("ApiKeyPage", "ApiKey")):
    SCHEMAS[name] = _obj({"data": {"type": "array", "items": _ref(item)},
                          "next_cursor": _nullable(STR)}, ["data", "next_cursor"])

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


def _op(summary: str, responses: dict[str, Schema], *, errors: tuple[str, ...] = ("401",),
        body: Schema | None = None, params: list[Schema] | None = None,
        auth: bool = True, body_required: bool = True, description: str | None = None,
        notes: dict[str, str] | None = None) -> Schema:
    """An operation; ``notes`` are its own descriptions of some of its ``errors``."""
    operation: Schema = {"summary": summary, "responses": dict(responses)}
    if description is not None:
        operation["description"] = description
    for code in errors:
        operation["responses"][code] = _json(_ref("Error"), (notes or {}).get(code,
                                                                              _ERRORS[code]))
        if code == "429":
            operation["responses"][code]["headers"] = {"Retry-After": {
                "description": "seconds to wait", "required": True,
                "schema": {"type": "integer", "minimum": 1}}}
    if auth:  # every authenticated route reads or writes the database
        operation["responses"]["503"] = _json(_ref("Error"), _ERRORS["503"]) | {
            "headers": {"Retry-After": {"schema": {"type": "integer"}}}}
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


def _path(name: str, pattern: str | None = None) -> Schema:
    schema: Schema = {"type": "string"}
    if pattern:
        schema["pattern"] = pattern
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _query(name: str, schema: Schema) -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": schema}


PAGING = [_query("limit", {"type": "integer", "minimum": 1, "maximum": 100}),
          _query("cursor", STR)]
JOB_ID, EVENT_ID, ENDPOINT_ID = _path("job_id"), _path("event_id"), _path("endpoint_id")


JOB_LIMITS = (
    f"A job body is at most {MAX_JOB_JSON >> 10} KiB of JSON besides its data: URLs (each "
    "counted as the InlineMedia summary the job shows of it), and its data: URLs (in images "
    f"and options) total at most {MAX_INLINE_MEDIA >> 20} MiB; beyond either, 413 "
    "payload_too_large naming the field. A body over "
    f"{MAX_JOB_BODY >> 20} MiB is refused (413) before it is read. The same "
    "Idempotency-Key within 24 hours answers 200 with the first job when the body is the "
    "same JSON (key order and whitespace aside), 409 idempotency_conflict when it is not."
)


def _paths() -> dict[str, Schema]:
    return {
        "/v1/jobs": {
            "post": _op("Create a job", {
                "202": _json(_ref("Job"), "A new job."),
                "200": _json(_ref("Job"), "The job an earlier request with the same "
                                          "Idempotency-Key created."),
            }, errors=("400", "401", "409", "413", "422"), body=_ref("JobRequest"),
                params=[{"name": "Idempotency-Key", "in": "header", "required": False,
                         "schema": {"type": "string", "minLength": 1, "maxLength": 255}}],
                description=JOB_LIMITS, notes={
                    "409": "idempotency_conflict: the Idempotency-Key was used with another "
                           "body in the last 24 hours; nothing was submitted.",
                    "413": "payload_too_large: over the limits above; error.field names the "
                           "field."}),
            "get": _op("List jobs, newest first", {"200": _json(_ref("JobPage"))},
                       errors=("400", "401"), params=[
                           *PAGING, _query("status", {"type": "string",
                                                      "enum": [str(s) for s in JobStatus]}),
                           _query("provider", {"type": "string", "enum": list(PROVIDERS)})]),
        },
        "/v1/jobs/{job_id}": {"get": _op("Get a job", {"200": _json(_ref("Job"))},
                                         errors=("401", "404"), params=[JOB_ID])},
        "/v1/jobs/{job_id}/cancel": {"post": _op(
            "Cancel a job (at the provider where it can; elsewhere it stops being followed)",
            {"200": _json(_ref("Job"))}, errors=("401", "404", "409"), params=[JOB_ID])},
        "/v1/events": {"get": _op("List events, newest first", {"200": _json(_ref("EventPage"))},
                                  errors=("400", "401"), params=[
                                      *PAGING, _query("type", EVENT_TYPE),
                                      _query("job_id", STR)])},
        "/v1/events/{event_id}": {"get": _op("Get an event", {"200": _json(_ref("Event"))},
                                             errors=("401", "404"), params=[EVENT_ID])},
        "/v1/events/{event_id}/replay": {"post": _op(
            "Send an event again, to one endpoint or to all that want it",
            {"202": _json(_obj({"data": {"type": "array", "items": _ref("Delivery")}},
                               ["data"]), "The deliveries queued.")},
            errors=("400", "401", "404", "409", "413", "422"), params=[EVENT_ID],
            body=_obj({"endpoint_id": STR}), body_required=False)},
        "/v1/endpoints": {
            "post": _op("Register a webhook endpoint",
                        {"201": _json(_ref("EndpointWithSecret"), "Created; the secret is "
                                                                  "shown only here.")},
                        errors=("400", "401", "413", "422"), body=_ref("EndpointCreate")),
            "get": _op("List endpoints, newest first", {"200": _json(_ref("EndpointPage"))},
                       errors=("400", "401"), params=PAGING),
        },
        "/v1/endpoints/{endpoint_id}": {
            "get": _op("Get an endpoint", {"200": _json(_ref("Endpoint"))},
                       errors=("401", "404"), params=[ENDPOINT_ID]),
            "patch": _op("Change an endpoint (disabled=false enables it again)",
                         {"200": _json(_ref("Endpoint"))},
                         errors=("400", "401", "404", "413", "422"), params=[ENDPOINT_ID],
                         body=_ref("EndpointUpdate")),
            "delete": _op("Delete an endpoint and its deliveries",
                          {"204": {"description": "Deleted."}}, errors=("401", "404"),
                          params=[ENDPOINT_ID]),
        },
        "/v1/endpoints/{endpoint_id}/rotate-secret": {"post": _op(
            "Make a new secret; the old one keeps signing beside it for 24 hours",
            {"200": _json(_ref("EndpointWithSecret"))}, errors=("401", "404", "409"),
            params=[ENDPOINT_ID])},
        "/v1/endpoints/{endpoint_id}/test": {"post": _op(
            "Send an endpoint.test event to the endpoint (a burst of 5 per endpoint, then 1 a "
            "second)",
            {"202": _json(_ref("Delivery"), "The delivery queued.")},
            errors=("401", "404", "409", "429"), params=[ENDPOINT_ID])},
        "/v1/endpoints/{endpoint_id}/deliveries": {"get": _op(
            "Every delivery attempt to the endpoint, newest first",
            {"200": _json(_ref("DeliveryPage"))}, errors=("400", "401", "404"),
            params=[ENDPOINT_ID, *PAGING])},
        "/v1/endpoints/{endpoint_id}/recover": {"post": _op(
            "Send again what the endpoint missed since a time",
            {"202": _json(_obj({"recovering": {"type": "integer"}, "more": {"type": "boolean"}},
                               ["recovering", "more"]))},
            errors=("400", "401", "404", "409", "413", "422"), params=[ENDPOINT_ID],
            body=_obj({"since": TIME}, ["since"]))},
        "/v1/hooks": {"post": _op(
            "Subscribe a REST hook (Zapier): one event type to a URL",
            {"201": _json(_ref("Hook"))}, errors=("400", "401", "413", "422"),
            body=_obj({"target_url": {"type": "string", "format": "uri"}, "event": EVENT_TYPE},
                      ["target_url", "event"]))},
        "/v1/hooks/{hook_id}": {"delete": _op(
            "Unsubscribe a REST hook", {"204": {"description": "Deleted."}},
            errors=("401", "404"), params=[_path("hook_id")])},
        "/v1/me": {"get": _op("Who the key belongs to, and the tenant's signing secret",
                              {"200": _json(_ref("Me"))})},
        "/v1/me/rotate-signing-secret": {"post": _op(
            "Make a new tenant signing secret; the old one keeps signing beside it for 24 "
            "hours", {"200": _json(_ref("Me"))})},
        "/v1/keys": {"get": _op("The tenant's active API keys, newest first (never the keys)",
                                {"200": _json(_ref("ApiKeyPage"))})},
        "/v1/keys/{prefix}": {"delete": _op(
            "Revoke an API key at once; answers the revoked key",
            {"200": _json(_ref("ApiKey"), "Revoked.")}, errors=("401", "404"),
            params=[_path("prefix")])},
        "/v1/portal-sessions": {"post": _op(
            "A single-use sign-in link to the portal for the key's tenant",
            {"201": _json(_ref("PortalSession"))}, errors=("400", "401", "404", "413", "422"),
            body=_ref("PortalSessionCreate"), body_required=False)},
        **_portal_paths(),
        "/v1/models": {"get": _op("Every enabled provider's models and capabilities",
                                  {"200": _json(_ref("ModelPage"))})},
        "/v1/tick": {method: {**_op(
            "One bounded round of due submissions, polls and deliveries (serverless mode)",
            {"200": _json(_ref("Tick"))}, errors=("401", "404")),
            "security": [{"tickSecret": []}]} for method in ("get", "post")},
        "/callbacks/{provider}/{token}": {"post": _op(
            "Where providers call back (the URL bridge gave them)",
            {"200": _json(_obj({"received": {"type": "boolean"}}))},
            errors=("400", "401", "404", "409", "413"), auth=False,
            params=[_path("provider"), _path("token")],
            body={"type": "object"}, body_required=False)},
        "/media/{token}": {"get": _op(
            "A video bridge hosts, behind an expiring signed link (Range requests work)", {
                "200": _binary("The video."),
                "206": _binary("Part of the video (a Range request)."),
                "403": _json(_ref("Error"), "The link was not made by bridge."),
                "416": {"description": "The range is not satisfiable."},
            }, errors=("404",), auth=False, params=[_path("token")])},
        "/healthz": {"get": _op("The process answers", {"200": _json(_obj(
            {"status": {"const": "ok"}}, ["status"]))}, errors=(), auth=False)},
        "/readyz": {"get": _op(
            "The database answers, its schema is current and every background worker runs", {
            "200": _json(_obj({"status": {"const": "ready"}}, ["status"])),
            "503": _json(_obj({
                "status": {"const": "unavailable"},
                "down": {"type": "object", "additionalProperties": {"type": "string"},
                         "description": "What is down (a worker, the database) and why."}},
                ["status", "down"]), "Not ready.")}, errors=(), auth=False)},
        "/metrics": {"get": {**_op("Prometheus metrics (with BRIDGE_METRICS_TOKEN set, only "
                                   "with it as a Bearer token)", {"200": {
            "description": "Prometheus text format.",
            "content": {"text/plain": {"schema": {"type": "string"}}}},
            "401": _json(_ref("Error"), "BRIDGE_METRICS_TOKEN is set and the request does not "
                                        "carry it.")}, errors=()),
            "security": [{}, {"metricsToken": []}]}},
        "/openapi.json": {"get": _op("This document", {"200": _json({"type": "object"})},
                                     errors=(), auth=False)},
    }


_PAGE_ERRORS = {
    "400": "A filter or cursor is not valid.",
    "401": "Not signed in (no session, or it ended): the page says how to get a link.",
    "403": "The form's CSRF token is missing or wrong; nothing was changed.",
    "404": "No such object for the session's tenant.",
    "409": "The object is in a state that does not allow this.",
    "410": "The sign-in link expired or was used already.",
    "413": "The form is too large.",
    "422": "A field is not valid; the page names it.",
    "503": "The database is locked or full; nothing was kept. Try again after Retry-After.",
}


def _html(description: str) -> Schema:
    return {"description": description,
            "content": {"text/html": {"schema": {"type": "string"}}}}


def _page_op(summary: str, ok: dict[str, Schema], errors: tuple[str, ...],
             params: list[Schema] | None = None, form: dict[str, str] | None = None,
             signed_in: bool = True) -> Schema:
    """A portal page or form post: HTML, signed in by the session cookie."""
    operation: Schema = {"summary": summary, "tags": ["portal"],
                         "responses": {**ok, **{code: _html(_PAGE_ERRORS[code])
                                                for code in errors}},
                         "security": [{"portalSession": []}] if signed_in else []}
    if params:
        operation["parameters"] = params
    if form is not None:
        # Named, not given as a requestBody schema: a form is the page's, posted by a browser.
        operation["description"] = (
            "A form post (application/x-www-form-urlencoded) with the fields: "
            + ", ".join(f"{name} ({spec})" for name, spec in form.items()) + ".")
    return operation


def _portal_paths() -> dict[str, Schema]:
    page = {"200": _html("The page.")}
    moved = {"303": {"description": "Done; see the page Location names.",
                     "headers": {"Location": {"schema": STR}}}}
    token = "the session's CSRF token, required"
    csrf = {"csrf": token}
    endpoint_form = {"csrf": token, "url": "the webhook URL", "description": "text",
                     "events": "an event type, repeated; none: the default set",
                     "headers": "Name: value lines"}
    reads = ("401", "503")
    posts = ("401", "403", "404", "409", "413", "422", "503")
    status = _query("status", {"type": "string", "enum": [str(s) for s in JobStatus]})
    provider = _query("provider", {"type": "string", "enum": list(PROVIDERS)})
    outcome = _query("outcome", {"type": "string",
                                 "enum": ["succeeded", "failed", "pending", "skipped"]})
    cursor = _query("cursor", STR)
    return {
        "/portal": {"get": _page_op("The jobs, newest first", page, ("400", *reads),
                                    [status, provider, cursor])},
        "/portal/login/{token}": {"get": _page_op(
            "Sign in with a magic link: sets the session cookie, then to /portal", {
                "303": {"description": "Signed in.", "headers": {
                    "Set-Cookie": {"schema": STR}, "Location": {"schema": STR}}}},
            ("400", "410", "503"), [_path("token")], signed_in=False)},
        "/portal/logout": {"post": _page_op("Sign out: the session ends everywhere", page,
                                            ("401", "403", "413", "503"), form=csrf)},
        "/portal/jobs/{job_id}": {"get": _page_op(
            "A job: details, video, events", page, ("404", *reads), [JOB_ID])},
        "/portal/jobs/{job_id}/cancel": {"post": _page_op(
            "Cancel the job", moved, posts, [JOB_ID], csrf)},
        "/portal/endpoints": {
            "get": _page_op("The endpoints", page, ("400", *reads), [cursor]),
            "post": _page_op("Create an endpoint; the page shows its secret once",
                             {"201": _html("Created.")}, posts, form=endpoint_form)},
        "/portal/endpoints/new": {"get": _page_op("The form for a new endpoint", page,
                                                  reads)},
        "/portal/endpoints/{endpoint_id}": {
            "get": _page_op("An endpoint, its actions and latest attempts", page,
                            ("404", *reads), [ENDPOINT_ID]),
            "post": _page_op("Save an endpoint's url, events, headers, description",
                             moved, posts, [ENDPOINT_ID], endpoint_form)},
        "/portal/endpoints/{endpoint_id}/edit": {"get": _page_op(
            "The form to edit an endpoint", page, ("404", *reads), [ENDPOINT_ID])},
        **{f"/portal/endpoints/{{endpoint_id}}/{action}": {"post": _page_op(
            summary, moved, posts, [ENDPOINT_ID], csrf)} for action, summary in (
            ("disable", "Disable the endpoint"), ("enable", "Enable the endpoint"),
            ("test", "Send endpoint.test to the endpoint"))},
        "/portal/endpoints/{endpoint_id}/rotate-secret": {"post": _page_op(
            "Rotate the secret; the page shows the new one once", page, posts, [ENDPOINT_ID],
            csrf)},
        "/portal/endpoints/{endpoint_id}/recover": {"post": _page_op(
            "Send again what the endpoint missed since a time", moved, posts, [ENDPOINT_ID],
            {"csrf": token, "since": "an RFC 3339 time, required"})},
        "/portal/endpoints/{endpoint_id}/delete": {
            "get": _page_op("Confirm the deletion", page, ("404", *reads), [ENDPOINT_ID]),
            "post": _page_op("Delete the endpoint", moved, posts, [ENDPOINT_ID], csrf)},
        "/portal/deliveries": {"get": _page_op(
            "Every delivery attempt, newest first", page, ("400", "404", *reads),
            [_query("endpoint", STR), outcome, cursor])},
        "/portal/events/{event_id}": {"get": _page_op(
            "An event, its body and its attempts", page, ("404", *reads), [EVENT_ID])},
        "/portal/events/{event_id}/replay": {"post": _page_op(
            "Send the event again (to endpoint_id, or to all that want it)", moved, posts,
            [EVENT_ID], {"csrf": token, "endpoint_id": "one endpoint; none: all that want it"})},
        "/portal/event-types": {"get": _page_op(
            "Each event type with its schema and example", page, reads)},
        "/portal/static/{path}": {"get": {
            "summary": "The portal's stylesheet and script", "tags": ["portal"],
            "security": [], "parameters": [_path("path")],
            "responses": {
                "200": {"description": "The file.", "content": {
                    "text/css": {"schema": STR}, "text/javascript": {"schema": STR}}},
                "404": _json(_ref("Error"), "No such file.")}}},
    }


def example_job(event_type: str) -> dict[str, Any]:
    """The job inside an example event of ``event_type``."""
    status = {"job.submitted": "submitted", "job.running": "running",
              "job.progress": "running", "job.succeeded": "succeeded", "job.failed": "failed",
              "job.canceled": "canceled", "job.expired": "expired"}[event_type]
    sequence = {"job.submitted": 1, "job.running": 2, "job.progress": 3}.get(event_type, 4)
    done = status in ("succeeded", "failed", "canceled", "expired")
    return {
        "id": "job_00VbgY7PE5YoVGWoySV5Ad", "object": "job", "provider": "apixo",
        "model": "veo-3-1", "provider_job_id": "task_480548589169", "status": status,
        "progress": {"submitted": 0, "running": 40 if event_type == "job.progress" else 5,
                     "succeeded": 100}.get(status),
        "tracking": "callback",
        "request": {"provider": "apixo", "model": "veo-3-1", "mode": "text",
                    "prompt": "A cinematic flyover of a futuristic city at sunrise",
                    "aspect_ratio": "16:9"},
        "result": {"video_url": "https://r2.apixo.ai/task_480548589169.mp4",
                   "expires_at": "2026-12-06T10:01:30Z"} if status == "succeeded" else None,
        "error": {"code": "generation_failed", "message": "apixo: the generation failed",
                  "provider_code": "500"} if status == "failed" else (
            {"code": "expired", "message": "the provider expired the task",
             "provider_code": None} if status == "expired" else None),
        "cost": None,
        "metadata": {"order": 42},
        "created_at": "2026-11-22T10:00:00Z",
        "updated_at": "2026-11-22T10:01:30Z" if done else "2026-11-22T10:00:05Z",
        "completed_at": "2026-11-22T10:01:30Z" if done else None,
        "sequence": sequence,
    }


def example_event(event_type: str) -> dict[str, Any]:
    """An event as a webhook body carries it."""
    if event_type == "endpoint.test":
        data: dict[str, Any] = {"endpoint_id": "ep_00VbgY7PE5DCcwbUc5Mwfk",
                                "message": "a test event from bridge"}
    elif event_type == "endpoint.disabled":
        data = {"id": "ep_00VbgY7PE5DCcwbUc5Mwfk", "url": "https://hooks.example.com/bridge",
                "events": None, "description": "orders service", "headers": {},
                "disabled": True, "disabled_reason": "the endpoint answered 410 Gone",
                "max_concurrency": DEFAULT_MAX_CONCURRENCY,
                "created_at": "2026-11-20T09:00:00Z"}
    else:
        data = example_job(event_type)
    return {"id": "evt_00VbgekiybFcJqrvThqBKe", "type": event_type,
            "timestamp": "2026-11-22T10:01:30Z", "data": data}


def _event_fields(event_type: str) -> Schema:
    fields: Schema = {"type": {"const": event_type}}
    if event_type == "endpoint.disabled":
        fields["data"] = {"allOf": [_ref("Endpoint")], "description": (
            "the endpoint disabled for failing (410 Gone, or 5 days of failed deliveries), as "
            "GET /v1/endpoints/{id} shows it; sent to the tenant's other endpoints only")}
    return fields


def _webhooks() -> dict[str, Schema]:
    hooks = {}
    for event_type in EVENT_TYPES:
        hooks[event_type] = {"post": {
            "summary": f"{event_type}, as a Standard Webhook",
            "description": "Signed per Standard Webhooks: headers webhook-id (the event id, "
                           "the same on every retry), webhook-timestamp and webhook-signature "
                           "(v1,<base64 HMAC-SHA256 of id.timestamp.body>). Answer any 2xx.",
            "parameters": [
                {"name": "webhook-id", "in": "header", "required": True, "schema": STR},
                {"name": "webhook-timestamp", "in": "header", "required": True,
                 "schema": STR},
                {"name": "webhook-signature", "in": "header", "required": True,
                 "schema": STR},
            ],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"allOf": [_ref("Event"), _obj(_event_fields(event_type))]},
                "example": example_event(event_type)}}},
            "responses": {"2XX": {"description": "Received; anything else is retried."}},
        }}
    return hooks


def document(version: str) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "bridge", "version": version,
                 "description": "One job API over asynchronous AI video providers; every "
                                "state change delivered as a signed Standard Webhook."},
        "paths": _paths(),
        "webhooks": _webhooks(),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "Authorization: Bearer <API key>"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "tickSecret": {"type": "http", "scheme": "bearer",
                               "description": "Authorization: Bearer <BRIDGE_TICK_SECRET>"},
                "metricsToken": {"type": "http", "scheme": "bearer",
                                 "description": "Authorization: Bearer <BRIDGE_METRICS_TOKEN>"},
                "portalSession": {"type": "apiKey", "in": "cookie", "name": "bridge_portal",
                                  "description": "the portal's session, set by a magic link"},
            },
        },
        "security": [{"bearer": []}, {"apiKey": []}],
    }
