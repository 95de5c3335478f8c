"""Positions a worker's phone shares during its alarm (signed by the phone, as its alarms
are; :mod:`server.mobile.positions` does the work)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import AwareDatetime, BaseModel, Field, ValidationError
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from server.mobile import positions
from server.mobile.signing import TIME, phone_time
from server.routes.deps import STRICT, Problem, ServicesDep, answers
from server.routes.mobile import REFUSED, AlarmPhone, AlertId, _errors

router = APIRouter(prefix="/api/v1", tags=["mobile button"], dependencies=STRICT)


class PositionIn(BaseModel):
    """One fix from the phone's Geolocation API."""

    latitude: float = Field(ge=-90, le=90, allow_inf_nan=False, description="degrees, WGS 84")
    longitude: float = Field(ge=-180, le=180, allow_inf_nan=False, description="degrees, WGS 84")
    accuracy: float = Field(
        gt=0,
        le=positions.WORST_ACCURACY,
        allow_inf_nan=False,
        description="metres: the radius of 95 % confidence (coords.accuracy)",
    )
    taken_at: AwareDatetime = Field(
        description="when the phone took the fix (its timestamp), on the phone's clock"
    )


ANSWERS: dict[int | str, dict[str, Any]] = {
    **REFUSED,
    **answers(400, 422),
    404: {"model": Problem, "description": "this phone raised no alarm with that id"},
    409: {"model": Problem, "description": "the alarm is over: stop sharing"},
    429: {
        "model": Problem,
        "description": "more than one position per 5 s for this alarm (see Retry-After)",
    },
}


@router.post(
    "/phone/alarms/{alert_id}/positions",
    status_code=204,
    response_class=Response,
    responses=ANSWERS,
)
async def share_position(
    alert_id: AlertId, request: Request, caller: AlarmPhone, services: ServicesDep
) -> Response:
    """Share where the phone is during its open alarm (every 15 s while it is open). The
    responders' map shows it; the log holds only that a position was shared. Not
    refused for the phone's clock (a fix's age is judged on it)."""
    try:
        body = PositionIn.model_validate_json(await request.body())
    except ValidationError as exc:
        raise HTTPException(422, _errors(exc)) from None
    fix = positions.Fix(body.latitude, body.longitude, body.accuracy, body.taken_at)
    now = services.clock.now()
    phone_now = phone_time(request.headers.get(TIME, ""))

    def keep() -> None:
        with services.sessions.begin() as s:
            positions.share(
                s,
                phone_id=caller.phone_id,
                alert_id=alert_id,
                fix=fix,
                now=now,
                phone_now=phone_now,
            )

    try:
        try:
            await run_in_threadpool(keep)
        except IntegrityError:
            # Another request kept a position of this alarm at the same moment: once more,
            # which now finds it (and is throttled, or logs nothing twice).
            await run_in_threadpool(keep)
    except positions.NoSuchAlarmError as exc:
        raise HTTPException(404, str(exc)) from None
    except positions.AlarmOverError as exc:
        raise HTTPException(409, str(exc)) from None
    except positions.BadFixError as exc:
        raise HTTPException(422, str(exc)) from None
    except positions.TooOftenError as exc:
        raise HTTPException(429, str(exc), headers={"Retry-After": str(exc.retry_after)}) from None
    return Response(status_code=204)
