"""Notifications' rules and handlers in milliseconds: what an email may say and to whom, safe names and
addresses, typed recipients, unsubscribe tokens bound to an address. The flows over the real broker and a real
SMTP server are in test_notifications.py."""

from __future__ import annotations

import email.policy
import re
from datetime import UTC, datetime, timedelta

import pytest
from aiosmtplib.email import flatten_message
from hypothesis import given
from hypothesis import strategies as st
from techport_notifications import mailer
from techport_notifications.domain import (
    Recipient,
    Undeliverable,
    address_fingerprint,
    describe_match,
    mail_address,
    safe_name,
    verdict,
    whole_km,
)
from techport_notifications.handlers import HANDLERS, Unsubscribe
from techport_notifications.mailer import POLICY, Rendered, Unsubscribes, build_message, render
from techport_notifications.store import NotificationsUnitOfWork, metadata, tables
from techport_shared.events import MatchFound, StudentRegistered
from techport_shared.identity import service_identity
from techport_shared.messagebus import MessageBus, inject

from tests.fakes import context, fake_database


@given(st.text(max_size=300))
def test_a_safe_name_has_no_line_break_or_control_character(name: str) -> None:
    safe = safe_name(name)
    assert not any(ord(c) < 32 or c in "\u2028\u2029\x7f\x85" for c in safe)
    assert len(safe) <= 100 and safe == safe.strip()
    # It stands in a header: the email module takes it.
    message = build_message(
        "Techport <noreply@techport.nl>",
        name,
        mail_address("a@example.nl"),
        "<id@techport.nl>",
        render("student_matches", "nl", name, [], "http://x/unsubscribe", "http://x/portal"),
        "http://x/unsubscribe",
        None,
    )
    assert "\n" not in str(message["To"])


@given(name=st.text(max_size=120), subject=st.text(max_size=200).map(safe_name))
def test_an_email_is_the_same_bytes_with_the_header_classes_kept(name: str, subject: str) -> None:
    """The mailer's policy keeps the header classes the standard registry makes anew each time; what goes
    over SMTP is byte for byte what the standard policy gives (but for the date and the MIME boundary)."""

    def sent_bytes() -> bytes:
        rendered = Rendered(subject, "Er is een match.\n", "<p>Er is een match.</p>")
        message = build_message(
            "Techport <noreply@techport.nl>",
            name,
            mail_address("jan@bücher.nl"),
            "<id@techport.nl>",
            rendered,
            "http://x/unsubscribe",
            "corr-1",
        )
        del message["Date"]
        raw = flatten_message(message)
        return re.sub(rb"={15}\d+==", b"BOUNDARY", raw)

    kept = sent_bytes()
    try:
        mailer.POLICY = email.policy.default
        standard = sent_bytes()
    finally:
        mailer.POLICY = POLICY
    assert kept == standard


def test_the_unsubscribe_link_goes_out_on_one_line_as_written_not_as_encoded_words() -> None:
    """Mail clients find the one-click unsubscribe URL in the raw header: folded into RFC 2047 words (what
    the standard policy does with a token longer than a line) it was not found."""
    url = "https://techport.example.nl/api/v1/unsubscribe?token=." + "eJwVyksOgCAMRdG9dCwJnwjE3QC" * 6
    rendered = Rendered("Nieuwe vacatures", "Er is een match.\n", "<p>Er is een match.</p>")
    message = build_message(
        "Techport <noreply@techport.nl>",
        "Jan",
        mail_address("jan@example.nl"),
        "<id@techport.nl>",
        rendered,
        url,
        "corr-1",
    )
    raw = flatten_message(message)
    assert f"\r\nList-Unsubscribe: <{url}>\r\n".encode() in raw
    assert b"=?utf-8?" not in raw
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["List-Unsubscribe"] == f"<{url}>"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_addresses_as_smtp_takes_them() -> None:
    assert str(mail_address("jan@bücher.nl")) == "jan@xn--bcher-kva.nl"  # IDNA: every server takes it
    assert not mail_address("jan@bücher.nl").needs_smtputf8
    assert mail_address("josé@example.nl").needs_smtputf8  # only with a server that offers SMTPUTF8
    for bad in ("no-at-sign", "a@b\r\nBcc: c@d", "<a@b.nl>", "@b.nl"):
        with pytest.raises(Undeliverable):
            mail_address(bad)


