"""Writing and sending email: Jinja2 templates with an HTML and a plain-text part, in Dutch (default) or
English; a stable Message-ID per notification; the correlation id of what it reports on; an unsubscribe link
with RFC 8058 one-click headers; aiosmtplib, with SMTPUTF8 where an address needs it and the server offers
it. And the unsubscribe page a person sees when they open that link.
"""

from __future__ import annotations

import email.policy
import time
from dataclasses import dataclass
from email.headerregistry import Address, BaseHeader, HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

import aiosmtplib
from itsdangerous import BadData, URLSafeSerializer
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from techport_notifications.domain import MailAddress, Recipient, address_fingerprint, safe_name
from techport_notifications.settings import SmtpSettings

TEXTS: dict[str, dict[str, str]] = {
    "nl": {
        "greeting": "Beste",
        "signoff": "Met vriendelijke groet,",
        "student_matches": "Nieuwe vacatures die bij je passen",
        "student_intro": "We hebben nieuwe plekken gevonden die bij jouw vaardigheden passen:",
        "vacancy_candidates": "Nieuwe kandidaten voor uw vacature",
        "vacancy_intro": "Er zijn nieuwe kandidaten die bij uw vacature passen:",
        "partnership_formed": "Nieuw partnerschap via Techport",
        "partnership_intro": "U heeft een partnerschap gesloten met",
        "matched_skills": "Passende vaardigheden",
        "view_match": "Bekijk de vacature",
        "view_candidate": "Bekijk de kandidaat",
        "view_partnership": "Bekijk het partnerschap",
        "why": "Je ontvangt deze e-mail via Techport IJmond.",
        "unsubscribe": "Afmelden",
        "page_title": "Afmelden voor e-mail van Techport",
        "confirm": "Wilt u geen e-mail meer van Techport IJmond ontvangen op dit adres?",
        "button": "Afmelden",
        "done": "U bent afgemeld. U ontvangt geen e-mail meer van Techport IJmond op dit adres.",
        "undo_button": "Toch weer e-mail ontvangen",
        "undone": "U ontvangt weer e-mail van Techport IJmond.",
        "invalid": "Deze afmeldlink is niet (meer) geldig.",
    },
    "en": {
        "greeting": "Dear",
        "signoff": "Kind regards,",
        "student_matches": "New vacancies that fit you",
        "student_intro": "We found new places that fit your skills:",
        "vacancy_candidates": "New candidates for your vacancy",
        "vacancy_intro": "There are new candidates who fit your vacancy:",
        "partnership_formed": "New partnership through Techport",
        "partnership_intro": "You formed a partnership with",
        "matched_skills": "Matching skills",
        "view_match": "View the vacancy",
        "view_candidate": "View the candidate",
        "view_partnership": "View the partnership",
        "why": "You receive this email through Techport IJmond.",
        "unsubscribe": "Unsubscribe",
        "page_title": "Unsubscribe from Techport email",
        "confirm": "Do you want to stop receiving email from Techport IJmond at this address?",
        "button": "Unsubscribe",
        "done": "You are unsubscribed. You will receive no more email from Techport IJmond at this address.",
        "undo_button": "Receive email again",
        "undone": "You will receive email from Techport IJmond again.",
        "invalid": "This unsubscribe link is not valid (any more).",
    },
}

