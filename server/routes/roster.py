"""The site's configuration over HTTP: rooms, rosters, escalation (``/api/v1/site``).

Reading needs the ``board`` right; every change needs ``roster`` and is one new
version of the configuration (:mod:`server.roster.edit`): checked whole before it
is stored (422 naming the problem, nothing applied), refused when ``version`` is
not the version in force (409: someone changed it since you read it), and logged
as ``config.changed`` naming who made it. The next alarm follows it, on every
server sharing the database. People themselves (names, phones, roles) are
changed with the people API, not here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query
from pydantic import BaseModel, Field

from server.errors import SiteError
from server.people.auth import Principal
from server.people.roles import Right
from server.roster import edit
from server.roster.start import DIGEST_LABEL
from server.routes.deps import STRICT, Problem, ServicesDep, answers, need
from server.services import Services

router = APIRouter(
    prefix="/api/v1/site", tags=["site"], responses=answers(400, 401, 403), dependencies=STRICT
)

Reader = Annotated[Principal, Depends(need(Right.BOARD))]
Editor = Annotated[Principal, Depends(need(Right.ROSTER))]
#: What an edit can answer besides 200.
EDIT = {
    **answers(400, 401, 403, 422),
    409: {
        "model": Problem,
        "description": "the configuration changed since you read it (`version` is not the "
        "version in force): read it again and redo the change",
    },
}
IfMatch = Annotated[
    str | None,
    Header(description="the version you read (as ETag gave it); overrides `version`"),
]


class SiteOut(BaseModel):
    """The configuration in force: the site file's shape, staff without names or numbers."""

    version: int = Field(description="the version in force (0: not configured yet)")
    document: dict[str, Any]


class SiteIn(BaseModel):
    version: int = Field(ge=0, description="the version you read")
    document: dict[str, Any] = Field(description="the whole configuration (as GET gives it)")


class ShiftIn(BaseModel):
    staff: str
    days: list[str] | None = Field(default=None, description="mon..sun; every day if left out")
    start: str = Field(description='local time "HH:MM"')
    end: str = Field(description='local time "HH:MM"; before start: ends the next day')

    def table(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class ShiftEdit(BaseModel):
    version: int = Field(ge=0)
    shift: ShiftIn


class DutyIn(BaseModel):
    version: int = Field(ge=0)
    on_duty: list[str] | None = Field(default=None, description="always on duty")
    default: list[str] | None = Field(default=None, description="paged when nobody is on duty")


class StepIn(BaseModel):
    after: int
    who: str = "on_duty"
    channels: list[str] = ["sms", "call"]


class EscalationIn(BaseModel):
    version: int = Field(ge=0)
    steps: list[StepIn]
    repeat_every: int | None = None
    follow_up_after: int | None = None
    offline_repeat: int | None = None


class RoomIn(BaseModel):
    version: int = Field(ge=0)
    label: str
    device: str
    device_token_sha256: str | None = None


class TestIn(BaseModel):
    version: int = Field(ge=0)
    recipients: list[str]


def _expected(version: int, if_match: str | None) -> int:
    if if_match is None:
        return version
    try:
        return int(if_match.strip().removeprefix("W/").strip('"'))
    except ValueError:
        raise HTTPException(422, "If-Match must be the version number you read") from None


def _read(services: Services) -> SiteOut:
    with services.sessions() as s:
        version, doc = edit.current_document(s, services.clock.now())
    return SiteOut(version=version, document=doc)


def _change(
    services: Services,
    who: Principal,
    expected: int,
    change: Callable[[dict[str, Any]], dict[str, Any]],
    summary: str,
) -> SiteOut:
    now = services.clock.now()
    try:
        with services.sessions.begin() as s:
            version, doc = edit.current_document(s, now)
            if expected != version:
                raise edit.StaleVersionError(expected, version)
            edit.save(
                s,
                document=change(doc),
                by=who.person_id,
                now=now,
                expected=expected,
                retention=services.retention,
                digest_key=services.keeper.signer.derive(DIGEST_LABEL),
                summary=summary,
            )
    except edit.StaleVersionError as exc:
        raise HTTPException(409, str(exc)) from None
    except SiteError as exc:
        raise HTTPException(422, f"{exc}; nothing was changed") from None
    except LookupError as exc:
        raise HTTPException(422, f"{exc.args[0]}; nothing was changed") from None
    return _read(services)


@router.get("", responses=answers(401, 403))
def get_site(services: ServicesDep, _: Reader) -> SiteOut:
    """The configuration in force and its version (send it back with your change)."""
    return _read(services)


@router.put("", responses=EDIT)
def put_site(body: SiteIn, services: ServicesDep, who: Editor, if_match: IfMatch = None) -> SiteOut:
    """Replace the whole configuration (rooms, duty, escalation, test recipients)."""
    return _change(
        services,
        who,
        _expected(body.version, if_match),
        lambda _: body.document,
        "configuration replaced",
    )


@router.post("/shifts", responses=EDIT)
def add_shift(body: ShiftEdit, services: ServicesDep, who: Editor) -> SiteOut:
    """Add a weekly shift."""
    return _change(
        services,
        who,
        body.version,
        lambda d: edit.add_shift(d, body.shift.table()),
        f"shift added for {body.shift.staff}",
    )


@router.put("/shifts/{index}", responses=EDIT)
def replace_shift(index: int, body: ShiftEdit, services: ServicesDep, who: Editor) -> SiteOut:
    """Replace shift ``index`` (from 0, in the order GET lists them)."""
    return _change(
        services,
        who,
        body.version,
        lambda d: edit.replace_shift(d, index, body.shift.table()),
        f"shift {index} replaced",
    )


@router.delete("/shifts/{index}", responses=EDIT)
def remove_shift(
    index: int,
    services: ServicesDep,
    who: Editor,
    version: Annotated[int, Query(ge=0, description="the version you read")],
) -> SiteOut:
    """Remove shift ``index`` (from 0, in the order GET lists them)."""
    return _change(
        services, who, version, lambda d: edit.replace_shift(d, index, None), "shift removed"
    )


@router.put("/duty", responses=EDIT)
def set_duty(body: DutyIn, services: ServicesDep, who: Editor) -> SiteOut:
    """Set who is always on duty and/or the default group (a list left out stays)."""
    return _change(
        services,
        who,
        body.version,
        lambda d: edit.set_duty(d, on_duty=body.on_duty, default=body.default),
        "duty lists set",
    )


@router.put("/escalation", responses=EDIT)
def set_escalation(body: EscalationIn, services: ServicesDep, who: Editor) -> SiteOut:
    """Set the escalation steps (and, if given, the repeat and follow-up times)."""
    table = body.model_dump(exclude_none=True, exclude={"version"})
    return _change(
        services, who, body.version, lambda d: edit.set_escalation(d, table), "escalation set"
    )


@router.put("/rooms/{room_id}", responses=EDIT)
def put_room(room_id: str, body: RoomIn, services: ServicesDep, who: Editor) -> SiteOut:
    """Add a room, or change the label or unit of the room ``room_id``."""
    room = {"id": room_id, **body.model_dump(exclude_none=True, exclude={"version"})}
    return _change(
        services, who, body.version, lambda d: edit.put_room(d, room), f"room {room_id} set"
    )


@router.put("/test", responses=EDIT)
def set_test(body: TestIn, services: ServicesDep, who: Editor) -> SiteOut:
    """Set who a test alert pages (empty: the managers)."""
    return _change(
        services,
        who,
        body.version,
        lambda d: edit.set_test(d, body.recipients),
        "test recipients set",
    )
