"""One OpenAPI for the public API at /docs, and the AsyncAPI of all events at /asyncapi."""

from __future__ import annotations

import httpx
from techport_shared.topics import CATALOG, partner_topics


async def test_one_openapi_for_the_public_api(platform) -> None:
    async with httpx.AsyncClient(base_url=platform.gateway) as client:
        document = (await client.get("/openapi.json")).json()
        docs = await client.get("/docs")
    paths = document["paths"]
    expected = {
        "/api/v1/organisations": {"post", "get"},
        "/api/v1/organisations/{organisation_id}": {"get"},
        "/api/v1/students": {"post", "get"},
        "/api/v1/students/{student_id}": {"get", "patch", "delete"},
        "/api/v1/vacancies": {"post", "get"},
        "/api/v1/vacancies/{vacancy_id}": {"get"},
        "/api/v1/vacancies/{vacancy_id}/close": {"post"},
        "/api/v1/students/{student_id}/matches": {"get"},
        "/api/v1/vacancies/{vacancy_id}/matches": {"get"},
        "/api/v1/partnerships": {"get", "post"},
        "/api/v1/partnerships/{partnership_id}/accept": {"post"},
        "/api/v1/notifications": {"get"},
        "/api/v1/unsubscribe": {"get"},
    }
    for path, methods in expected.items():
        assert methods <= set(paths.get(path, {})), path
    internal = [
        p
        for p in paths
        if p.startswith("/api/v1") and (p.endswith(("/healthz", "/readyz")) or "/admin/" in p)
    ]
    assert not internal, internal
    assert "StudentIn" in document["components"]["schemas"]  # the API's own models, not the event's
    assert {"post"} <= set(paths.get("/api/v1/events", {}))  # partner events over HTTP
    assert document["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    assert docs.status_code == 200 and "/openapi.json" in docs.text


async def test_the_asyncapi_of_all_events(platform) -> None:
    async with httpx.AsyncClient(base_url=platform.gateway) as client:
        document = (await client.get("/asyncapi")).json()
    assert document["asyncapi"].startswith("3.")
    addresses = {channel["address"] for channel in document["channels"].values()}
    each_partner = partner_topics("{organisation_id}")
    assert addresses == {topic.name for topic in CATALOG if topic.types} | {
        each_partner.ingress,
        each_partner.rejected,
    }
    messages = str(document["components"]["messages"])
    for type_ in (
        "nl.techport.student.registered.v1",
        "nl.techport.match.found.v1",
        "nl.techport.notification.failed.v1",
    ):
        assert type_ in messages
