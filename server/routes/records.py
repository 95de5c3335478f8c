"""Records: an incident's timeline, notes, review sign-off, and the log's exports.

Reading a record is itself recorded. Every view of an incident and every
export needs two headers, and appends a ``record.viewed`` or
``record.exported`` entry before anything is shown:

* ``X-Panicbutton-Actor``: who is looking (a staff id from the site file, or
  another pseudonymous id such as ``inspector-1``);
* ``X-Panicbutton-Justification``: why (free text, kept as personal data under
  the ``access`` retention, never in the log itself).

Headers, not query parameters, so the reason never lands in an access log.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from panicbutton.log import checkpoints, report, spec
from panicbutton.wire import INT_MAX
from server.log import export, keeper, personal
from server.log.append import audit
from server.models import Incident, LogEntry, State
from server.routes.api import IncidentOut
from server.routes.deps import IncidentId, ServicesDep, answers, require_token, text_body
from server.services import Services

router = APIRouter(
    prefix="/api/v1",
    dependencies=[Depends(require_token)],
    tags=["records"],
    responses=answers(401),
)

ACTOR_RE = re.compile(f"^{export.ID_RE.pattern}$")
#: One export at a time: each reads the whole log in this (the alarm server's) process.
_EXPORTING = threading.Lock()


class Access(BaseModel):
    by: str
    justification: str


#: What to send, per header: the 400 for a missing or wrong one (see server/app.py).
HEADER_HELP = {
    "x-panicbutton-actor": "say who you are: header X-Panicbutton-Actor with your staff id or "
    "another pseudonymous id (lowercase letters, digits, '-')",
    "x-panicbutton-justification": "say why: header X-Panicbutton-Justification with the "
    "reason for this view or export (8 to 1000 characters); it is kept with the access record",
}


def access(
    x_panicbutton_actor: Annotated[
        str, Header(pattern=ACTOR_RE.pattern, description=HEADER_HELP["x-panicbutton-actor"])
    ],
    x_panicbutton_justification: Annotated[
        str,
        Header(
            min_length=8,
            max_length=1000,
            pattern=r"^\S.*\S$",
            description=HEADER_HELP["x-panicbutton-justification"],
        ),
    ],
) -> Access:
    """Who is reading a record and why; 400 without both."""
    by, why = x_panicbutton_actor.strip(), x_panicbutton_justification.strip()
    if not ACTOR_RE.match(by):
        raise HTTPException(400, HEADER_HELP["x-panicbutton-actor"])
    if not 8 <= len(why) <= 1000:
        raise HTTPException(400, HEADER_HELP["x-panicbutton-justification"])
    return Access(by=by, justification=why)


AccessDep = Annotated[Access, Depends(access)]


def _log_access(runtime: Services, *, type_: str, who: Access, scope: str) -> None:
    now = runtime.clock.now()
    with runtime.sessions.begin() as s:
        ref, commitment = personal.keep(
            s,
            kind="access",
            value={"justification": who.justification},
            subjects=[who.by],
            now=now,
            retention=runtime.retention,
        )
        audit(s, at=now, type=type_, by=who.by, scope=scope, ref=ref, commitment=commitment)


#: A board polled every few seconds is recorded once per this many seconds per viewer.
LIST_VIEW_EVERY = 900.0
_list_views: dict[tuple[str, str], float] = {}
_list_views_lock = threading.Lock()


@router.get("/incidents", responses=answers(400, 422))
def list_incidents(
    runtime: ServicesDep, who: AccessDep, state: State | None = None, limit: int = 100
) -> list[IncidentOut]:
    """Newest first; ``state`` filters (open, acknowledged, resolved). A view like any
    other (who, why), recorded at most once per 15 minutes per viewer and reason, so a
    live board that polls does not flood the log."""
    now = time.monotonic()
    # Keyed on a hash: the reason itself is personal data, kept only in the log's store.
    key = (who.by, hashlib.sha256(who.justification.encode()).hexdigest())
    with _list_views_lock:
        for old in [k for k, at in _list_views.items() if now - at >= LIST_VIEW_EVERY]:
            del _list_views[old]
        due = key not in _list_views
    if due:
        _log_access(runtime, type_="record.viewed", who=who, scope="incidents")
        with _list_views_lock:
            _list_views[key] = now  # only once it is recorded
    with runtime.sessions() as s:
        query = select(Incident).order_by(Incident.id.desc()).limit(min(max(limit, 1), 1000))
        if state:
            query = query.where(Incident.state == state)
        return [IncidentOut.of(i) for i in s.scalars(query)]


class EventOut(BaseModel):
    n: int
    at: datetime
    type: str
    data: dict[str, Any]


class IncidentDetail(IncidentOut):
    events: list[EventOut]


@router.get("/incidents/{incident_id}", responses=answers(400, 404, 422))
def get_incident(incident_id: IncidentId, runtime: ServicesDep, who: AccessDep) -> IncidentDetail:
    """One incident with its timeline from the log. The view is logged (who, why)."""
    with runtime.sessions() as s:
        if s.get(Incident, incident_id) is None:
            raise HTTPException(404, f"no incident {incident_id}")
    _log_access(runtime, type_="record.viewed", who=who, scope=f"incident:{incident_id}")
    with runtime.sessions() as s:
        incident = s.get(Incident, incident_id)
        assert incident is not None
        events = s.scalars(
            select(LogEntry).where(LogEntry.incident_id == incident_id).order_by(LogEntry.n)
        )
        return IncidentDetail(
            **IncidentOut.of(incident).model_dump(),
            events=[EventOut(n=e.n, at=e.at, type=e.type, data=e.data) for e in events],
        )


class NoteIn(BaseModel):
    by: str = Field(pattern=ACTOR_RE.pattern)
    text: str = Field(min_length=1, max_length=4000)
    #: Pseudonymous ids of the people the note is about (a worker's id, a staff id):
    #: their access request will include it.
    subjects: list[Annotated[str, Field(pattern=ACTOR_RE.pattern)]] = []


class Recorded(BaseModel):
    #: The personal data's ref, as the log entry names it.
    ref: str


def _append_personal(
    runtime: Services,
    *,
    incident_id: int,
    type_: str,
    kind: str,
    value: dict[str, Any],
    by: str,
    subjects: list[str],
) -> Recorded:
    now = runtime.clock.now()
    with runtime.sessions.begin() as s:
        if s.get(Incident, incident_id) is None:
            raise HTTPException(404, f"no incident {incident_id}")
        ref, commitment = personal.keep(
            s, kind=kind, value=value, subjects=subjects, now=now, retention=runtime.retention
        )
        audit(s, at=now, type=type_, incident_id=incident_id, by=by, ref=ref, commitment=commitment)
    return Recorded(ref=ref)


@router.post("/incidents/{incident_id}/notes", status_code=201, responses=answers(400, 404, 422))
async def add_note(incident_id: IncidentId, body: NoteIn, runtime: ServicesDep) -> Recorded:
    """Add a note to an incident. The text is personal data (kept apart, purged at the end
    of its retention); the log holds its ref and a salted commitment."""
    return await run_in_threadpool(
        lambda: _append_personal(
            runtime,
            incident_id=incident_id,
            type_="note.added",
            kind="note",
            value={"text": body.text},
            by=body.by,
            subjects=sorted({body.by, *body.subjects}),
        )
    )


class ReviewIn(BaseModel):
    by: str = Field(pattern=ACTOR_RE.pattern)
    remarks: str = Field(default="", max_length=4000)


@router.post("/incidents/{incident_id}/review", status_code=201, responses=answers(400, 404, 422))
async def sign_off(incident_id: IncidentId, body: ReviewIn, runtime: ServicesDep) -> Recorded:
    """A manager signs off the review of an incident (remarks kept as personal data)."""
    return await run_in_threadpool(
        lambda: _append_personal(
            runtime,
            incident_id=incident_id,
            type_="review.signed_off",
            kind="review",
            value={"remarks": body.remarks},
            by=body.by,
            subjects=[body.by],
        )
    )


@router.get(
    "/log/checkpoint",
    response_class=Response,
    responses={200: text_body("text/plain"), **answers(503)},
)
def latest_checkpoint(runtime: ServicesDep) -> Response:
    """The newest signed checkpoint (a C2SP note). Keep it: `--trusted` proves later
    exports still contain everything it covers."""
    with runtime.sessions() as s:
        newest = keeper.latest_checkpoint(s)
    if newest is None:
        raise HTTPException(503, "no checkpoint signed yet; try again in a second")
    return Response(newest.note, media_type="text/plain; charset=utf-8")


@router.get("/log/key", response_class=Response, responses={200: text_body("text/plain")})
def verifier_key(runtime: ServicesDep) -> Response:
    """The log's verifier key (C2SP note format), to publish and to pass to `--key`."""
    return Response(f"{runtime.keeper.signer.verifier}\n", media_type="text/plain")


