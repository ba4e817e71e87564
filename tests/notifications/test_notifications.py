"""Notifications over the real broker and a real SMTP server (aiosmtpd), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import re

import httpx
from techport_notifications.service import retry_failed
from techport_shared.events import ce_type

from tests.notifications.conftest import running_notifications, uid

SENT, SUPPRESSED, FAILED = (ce_type(f"notification.{x}") for x in ("sent", "suppressed", "failed"))


def _text(message) -> str:
    return message.get_body(preferencelist=("plain",)).get_content()


def _html(message) -> str:
    return message.get_body(preferencelist=("html",)).get_content()


async def _company_with_vacancies(n, titles):
    company = uid("company")
    await n.organisation(company, "company", "Windservice IJmond BV")
    vacancies = [uid("vac") for _ in titles]
    for vacancy_id, title in zip(vacancies, titles, strict=True):
        await n.vacancy(vacancy_id, company, title)
    return company, vacancies


async def test_three_matches_in_the_window_are_one_dutch_email_with_a_working_unsubscribe_link(
    notifications,
) -> None:
    n = notifications
    student = uid("stu")
    email = await n.student(student)
    titles = ["BBL Monteur windturbines", "Lasser TIG", "Onderhoudsmonteur hydrauliek"]
    company, vacancies = await _company_with_vacancies(n, titles)
    for vacancy_id in vacancies:
        await n.match(student, vacancy_id, company)
    [mail] = await n.wait(lambda: n.mails_to(email))
    await asyncio.sleep(1.5)
    assert len(n.mails_to(email)) == 1  # one digest, not three emails
    text = _text(mail)
    assert mail["Subject"] == "Nieuwe vacatures die bij je passen"
    assert "Beste Sanne" in text and "Passende vaardigheden: TIG-lassen" in text
    for title in titles:
        assert title in text and title in _html(mail)
    assert "Windservice IJmond BV" in text and "Velsen-Noord" in text and "2.3 km" in text
    assert mail["Message-ID"].endswith("@techport.nl>")
    link = re.search(r"(http://\S+/unsubscribe\?token=\S+)", text).group(1)
    assert mail["List-Unsubscribe"] == f"<{link}>"
    [sent] = await n.notices(lambda e: e.type == SENT and e.data["recipient_id"] == student)
    assert len(sent.data["about"]) == 3

    async with httpx.AsyncClient() as client:
        assert (await client.get(link.replace("token=", "token=x"))).status_code == 400  # tampered
        assert (await client.get(link)).status_code == 200
    # After unsubscribing, a new match is suppressed: no email.
    later = uid("vac")
    await n.vacancy(later, company, "Nog een vacature")
    await n.match(student, later, company)
    [suppressed] = await n.notices(lambda e: e.type == SUPPRESSED and e.data["recipient_id"] == student)
    assert suppressed.data["reason"] == "unsubscribed"
    assert len(n.mails_to(email)) == 1


async def test_an_english_speaking_student_gets_english(notifications) -> None:
    n = notifications
    student = uid("stu")
    email = await n.student(student, language="en", name="Alex")
    company, [vacancy] = await _company_with_vacancies(n, ["Offshore wind technician"])
    await n.match(student, vacancy, company)
    [mail] = await n.wait(lambda: n.mails_to(email))
    assert mail["Subject"] == "New vacancies that fit you"
    assert "Dear Alex" in _text(mail) and "Matching skills: TIG welding" in _text(mail)
    assert "Unsubscribe" in _html(mail)


async def test_without_consent_nothing_is_sent_and_a_suppressed_event_is_emitted(notifications) -> None:
    n = notifications
    student = uid("stu")
    email = await n.student(student, email_consent=False)
    company, [vacancy] = await _company_with_vacancies(n, ["Procesoperator"])
    await n.match(student, vacancy, company)
    [suppressed] = await n.notices(lambda e: e.type == SUPPRESSED and e.data["recipient_id"] == student)
    assert suppressed.data["reason"] == "no email consent"
    assert n.mails_to(email) == []
    # The company's contact still hears of its candidate, by first name and skills only.
    [to_company] = await n.wait(lambda: n.mails_to(f"hr-{vacancy}@"))
    assert "Sanne" in _text(to_company) and email not in _text(to_company) and "1971" not in _text(to_company)


async def test_smtp_refusing_for_a_while_gives_retries_then_one_delivery(notifications) -> None:
    n = notifications
    n.sink.handler.refusing = True
    student = uid("stu")
    email = await n.student(student)
    company, [vacancy] = await _company_with_vacancies(n, ["Elektromonteur"])
    await n.match(student, vacancy, company)
    await asyncio.sleep(2.0)
    assert n.mails_to(email) == []
    n.sink.handler.refusing = False
    await n.wait(lambda: n.mails_to(email))
    await n.notices(lambda e: e.type == SENT and e.data["recipient_id"] == student, settle_s=1.0)
    async with n.operator() as client:
        [log] = (await client.get("/notifications", params={"recipient_id": student})).json()
    assert log["status"] == "sent" and log["attempts"] >= 1 and "451" in (log["last_error"] or "")
    assert len(n.mails_to(email)) == 1


async def test_smtp_down_past_the_retries_fails_and_the_retry_command_delivers(notifications) -> None:
    n = notifications
    n.sink.stop()
    student = uid("stu")
    email = await n.student(student)
    company, [vacancy] = await _company_with_vacancies(n, ["Werkvoorbereider"])
    await n.match(student, vacancy, company)
    [failed] = await n.notices(lambda e: e.type == FAILED and e.data["recipient_id"] == student, timeout_s=40)
    assert failed.data["error"]
    n.sink.start()
    assert await retry_failed(n.runtime.sessions) >= 1
    [mail] = await n.wait(lambda: n.mails_to(email))
    assert "Werkvoorbereider" in _text(mail)


async def test_redelivered_match_events_send_nothing_more(notifications) -> None:
    n = notifications
    student = uid("stu")
    email = await n.student(student)
    company, [vacancy] = await _company_with_vacancies(n, ["Monteur"])
    event = await n.match(student, vacancy, company)
    await n.wait(lambda: n.mails_to(email))
    from techport_shared.envelope import to_binary
    from techport_shared.topics import MATCHES

    from tests.kafka_helpers import produce

    await produce(n.bootstrap, MATCHES.name, to_binary(event))  # the same event again
    await n.match(student, vacancy, company)  # the same match in a new event
    await asyncio.sleep(2.5)
    assert len(n.mails_to(email)) == 1


async def test_a_restart_during_a_pending_digest_sends_it_once(db_url, kafka_topics, smtp_sink) -> None:
    group = uid("notifications-restart")
    async with running_notifications(db_url, kafka_topics, smtp_sink, group, digest_s=3.0) as before:
        student = uid("stu")
        email = await before.student(student)
        company, [vacancy] = await _company_with_vacancies(before, ["Instrumentatietechnicus"])
        await before.match(student, vacancy, company)
        await asyncio.sleep(1.0)  # consumed and scheduled, not yet due
        assert before.mails_to(email) == []
    async with running_notifications(db_url, kafka_topics, smtp_sink, group, digest_s=3.0) as after:
        await after.wait(lambda: after.mails_to(email))
        await asyncio.sleep(2.0)
        assert len(after.mails_to(email)) == 1


async def test_a_formed_partnership_emails_both_sides(notifications) -> None:
    n = notifications
    company, school = uid("company"), uid("school")
    await n.organisation(company, "company", "Tata Steel IJmuiden")
    await n.organisation(school, "school", "Nova College")
    await n.formed(company, school)
    [to_company] = await n.wait(lambda: n.mails_to(f"contact@{company}."))
    [to_school] = await n.wait(lambda: n.mails_to(f"contact@{school}."))
    assert "Nova College" in _text(to_company) and "Tata Steel IJmuiden" in _text(to_school)
    assert to_company["Subject"] == "Nieuw partnerschap via Techport"
