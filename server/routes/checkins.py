"""A phone's check-in sessions: start one before a job outside, extend it, check out.

Every request is signed by the phone (:data:`server.routes.mobile.Phone`). A session
not closed 5 minutes after its end raises a "missed check-out" alarm; reminders come
by SMS 10 and 2 minutes before the end (:mod:`server.mobile.timer`).

A revoked phone's running session is not closed by the revocation: its timer still
protects the worker (the missed check-out alarm goes as planned), but the phone can
no longer check out, extend or start anything (401), so staff are paged 5 minutes
after its end, as for any worker who did not check out.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Response
from pydantic import BaseModel, Field

from panicbutton.wire import ALERT_ID_RE
from server.mobile.checkins import (
    NOTE_MAX,
    CheckinConflictError,
    CheckinError,
    NoCheckinError,
    PinLockedError,
    WrongPinError,
)
from server.routes.deps import STRICT, NoNulStr, Problem, ServicesDep, answers
from server.routes.mobile import REFUSED, Checkin, Phone

router = APIRouter(prefix="/api/v1", tags=["mobile button"], dependencies=STRICT)
ClientId = Annotated[
    str, Path(pattern=ALERT_ID_RE.pattern, description="the session's id, made by the page")
]
NO_CHECKIN: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "this phone has no check-in with that id"}
}
WRONG_PIN: dict[int | str, dict[str, Any]] = {
    403: {"model": Problem, "description": "wrong PIN (counted)"},
    429: {
        "model": Problem,
        "description": "5 wrong PINs in a row: checking out and extending are refused for "
        "15 minutes (Retry-After); the session keeps running",
    },
}
END = "when the job should be over (ISO 8601 with a zone): 5 minutes to 24 hours from now"


class StartIn(BaseModel):
    client_id: str = Field(
        pattern=ALERT_ID_RE.pattern,
        description="32 hex digits made by the page: sending the same start again is a no-op",
    )
    ends_at: datetime = Field(description=END)
    note: NoNulStr = Field(
        default="",
        max_length=NOTE_MAX,
        description="what the worker chooses to share with staff (an address, a note); "
        "kept with the session, never in the log",
    )


PIN = "the check-out PIN (the duress PIN does the same, and silently raises an alarm)"


class ExtendIn(BaseModel):
    ends_at: datetime = Field(description=END)
    pin: str = Field(min_length=1, max_length=8, description=PIN)


class CheckoutIn(BaseModel):
    pin: str = Field(min_length=1, max_length=8, description=PIN)


def _refused(exc: CheckinError) -> HTTPException:
    """The answer for a refusal of :mod:`server.mobile.checkins`."""
    if isinstance(exc, NoCheckinError):
        return HTTPException(404, str(exc))
    if isinstance(exc, CheckinConflictError):
        return HTTPException(409, str(exc))
    if isinstance(exc, WrongPinError):
        return HTTPException(403, str(exc))
    if isinstance(exc, PinLockedError):
        return HTTPException(429, str(exc), headers={"Retry-After": str(exc.retry_after)})
    return HTTPException(422, str(exc))


@router.post(
    "/phone/checkins",
    status_code=201,
    response_model=Checkin,
    responses={
        **REFUSED,
        **answers(400, 422),
        200: {"model": Checkin, "description": "this client_id started a session already"},
        409: {"model": Problem, "description": "another check-in is running on this phone"},
    },
)
def start(body: StartIn, caller: Phone, services: ServicesDep, response: Response) -> Checkin:
    """Start a check-in session before a job outside: the worker counts as present until
    they check out, gets reminders by SMS 10 and 2 minutes before the end, and staff are
    paged if they have not checked out 5 minutes after it. Sending the same client_id
    again answers the session it started (200)."""
    try:
        view, new = services.checkins.start(
            phone_id=caller.phone_id,
            client_id=body.client_id,
            ends_at=body.ends_at,
            note=body.note,
        )
    except CheckinError as exc:
        raise _refused(exc) from None
    if not new:
        response.status_code = 200
    return Checkin.model_validate(view)


@router.post(
    "/phone/checkins/{client_id}/extend",
    response_model=Checkin,
    responses={
        **REFUSED,
        **answers(400, 422),
        **NO_CHECKIN,
        **WRONG_PIN,
        409: {"model": Problem, "description": "the session is over (closed or missed)"},
    },
)
def extend(client_id: ClientId, body: ExtendIn, caller: Phone, services: ServicesDep) -> Checkin:
    """Set a new end for a running session (5 minutes to 24 hours from now) with the PIN,
    as for a check-out (wrong PINs count toward the same lock); its reminders start
    again for the new end. The duress PIN extends alike, with the same answer, and
    silently raises an alarm (once per session)."""
    try:
        view = services.checkins.extend(
            phone_id=caller.phone_id, client_id=client_id, ends_at=body.ends_at, pin=body.pin
        )
    except CheckinError as exc:
        raise _refused(exc) from None
    return Checkin.model_validate(view)


@router.post(
    "/phone/checkins/{client_id}/checkout",
    response_model=Checkin,
    responses={
        **REFUSED,
        **answers(400, 422),
        **NO_CHECKIN,
        **WRONG_PIN,
    },
)
def checkout(
    client_id: ClientId, body: CheckoutIn, caller: Phone, services: ServicesDep
) -> Checkin:
    """Check out of a session with the PIN. A session checked out already answers as
    it is; one whose alarm went stays ``missed``. A revoked phone cannot check out
    (401): its session keeps running, and alarms at its end."""
    try:
        view = services.checkins.check_out(
            phone_id=caller.phone_id, client_id=client_id, pin=body.pin
        )
    except CheckinError as exc:
        raise _refused(exc) from None
    return Checkin.model_validate(view)