def _bundle(runtime: Services, who: Access, scope: str, with_personal: bool) -> dict[str, bytes]:
    try:
        export.check_scope(scope)
    except export.ExportError as exc:
        raise HTTPException(400, str(exc)) from None
    if scope.startswith("incident:"):
        number = int(scope.partition(":")[2])
        with runtime.sessions() as s:
            if number > INT_MAX or s.get(Incident, number) is None:
                raise HTTPException(404, f"no {scope.replace(':', ' ')}")
    if not _EXPORTING.acquire(blocking=False):
        raise HTTPException(503, "another export is being made; try again in a minute")
    try:
        return _make_bundle(runtime, who, scope, with_personal)
    finally:
        _EXPORTING.release()


def _make_bundle(
    runtime: Services, who: Access, scope: str, with_personal: bool
) -> dict[str, bytes]:
    _log_access(runtime, type_="record.exported", who=who, scope=scope)
    # NOTE: signed now (once the log is proven consistent with its checkpoints), so the
    # bundle's checkpoint covers the export's own record.
    try:
        return export.make_bundle(
            runtime.keeper, scope=scope, now=runtime.clock.now(), with_personal=with_personal
        )
    except keeper.LogFailedError as exc:
        raise HTTPException(
            503,
            f"the incident log failed its check ({exc}); nothing is signed, so no export "
            "can be made. The managers were told; see the server's log.",
        ) from None
    except export.ExportError as exc:
        raise HTTPException(404, str(exc)) from None


