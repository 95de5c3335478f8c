"""One's own kiosk PIN: what a person types at a reception screen to acknowledge as
themselves (:mod:`server.people.kiosk`). Only for people who respond, and only from a
signed-in browser, like a password."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from server.errors import PeopleError
from server.people.auth import Principal
from server.people.kiosk import LONGEST, SHORTEST, Pins
from server.people.roles import Right
from server.routes.deps import STRICT, ServicesDep, answers, need
from server.routes.me import _browser
from server.services import Services

router = APIRouter(
    prefix="/api/v1/me", tags=["own account"], responses=answers(400), dependencies=STRICT
)
Responder = Annotated[Principal, Depends(need(Right.RESPOND))]


def pins(services: Services) -> Pins:
    """The site's kiosk PINs."""
    return Pins(sessions=services.sessions, clock=services.clock)


class PinIn(BaseModel):
    """A new kiosk PIN."""

    pin: str = Field(
        min_length=SHORTEST,
        max_length=LONGEST,
        pattern=r"^[0-9]+$",
        description=f"{SHORTEST} to {LONGEST} digits; not one digit repeated, nor a run like 1234",
    )


@router.put(
    "/kiosk-pin",
    status_code=204,
    summary="Set or change your PIN for reception screens",
    responses=answers(401, 403, 422),
)
async def set_kiosk_pin(body: PinIn, principal: Responder, services: ServicesDep) -> None:
    _browser(principal)
    try:
        await run_in_threadpool(pins(services).set, principal.person_id, body.pin)
    except PeopleError as exc:
        raise HTTPException(422, str(exc)) from None


@router.delete(
    "/kiosk-pin",
    status_code=204,
    summary="Remove your PIN for reception screens",
    responses=answers(401, 403, 404),
)
async def remove_kiosk_pin(principal: Responder, services: ServicesDep) -> None:
    _browser(principal)
    if not await run_in_threadpool(pins(services).remove, principal.person_id):
        raise HTTPException(404, "you have no kiosk PIN")
