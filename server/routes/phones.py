"""One's own phone: ask for a code, enter it to confirm the number, send oneself a
test page (:mod:`server.phones`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from server.people.roles import Role
from server.phones import NoCodeError, NoPhoneError, TooManyError, WrongCodeError
from server.routes.deps import STRICT, Me, Problem, ServicesDep, answers

router = APIRouter(
    prefix="/api/v1/me", tags=["me"], responses=answers(400, 401, 403), dependencies=STRICT
)
NO_PHONE: dict[int | str, dict[str, Any]] = {
    409: {"model": Problem, "description": "no number, or not in the state this needs"}
}
TOO_MANY: dict[int | str, dict[str, Any]] = {
    429: {
        "model": Problem,
        "description": "a code went less than a minute ago, or five in the last day "
        "(Retry-After says when to ask again)",
    }
}


class CodeSent(BaseModel):
    #: When the code stops being good (10 minutes after it was sent).
    expires_at: datetime


class CodeIn(BaseModel):
    code: str = Field(pattern=r"^\s*\d{3}\s?\d{3}\s*$", description="the 6 digits sent by SMS")


class TestPageIn(BaseModel):
    #: Also place a test call (pages are an SMS and a call).
    call: bool = Field(default=False, strict=True)


class Done(BaseModel):
    detail: str


@router.post("/phone/code", response_model=CodeSent, responses={**NO_PHONE, **TOO_MANY})
async def send_code(me: Me, services: ServicesDep) -> CodeSent:
    """Text a 6-digit code to one's own number, to confirm it is theirs."""
    try:
        sent = await run_in_threadpool(services.phones.send_code, me.person_id)
    except NoPhoneError as exc:
        raise HTTPException(409, str(exc)) from None
    except TooManyError as exc:
        raise HTTPException(429, str(exc), headers={"Retry-After": str(exc.retry_after)}) from None
    return CodeSent(expires_at=sent.expires_at)


@router.post("/phone/confirm", response_model=Done, responses={**answers(400, 422), **NO_PHONE})
async def confirm(body: CodeIn, me: Me, services: ServicesDep) -> Done:
    """Enter the code: the number is confirmed and can be paged."""
    code = "".join(body.code.split())
    try:
        await run_in_threadpool(services.phones.confirm, me.person_id, code)
    except NoCodeError as exc:
        raise HTTPException(409, str(exc)) from None
    except WrongCodeError as exc:
        raise HTTPException(422, str(exc)) from None
    return Done(detail="your phone number is confirmed: alarm pages can reach it")


TEST_TOO_SOON: dict[int | str, dict[str, Any]] = {
    429: {
        "model": Problem,
        "description": "a test page went less than a minute ago (Retry-After says when "
        "to send another)",
    }
}


@router.post(
    "/test-page",
    status_code=202,
    response_model=Done,
    responses={**answers(400, 422), **NO_PHONE, **TEST_TOO_SOON},
)
async def send_test_page(me: Me, services: ServicesDep, body: TestPageIn | None = None) -> Done:
    """Send oneself a test page by SMS, and a call if asked (staff and managers), to know
    pages reach you."""
    if not me.roles & {Role.STAFF, Role.MANAGER}:
        raise HTTPException(403, "only staff and managers are paged, so only they send test pages")
    try:
        call = body is not None and body.call
        await run_in_threadpool(lambda: services.phones.test_page(me.person_id, call=call))
    except NoPhoneError as exc:
        raise HTTPException(409, str(exc)) from None
    except TooManyError as exc:
        raise HTTPException(429, str(exc), headers={"Retry-After": str(exc.retry_after)}) from None
    what = "a test SMS and a test call are" if call else "a test SMS is"
    return Done(detail=f"{what} on its way to your phone; it should arrive within a minute")
