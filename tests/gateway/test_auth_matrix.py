"""Every route through the gateway: no key 401, a revoked key 401, another organisation's data 403, the
operator allowed; and a service called directly, without the gateway's signed identity, refuses."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.gateway.conftest import eventually

ORGS = {
    "school-a": "school",
    "school-b": "school",
    "company-c": "company",
    "company-d": "company",
}


def _organisation(organisation_id: str, kind: str) -> dict:
    data = {
        "organisation_id": organisation_id,
        "kind": kind,
        "name": organisation_id.title(),
        "email": f"info@{organisation_id}.example.nl",
        "postcode": "1971 AB",
        "city": "IJmuiden",
    }
    return data


STUDENT = {
    "student_id": "auth-stu",
    "school_id": "school-a",
    "given_name": "Lotte",
    "family_name": "Smit",
    "email": "lotte@student.example.nl",
    "level": "mbo-3",
    "programme": "Procestechniek",
    "skills": ["VCA Basis"],
    "seeking": ["internship"],
    "postcode": "1971 AB",
    "consent": {"matching": True, "email": False},
}
VACANCY = {
    "vacancy_id": "auth-vac",
    "organisation_id": "company-c",
    "title": "Stage procesoperator",
    "kind": "internship",
    "required_skills": ["VCA Basis"],
    "postcode": "1971 AB",
    "positions": 1,
    "starts_on": "2027-02-01",
    "contact_email": "hr@company-c.example.nl",
}


@pytest.fixture
async def keys(platform) -> dict[str, str]:
    keys = {}
    async with platform.client() as operator:
        for organisation_id, kind in ORGS.items():
            response = await operator.post("/organisations", json=_organisation(organisation_id, kind))
            assert response.status_code == 201, response.text
            keys[organisation_id] = response.json()["api_key"]
        revoked = (await operator.post("/organisations/school-a/api-keys")).json()
        assert (await operator.delete(f"/api-keys/{revoked['api_key_id']}")).status_code == 204
        keys["revoked"] = revoked["api_key"]
    async with platform.client(keys["school-a"]) as as_a:
        assert (await as_a.post("/students", json=STUDENT)).status_code == 201
    async with platform.client(keys["company-c"]) as as_c:
        assert (await as_c.post("/vacancies", json=VACANCY)).status_code == 201
    return keys


# (method, path, body, the owner's organisation, an organisation that may not)
ROUTES = [
    ("POST", "/students", STUDENT, "school-a", "school-b"),
    ("GET", "/students/auth-stu", None, "school-a", "school-b"),
    ("PATCH", "/students/auth-stu", {"programme": "Mechatronica"}, "school-a", "school-b"),
    ("POST", "/vacancies", VACANCY, "company-c", "company-d"),
    ("POST", "/vacancies/auth-vac/close", {"reason": "filled"}, "company-c", "company-d"),
    ("GET", "/students/auth-stu/matches", None, "school-a", "school-b"),
    ("GET", "/vacancies/auth-vac/matches", None, "company-c", "company-d"),
    ("GET", "/partnerships?organisation_id=school-a", None, "school-a", "school-b"),
    ("POST", "/partnerships", {"company_id": "company-c", "school_id": "school-a"}, "school-a", "school-b"),
    ("GET", "/notifications?recipient_id=auth-stu", None, None, "school-a"),
    ("POST", "/organisations", _organisation("newcomer", "school"), None, "school-a"),
    ("GET", "/students?school_id=school-a", None, "school-a", "school-b"),
    ("GET", "/students", None, "school-a", "company-c"),  # a company lists no students
    ("DELETE", "/students/auth-stu", None, "school-a", "school-b"),
]


async def _call(client: httpx.AsyncClient, method: str, path: str, body: dict | None) -> httpx.Response:
    return await client.request(method, path, json=body)


async def test_every_route_no_key_revoked_key_other_organisation_and_operator(platform, keys) -> None:
    # Matching knows the student once the event has arrived; wait, so 404s do not hide 403s.
    async def known():
        async with platform.client() as operator:
            return (await operator.get("/students/auth-stu/matches")).status_code == 200

    await eventually(known)
    for method, path, body, owner, other in ROUTES:
        async with platform.client(None) as anonymous:
            assert (await _call(anonymous, method, path, body)).status_code == 401, (method, path, "no key")
        async with platform.client("tpk_000000000000_" + "x" * 43) as wrong:
            assert (await _call(wrong, method, path, body)).status_code == 401, (method, path, "wrong key")
        async with platform.client(keys["revoked"]) as revoked:
            assert (await _call(revoked, method, path, body)).status_code == 401, (method, path, "revoked")
        async with platform.client(keys[other]) as intruder:
            response = await _call(intruder, method, path, body)
            assert response.status_code == 403, (method, path, other, response.status_code, response.text)
        if owner is not None:
            async with platform.client(keys[owner]) as allowed:
                response = await _call(allowed, method, path, body)
                assert response.status_code < 400 or response.status_code == 409, (
                    method,
                    path,
                    owner,
                    response.text,
                )
        async with platform.client() as operator:
            response = await _call(operator, method, path, body)
            assert response.status_code not in (401, 403), (method, path, "operator", response.text)


async def test_a_service_called_directly_without_the_gateway_identity_refuses(platform, keys) -> None:
    direct = [
        ("members", "GET", "/students/auth-stu"),
        ("members", "GET", "/students"),
        ("members", "GET", "/vacancies"),
        ("members", "POST", "/organisations"),
        ("matching", "GET", "/students/auth-stu/matches"),
        ("matching", "GET", "/partnerships"),
        ("notifications", "GET", "/notifications?recipient_id=auth-stu"),
    ]
    async with httpx.AsyncClient(timeout=10) as client:
        for service, method, path in direct:
            url = platform.services[service] + path
            assert (await client.request(method, url, json={})).status_code == 401, (service, path)
            forged = {"X-Techport-Identity": "eyJhbGciOiJub25lIn0.eyJyb2xlIjoib3BlcmF0b3IifQ."}
            assert (await client.request(method, url, json={}, headers=forged)).status_code == 401, (
                service,
                path,
            )
            # An API key is for the gateway: a service does not take it either.
            bearer = {"Authorization": f"Bearer {keys['school-a']}"}
            assert (await client.request(method, url, json={}, headers=bearer)).status_code == 401


async def test_a_down_service_gives_a_clear_503_and_rate_limits_give_429(platform, keys) -> None:
    async with platform.client() as operator:
        health = await operator.get("/unsubscribe", params={"token": "tampered"})
        assert health.status_code == 400
    from techport_gateway.main import create_app
    from techport_gateway.settings import GatewaySettings

    from tests.gateway.conftest import OPERATOR_KEY, SECRET
    from tests.serving import serve

    limited = create_app(
        GatewaySettings(
            database_url=platform.databases["gateway"],
            operator_key=OPERATOR_KEY,
            identity_secret=SECRET,
            members_url="http://127.0.0.1:9",
            matching_url=platform.services["matching"],
            notifications_url=platform.services["notifications"],
            rate_limit="3/minute",
        )
    )
    async with (
        serve(limited) as url,
        httpx.AsyncClient(base_url=f"{url}/api/v1", headers={"Authorization": f"Bearer {OPERATOR_KEY}"}) as c,
    ):
        down = await c.get("/students/auth-stu")
        assert down.status_code == 503 and down.json() == {"detail": "members is unavailable"}
        await c.get("/partnerships")
        await c.get("/partnerships")
        limited_response = await c.get("/partnerships")
        assert limited_response.status_code == 429
        assert int(limited_response.headers["Retry-After"]) >= 1
        ready = await httpx.AsyncClient().get(f"{url}/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["members"].startswith("unavailable")


async def test_partner_events_over_http_speak_only_for_the_keys_organisation(platform, keys) -> None:
    """POST /api/v1/events through the gateway: the API key is the acting organisation."""

    def student(student_id: str, school: str) -> dict:
        return {
            **STUDENT,
            "student_id": student_id,
            "school_id": school,
            "email": f"{student_id}@s.example.nl",
        }

    def binary(source: str, event_id: str) -> dict:
        return {
            "ce-specversion": "1.0",
            "ce-id": event_id,
            "ce-source": source,
            "ce-type": "nl.techport.student.registered.v1",
            "content-type": "application/json",
        }

    own = student("http-own", "school-a")
    async with platform.client(None) as anonymous:
        refused = await anonymous.post("/events", json=own, headers=binary("/partners/school-a", "h-0"))
        assert refused.status_code == 401
    async with platform.client(keys["school-a"]) as as_a:
        answer = await as_a.post("/events", json=own, headers=binary("/partners/school-a", "h-1"))
        assert answer.status_code == 202 and answer.json()["results"][0]["accepted"] is True, answer.text
        assert (await as_a.get("/students/http-own")).status_code == 200  # stored
        # School A's key, speaking as school B: refused, with the reason, and nothing stored.
        forged = student("http-forged", "school-b")
        answer = await as_a.post("/events", json=forged, headers=binary("/partners/school-b", "h-2"))
        [result] = answer.json()["results"]
        assert answer.status_code == 202 and result["accepted"] is False
        assert "ce_source" in [e["field"] for e in result["errors"]]
        # A batch: the good event is taken, the bad one answered with its errors.
        good, bad = student("http-batch-1", "school-a"), {**student("http-batch-2", "school-a"), "level": "x"}
        batch = [
            {"specversion": "1.0", "id": f"h-{n}", "source": "/partners/school-a",
             "type": "nl.techport.student.registered.v1", "data": data}
            for n, data in ((3, good), (4, bad))
        ]  # fmt: skip
        answer = await as_a.post(
            "/events",
            content=json.dumps(batch),
            headers={"content-type": "application/cloudevents-batch+json"},
        )
        results = answer.json()["results"]
        assert answer.status_code == 202 and [r["accepted"] for r in results] == [True, False]
        assert "data.level" in [e["field"] for e in results[1]["errors"]]
    async with platform.client() as operator:
        assert (await operator.get("/students/http-forged")).status_code == 404
        assert (await operator.get("/students/http-batch-1")).status_code == 200
        assert (await operator.get("/students/http-batch-2")).status_code == 404
