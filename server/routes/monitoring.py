"""How the server is doing, for machines: ``/healthz`` (the process answers), ``/readyz``
(it can do its work: database, broker, Twilio) and ``/metrics`` (its figures, in
Prometheus' text format; :mod:`server.metrics`).

``/healthz`` is open to anyone, the one route of its kind, because a container's or
systemd's health check calls it without a secret, and it says nothing but ``ok``: no
version, no state, nothing of the site. ``/readyz`` and ``/metrics`` say more (which
part is down, how many alarms) and need a personal API token with the right
``monitoring`` (the role ``monitoring`` carries that right alone), sent as
``Authorization: Bearer``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError

from server.health import Health, Readiness
from server.people.auth import Principal
from server.people.roles import Right
from server.routes.deps import STRICT, ServicesDep, SettingsDep, answers, need, text_body

router = APIRouter(tags=["monitoring"], dependencies=STRICT)
_bearer = HTTPBearer(auto_error=False)
_need = need(Right.MONITORING)
NO_DATABASE = (
    "the database did not answer (API tokens are checked there, and the figures read): "
    "check that it runs and that PANICBUTTON_DATABASE_URL reaches it"
)


def monitor(
    request: Request,
    services: ServicesDep,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal | None:
    """The caller, who must hold the right ``monitoring`` (401 and 403 as
    :func:`~server.routes.deps.need`); None when the database, where the token is
    checked, does not answer: the route answers 503 saying so, not a bare 500."""
    try:
        return _need(request, services, settings, credentials)
    except SQLAlchemyError:
        return None


monitor.right = Right.MONITORING  # type: ignore[attr-defined]  # read by tests/server/test_rights.py
Monitor = Annotated[Principal | None, Depends(monitor)]


class Alive(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    """Each part: ``ok``, or what is wrong with it and what to look at."""

    status: Literal["ready", "not ready"]
    database: str
    broker: str
    twilio: str


@router.get("/healthz", summary="Liveness: the process answers", responses=answers(400))
async def healthz() -> Alive:
    """Liveness: the process answers HTTP. Open to anyone, without a token (a container's
    or systemd's health check has none), so it says ``ok`` and nothing else; whether the
    server can do its work is ``GET /readyz``."""
    return Alive(status="ok")


@router.get(
    "/readyz",
    summary="Readiness: the database, the broker, Twilio",
    response_model=Ready,
    responses={
        503: {"model": Ready, "description": "not ready: each part that is not ok says why"},
        **answers(400, 401, 403),
    },
)
def readyz(request: Request, who: Monitor) -> Ready | JSONResponse:
    """Readiness: the database answers ``SELECT 1``, the server is connected to the MQTT
    broker, and Twilio answers a GET of the account with the server's credentials
    (asked at most every 30 s). 200 when all three are ok; 503 naming each that is not."""
    if who is None:
        unknown = "not checked: the caller's token could not be checked"
        found = Readiness(database=NO_DATABASE, broker=unknown, twilio=unknown)
    else:
        health: Health = request.app.state.health
        found = health.check()
    answer = Ready(
        status="not ready" if found.failed() else "ready",
        database=found.database,
        broker=found.broker,
        twilio=found.twilio,
    )
    if found.failed():
        return JSONResponse(answer.model_dump(), status_code=503)
    return answer


@router.get(
    "/metrics",
    summary="The server's figures, for Prometheus",
    response_class=Response,
    responses={
        200: text_body("text/plain", description="the figures, in Prometheus' text format"),
        **answers(400, 401, 403, 503),
    },
)
def metrics(services: ServicesDep, who: Monitor) -> Response:
    """The server's figures for Prometheus: alarms taken, pages and what became of them,
    the time to a first page and to an acknowledgement, what is queued, units online, the
    log's length. No personal data (docs/install/server.md, Monitoring)."""
    if who is None:
        raise HTTPException(503, NO_DATABASE)
    try:
        body = services.metrics.exposition()
    except SQLAlchemyError:
        raise HTTPException(503, NO_DATABASE) from None
    return Response(body, media_type=CONTENT_TYPE_LATEST)
