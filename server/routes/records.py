"""Records: an incident's timeline, notes, review sign-off, and the log's exports.

Reading a record is itself recorded. Who is looking is the signed-in person
(their personal API token or browser session); every view of an incident and
every export also needs the header ``X-Panicbutton-Justification`` (why: free
text, kept as personal data under the ``access`` retention, never in the log
itself), and appends a ``record.viewed`` or ``record.exported`` entry naming the
person's id before anything is shown.

A header, not a query parameter, so the reason never lands in an access log.
The work is the records service's (``server/records.py``); these routes parse
and shape.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import unquote

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Response
from pydantic import BaseModel, Field

from server.log import export
from server.log.keeper import LogFailedError
from server.models import State
from server.people.auth import Principal
from server.people.roles import Right
from server.records import Access, BusyError, NoRecordError, Records
from server.routes.api import IncidentOut
from server.routes.deps import STRICT, IncidentId, ServicesDep, answers, need, text_body
from server.site import ID_RE

router = APIRouter(
    prefix="/api/v1", tags=["records"], responses=answers(400, 401, 403), dependencies=STRICT
)

ACTOR_RE = ID_RE
Reading = Annotated[Principal, Depends(need(Right.RECORDS))]
Noting = Annotated[Principal, Depends(need(Right.NOTES))]
Reviewing = Annotated[Principal, Depends(need(Right.REVIEW))]
Exporting = Annotated[Principal, Depends(need(Right.EXPORT))]
Myself = Annotated[Principal, Depends(need(Right.SELF))]


def get_records(services: ServicesDep) -> Records:
    return services.records


RecordsDep = Annotated[Records, Depends(get_records)]


#: What to send, per header: the 400 for a missing or wrong one (see server/routes/errors.py).
HEADER_HELP = {
    "x-panicbutton-justification": "say why: header X-Panicbutton-Justification with the "
    "reason for this view or export (8 to 1000 characters); it is kept with the access record. "
    "Text beyond ASCII goes as utf-8'' followed by the percent-encoded UTF-8 (RFC 8187)",
}
#: The RFC 8187 marker of a header value in percent-encoded UTF-8.
UTF8 = "utf-8''"


def justification(
    x_panicbutton_justification: Annotated[
        str,
        Header(
            min_length=8,
            max_length=1000,
            pattern=r"^\S.*\S$",
            description=HEADER_HELP["x-panicbutton-justification"],
        ),
    ],
) -> str:
    """Why a record is read; 400 without it (the pattern says it all). A value in
    ``utf-8''`` form is decoded; one that does not decode to 8 characters or more of
    UTF-8 is kept as it came (it is still a reason the schema allows)."""
    why = x_panicbutton_justification
    if why.lower().startswith(UTF8):
        try:
            decoded = unquote(why[len(UTF8) :], errors="strict").strip()
        except UnicodeDecodeError:
            decoded = ""
        if len(decoded) >= 8:
            return decoded
    return why


Why = Annotated[str, Depends(justification)]


def access(me: Principal, why: str) -> Access:
    """Who is reading (the signed-in person) and why."""
    return Access(by=me.person_id, justification=why)


def as_caller(me: Principal, given: str | None) -> str:
    """The caller's own id; 403 when a body names someone else."""
    if given is not None and given != me.person_id:
        raise HTTPException(
            403, f"you are signed in as {me.person_id!r} and cannot write as {given!r}"
        )
    return me.person_id