_environment = Environment(
    loader=PackageLoader("techport_notifications", "templates"),
    autoescape=select_autoescape(["html.j2"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def language(code: str | None) -> str:
    return "en" if code == "en" else "nl"


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


def render(
    template: str,
    lang: str,
    name: str,
    items: list[dict[str, Any]],
    unsubscribe_url: str,
    portal_url: str,
) -> Rendered:
    texts = TEXTS[language(lang)]
    context = {
        "t": texts,
        "lang": language(lang),
        "name": safe_name(name),
        "items": items,
        "unsubscribe_url": unsubscribe_url,
        "portal_url": portal_url.rstrip("/"),
        "subject": texts[template],
    }
    return Rendered(
        subject=texts[template],
        text=_environment.get_template(f"{template}.txt.j2").render(context),
        html=_environment.get_template(f"{template}.html.j2").render(context),
    )


def render_page(state: str, lang: str, token: str, public_url: str) -> str:
    """The unsubscribe page: a button to confirm (a GET changes nothing: mail scanners open links), then a
    way back."""
    base = public_url.rstrip("/")
    return _environment.get_template("unsubscribe.html.j2").render(
        t=TEXTS[language(lang)],
        lang=language(lang),
        state=state,
        token=token,
        action=f"{base}/unsubscribe",
        undo_action=f"{base}/unsubscribe/undo",
    )


@dataclass(frozen=True)
class UnsubscribeToken:
    recipient: Recipient
    address: str  # domain.address_fingerprint of the address the email went to
    lang: str


class Unsubscribes:
    """Signed, tamper-proof unsubscribe tokens (itsdangerous), bound to the recipient (kind and id) and the
    address the email went to; they hold no personal data in the clear."""

    def __init__(self, secret: str, public_url: str) -> None:
        self._serializer = URLSafeSerializer(secret, salt="techport-unsubscribe-v2")
        self._public_url = public_url.rstrip("/")

    def token(self, recipient: Recipient, email: str, lang: str) -> str:
        return self._serializer.dumps(
            {"k": recipient.kind, "r": recipient.id, "a": address_fingerprint(email), "l": language(lang)}
        )

    def url(self, recipient: Recipient, email: str, lang: str) -> str:
        return f"{self._public_url}/unsubscribe?token={self.token(recipient, email, lang)}"

    def read(self, token: str) -> UnsubscribeToken | None:
        try:
            data = self._serializer.loads(token)
        except (BadData, ValueError, UnicodeError):
            return None
        if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("k", "r", "a")):
            return None
        if data["k"] not in ("student", "organisation", "vacancy_contact"):
            return None
        return UnsubscribeToken(Recipient(data["k"], data["r"]), data["a"], language(data.get("l")))


class _OneLineHeader(UnstructuredHeader, BaseHeader):
    """A header whose value is one token that must reach the reader as written: List-Unsubscribe's `<URL>`.

    The standard policy folds a line over 78 characters, and a token it cannot break it writes as RFC 2047
    encoded words (`=?utf-8?q?=3Chttp=3A//...`). Mail clients read List-Unsubscribe (RFC 2369, one-click:
    RFC 8058) as URLs in angle brackets and do not decode those words, so their unsubscribe button did not
    find our link. Written on one line instead (RFC 5322 allows up to 998 characters); a value that is not
    plain printable ASCII is folded the standard way."""

    def fold(self, *, policy: Any) -> str:
        value = str(self)
        line = f"{self.name}: {value}"
        if value.isascii() and value.isprintable() and len(line) <= 998:
            return line + policy.linesep
        return super().fold(policy=policy)


class _HeaderClasses(HeaderRegistry):
    """The standard header registry, making each header's class once. CPython's makes a new class with
    `type()` for every header set (email.headerregistry.HeaderRegistry.__getitem__): building an email took
    1.8 ms, most of it there, and 0.6 ms with the classes kept (the bytes sent are the same, but for
    List-Unsubscribe: see `_OneLineHeader`)."""

    def __init__(self) -> None:
        super().__init__()
        self.map_to_type("list-unsubscribe", _OneLineHeader)
        self._made: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        made = self._made.get(key)
        if made is None:
            made = super().__getitem__(name)
            if len(self._made) < 64:  # our own header names: a handful
                self._made[key] = made
        return made


POLICY = email.policy.default.clone(header_factory=_HeaderClasses())


def build_message(
    sender: str,
    to_name: str,
    to: MailAddress,
    message_id: str,
    rendered: Rendered,
    unsubscribe_url: str,
    correlation_id: str | None,
) -> EmailMessage:
    """The email. Every header value is safe by construction: the name is cleaned of line breaks and control
    characters, the address is split into local part and (IDNA) domain, never parsed from a string."""
    message = EmailMessage(policy=POLICY)
    message["From"] = sender
    message["To"] = Address(safe_name(to_name), username=to.local, domain=to.domain)
    message["Subject"] = rendered.subject
    message["Date"] = formatdate(localtime=False)
    # Stable per notification: a resend after a crash carries the same id, so mail systems can drop it.
    message["Message-ID"] = message_id
    message["List-Unsubscribe"] = f"<{unsubscribe_url}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    if correlation_id:
        # Which event this email comes from: it can be followed back to the partner's event.
        message["X-Techport-Correlation-Id"] = safe_name(correlation_id)
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    return message


class SmtpConnections:
    """Connections to the SMTP server, kept open from one email to the next: a cohort's emails go out
    without a connect, EHLO, STARTTLS, login and QUIT each (a new connection per email made sending the
    slowest part of a burst). A connection carries one email at a time; the sender's concurrency bounds how
    many are open.

    A connection is left after `MAX_MESSAGES` emails (servers limit a session) or `IDLE_S` unused (servers
    drop idle clients), and after any error: the next email gets a new one. An email that finds its kept
    connection dropped by the server is sent once more on a new one; every other failure is the caller's to
    judge."""

    MAX_MESSAGES = 100
    IDLE_S = 20.0

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self._idle: list[tuple[aiosmtplib.SMTP, float, int]] = []  # connection, idle since, emails sent

    async def send(self, message: EmailMessage) -> None:
        """Send over SMTP. An address that needs SMTPUTF8 goes out with it where the server offers it; where
        it does not, aiosmtplib raises SMTPNotSupported, which the sender records as a failure with its
        reason."""
        kept = self._take()
        if kept is not None:
            try:
                await self._send_on(*kept, message)
                return
            except aiosmtplib.SMTPServerDisconnected:
                pass  # the server let it go while it waited: once more, on a new connection
        await self._send_on(await self._connect(), 0, message)

    async def _send_on(self, smtp: aiosmtplib.SMTP, sent: int, message: EmailMessage) -> None:
        """Send on `smtp` (which has carried `sent` emails), then keep it; closed on any failure."""
        try:
            await smtp.send_message(message)
        except BaseException:
            smtp.close()
            raise
        await self._keep(smtp, sent + 1)

    def close(self) -> None:
        """Drop the kept connections (at shutdown: a server takes a connection closed without QUIT)."""
        idle, self._idle = self._idle, []
        for smtp, _, _ in idle:
            smtp.close()

    def _take(self) -> tuple[aiosmtplib.SMTP, int] | None:
        while self._idle:
            smtp, since, sent = self._idle.pop()
            if smtp.is_connected and time.monotonic() - since < self.IDLE_S:
                return smtp, sent
            smtp.close()
        return None

    async def _keep(self, smtp: aiosmtplib.SMTP, sent: int) -> None:
        if sent < self.MAX_MESSAGES and smtp.is_connected:
            self._idle.append((smtp, time.monotonic(), sent))
            return
        try:
            await smtp.quit()
        except Exception:
            smtp.close()

    async def _connect(self) -> aiosmtplib.SMTP:
        settings = self.settings
        smtp = aiosmtplib.SMTP(
            hostname=settings.host,
            port=settings.port,
            # An empty value (a deployment that sets the variable blank) means no login.
            username=settings.username or None,
            password=(settings.password.get_secret_value() or None) if settings.password else None,
            start_tls=settings.starttls,
            use_tls=settings.use_tls,
            timeout=settings.timeout_s,
        )
        try:
            await smtp.connect()
        except BaseException:
            smtp.close()  # connected, then refused at STARTTLS or login
            raise
        return smtp
