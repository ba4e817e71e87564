"""Writing and sending email: Jinja2 templates with an HTML and a plain-text part, in Dutch (default) or
English; a stable Message-ID per notification; an unsubscribe link and List-Unsubscribe headers;
aiosmtplib."""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr, formatdate
from typing import Any

import aiosmtplib
from itsdangerous import BadData, URLSafeSerializer
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

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
        "why": "Je ontvangt deze e-mail via Techport IJmond.",
        "unsubscribe": "Afmelden",
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
        "why": "You receive this email through Techport IJmond.",
        "unsubscribe": "Unsubscribe",
    },
}

_environment = Environment(
    loader=PackageLoader("techport_notifications", "templates"),
    autoescape=select_autoescape(["html.j2"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


def render(
    template: str, language: str, name: str, items: list[dict[str, Any]], unsubscribe_url: str
) -> Rendered:
    texts = TEXTS["en" if language == "en" else "nl"]
    context = {
        "t": texts,
        "lang": "en" if language == "en" else "nl",
        "name": name,
        "items": items,
        "unsubscribe_url": unsubscribe_url,
        "subject": texts[template],
    }
    return Rendered(
        subject=texts[template],
        text=_environment.get_template(f"{template}.txt.j2").render(context),
        html=_environment.get_template(f"{template}.html.j2").render(context),
    )


class Unsubscribes:
    """Signed, tamper-proof unsubscribe tokens (itsdangerous)."""

    def __init__(self, secret: str, public_url: str) -> None:
        self._serializer = URLSafeSerializer(secret, salt="techport-unsubscribe")
        self._public_url = public_url.rstrip("/")

    def token(self, recipient_id: str) -> str:
        return self._serializer.dumps({"r": recipient_id})

    def url(self, recipient_id: str) -> str:
        return f"{self._public_url}/unsubscribe?token={self.token(recipient_id)}"

    def recipient(self, token: str) -> str | None:
        try:
            data = self._serializer.loads(token)
        except (BadData, ValueError, UnicodeError):
            return None
        recipient = data.get("r") if isinstance(data, dict) else None
        return recipient if isinstance(recipient, str) else None


def build_message(
    sender: str, to_name: str, to_email: str, message_id: str, rendered: Rendered, unsubscribe_url: str
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = formataddr((to_name, to_email))
    message["Subject"] = rendered.subject
    message["Date"] = formatdate(localtime=False)
    # Stable per notification: a resend after a crash carries the same id, so mail systems can drop it.
    message["Message-ID"] = message_id
    message["List-Unsubscribe"] = f"<{unsubscribe_url}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    return message


async def send(settings: SmtpSettings, message: EmailMessage) -> None:
    await aiosmtplib.send(
        message,
        hostname=settings.host,
        port=settings.port,
        # An empty value (a deployment that sets the variable blank) means no login.
        username=settings.username or None,
        password=(settings.password.get_secret_value() or None) if settings.password else None,
        start_tls=settings.starttls,
        use_tls=settings.use_tls,
        timeout=settings.timeout_s,
    )
