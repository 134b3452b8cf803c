"""A NUL character (``%00`` in a path or query, ``\\u0000`` in JSON or a form) answers the
same 404 or 4xx on both stores: PostgreSQL cannot keep it in text, SQLite could, and
neither ever answers 500."""

from __future__ import annotations

import logging

import pytest

from tests.test_portal_pages import Portal, csrf, portal  # noqa: F401 - portal is a fixture

NUL = "%00"
# Every route that looks an id up, with the id made of a NUL.
BY_ID = [
    ("GET", f"/v1/jobs/job_{NUL}"), ("POST", f"/v1/jobs/job_{NUL}/cancel"),
    ("GET", f"/v1/events/evt_{NUL}"), ("POST", f"/v1/events/evt_{NUL}/replay"),
    ("GET", f"/v1/endpoints/ep_{NUL}"), ("PATCH", f"/v1/endpoints/ep_{NUL}"),
    ("DELETE", f"/v1/endpoints/ep_{NUL}"), ("POST", f"/v1/endpoints/ep_{NUL}/rotate-secret"),
    ("POST", f"/v1/endpoints/ep_{NUL}/test"), ("GET", f"/v1/endpoints/ep_{NUL}/deliveries"),
    ("POST", f"/v1/endpoints/ep_{NUL}/recover"), ("DELETE", f"/v1/hooks/ep_{NUL}"),
    ("DELETE", f"/v1/keys/brk_{NUL}"),
]
PORTAL_BY_ID = [f"/portal/jobs/job_{NUL}", f"/portal/events/evt_{NUL}",
                f"/portal/endpoints/ep_{NUL}", f"/portal/endpoints/ep_{NUL}/edit"]


async def test_an_id_with_a_nul_is_not_found_on_every_route(
    portal: Portal, caplog: pytest.LogCaptureFixture  # noqa: F811
) -> None:
    client = portal.harness.client
    for method, path in BY_ID:
        body = {"since": "2026-01-01T00:00:00Z"} if path.endswith("/recover") else {}
        answer = await client.request(method, path, json=body if method != "GET" else None)
        assert answer.status_code == 404, (method, path, answer.status_code, answer.text)
        assert answer.json()["error"]["code"] == "not_found"
    for path in PORTAL_BY_ID:
        await portal.page(path, status=404)
    assert "Traceback" not in caplog.text


async def test_a_filter_or_search_with_a_nul_finds_nothing(portal: Portal) -> None:  # noqa: F811
    client = portal.harness.client
    for path in (f"/v1/events?job_id=job_{NUL}", f"/v1/deliveries?event_id=evt_{NUL}"):
        answer = await client.get(path)
        if answer.status_code != 404:  # a route this API may not have
            assert answer.status_code == 200, (path, answer.text)
            assert answer.json()["data"] == []
    page = await portal.page(f"/portal?q=a{NUL}b")
    assert "No jobs" in page or "job_" not in page


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/v1/jobs", {"provider": "infrai", "prompt": "a fox\u0000in the snow"}, "prompt"),
    ("/v1/jobs", {"provider": "infrai", "prompt": "a fox", "metadata": {"k\u0000": 1}},
     "metadata"),
    ("/v1/endpoints", {"url": "https://hooks.example.com/x", "description": "x\u0000"},
     "description"),
])
async def test_a_body_with_a_nul_is_refused_naming_the_field(
    portal: Portal, path: str, body: dict[str, object], field: str,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        answer = await portal.harness.client.post(path, json=body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid_request" and "NUL" in error["message"]
    assert error.get("field") == field or (error.get("field") or "").startswith(field)
    assert "Traceback" not in caplog.text


async def test_a_portal_form_with_a_nul_is_refused_naming_the_field(
    portal: Portal,  # noqa: F811
) -> None:
    form = await portal.page("/portal/endpoints/new")
    answer = await portal.browser.post("/portal/endpoints", data={
        "csrf": csrf(form), "url": "https://hooks.example.com/x", "description": "x\x00y"})
    assert answer.status_code == 422, answer.text[:300]
    assert "NUL" in answer.text
