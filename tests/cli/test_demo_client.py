"""The demo's HTTP client waits out the gateway's rate limit as a partner's client should."""

from __future__ import annotations

import time

import httpx
from techport_cli.demo import PatientTransport


def _gateway(refusals: int, retry_after: str) -> tuple[httpx.MockTransport, list[float]]:
    asked: list[float] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(time.monotonic())
        if len(asked) <= refusals:
            return httpx.Response(429, headers={"Retry-After": retry_after}, json={"detail": "rate limit"})
        return httpx.Response(201, json={"seen": request.content.decode()})

    return httpx.MockTransport(answer), asked


async def test_a_429_is_asked_again_after_its_retry_after_with_the_same_body() -> None:
    gateway, asked = _gateway(refusals=2, retry_after="1")
    async with httpx.AsyncClient(transport=PatientTransport(gateway)) as client:
        response = await client.post("http://gw/api/v1/students", json={"student_id": "s1"})
    assert response.status_code == 201
    assert response.json() == {"seen": '{"student_id":"s1"}'}
    assert len(asked) == 3
    assert asked[1] - asked[0] >= 0.95 and asked[2] - asked[1] >= 0.95


async def test_a_limit_that_does_not_lift_ends_in_the_429_after_a_few_attempts() -> None:
    gateway, asked = _gateway(refusals=100, retry_after="0")
    async with httpx.AsyncClient(transport=PatientTransport(gateway, attempts=3)) as client:
        response = await client.get("http://gw/api/v1/students/s1")
    assert response.status_code == 429
    assert len(asked) == 3
