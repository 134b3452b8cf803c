"""HTTP plumbing every adapter shares: transport errors and status codes to ProviderError,
the count and log line of every request, and provider JSON read strictly
(``bridge.jsoninput``), so that nothing stored from an answer can fail to be shown."""

from __future__ import annotations

import time
from typing import Any

import httpx

from bridge import jsoninput
from bridge.errors import ProviderError, SubmitOutcomeUnknown
from bridge.logs import log_provider_request
from bridge.metrics import count_provider_request
from bridge.retry import parse_retry_after

MAX_ANSWER = 16 * 1024 * 1024  # bytes of a provider's answer, decoded, read at most
# Errors raised before a single byte of the request could have reached the provider.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


async def send(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    provider: str,
    operation: str,
    submit: bool = False,
    headers: dict[str, str] | None = None,
    json: Any = None,
    content: bytes | None = None,
    params: dict[str, str] | None = None,
) -> httpx.Response:
    """Send one request; transport failures become ``ProviderError``. ``operation`` names
    it in the metrics and the log (its route template: ``/v1/video/tasks/{id}``), never the
    URL, whose query or signature may hold a key.

    With ``submit=True`` a failure after the request may have been sent raises
    ``SubmitOutcomeUnknown``: the provider may have created (and charged) the task.
    """
    started = time.perf_counter()
    try:
        if client.is_closed:  # the service is stopping: nothing goes out any more
            raise httpx.ConnectError("the client is closed")
        request = client.build_request(method, url, headers=headers, json=json,
                                       content=content, params=params)
        response = await _read_at_most(client, request, MAX_ANSWER)
    except httpx.InvalidURL:  # nothing was sent (the URL may hold a key: not shown)
        record(provider, method, operation, None, started, "InvalidURL")
        raise ProviderError("provider_unavailable", f"{provider}: the request URL is not valid",
                            retryable=False) from None
    except httpx.TransportError as exc:
        record(provider, method, operation, None, started, type(exc).__name__)
        if isinstance(exc, _NOT_SENT):
            raise ProviderError(
                "provider_unavailable",
                f"{provider}: could not connect ({type(exc).__name__})", retryable=True,
            ) from None
        if submit:
            raise SubmitOutcomeUnknown(
                f"{provider}: connection lost after the request was sent ({type(exc).__name__})"
            ) from None
        code = "timeout" if isinstance(exc, httpx.TimeoutException) else "provider_unavailable"
        raise ProviderError(
            code, f"{provider}: {type(exc).__name__} while waiting for an answer", retryable=True
        ) from None
    record(provider, method, operation, response.status_code, started)
    problem = refused_json(response)
    if problem is not None and response.is_success:
        message = f"{provider}: the answer is JSON the bridge does not accept ({problem})"
        if submit:  # the task may exist: never sent again blindly
            raise SubmitOutcomeUnknown(message)
        raise ProviderError("provider_unavailable", message, retryable=True,
                            http_status=response.status_code)
    return response


def refused_json(response: httpx.Response) -> str | None:
    """Why an answer sent as JSON is refused (not JSON, a lone surrogate, NaN, a repeated
    key, too deep), or ``None``; one of another type is left to the adapter."""
    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json" and not kind.endswith("+json"):
        return None
    try:
        jsoninput.loads(response.content)
    except jsoninput.Refused as exc:
        where = f" at {exc.field}" if exc.field else ""
        return f"{exc.message}{where}"
    return None


def record(provider: str, method: str, operation: str, status: int | None, started: float,
           error: str | None = None) -> None:
    """Count and log one request to ``provider`` begun at ``started`` (``perf_counter``):
    its status, or ``None`` and the ``error``'s kind when there was no answer."""
    seconds = time.perf_counter() - started
    count_provider_request(provider, status, seconds)
    log_provider_request(provider, method, operation, status, error, seconds)


async def _read_at_most(client: httpx.AsyncClient, request: httpx.Request,
                        limit: int) -> httpx.Response:
    """The answer, read whole unless its body decodes to more than ``limit`` bytes (a
    ``RemoteProtocolError``: no adapter reads one so large)."""
    response = await client.send(request, stream=True)
    try:
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > limit:
                raise httpx.RemoteProtocolError(f"an answer over {limit} bytes")
    finally:
        await response.aclose()
    # The body as decoded: the headers that described its encoding go with it.
    headers = [(name, value) for name, value in response.headers.multi_items()
               if name.lower() not in ("content-encoding", "content-length")]
    return httpx.Response(response.status_code, headers=headers, content=bytes(body),
                          request=request)


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from a response's ``Retry-After`` header, if any."""
    return parse_retry_after(response.headers.get("retry-after"))


def json_or_none(response: httpx.Response) -> Any:
    """The answer's JSON, read strictly; ``None`` when there is none the bridge accepts."""
    try:
        return jsoninput.loads(response.content)
    except jsoninput.Refused:
        return None


def transient_error(
    response: httpx.Response, provider: str, detail: str = ""
) -> ProviderError | None:
    """The retryable error a 429 or 5xx answer means, or ``None`` for any other status."""
    status = response.status_code
    suffix = f": {detail}" if detail else ""
    if status == 429:
        return ProviderError(
            "rate_limited", f"{provider}: rate limited{suffix}", retryable=True,
            retry_after=retry_after(response), http_status=status,
        )
    if status >= 500:
        return ProviderError(
            "provider_unavailable", f"{provider}: answered HTTP {status}{suffix}", retryable=True,
            retry_after=retry_after(response), http_status=status,
        )
    return None


def excerpt(text: str, limit: int = 300) -> str:
    """A provider message shortened for an error object."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
