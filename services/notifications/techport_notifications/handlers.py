"""Notifications' consumer: recipients from members' topics, what to tell them from matching's topics.
One consumer for all five topics, taking turns with the sender (one lock), so no item joins a digest
being sent."""

from __future__ import annotations

from collections.abc import Callable

from techport_shared.consumer import EventDispatcher, EventHandler
from techport_shared.events import ce_type
from techport_shared.topics import MATCHES, ORGANISATIONS, PARTNERSHIPS, STUDENTS, VACANCIES
from techport_shared.uow import UnitOfWork

from techport_notifications.service import Notifications

CONSUMER = "notifications"
TOPICS = (ORGANISATIONS.name, STUDENTS.name, VACANCIES.name, MATCHES.name, PARTNERSHIPS.name)


def dispatcher(service: Notifications, unit_of_work: Callable[[], UnitOfWork]) -> EventDispatcher:
    handlers: dict[str, EventHandler] = {
        ce_type("organisation.registered"): service.on_organisation,
        ce_type("organisation.updated"): service.on_organisation,
        ce_type("student.registered"): service.on_student,
        ce_type("student.updated"): service.on_student,
        ce_type("student.erased"): service.on_student_erased,
        ce_type("vacancy.posted"): service.on_vacancy,
        ce_type("vacancy.updated"): service.on_vacancy,
        ce_type("match.found"): service.on_match_found,
        ce_type("partnership.formed"): service.on_partnership_formed,
    }
    return EventDispatcher("notifications", CONSUMER, unit_of_work, handlers, lock=service.lock)
