"""Sending over kept SMTP connections, against a real SMTP server (aiosmtpd); no broker, no database."""

from __future__ import annotations

import asyncio
from email.message import EmailMessage

import aiosmtplib
import pytest
from techport_dev.smtp import SmtpSink
from techport_notifications.mailer import SmtpConnections
from techport_notifications.settings import SmtpSettings


def _message(n: int) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "noreply@techport.nl"
    message["To"] = f"student{n}@school.example.nl"
    message["Subject"] = f"Match {n}"
    message.set_content("Er is een match.")
    return message


async def test_emails_share_a_connection_and_one_the_server_dropped_is_replaced(tmp_path) -> None:
    with SmtpSink(tmp_path / "mail", idle_timeout_s=0.5) as sink:
        connections = SmtpConnections(SmtpSettings(host=sink.host, port=sink.port, timeout_s=5))
        for n in range(5):
            await connections.send(_message(n))
        assert len(sink.messages) == 5
        assert len(sink.handler.peers) == 1  # one connection carried all five
        await asyncio.sleep(1.0)  # the server drops the idle connection
        await connections.send(_message(5))
        assert [m["To"] for m in sink.messages][-1] == "student5@school.example.nl"
        assert len(sink.handler.peers) == 2
        connections.close()


async def test_concurrent_emails_open_a_connection_each_and_keep_them(tmp_path) -> None:
    with SmtpSink(tmp_path / "mail") as sink:
        connections = SmtpConnections(SmtpSettings(host=sink.host, port=sink.port, timeout_s=5))
        for start in (0, 4, 8):
            await asyncio.gather(*(connections.send(_message(start + n)) for n in range(4)))
        assert len(sink.messages) == 12
        assert len(sink.handler.peers) == 4
        connections.close()


async def test_a_refused_email_is_the_callers_to_judge_and_the_next_goes_on_a_new_connection(
    tmp_path,
) -> None:
    with SmtpSink(tmp_path / "mail") as sink:
        connections = SmtpConnections(SmtpSettings(host=sink.host, port=sink.port, timeout_s=5))
        await connections.send(_message(0))
        sink.handler.refusing = True
        with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
            await connections.send(_message(1))
        assert refused.value.code == 451
        sink.handler.refusing = False
        await connections.send(_message(2))
        assert [m["To"] for m in sink.messages] == [
            "student0@school.example.nl",
            "student2@school.example.nl",
        ]
        assert len(sink.handler.peers) == 2
        connections.close()
