"""The fuzzing harness: hypothesis over the envelope parser (Kafka and HTTP), the event models, and every
consumer's decode path (members' partner ingress, matching, notifications) on the fake unit of work. Each
property runs a bounded number of examples with a deadline: no input may raise anything but the parser's own
refusal, take long, or leave a consumer unable to go on."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from techport_shared.consumer import ConsumedRecord
from techport_shared.envelope import EnvelopeError, from_http, from_record, to_binary
from techport_shared.events import EVENT_MODELS, ce_type
from techport_shared.limits import MAX_JSON_DEPTH, depth_of, json_depth
from techport_shared.messagebus import EventDispatcher, MessageBus, inject

from tests.fakes import fake_database

BOUNDED = settings(max_examples=100, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)


@BOUNDED
@given(json_values)
def test_the_depth_scan_agrees_with_the_parsed_depth(value: Any) -> None:
    assert json_depth(json.dumps(value).encode()) == depth_of(value)


def test_deep_or_unterminated_input_is_scanned_in_linear_time() -> None:
    assert json_depth(b"[" * 50_000) == 50_000
    assert json_depth(b'"\\' * 100_000) == 0  # a string that never closes: one pass, not one per quote


headers = st.dictionaries(
    st.sampled_from(["ce_id", "ce_source", "ce_type", "ce_specversion", "ce_time", "content-type", "x"]),
    st.binary(max_size=40),
    max_size=7,
)


@BOUNDED
@given(st.binary(max_size=2000), headers)
def test_any_record_is_an_envelope_or_a_named_refusal(value: bytes, record_headers: dict[str, bytes]) -> None:
    try:
        from_record(b"k", value, list(record_headers.items()))
    except EnvelopeError as refused:
        assert refused.field and refused.message


@BOUNDED
@given(json_values, st.integers(0, 60))
def test_any_json_in_a_binary_record_is_an_envelope_or_a_named_refusal(data: Any, extra_depth: int) -> None:
    value = ("[" * extra_depth + json.dumps(data) + "]" * extra_depth).encode()
    ce = {"ce_specversion": b"1.0", "ce_id": b"1", "ce_source": b"/s", "ce_type": b"t"}
    try:
        envelope = from_record(b"k", value, list(ce.items()))
    except EnvelopeError as refused:
        assert refused.field
        return
    assert isinstance(envelope.data, dict) and json_depth(value) <= MAX_JSON_DEPTH


CONTENT_TYPES = [
    "application/json",
    "application/cloudevents+json",
    "application/cloudevents-batch+json",
    "text/plain",
]


@BOUNDED
@given(st.binary(max_size=2000), st.sampled_from(CONTENT_TYPES))
def test_any_http_body_is_events_or_a_named_refusal(body: bytes, content_type: str) -> None:
    try:
        items = from_http(
            {"content-type": content_type, "ce-id": "1", "ce-source": "/s", "ce-type": "t"}, body
        )
    except EnvelopeError as refused:
        assert refused.field
        return
    assert items and all(hasattr(item, "type") or isinstance(item, EnvelopeError) for item in items)


@BOUNDED
@given(st.sampled_from(sorted(EVENT_MODELS)), st.dictionaries(st.text(max_size=12), json_values, max_size=20))
def test_every_event_model_validates_or_refuses_any_data(event_type: str, data: dict[str, Any]) -> None:
    from pydantic import ValidationError

    with contextlib.suppress(ValidationError):
        EVENT_MODELS[event_type].model_validate(data)


def _record(event_type: str, data: Any, topic: str) -> ConsumedRecord:
    from techport_shared.envelope import Envelope

    record = to_binary(Envelope(type=event_type, source="/partners/school-a", subject="x", data={}))
    value = json.dumps(data).encode()
    return ConsumedRecord(topic, 0, 0, b"x", value, tuple(record.headers.items()))


def _dispatchers() -> dict[str, Any]:
    from techport_matching.handlers import HANDLERS as MATCHING
    from techport_matching.keeper import IndexKeeper
    from techport_matching.settings import MatchingSettings
    from techport_matching.store import MatchingUnitOfWork
    from techport_matching.store import metadata as matching_metadata
    from techport_matching.store import tables as matching_tables
    from techport_members.handlers import HANDLERS as MEMBERS
    from techport_members.handlers import check_source, ingress_consumer, partner_actor, reject
    from techport_members.store import MembersUnitOfWork
    from techport_members.store import metadata as members_metadata
    from techport_members.store import tables as members_tables
    from techport_notifications.handlers import HANDLERS as NOTIFICATIONS
    from techport_notifications.store import NotificationsUnitOfWork
    from techport_notifications.store import metadata as notifications_metadata
    from techport_notifications.store import tables as notifications_tables

    async def provision(_organisation_id: str) -> None:
        return None

    settings_ = MatchingSettings(database_url="sqlite://", identity_secret="fuzz-secret")
    return {
        "members": (members_metadata, members_tables, MembersUnitOfWork, inject(MEMBERS, provision=provision),
                    {"identify": partner_actor, "checks": check_source, "reject": reject,
                     "consumer_of": ingress_consumer}),
        "matching": (matching_metadata, matching_tables, MatchingUnitOfWork,
                     inject(MATCHING, keeper=IndexKeeper(50), settings=settings_, key=b"k"), {}),
        "notifications": (notifications_metadata, notifications_tables, NotificationsUnitOfWork,
                          inject(NOTIFICATIONS, keys=None, digest_seconds=1.0), {}),
    }  # fmt: skip


TYPES = [*sorted(EVENT_MODELS), ce_type("spaceship.launched")]


@pytest.mark.parametrize("service", ["members", "matching", "notifications"])
async def test_every_consumers_decode_path_takes_any_event_without_failing(service: str) -> None:
    import asyncio
    import threading

    # hypothesis drives a synchronous function: the consumer runs on an event loop of its own, in a thread.
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    class runner:
        @staticmethod
        def run(coroutine: Any) -> Any:
            return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=10)

    metadata, tables, unit_of_work, handlers, options = _dispatchers()[service]
    db = runner.run(fake_database(metadata, tables, unit_of_work))
    if service == "matching":
        from techport_matching.store import ChangeCounterRow

        async def counter() -> None:
            async with db.sessions() as session:
                session.add(ChangeCounterRow(id=1, value=0))
                await session.commit()

        runner.run(counter())
    dispatcher = EventDispatcher(service, "fuzz", MessageBus(db.uow, handlers), **options)
    topic = "techport.partner.school-a.ingress.v1"

    @settings(max_examples=80, deadline=2000, suppress_health_check=list(HealthCheck))
    @given(
        st.sampled_from(TYPES), st.dictionaries(st.text(max_size=12), json_values, max_size=12) | json_values
    )
    def check(event_type: str, data: Any) -> None:
        outcome = runner.run(dispatcher.batch([_record(event_type, data, topic)]))[0]
        assert outcome.name in ("handled", "duplicate", "ignored", "rejected", "poison")
        if outcome.poison is not None:
            assert outcome.poison.error  # dead-lettered with its reason
        if outcome.name == "rejected":
            assert all(p.field and p.message for p in outcome.problems)

    try:
        await asyncio.to_thread(check)
    finally:
        runner.run(db.close())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
