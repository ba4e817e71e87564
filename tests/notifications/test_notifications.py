"""Notifications over the real broker and a real SMTP server (aiosmtpd), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import datetime

import httpx
from sqlalchemy.exc import OperationalError
from techport_notifications import handlers as handlers_module
from techport_notifications import sender as sender_module
from techport_notifications.handlers import RetryFailed
from techport_notifications.mailer import SmtpConnections
from techport_shared.envelope import Origin
from techport_shared.events import ce_type
from techport_shared.identity import OPERATOR
from techport_shared.messagebus import Context
from techport_shared.uow import UnitOfWork

from tests.notifications.conftest import running_notifications, uid

SENT, SUPPRESSED, FAILED = (ce_type(f"notification.{x}") for x in ("sent", "suppressed", "failed"))
STUDENTS_TOPIC = "techport.students.v1"


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


async def _log(n, recipient_id: str) -> list[dict]:
    async with n.operator() as client:
        return (await client.get("/notifications", params={"recipient_id": recipient_id})).json()


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
        page = await client.get(link)  # what a person (or a mail scanner) opening the link sees
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "Afmelden" in page.text and "<form" in page.text
        # The button: the page's form, posted.
        token = re.search(r'name="token" value="([^"]+)"', page.text).group(1)
        done = await client.post(link.split("?")[0], data={"token": token})
        assert done.status_code == 200 and "afgemeld" in done.text
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
    [log] = await _log(n, student)
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
    assert await n.service.bus.handle(RetryFailed(), Context(OPERATOR, Origin.of_request("test"))) >= 1
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


async def test_the_database_gone_right_after_the_smtp_server_accepted_sends_no_second_email(
    notifications, monkeypatch
) -> None:
    """The commit that records a send fails (PostgreSQL restarting): the mail is not sent again, and the
    send is recorded once the database answers."""
    n = notifications
    loop = asyncio.get_running_loop()
    outage = {"until": 0.0, "refused": 0}
    real_send, real_commit = SmtpConnections.send, UnitOfWork.commit

    async def send_then_lose_the_database(connections, message) -> None:
        await real_send(connections, message)
        outage["until"] = loop.time() + 1.5

    async def commit_unless_away(self) -> None:
        if loop.time() < outage["until"]:
            outage["refused"] += 1
            raise OperationalError("COMMIT", {}, ConnectionResetError("the database went away"))
        await real_commit(self)

    monkeypatch.setattr(SmtpConnections, "send", send_then_lose_the_database)
    monkeypatch.setattr(UnitOfWork, "commit", commit_unless_away)
    student = uid("stu")
    email = await n.student(student)
    company, [vacancy] = await _company_with_vacancies(n, ["Onderhoudsmonteur windturbines"])
    await n.match(student, vacancy, company)
    await n.notices(lambda e: e.type == SENT and e.data["recipient_id"] == student, timeout_s=30)
    await asyncio.sleep(1.5)  # polls after the record: a pending send would have gone out again by now
    assert outage["refused"] >= 1  # the outage did hit the record of the send
    assert len(n.mails_to(email)) == 1
    [entry] = await _log(n, student)
    assert entry["status"] == "sent"


async def test_a_database_outage_between_claim_and_send_does_not_hold_the_email_for_the_claims_life(
    notifications, monkeypatch
) -> None:
    """The database goes away after a digest was claimed (ten minutes' claim) and before it was written: the
    sender takes it up again once the database answers, instead of leaving it until the claim lapses."""
    n = notifications
    real_write = sender_module.Sender._write
    outage = {"left": 1}

    async def write_unless_away(self, repo, notification_id):
        if outage["left"]:
            outage["left"] -= 1
            raise OperationalError("SELECT", {}, ConnectionResetError("the database went away"))
        return await real_write(self, repo, notification_id)

    monkeypatch.setattr(sender_module.Sender, "_write", write_unless_away)
    student = uid("stu")
    email = await n.student(student)
    company, [vacancy] = await _company_with_vacancies(n, ["Monteur offshore wind"])
    await n.match(student, vacancy, company)
    await n.notices(lambda e: e.type == SENT and e.data["recipient_id"] == student, timeout_s=30)
    assert outage["left"] == 0  # the outage did break off a pass after its claim
    assert len(n.mails_to(email)) == 1
    [entry] = await _log(n, student)
    assert entry["status"] == "sent"


async def test_a_send_whose_sender_stopped_mid_send_goes_out_when_its_claim_lapses(
    db_url, kafka_topics, smtp_sink, monkeypatch
) -> None:
    group = uid("notifications-claim")
    never = asyncio.Event()

    async def hang(connections, message) -> None:
        await never.wait()

    monkeypatch.setattr(SmtpConnections, "send", hang)
    student = uid("stu")
    async with running_notifications(db_url, kafka_topics, smtp_sink, group, sending_claim_s=2.0) as before:
        email = await before.student(student)
        company, [vacancy] = await _company_with_vacancies(before, ["Procesoperator"])
        await before.match(student, vacancy, company)
        # The digest is claimed and its send hangs; then the process stops.
        await before.wait(lambda: _claimed(before, student))
    monkeypatch.undo()
    async with running_notifications(db_url, kafka_topics, smtp_sink, group) as after:
        [mail] = await after.wait(lambda: after.mails_to(email))
        assert "Procesoperator" in _text(mail)
        await asyncio.sleep(1.0)
        assert len(after.mails_to(email)) == 1
        [entry] = await _log(after, student)
        assert entry["status"] == "sent" and entry["message_id"] == mail["Message-ID"]


async def _claimed(n, student: str) -> list[dict]:
    return [entry for entry in await _log(n, student) if entry["status"] == "sending"]


async def test_a_backlog_larger_than_a_pass_goes_out_at_the_send_rate_not_a_pass_a_poll(
    db_url, kafka_topics, smtp_sink, monkeypatch
) -> None:
    """A cohort's matches come at once, and more is due than one pass claims (two here): the passes follow
    each other as the send rate allows (four a second here), not one a poll interval (three seconds here;
    the seven emails would take four passes, over nine seconds)."""
    started = _sender_held_back(monkeypatch)  # until all seven are due, so its first pass is a full one
    group = uid("notifications-backlog")
    async with running_notifications(
        db_url, kafka_topics, smtp_sink, group, send_batch=2, send_rate=4.0, poll_interval_s=3.0
    ) as n:
        company, [vacancy] = await _company_with_vacancies(n, ["Monteur offshore wind"])
        students = [uid("stu") for _ in range(6)]
        addresses = [await n.student(student) for student in students] + [f"hr-{vacancy}@"]
        for student in students:
            await n.match(student, vacancy, company)

        await n.wait(lambda: _all_due(n, [*students, vacancy]))
        started.set()
        begun = time.monotonic()
        await n.wait(lambda: all(n.mails_to(address) for address in addresses), timeout_s=30)
        # Four passes (2, 2, 2, 1) at four emails a second: the last starts at least a second after the
        # second (the first pass's own time counts the wait for `started`, so the second follows at once).
        assert 0.9 < time.monotonic() - begun < 3.0
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"{n.url}/metrics")).text
        assert "techport_notifications_due 0.0" in metrics


def _epoch(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def _sender_held_back(monkeypatch) -> asyncio.Event:
    """The sender's passes wait until the event is set."""
    started = asyncio.Event()
    real_send_due = sender_module.Sender.send_due

    async def send_due_once_started(self):
        await started.wait()
        return await real_send_due(self)

    monkeypatch.setattr(sender_module.Sender, "send_due", send_due_once_started)
    return started


async def _all_due(n, recipients: list[str]) -> bool:
    logs = [await _log(n, who) for who in recipients]
    return all(log and _epoch(log[0]["due_at"]) <= time.time() for log in logs)


async def test_a_record_that_fails_is_its_own_trouble_not_that_of_the_group_recorded_with_it(
    notifications, monkeypatch
) -> None:
    """The outcomes of a group sent together are recorded in one transaction. When recording one of them
    fails, the others are recorded one at a time: a suppressed email is told now, not when its claim lapses
    in ten minutes."""
    n = notifications
    started = _sender_held_back(monkeypatch)
    broken, unconsenting = uid("stu"), uid("stu")
    real_finish = handlers_module._finish

    async def finish_unless_broken(uow, notification, outcome, reason):
        if notification.recipient_id == broken:
            raise ValueError("recording broke")
        await real_finish(uow, notification, outcome, reason)

    monkeypatch.setattr(handlers_module, "_finish", finish_unless_broken)
    company, [vacancy] = await _company_with_vacancies(n, ["Procesoperator"])
    await n.student(broken)
    await n.student(unconsenting, email_consent=False)
    for student in (broken, unconsenting):
        await n.match(student, vacancy, company)
    await n.wait(lambda: _all_due(n, [broken, unconsenting, vacancy]))
    started.set()
    [suppressed] = await n.notices(lambda e: e.type == SUPPRESSED and e.data["recipient_id"] == unconsenting)
    assert suppressed.data["reason"] == "no email consent"
    await n.notices(lambda e: e.type == SENT and e.data["recipient_id"] == vacancy)
    assert len(n.mails_to(f"{broken}@")) == 1  # sent, once; its record is what failed


async def test_an_email_that_cannot_be_written_fails_alone_in_a_pass_written_together(
    notifications, monkeypatch
) -> None:
    """A pass writes its emails in one transaction; one that raises while being written (a template that
    breaks on its data) fails with its reason, and the others of the pass still go out."""
    n = notifications
    real_render = sender_module.render

    def render_unless_broken(template, language, name, *rest):
        if name == "Kapot":
            raise ValueError("the template broke")
        return real_render(template, language, name, *rest)

    monkeypatch.setattr(sender_module, "render", render_unless_broken)
    company, [vacancy] = await _company_with_vacancies(n, ["Elektromonteur"])
    before, broken, after = uid("stu"), uid("stu"), uid("stu")
    await n.student(before)
    await n.student(broken, name="Kapot")
    await n.student(after)
    for student in (before, broken, after):
        await n.match(student, vacancy, company)
    [failed] = await n.notices(lambda e: e.type == FAILED and e.data["recipient_id"] == broken)
    assert failed.data["error"] == "could not be written: ValueError"
    for student in (before, after):
        await n.notices(lambda e, s=student: e.type == SENT and e.data["recipient_id"] == s)
    assert not n.mails_to(f"{broken}@") and n.mails_to(f"{before}@") and n.mails_to(f"{after}@")


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


async def test_hostile_names_and_international_addresses_never_hold_up_anyone_elses_email(
    notifications,
) -> None:
    n = notifications
    company, [vacancy] = await _company_with_vacancies(n, ["Lasser TIG"])
    injected, idn, ordinary = uid("stu"), uid("stu"), uid("stu")
    await n.student(injected, name="Jan\r\nBcc: victim@evil.example")
    idn_email = await n.student(idn, email=f"{idn}@bücher.nl")
    ordinary_email = await n.student(ordinary)
    for student in (injected, idn, ordinary):
        await n.match(student, vacancy, company)
    [to_injected] = await n.wait(lambda: n.mails_to(f"{injected}@student.example.nl"))
    # The name is made safe: no header of its own; the email went out. (Other control characters never get
    # this far: events refuse them, see tests/shared/test_envelope.py.)
    assert "\n" not in str(to_injected["To"])
    assert to_injected["Bcc"] is None and "Beste Jan Bcc: victim@evil.example" in _text(to_injected)
    # An international domain is written in its IDNA form, which every server takes.
    [to_idn] = await n.wait(lambda: n.mails_to(f"{idn}@xn--bcher-kva.nl"))
    assert idn_email.endswith("bücher.nl") and to_idn["Subject"]
    await n.wait(lambda: n.mails_to(ordinary_email))


async def test_an_address_that_needs_smtputf8_fails_alone_where_the_server_does_not_offer_it(
    db_url, kafka_topics, tmp_path
) -> None:
    from techport_dev.smtp import SmtpSink

    with SmtpSink(tmp_path / "plain-mail", smtputf8=False) as plain_sink:
        async with running_notifications(db_url, kafka_topics, plain_sink, uid("notifications-utf8")) as n:
            company, [vacancy] = await _company_with_vacancies(n, ["Elektromonteur"])
            international, ordinary = uid("stu"), uid("stu")
            await n.student(international, email=f"josé-{international}@student.example.nl")
            ordinary_email = await n.student(ordinary)
            await n.match(international, vacancy, company)
            await n.match(ordinary, vacancy, company)
            [failed] = await n.notices(lambda e: e.type == FAILED and e.data["recipient_id"] == international)
            assert "SMTPUTF8" in failed.data["error"] and "@" not in failed.data["error"]  # no address in it
            assert failed.data["recipient_kind"] == "student"
            await n.wait(lambda: n.mails_to(ordinary_email))  # the next one is not held up
            [entry] = await _log(n, international)
            assert entry["status"] == "failed" and entry["attempts"] == 0  # refused for good: not retried


async def test_a_student_whose_id_looks_like_another_recipient_gets_only_its_own_mail(notifications) -> None:
    n = notifications
    company, [vacancy] = await _company_with_vacancies(n, ["Procesoperator"])
    lookalike = f"vacancy:{vacancy}"  # ids may hold ':'; recipients are typed, so this is a student only
    lookalike_email = await n.student(lookalike)
    candidate = uid("stu")
    await n.student(candidate)
    await n.match(candidate, vacancy, company)
    [to_contact] = await n.wait(lambda: n.mails_to(f"hr-{vacancy}@"))
    assert "Sanne" in _text(to_contact)
    await asyncio.sleep(1.5)
    assert n.mails_to(lookalike_email) == []  # the vacancy's candidates go to its contact only
    # Erasing the look-alike student leaves the vacancy's contact as it was.
    await n.send(STUDENTS_TOPIC, "student.erased", {"student_id": lookalike}, lookalike)
    later = uid("stu")
    await n.student(later)
    await n.match(later, vacancy, company)
    await n.wait(lambda: len(n.mails_to(f"hr-{vacancy}@")) == 2)
