"""Notifications' HTTP API: the delivery log (operators) and unsubscribing (the signed token is the
credential)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel
from techport_shared.web import Caller, RecipientId, UoW

from techport_notifications.service import Notifications
from techport_notifications.store import NotificationsRepository


def notifications(request: Request) -> Notifications:
    service: Notifications = request.app.state.notifications
    return service


Service = Annotated[Notifications, Depends(notifications)]
router = APIRouter()


class Delivery(BaseModel):
    notification_id: str
    recipient_id: str
    template: str
    status: str
    attempts: int
    last_error: str | None
    message_id: str
    created_at: datetime
    due_at: datetime
    finished_at: datetime | None


@router.get("/notifications", response_model=list[Delivery], summary="Delivery log of a recipient (operator)")
async def delivery_log(actor: Caller, uow: UoW, recipient_id: RecipientId) -> list[Delivery]:
    if not actor.is_operator:
        raise HTTPException(403, detail="the delivery log is for operators")
    rows = await NotificationsRepository(uow.session).log(recipient_id)
    return [Delivery.model_validate(row, from_attributes=True) for row in rows]


@router.get("/unsubscribe", summary="Stop email for the recipient the signed token names")
async def unsubscribe(uow: UoW, service: Service, token: str = Query(..., max_length=500)) -> dict[str, str]:
    recipient_id = await service.unsubscribe(uow, token)
    if recipient_id is None:
        raise HTTPException(400, detail="invalid unsubscribe token")
    return {"status": "unsubscribed"}
