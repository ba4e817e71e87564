"""Matching's consumers: students, vacancies and organisations from members. The three take turns (one lock)
because they share the in-memory index."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from techport_shared.consumer import EventDispatcher, EventHandler
from techport_shared.events import ce_type
from techport_shared.topics import ORGANISATIONS, STUDENTS, VACANCIES
from techport_shared.uow import UnitOfWork

from techport_matching.service import Matching

CONSUMER = "matching"


def handlers(matching: Matching) -> dict[str, EventHandler]:
    return {
        ce_type("organisation.registered"): matching.on_organisation,
        ce_type("organisation.updated"): matching.on_organisation,
        ce_type("student.registered"): matching.on_student,
        ce_type("student.updated"): matching.on_student,
        ce_type("student.erased"): matching.on_student_erased,
        ce_type("vacancy.posted"): matching.on_vacancy,
        ce_type("vacancy.updated"): matching.on_vacancy,
        ce_type("vacancy.closed"): matching.on_vacancy_closed,
    }


TOPICS = (ORGANISATIONS.name, STUDENTS.name, VACANCIES.name)


def dispatcher(
    matching: Matching, unit_of_work: Callable[[], UnitOfWork], lock: asyncio.Lock
) -> EventDispatcher:
    return EventDispatcher("matching", CONSUMER, unit_of_work, handlers(matching), lock=lock)
