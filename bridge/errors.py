"""Errors that cross module boundaries.

    BridgeError                 an error the HTTP API answers as {"error": {...}}
    ├── InvalidRequest          422 (or 400) naming the offending field
    ├── Unauthorized            401
    ├── Forbidden               403 (a media link that is not ours)
    ├── NotFound                404 (also for other tenants' ids)
    ├── Conflict                409
    │   └── IdempotencyConflict an Idempotency-Key already used with another body
    ├── RequestTimeout          408 (the body did not arrive within BRIDGE_REQUEST_TIMEOUT)
    ├── PayloadTooLarge         413
    ├── RateLimited             429 with Retry-After
    ├── Unavailable             503 with Retry-After (the database is locked or full)
    └── ProviderUnavailable     503 with Retry-After: a provider's models cannot be read
    ProviderError               a provider answered badly or not at all; carries what the
    │                           tracker needs to decide: retry later, or fail the job
    └── SubmitOutcomeUnknown    a submission may or may not have reached the provider

The message of every error is safe to show: no secrets, no provider keys.
"""

from __future__ import annotations

import math
from typing import Any


class BridgeError(Exception):
    status_code = 500
    code = "internal_error"
    headers: dict[str, str] | None = None  # sent with the answer

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return {"error": error}


class InvalidRequest(BridgeError):
    status_code = 422
    code = "invalid_request"

    def __init__(self, message: str, *, field: str | None = None, status_code: int = 422) -> None:
        super().__init__(message, field=field)
        self.status_code = status_code


class Unauthorized(BridgeError):
    status_code = 401
    code = "unauthorized"


class Forbidden(BridgeError):
    status_code = 403
    code = "forbidden"


class NotFound(BridgeError):
    status_code = 404
    code = "not_found"


class Conflict(BridgeError):
    status_code = 409
    code = "conflict"


class IdempotencyConflict(Conflict):
    code = "idempotency_conflict"


class RequestTimeout(BridgeError):
    status_code = 408
    code = "request_timeout"
    headers = {"Connection": "close"}


class PayloadTooLarge(BridgeError):
    status_code = 413
    code = "payload_too_large"


class RateLimited(BridgeError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(max(1, math.ceil(retry_after)))}


class Unavailable(BridgeError):
    """Nothing was written; the same request may succeed after ``retry_after`` seconds."""

    status_code = 503
    code = "unavailable"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.headers = {"Retry-After": str(retry_after)}


class ProviderUnavailable(BridgeError):
    """A provider's models could not be read (a refused key, a provider down), so no job
    for it can be checked; ``reason`` says why, without secrets."""

    status_code = 503
    code = "provider_unavailable"

    def __init__(self, provider: str, reason: str, *, retry_after: float) -> None:
        super().__init__(f"provider {provider} is unavailable: {reason}", field="provider")
        self.provider = provider
        self.reason = reason
        self.headers = {"Retry-After": str(max(1, math.ceil(retry_after)))}


class ProviderError(Exception):
    """A provider call did not give a usable answer.

    ``retryable`` errors (timeouts, transport errors, 5xx, 429) are tried again later,
    after ``retry_after`` seconds when the provider said so. Others end the job with
    ``code`` (one of the job error codes of the API: ``provider_rejected``,
    ``content_violation``, ``insufficient_credit``, ``needs_consent``, ...).
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        retryable: bool = False,
        retry_after: float | None = None,
        provider_code: str | None = None,
        details: Any = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.provider_code = provider_code
        self.details = details
        self.http_status = http_status

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, "
            f"retryable={self.retryable!r}, http_status={self.http_status!r})"
        )


class SubmitOutcomeUnknown(ProviderError):
    """The request may have been sent and accepted: the connection broke after sending.

    Resubmitting could create (and pay for) a second task, so the tracker either looks
    the task up at the provider or fails the job with ``submit_outcome_unknown``.
    """

    def __init__(self, message: str) -> None:
        super().__init__("submit_outcome_unknown", message, retryable=False)
