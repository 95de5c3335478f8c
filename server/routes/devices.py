"""The room units' HTTPS path: a second way in for alerts when the broker is out of reach.

Each unit has its own token (only its SHA-256 is in the site file). The body
is the same alert JSON as on MQTT and the answer the same feedback JSON; the
server de-duplicates across both paths by alert id, and also publishes the
feedback on MQTT (retained) so the unit's light agrees when its link returns.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from panicbutton.wire import ALERT_ID_RE, DEVICE_ID_RE, INT_MAX, VERSION, Alert, WireError
from server.routes.deps import ServicesDep, answers
from server.site import Room

router = APIRouter(prefix="/api/v1/devices", tags=["room units"], responses=answers(401))

_COUNT = {"type": "integer", "minimum": 1, "maximum": INT_MAX}
_TIME = {"type": "string", "format": "date-time"}
#: The alert and feedback JSON of docs/asyncapi.yaml, for the HTTP contract.
ALERT_SCHEMA = {
    "type": "object",
    "required": ["v", "device_id", "alert_id", "seq", "pressed_at"],
    "properties": {
        "v": {"const": VERSION},
        "device_id": {"type": "string", "pattern": DEVICE_ID_RE.pattern},
        "alert_id": {"type": "string", "pattern": ALERT_ID_RE.pattern},
        "seq": _COUNT,
        "pressed_at": _TIME,
        "kind": {"enum": ["panic", "test"], "default": "panic"},
        "presses": {**_COUNT, "default": 1},
    },
}
FEEDBACK_SCHEMA = {
    "type": "object",
    "required": ["v", "alert_id", "state", "at", "incident", "presses", "round"],
    "properties": {
        "v": {"const": VERSION},
        "alert_id": {"type": "string", "pattern": ALERT_ID_RE.pattern},
        "state": {"enum": ["received", "acknowledged", "resolved"]},
        "at": _TIME,
        "incident": {"type": "integer", "minimum": 0, "maximum": INT_MAX},
        "presses": _COUNT,
        "round": {"type": "integer", "minimum": 0, "maximum": INT_MAX},
    },
}
_bearer = HTTPBearer(auto_error=False)


def device_room(
    device_id: str,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Room:
    """The unit's room, once its token checks out (401 otherwise, saying nothing more)."""
    room = services.site.room_for_device(device_id)
    given = hashlib.sha256(credentials.credentials.encode()).hexdigest() if credentials else ""
    expected = room.token_sha256 if room is not None and room.token_sha256 else "-"
    if not hmac.compare_digest(given, expected) or room is None:
        raise HTTPException(
            401, "unknown unit or wrong token", headers={"WWW-Authenticate": "Bearer"}
        )
    return room


DeviceRoom = Annotated[Room, Depends(device_room)]


@router.post(
    "/{device_id}/alerts",
    response_class=Response,
    responses={
        200: {
            "description": "the feedback JSON, as on the MQTT feedback topic",
            "content": {"application/json": {"schema": FEEDBACK_SCHEMA}},
        },
        **answers(400, 403, 422),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ALERT_SCHEMA}},
        }
    },
)
async def post_alert(
    device_id: str, room: DeviceRoom, request: Request, services: ServicesDep
) -> Response:
    """An alert over HTTPS; answers with the feedback JSON, like the MQTT feedback topic."""
    body = await request.body()
    try:
        alert = Alert.from_json(body)
    except WireError as exc:
        raise HTTPException(422, str(exc)) from None
    if alert.device_id != room.device:
        raise HTTPException(403, "a unit may only alert for itself")
    # The alert service also publishes the feedback on MQTT, so the light agrees later.
    feedback = await run_in_threadpool(services.alerts.handle, alert)
    return Response(feedback.to_json(), media_type="application/json")


@router.get("/{device_id}/check", status_code=204)
def check(room: DeviceRoom) -> None:
    """For ``panicbutton device check``: the token and the path work."""