def test_what_becomes_of_a_due_notification() -> None:
    now = datetime.now(UTC)
    base = {"has_items": True, "erased": False, "known": True, "consent": True, "unsubscribed": False}
    assert verdict(**base, created_at=now, now=now).action == "send"
    assert verdict(**{**base, "consent": False}, created_at=now, now=now).reason == "no email consent"
    assert verdict(**{**base, "unsubscribed": True}, created_at=now, now=now).reason == "unsubscribed"
    assert verdict(**{**base, "erased": True}, created_at=now, now=now).action == "drop"
    assert verdict(**{**base, "known": False}, created_at=now, now=now).action == "wait"
    late = now + timedelta(hours=2)
    assert verdict(**{**base, "known": False}, created_at=now, now=late).reason == "unknown recipient"


def test_a_company_reads_of_a_candidate_only_what_the_contract_allows() -> None:
    details = {
        "match_id": "m-1",
        "vacancy_id": "v1",
        "student_id": "s1",
        "skills": ["weld.tig"],
        "distance_km": 2.46,
    }
    vacancy = {"title": "Lasser", "place": "Velsen-Noord", "organisation_id": "c1"}
    candidate = {"name": "Jan\nBcc: x", "level": "mbo-4", "programme": "Techniek"}
    entry = describe_match("vacancy_candidates", details, vacancy, "Windservice", candidate, str)
    assert entry is not None
    assert entry["distance_km"] == 2 and entry["candidate"] == "Jan Bcc: x"
    assert "s1" not in str(entry)  # never the student's id: the match id is the reference
    assert describe_match("vacancy_candidates", details, vacancy, "Windservice", None, str) is None  # erased
    own = describe_match("student_matches", details, vacancy, "Windservice", None, str)
    assert own is not None and own["distance_km"] == 2.46  # a student reads its own distance
    assert whole_km(None) is None and whole_km(9.5) == 10


def test_an_unsubscribe_token_names_a_recipient_and_an_address_and_nothing_in_the_clear() -> None:
    tokens = Unsubscribes("a-secret", "https://api.techport.nl/api/v1")
    token = tokens.token(Recipient("student", "s-1"), "Sanne@Example.nl", "en")
    read = tokens.read(token)
    assert read is not None and read.recipient == Recipient("student", "s-1") and read.lang == "en"
    assert read.address == address_fingerprint("sanne@example.nl")
    assert "sanne" not in token.lower()
    assert tokens.read(token[:-2] + "xx") is None and Unsubscribes("other", "x").read(token) is None


@pytest.fixture
async def notifications():
    db = await fake_database(metadata, tables, NotificationsUnitOfWork)
    yield db, MessageBus(db.uow, inject(HANDLERS, keys=None, digest_seconds=60.0))
    await db.close()


def _student(student_id: str, email: str) -> StudentRegistered:
    return StudentRegistered.model_validate(
        {
            "student_id": student_id,
            "school_id": None,
            "given_name": "Sanne",
            "family_name": "de Vries",
            "email": email,
            "level": "mbo-4",
            "programme": "Techniek",
            "seeking": ["job"],
            "postcode": "1971 AB",
            "consent": {"matching": True, "email": True},
        }
    )


async def test_recipients_are_typed_a_student_id_never_stands_for_a_vacancy_contact(notifications) -> None:
    db, bus = notifications
    service = context(service_identity("notifications"), channel="event")
    await bus.handle(_student("vacancy:v1", "lookalike@student.example.nl"), service)
    match = MatchFound.model_validate(
        {
            "match_id": "m-1",
            "student_id": "s-2",
            "vacancy_id": "v1",
            "organisation_id": "c1",
            "school_id": None,
            "score": 0.8,
            "reasons": {
                "matched_skills": [],
                "missing_skills": [],
                "preferred_matched": [],
                "distance_km": 1.0,
                "level_ok": True,
                "kind_ok": True,
            },
        }
    )
    await bus.handle(match, service)
    async with db.uow() as uow:
        contact = await uow.notifications.open_digest(
            Recipient("vacancy_contact", "v1"), "vacancy_candidates"
        )
        lookalike = await uow.notifications.open_digest(Recipient("student", "vacancy:v1"), "student_matches")
        assert contact is not None and contact.recipient_kind == "vacancy_contact"
        assert lookalike is None


async def test_an_unsubscribe_holds_for_the_address_it_came_from(notifications) -> None:
    _db, bus = notifications
    service = context(service_identity("notifications"), channel="event")
    await bus.handle(_student("s-1", "old@student.example.nl"), service)
    who = Recipient("student", "s-1")
    assert await bus.handle(Unsubscribe(who, address_fingerprint("old@student.example.nl")), service)
    # A token of an address the recipient no longer has does nothing.
    await bus.handle(_student("s-1", "new@student.example.nl"), service)
    assert not await bus.handle(Unsubscribe(who, address_fingerprint("old@student.example.nl")), service)
