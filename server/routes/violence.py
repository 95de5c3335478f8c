"""The register of third-party violence over HTTP: a manager records and withdraws
entries and exports the register (CSV or PDF) for the prevention adviser; a worker
sees the entries naming them and gives or withdraws consent to show who they are."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from panicbutton.log.report import _neutralise
from server.errors import PeopleError
from server.people import violence
from server.people.auth import Principal
from server.people.roles import Right, Role
from server.routes.deps import (
    STRICT,
    IncidentId,
    Me,
    Problem,
    ServicesDep,
    answers,
    need,
    text_body,
)
from server.services import Services

router = APIRouter(
    prefix="/api/v1", tags=["violence"], responses=answers(400, 401, 403), dependencies=STRICT
)
Reviewer = Annotated[Principal, Depends(need(Right.REVIEW))]
#: A Unicode TrueType font, so that any name prints (Debian: fonts-dejavu-core).
FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": Problem, "description": "already so: recorded, or consent given"}
}
COLUMNS = ("incident", "date", "room", "kind", "outcome", "account", "worker")


class EntryIn(BaseModel):
    incident_id: int = Field(ge=1, le=2**31 - 1)
    #: What happened, in the manager's words (no names unless the worker consents).
    account: str = Field(min_length=1, max_length=violence.ACCOUNT_MAX)
    #: The worker concerned, if known: shown only with their consent.
    worker: str | None = Field(default=None, max_length=63)


class EntryOut(BaseModel):
    incident: int
    date: str
    room: str
    kind: str
    outcome: str
    account: str
    #: The worker's name where they consent now; otherwise "anonymous".
    worker: str
    consent: bool

    @classmethod
    def of(cls, row: violence.Row) -> EntryOut:
        return cls(
            incident=row.incident,
            date=row.date.isoformat(),
            room=row.room,
            kind=row.kind,
            outcome=row.outcome,
            account=row.account,
            worker=row.worker,
            consent=row.consent,
        )


def _refused(exc: PeopleError) -> HTTPException:
    if isinstance(exc, violence.NotInRegisterError):
        return HTTPException(404, str(exc))
    if isinstance(exc, violence.ViolenceConflictError):
        return HTTPException(409, str(exc))
    return HTTPException(422, str(exc))


@router.post("/violence", status_code=201, responses={**answers(400, 404, 422), **CONFLICT})
def record_entry(body: EntryIn, me: Reviewer, services: ServicesDep) -> EntryOut:
    """Record an incident as third-party violence (anonymous unless the worker consents)."""
    try:
        with services.sessions.begin() as s:
            violence.record_entry(
                s,
                incident_id=body.incident_id,
                account=body.account,
                worker_id=body.worker,
                by=me.person_id,
                now=services.clock.now(),
                retention=services.retention,
            )
    except PeopleError as exc:
        raise _refused(exc) from None
    return next(r for r in _rows(services) if r.incident == body.incident_id)


@router.delete("/violence/{incident_id}", status_code=204, responses=answers(404))
def withdraw_entry(incident_id: IncidentId, me: Reviewer, services: ServicesDep) -> None:
    """Take an incident out of the register."""
    try:
        with services.sessions.begin() as s:
            violence.withdraw_entry(
                s, incident_id=incident_id, by=me.person_id, now=services.clock.now()
            )
    except PeopleError as exc:
        raise _refused(exc) from None


def _rows(services: Services, worker_id: str | None = None) -> list[EntryOut]:
    with services.sessions() as s:
        return [
            EntryOut.of(r) for r in violence.register(s, site=services.site, worker_id=worker_id)
        ]


@router.get(
    "/violence",
    responses={200: text_body("text/csv", "application/pdf"), **answers(422, 503)},
    response_class=Response,
)
async def export(
    _: Reviewer,
    services: ServicesDep,
    format: Annotated[Literal["csv", "pdf"], Query(description="csv or pdf")] = "csv",
) -> Response:
    """The register for the prevention adviser: a worker's name only where they consent."""
    rows = await run_in_threadpool(lambda: _rows(services))
    if format == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        for r in rows:
            # Typed text (room labels, the account, names) never runs as a spreadsheet formula.
            cells = (r.date, r.room, r.kind, r.outcome, r.account, r.worker)
            writer.writerow([r.incident, *(_neutralise(c) for c in cells)])
        return Response(
            out.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="violence-register.csv"'},
        )
    if not FONT.is_file():
        raise HTTPException(
            503,
            f"the PDF needs the font {FONT}: install the Debian package fonts-dejavu-core "
            "(apt install fonts-dejavu-core), or export as CSV",
        )
    pdf = await run_in_threadpool(lambda: _pdf(rows, services.site.name))
    return Response(
        pdf,
        media_type="application/pdf",
        headers={"Content-Disposition": 'attachment; filename="violence-register.pdf"'},
    )


def _pdf(rows: list[EntryOut], site: str) -> bytes:
    from fpdf import FPDF  # noqa: PLC0415  # only the PDF export needs it

    doc = FPDF()
    doc.add_font("DejaVu", fname=str(FONT))
    doc.set_font("DejaVu", size=10)
    doc.add_page()
    doc.multi_cell(0, 6, f"Register of third-party violence - {site}\n\n", align="L")
    for r in rows:
        text = (
            f"#{r.incident}  {r.date}  {r.room}  {r.kind}  {r.outcome or '-'}\n"
            f"Worker: {r.worker}\n{r.account}\n\n"
        )
        doc.multi_cell(0, 6, text, align="L")
    return bytes(doc.output())


@router.get("/me/violence")
def my_entries(me: Me, services: ServicesDep) -> list[EntryOut]:
    """The register's entries that name you, and whether your consent holds."""
    return _rows(services, worker_id=me.person_id)


def _consent(services: Services, me: Principal, incident_id: int, *, given: bool) -> None:
    if Role.WORKER not in me.roles:
        raise HTTPException(403, "only the worker concerned gives or withdraws consent")
    try:
        with services.sessions.begin() as s:
            violence.consent(
                s,
                incident_id=incident_id,
                worker_id=me.person_id,
                given=given,
                now=services.clock.now(),
                retention=services.retention,
            )
    except PeopleError as exc:
        raise _refused(exc) from None


@router.post(
    "/me/violence/{incident_id}/consent",
    status_code=204,
    responses={**answers(404), **CONFLICT},
)
def give_consent(incident_id: IncidentId, me: Me, services: ServicesDep) -> None:
    """Show your identity in the register for this incident."""
    _consent(services, me, incident_id, given=True)


@router.delete(
    "/me/violence/{incident_id}/consent",
    status_code=204,
    responses={**answers(404), **CONFLICT},
)
def withdraw_consent(incident_id: IncidentId, me: Me, services: ServicesDep) -> None:
    """Be anonymous again in the register for this incident."""
    _consent(services, me, incident_id, given=False)