@router.get(
    "/log/export",
    response_class=Response,
    responses={200: text_body("application/zip"), **answers(400, 404, 422, 503)},
)
async def export_log(
    runtime: ServicesDep,
    who: AccessDep,
    scope: str = "full",
    with_personal: bool = False,
) -> Response:
    """A verifiable bundle (.zip): ``full``, ``incident:<id>`` or ``person:<id>``.
    Personal data is left out of a full or incident bundle unless ``with_personal``; a
    person's bundle carries that person's own. The export is logged (who, why, scope)."""
    files = await run_in_threadpool(lambda: _bundle(runtime, who, scope, with_personal))
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
async def incident_report(fmt: str, runtime: ServicesDep, who: AccessDep) -> Response:
    """The manager's report (``csv`` or ``pdf``) of every incident, derived from a full
    bundle made for it; it names that bundle's SHA-256 and checkpoint."""
    if fmt not in ("csv", "pdf"):
        raise HTTPException(404, "the report comes as report.csv or report.pdf")
    files = await run_in_threadpool(lambda: _bundle(runtime, who, "full", False))
    body, media = render_report(files, fmt=fmt, now=runtime.clock.now())
    return Response(body, media_type=media)


def render_report(files: dict[str, bytes], *, fmt: str, now: datetime) -> tuple[bytes, str]:
    """A report from a bundle's files (``csv`` or ``pdf``) and its media type."""
    entries = [spec.parse_entry(line) for line in files["entries.jsonl"].splitlines()]
    rows = report.incident_rows(entries)
    digest = export.bundle_sha256(files)
    notes = files["checkpoints.jsonl"].splitlines()
    checkpoint = checkpoints.split_note(json.loads(notes[-1]))[0] if notes else ""
    if fmt == "csv":
        return report.to_csv(rows, bundle_sha256=digest, checkpoint=checkpoint), "text/csv"
    return (
        report.to_pdf(
            rows,
            title="panicbutton incident report",
            bundle_sha256=digest,
            checkpoint=checkpoint,
            generated_at=spec.format_time(now),
        ),
        "application/pdf",
    )