@router.get("/incidents", responses=answers(400, 422))
def list_incidents(
    records: RecordsDep,
    me: Reading,
    why: Why,
    state: State | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[IncidentOut]:
    """Newest first; ``state`` filters (open, acknowledged, resolved). A view like any
    other (who, why), recorded at most once per 15 minutes per viewer and reason, so a
    live board that polls does not flood the log."""
    return [IncidentOut.of(i) for i in records.incidents(access(me, why), state=state, limit=limit)]


class EventOut(BaseModel):
    n: int
    at: datetime
    type: str
    data: dict[str, Any]


class IncidentDetail(IncidentOut):
    events: list[EventOut]


@router.get("/incidents/{incident_id}", responses=answers(400, 404, 422))
def get_incident(
    incident_id: IncidentId, records: RecordsDep, me: Reading, why: Why
) -> IncidentDetail:
    """One incident with its timeline from the log. The view is logged (who, why)."""
    try:
        incident, events = records.incident(incident_id, access(me, why))
    except NoRecordError as exc:
        raise HTTPException(404, str(exc)) from None
    return IncidentDetail(
        **IncidentOut.of(incident).model_dump(),
        events=[EventOut(n=e.n, at=e.at, type=e.type, data=e.data) for e in events],
    )


#: The caller's own id, if given at all: the signed-in person writes.
By = Field(default=None, pattern=ACTOR_RE.pattern, description="the caller's own id, or left out")


class NoteIn(BaseModel):
    by: str | None = By
    text: str = Field(min_length=1, max_length=4000)
    #: Pseudonymous ids of the people the note is about (a worker's id, a staff id):
    #: their access request will include it.
    subjects: list[Annotated[str, Field(pattern=ACTOR_RE.pattern)]] = []


class Recorded(BaseModel):
    #: The personal data's ref, as the log entry names it.
    ref: str


@router.post("/incidents/{incident_id}/notes", status_code=201, responses=answers(400, 404, 422))
def add_note(incident_id: IncidentId, body: NoteIn, records: RecordsDep, me: Noting) -> Recorded:
    """Add a note to an incident. The text is personal data (kept apart, purged at the end
    of its retention); the log holds its ref and a salted commitment."""
    try:
        ref = records.add_note(
            incident_id, by=as_caller(me, body.by), text=body.text, subjects=body.subjects
        )
    except NoRecordError as exc:
        raise HTTPException(404, str(exc)) from None
    return Recorded(ref=ref)


class ReviewIn(BaseModel):
    by: str | None = By
    remarks: str = Field(default="", max_length=4000)


@router.post("/incidents/{incident_id}/review", status_code=201, responses=answers(400, 404, 422))
def sign_off(
    incident_id: IncidentId, body: ReviewIn, records: RecordsDep, me: Reviewing
) -> Recorded:
    """A manager signs off the review of an incident (remarks kept as personal data)."""
    try:
        ref = records.sign_off(incident_id, by=as_caller(me, body.by), remarks=body.remarks)
    except NoRecordError as exc:
        raise HTTPException(404, str(exc)) from None
    return Recorded(ref=ref)


@router.get(
    "/log/checkpoint",
    response_class=Response,
    responses={200: text_body("text/plain"), **answers(503)},
)
def latest_checkpoint(records: RecordsDep, _: Reading) -> Response:
    """The newest signed checkpoint (a C2SP note). Keep it: `--trusted` proves later
    exports still contain everything it covers."""
    note = records.latest_checkpoint()
    if note is None:
        raise HTTPException(503, "no checkpoint signed yet; try again in a second")
    return Response(note, media_type="text/plain; charset=utf-8")


@router.get("/log/key", response_class=Response, responses={200: text_body("text/plain")})
def verifier_key(records: RecordsDep, _: Reading) -> Response:
    """The log's verifier key (C2SP note format), to publish and to pass to `--key`."""
    return Response(f"{records.verifier_key}\n", media_type="text/plain")


@contextmanager
def _export_answers() -> Iterator[None]:
    """An export's errors as HTTP answers."""
    try:
        yield
    except export.ExportError as exc:
        raise HTTPException(400, str(exc)) from None
    except NoRecordError as exc:
        raise HTTPException(404, str(exc)) from None
    except BusyError as exc:
        raise HTTPException(503, str(exc)) from None
    except LogFailedError as exc:
        raise HTTPException(
            503,
            f"the incident log failed its check ({exc}); nothing is signed, so no export "
            "can be made. The managers were told; see the server's log.",
        ) from None


@router.get(
    "/log/export",
    response_class=Response,
    responses={200: text_body("application/zip"), **answers(400, 404, 422, 503)},
)
def export_log(
    records: RecordsDep,
    me: Exporting,
    why: Why,
    scope: str = "full",
    with_personal: bool = False,
) -> Response:
    """A verifiable bundle (.zip): ``full``, ``incident:<id>`` or ``person:<id>``.
    Personal data is left out of a full or incident bundle unless ``with_personal``; a
    person's bundle carries that person's own. The export is logged (who, why, scope)."""
    with _export_answers():
        files = records.export(access(me, why), scope=scope, with_personal=with_personal)
    return _bundle(files, scope)


def _bundle(files: dict[str, bytes], scope: str) -> Response:
    name = f"panicbutton-log-{scope.replace(':', '-')}"
    return Response(
        export.zip_bytes(files, name),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{name}.zip"'},
    )


@router.get(
    "/log/report.{fmt}",
    response_class=Response,
    responses={200: text_body("text/csv", "application/pdf"), **answers(400, 404, 503)},
)
def incident_report(fmt: str, records: RecordsDep, me: Exporting, why: Why) -> Response:
    """The manager's report (``csv`` or ``pdf``) of every incident, derived from a full
    bundle made for it; it names that bundle's SHA-256 and checkpoint."""
    if fmt not in ("csv", "pdf"):
        raise HTTPException(404, "the report comes as report.csv or report.pdf")
    with _export_answers():
        body, media = records.report(access(me, why), fmt=fmt)
    return Response(
        body,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="panicbutton-report.{fmt}"'},
    )


@router.get(
    "/me/export",
    response_class=Response,
    responses={200: text_body("application/zip"), **answers(400, 422, 503)},
)
def export_mine(records: RecordsDep, me: Myself, why: Why) -> Response:
    """Your own bundle (.zip): every log entry that names you, with your personal data
    (your access request, GDPR art. 15). Nobody else's: a colleague's bundle is an
    export (``/log/export``), a right managers and inspectors hold. Logged like any export."""
    scope = f"person:{me.person_id}"
    with _export_answers():
        files = records.export(access(me, why), scope=scope, with_personal=True)
    return _bundle(files, scope)
