"""How a service runs its use cases: one table per service from message type (a command, or an event's data
model) to one handler function, and the dispatcher that feeds consumed records to that table.

A handler is `async def handler(message, uow, context) -> result`: it loads through the unit of work's
repositories, lets the domain decide, stores, emits, and commits once. The API calls the same table through
`MessageBus.handle`, so a use case has one path whether a person, a partner or another service asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from techport_shared.consumer import ConsumedRecord, PoisonRecord
from techport_shared.envelope import Envelope, EnvelopeError, Origin, from_record
from techport_shared.errors import Problem, Refused
from techport_shared.events import StudentErased, field_errors, model_for
from techport_shared.identity import Identity, service_identity
from techport_shared.logging import log_context
from techport_shared.metrics import UNKNOWN_EVENT_TYPES
from techport_shared.sealing import Shredded, StudentKeys, is_sealed, key_id, open_sealed
from techport_shared.uow import DuplicateMessage, UnitOfWork

U = TypeVar("U", bound=UnitOfWork)


@dataclass(frozen=True)
class Context:
    """Who asks (the verified caller, or the service itself for another service's events) and where the
    change comes from (its events carry the origin's correlation id)."""

    actor: Identity
    origin: Origin
    # The ce_source of the partner event being handled, when there is one (the domain checks it).
    source: str | None = None


Handler = Callable[[Any, Any, Context], Awaitable[Any]]


def inject(
    handlers: Mapping[type, Callable[..., Awaitable[Any]]], **dependencies: Any
) -> dict[type, Handler]:
    """Bind each handler's extra keyword parameters (an index, settings, a mailer) by name, as Cosmic
    Python's bootstrap does, so the table holds plain (message, uow, context) handlers."""
    bound: dict[type, Handler] = {}
    for message_type, handler in handlers.items():
        wanted = {
            name: dependencies[name] for name in inspect.signature(handler).parameters if name in dependencies
        }
        bound[message_type] = functools.partial(handler, **wanted) if wanted else handler
    return bound


class MessageBus(Generic[U]):
    """Runs one message through the handler of its type, in a unit of work of its own."""

    def __init__(
        self,
        unit_of_work: Callable[[], U],
        handlers: Mapping[type, Handler],
        lock: asyncio.Lock | None = None,
    ) -> None:
        self.unit_of_work = unit_of_work
        self.handlers = dict(handlers)
        # Handlers that share in-memory state (an index) with other work of the service take turns.
        self.lock: Any = lock or contextlib.nullcontext()

    def handler_for(self, message_type: type) -> Handler | None:
        return self.handlers.get(message_type)

    async def handle(self, message: Any, context: Context) -> Any:
        async with self.lock:
            return await self.handle_holding_lock(message, context)

    async def handle_holding_lock(self, message: Any, context: Context) -> Any:
        """`handle`, for a caller that holds the bus's lock already (work that must not interleave)."""
        handler = self.handlers[type(message)]
        async with self.unit_of_work() as uow:
            return await handler(message, uow, context)


@dataclass
class Outcome:
    """What became of one record: handled, duplicate, ignored, rejected (a partner's event refused), or
    poison (unreadable or invalid: dead-lettered alone by the consumer)."""

    name: str
    problems: list[Problem] = field(default_factory=list)
    poison: PoisonRecord | None = None


Identify = Callable[[ConsumedRecord], Identity]
Checks = Callable[[Envelope, Context], list[Problem]]
Reject = Callable[[Any, Envelope, list[Problem], Context], None]
# Reads what a batch's handlers will need, in a few queries, before they run (a service's own).
Preload = Callable[[Any, list[Envelope]], Awaitable[None]]


def ids_in(events: list[Envelope], *names: str) -> dict[str, set[str]]:
    """For each of `names`, the ids the events' data give under it (what a preload reads ahead)."""
    ids: dict[str, set[str]] = {name: set() for name in names}
    for event in events:
        for name, found in ids.items():
            if isinstance(value := event.data.get(name), str):
                found.add(value)
    return ids


class EventDispatcher:
    """A consumer's record handler: reads each record's CloudEvent, validates its data with the contract's
    model, marks (consumer, ce_source, ce_id) as processed and runs the handler of its type from the bus.

    Internal consumers dead-letter what they cannot read. The partner ingress (`reject` given) answers it
    instead: an unreadable, invalid, unknown or refused event becomes a rejection, with every problem found,
    and nothing of it is stored. `identify` names the acting party of a record (for the ingress: the
    partner whose topic it came from) and `consumer_of` the namespace its (ce_source, ce_id) is unique in.
    With `keys`, a student event whose personal fields are sealed is opened first (one request to members
    for a batch); one whose key is gone is handled as the student's erasure. With `preload`, the service
    reads what the batch's handlers will ask for before they run.
    """

    def __init__(
        self,
        service: str,
        consumer: str,
        bus: MessageBus[Any],
        *,
        identify: Identify | None = None,
        checks: Checks | None = None,
        reject: Reject | None = None,
        consumer_of: Callable[[Context], str] | None = None,
        keys: StudentKeys | None = None,
        preload: Preload | None = None,
    ) -> None:
        self.service = service
        self._preload = preload
        self.consumer = consumer
        self.bus = bus
        self._keys = keys
        self._identify = identify
        self._checks = checks
        self._reject = reject
        self._consumer_of = consumer_of or (lambda _context: consumer)

    # --- one record, in a transaction of its own ------------------------------------------------------------
    async def __call__(self, record: ConsumedRecord) -> str:
        outcome = (await self.batch([record]))[0]
        if outcome.poison is not None:
            raise outcome.poison
        return outcome.name

    # --- a batch, in one transaction ------------------------------------------------------------------------
    async def batch(self, records: list[ConsumedRecord]) -> list[Outcome]:
        """Handle `records` in one transaction, each deduplicated on its own. A handler that fails for any
        other reason than a refusal fails the batch: the consumer then handles its records one by one."""
        prepared = [self._prepare(record) for record in records]
        keys = await self._student_keys([envelope for _, envelope, _ in prepared])
        events = [(envelope, context) for _, envelope, context in prepared if isinstance(envelope, Envelope)]
        async with self.bus.lock, self.bus.unit_of_work() as uow:
            # What the batch's handlers will read, read first: a query per table, not per record.
            await uow.load_processed([(self._consumer_of(c), e.source, e.id) for e, c in events])
            if self._preload is not None:
                await self._preload(uow, [e for e, _ in events])
            with uow.batch():
                outcomes = []
                for item in prepared:
                    outcomes.append(await self._apply(uow, *item, keys=keys))
                    # SQLite statements run on the loop and never suspend: without this, a batch would hold
                    # the loop from start to commit, and the HTTP requests waiting on it (other services'
                    # key requests, probes) would wait for the whole batch.
                    await asyncio.sleep(0)
            await uow.commit_batch()
        return outcomes

    async def _student_keys(self, envelopes: list[Envelope | EnvelopeError]) -> dict[str, bytes | None]:
        if self._keys is None:
            return {}
        wanted = {
            str(e.data.get("student_id")): kid
            for e in envelopes
            if isinstance(e, Envelope) and is_sealed(e.data) and (kid := key_id(e.data))
        }
        return await self._keys.keys(wanted) if wanted else {}

    def _prepare(self, record: ConsumedRecord) -> tuple[ConsumedRecord, Envelope | EnvelopeError, Context]:
        try:
            envelope: Envelope | EnvelopeError = from_record(record.key, record.value, record.headers)
        except EnvelopeError as exc:
            envelope = exc
        if self._identify is not None:  # a partner's record: it acts for the partner, with its ce_source
            actor, channel = self._identify(record), "ingress"
        else:
            actor, channel = service_identity(self.service), "event"
        if isinstance(envelope, Envelope):
            source = envelope.source if self._identify is not None else None
            return record, envelope, Context(actor, Origin.of_event(envelope, channel), source)
        return record, envelope, Context(actor, Origin(None, None, datetime.now(UTC), channel))

    async def _apply(
        self,
        uow: UnitOfWork,
        record: ConsumedRecord,
        envelope: Envelope | EnvelopeError,
        context: Context,
        keys: Mapping[str, bytes | None] | None = None,
    ) -> Outcome:
        if isinstance(envelope, EnvelopeError):
            return await self._unreadable(uow, record, envelope, context)
        with log_context(correlation_id=envelope.correlationid or envelope.id, ce_id=envelope.id):
            if not await uow.claim(self._consumer_of(context), envelope.source, envelope.id):
                return Outcome("duplicate")
            problems = self._checks(envelope, context) if self._checks else []
            try:
                model: type[BaseModel] | None = model_for(envelope.type)
            except LookupError:
                model = None
            handler = self.bus.handler_for(model) if model is not None else None
            if handler is None:
                if self._reject is None:
                    UNKNOWN_EVENT_TYPES.labels(self.service).inc()
                    return Outcome("ignored")
                problems.append(Problem("ce_type", f"{envelope.type[:200]} is not accepted here"))
                return self._rejected(uow, envelope, problems, context)
            values = envelope.data
            if keys is not None and is_sealed(values):
                try:
                    values = open_sealed(values, keys.get(str(values.get("student_id"))))
                except Shredded:
                    # The student's key is gone: whatever the record says, the student is erased.
                    model, values = StudentErased, {"student_id": values.get("student_id")}
                    handler = self.bus.handler_for(StudentErased)
                    if handler is None:
                        return Outcome("ignored")
            try:
                data = model.model_validate(values)  # type: ignore[union-attr]
            except ValidationError as exc:
                invalid = [Problem(f"data.{e['field']}", e["message"]) for e in field_errors(exc)]
                if self._reject is None:
                    poison = PoisonRecord(f"data: {json.dumps(field_errors(exc))}", kind="schema")
                    return Outcome("poison", poison=poison)
                return self._rejected(uow, envelope, problems + invalid, context)
            if problems:
                return self._rejected(uow, envelope, problems, context)
            mark = uow.mark()
            try:
                await handler(data, uow, context)
            except Refused as refused:
                if self._reject is None:
                    raise
                uow.discard_since(mark)
                return self._rejected(uow, envelope, [p.under("data.") for p in refused.problems], context)
        return Outcome("handled")

    def _rejected(
        self, uow: UnitOfWork, envelope: Envelope, problems: list[Problem], context: Context
    ) -> Outcome:
        assert self._reject is not None
        self._reject(uow, envelope, problems, context)
        return Outcome("rejected", problems)

    async def _unreadable(
        self, uow: UnitOfWork, record: ConsumedRecord, error: EnvelopeError, context: Context
    ) -> Outcome:
        if self._reject is None:
            return Outcome("poison", poison=PoisonRecord(f"{error.field}: {error.message}", kind="envelope"))
        # Dedupe by its place in the topic: it has no (ce_source, ce_id) to go by.
        place = f"{record.partition}:{record.offset}"
        if not await uow.claim(self._consumer_of(context), f"kafka:{record.topic}"[:300], place):
            return Outcome("duplicate")
        stand_in = Envelope(
            type=record.header("ce_type") or "",
            source=record.header("ce_source") or "",
            id=record.header("ce_id") or f"{record.topic}/{place}",
            data={},
        )
        return self._rejected(uow, stand_in, [Problem(error.field, error.message)], context)

    # --- the HTTP ingress: envelopes already read, one transaction for the request --------------------------
    async def envelopes(self, items: list[Envelope | EnvelopeError], actor: Identity) -> list[Outcome]:
        """Handle events that came over HTTP for `actor`, the same way as records of its topic."""
        async with self.bus.lock, self.bus.unit_of_work() as uow:
            with uow.batch():
                outcomes = []
                for item in items:
                    if isinstance(item, EnvelopeError):
                        outcomes.append(Outcome("rejected", [Problem(item.field, item.message)]))
                        continue
                    context = Context(actor, Origin.of_event(item, "http"), item.source)
                    outcomes.append(await self._apply(uow, _NO_RECORD, item, context))
            await uow.commit_batch()
        return outcomes


_NO_RECORD = ConsumedRecord("http", 0, 0, None, None, ())

__all__ = ["Context", "DuplicateMessage", "EventDispatcher", "MessageBus", "Outcome", "ids_in", "inject"]
