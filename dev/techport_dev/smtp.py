"""An SMTP sink (aiosmtpd) that captures every message: one `.eml` file per message, and in memory."""

from __future__ import annotations

import email
import email.policy
import threading
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from techport_dev.kafka import free_port


class CapturingHandler:
    """Keeps each message's bytes as they came, and parses them when they are read (`messages`): parsing
    with the standard policy costs milliseconds a message, which a benchmark's sink taking fifty emails a
    second would take from the services it measures, on the same cores."""

    def __init__(self, mail_dir: Path | None) -> None:
        self.mail_dir = mail_dir
        self._received: list[bytes] = []
        self._parsed: list[EmailMessage] = []
        self.refusing = False  # tests turn this on to make the server answer 451 (try again later)
        self.peers: set[Any] = set()  # the client ends of the connections that delivered mail
        self._lock = threading.Lock()
        if mail_dir is not None:
            mail_dir.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.refusing:
            return "451 4.3.0 Temporarily refusing mail (test sink)"
        raw = envelope.original_content or b""
        with self._lock:
            self.peers.add(session.peer)
            self._received.append(raw)
            if self.mail_dir is not None:
                name = f"{len(self._received):06d}-{uuid.uuid4().hex[:8]}.eml"
                (self.mail_dir / name).write_bytes(raw)
        return "250 Message accepted for delivery"

    @property
    def received(self) -> int:
        """How many messages came, without parsing them."""
        with self._lock:
            return len(self._received)

    @property
    def messages(self) -> list[EmailMessage]:
        """Every message received so far, in order (those not read before parsed now)."""
        with self._lock:
            for raw in self._received[len(self._parsed) :]:
                message = email.message_from_bytes(raw, policy=email.policy.default)
                assert isinstance(message, EmailMessage)
                self._parsed.append(message)
            return list(self._parsed)


class SmtpSink:
    def __init__(
        self,
        mail_dir: Path | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        smtputf8: bool = True,
        idle_timeout_s: float = 300.0,
    ) -> None:
        """`smtputf8`: offer SMTPUTF8 (international addresses), as Mailpit and most servers do; a test turns
        it off to see how an address that needs it is handled by a server without it. `idle_timeout_s`: a
        client silent this long is disconnected (RFC 5321's five minutes by default)."""
        self.host = host
        self.port = port or free_port()
        self.smtputf8 = smtputf8
        self.idle_timeout_s = idle_timeout_s
        self.handler = CapturingHandler(mail_dir)
        self._controller: Controller | None = None

    @property
    def messages(self) -> list[EmailMessage]:
        return self.handler.messages

    @property
    def received(self) -> int:
        return self.handler.received

    def start(self) -> SmtpSink:
        kwargs: dict[str, Any] = {
            "hostname": self.host,
            "port": self.port,
            "enable_SMTPUTF8": self.smtputf8,
            "timeout": self.idle_timeout_s,
        }
        self._controller = Controller(self.handler, **kwargs)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
