"""Notifications' HTTP API: the delivery log (operators), and unsubscribing (the signed token in the link is
the credential, contract section 4).

A GET of the link shows a page with a button, in the recipient's language, and changes nothing: mail scanners
open links. The button, and a mail client's RFC 8058 one-click POST (`List-Unsubscribe=One-Click`, no
cookies, no login), unsubscribe; the page then offers to undo it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from pydantic import BaseModel
from techport_shared.envelope import Origin
from techport_shared.identity import service_identity
from techport_shared.messagebus import Context
from techport_shared.web import Bus, Caller, EntityId, RecipientId, UoW, request_id_of

from techport_notifications.handlers import Resubscribe, Unsubscribe
from techport_notifications.mailer import Unsubscribes, render_page
from techport_notifications.store import NotificationsUnitOfWork

router = APIRouter()
Token = Annotated[str, Query(max_length=500)]


class Delivery(BaseModel):
    notification_id: str
    recipient_id: str
    recipient_kind: str
    template: str
    status: str
    attempts: int
    last_error: str | None
    message_id: str
    created_at: datetime
    due_at: datetime
    finished_at: datetime | None


@router.get("/notifications", response_model=list[Delivery], summary="Delivery log of a recipient (operator)")
async def delivery_log(
    actor: Caller,
    uow: UoW,
    recipient_id: RecipientId,
    recipient_kind: Literal["student", "organisation", "vacancy_contact"] | None = None,
) -> list[Delivery]:
    if not actor.is_operator:
        raise HTTPException(403, detail="the delivery log is for operators")
    notifications_uow: NotificationsUnitOfWork = uow  # type: ignore[assignment]
    rows = await notifications_uow.notifications.log(recipient_id, recipient_kind)
    return [Delivery.model_validate(row, from_attributes=True) for row in rows]


@router.get("/students/{student_id}/export", summary="Everything notifications holds about a student")
async def export_student(student_id: EntityId, actor: Caller, uow: UoW) -> dict[str, Any]:
    """For the gateway's export (which checked the caller's right with members first) and operators."""
    if not (actor.role == "service" or actor.is_operator):
        raise HTTPException(403, detail="through the gateway's export")
    notifications_uow: NotificationsUnitOfWork = uow  # type: ignore[assignment]
    return await notifications_uow.notifications.export_student(student_id)


def _unsubscribes(request: Request) -> Unsubscribes:
    found: Unsubscribes = request.app.state.unsubscribes
    return found


def _page(request: Request, state: str, lang: str, token: str, status: int = 200) -> HTMLResponse:
    public_url = request.app.state.public_url
    return HTMLResponse(render_page(state, lang, token, public_url), status_code=status)


@router.get("/unsubscribe", response_class=HTMLResponse, summary="The page of an unsubscribe link")
async def unsubscribe_page(request: Request, token: Token) -> HTMLResponse:
    read = _unsubscribes(request).read(token)
    if read is None:
        return _page(request, "invalid", _lang(request), "", 400)
    return _page(request, "confirm", read.lang, token)


@router.post(
    "/unsubscribe", summary="Unsubscribe: the page's button, or a mail client's one-click (RFC 8058)"
)
async def unsubscribe(request: Request, bus: Bus) -> Response:
    form = await _form(request)
    token = str(request.query_params.get("token") or form.get("token") or "")[:500]
    one_click = form.get("List-Unsubscribe") == "One-Click"
    read = _unsubscribes(request).read(token)
    if read is None:
        if one_click:
            return PlainTextResponse("invalid unsubscribe token", status_code=400)
        return _page(request, "invalid", _lang(request), "", 400)
    await bus.handle(Unsubscribe(read.recipient, read.address), _anyone(request))
    if one_click:
        return PlainTextResponse("unsubscribed")
    return _page(request, "done", read.lang, token)


@router.post("/unsubscribe/undo", summary="Receive email again")
async def resubscribe(request: Request, bus: Bus) -> HTMLResponse:
    form = await _form(request)
    token = str(form.get("token") or request.query_params.get("token") or "")[:500]
    read = _unsubscribes(request).read(token)
    if read is None:
        return _page(request, "invalid", _lang(request), "", 400)
    await bus.handle(Resubscribe(read.recipient, read.address), _anyone(request))
    return _page(request, "undone", read.lang, token)


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form (the page's button, a mail client's one-click): small, read without a library."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return {}
    body = (await request.body())[:4096].decode("utf-8", "replace")
    return {name: values[0] for name, values in parse_qs(body).items() if values}


def _lang(request: Request) -> str:
    return "en" if request.headers.get("accept-language", "").lower().startswith("en") else "nl"


def _anyone(request: Request) -> Context:
    """The context of a request that carries no identity: the signed token is the credential."""
    return Context(service_identity("notifications"), Origin.of_request(request_id_of(request)))
