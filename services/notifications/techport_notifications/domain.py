"""Notifications' rules, free of I/O: who a recipient is, what an email to them may say, when it is due, and
what becomes of a notification (sent, suppressed, failed, dropped, wait).

Recipients are typed: a student, an organisation, or a vacancy's contact. Their ids come from different
registries and may look alike, so a recipient is always (kind, id), never a bare id.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

RecipientKind = Literal["student", "organisation", "vacancy_contact"]
STUDENT: RecipientKind = "student"
ORGANISATION: RecipientKind = "organisation"
VACANCY_CONTACT: RecipientKind = "vacancy_contact"
# Which kind of recipient each template writes to.
TEMPLATES: dict[str, RecipientKind] = {
    "student_matches": STUDENT,
    "vacancy_candidates": VACANCY_CONTACT,
    "partnership_formed": ORGANISATION,
}
# A match can arrive before the student it is about (they come on different topics): wait this long for it.
UNKNOWN_RECIPIENT_GRACE = timedelta(hours=1)
_MAX_NAME = 100


@dataclass(frozen=True)
class Recipient:
    kind: RecipientKind
    id: str


def safe_name(name: str) -> str:
    """A name that can stand in an email header and a greeting: line breaks and control or format
    characters become spaces, runs of space one space, at most 100 characters."""
    cleaned = "".join(" " if unicodedata.category(char)[0] in "CZ" else char for char in name)
    return re.sub(r"\s+", " ", cleaned).strip()[:_MAX_NAME]


class Undeliverable(ValueError):
    """An address that cannot be written to as it is; the reason is what the delivery log shows."""


@dataclass(frozen=True)
class MailAddress:
    local: str
    domain: str  # ASCII (an international domain in its IDNA form)

    @property
    def needs_smtputf8(self) -> bool:
        return not self.local.isascii()

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"


def mail_address(email: str) -> MailAddress:
    """An address as it goes into SMTP: an international domain becomes its IDNA (xn--) form, which every
    server takes; a local part with non-ASCII characters needs a server that offers SMTPUTF8."""
    local, at, domain = email.strip().rpartition("@")
    if not at or not local or not domain or any(char in email for char in "\r\n<>"):
        raise Undeliverable("not an e-mail address")
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise Undeliverable("the domain of the address is not a valid international domain name") from None
    return MailAddress(local, ascii_domain.lower())


def address_fingerprint(email: str) -> str:
    """What an unsubscribe token and record are bound to: the address, not kept in the clear."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]


def backoff_s(attempts: int, initial_s: float, max_s: float) -> float:
    return float(min(max_s, initial_s * 2 ** max(0, attempts - 1)))


@dataclass(frozen=True)
class Verdict:
    """What to do with a due notification."""

    action: Literal["send", "suppress", "fail", "drop", "wait"]
    reason: str | None = None


def verdict(
    *,
    has_items: bool,
    erased: bool,
    known: bool,
    consent: bool,
    unsubscribed: bool,
    created_at: datetime,
    now: datetime,
) -> Verdict:
    if not has_items or erased:
        return Verdict("drop")  # what it would have said is gone (an erased student)
    if not known:
        if now - created_at > UNKNOWN_RECIPIENT_GRACE:
            return Verdict("fail", "unknown recipient")
        return Verdict("wait")
    if not consent:
        return Verdict("suppress", "no email consent")
    if unsubscribed:
        return Verdict("suppress", "unsubscribed")
    return Verdict("send")


def whole_km(distance_km: float | None) -> int | None:
    """A distance as a company may see it: in whole kilometres (ten metres would locate a home)."""
    return None if distance_km is None else round(distance_km)


def describe_match(
    template: str,
    details: dict[str, Any],
    vacancy: dict[str, str] | None,
    company_name: str | None,
    candidate: dict[str, str | None] | None,
    skill_label: Any,
) -> dict[str, Any] | None:
    """One line of a digest, from what notifications knows; None when its subject is gone (an erased
    candidate). A student reads its own distance to a decimal; a company a candidate's in whole km, and of
    the candidate only what the contract allows: given name, level, programme, matched skills."""
    skills = [skill_label(code) for code in details.get("skills", [])]
    entry: dict[str, Any] = {
        "title": vacancy["title"] if vacancy else details.get("vacancy_id", ""),
        "company": company_name or (vacancy["organisation_id"] if vacancy else ""),
        "place": vacancy["place"] if vacancy else "",
        "skills": skills,
        "match_id": details.get("match_id", ""),
    }
    if template == "vacancy_candidates":
        if candidate is None:
            return None
        entry.update(
            candidate=safe_name(candidate.get("name") or ""),
            level=candidate.get("level") or "",
            programme=candidate.get("programme") or "",
            distance_km=whole_km(details.get("distance_km")),
        )
    else:
        entry["distance_km"] = details.get("distance_km")
    return entry
