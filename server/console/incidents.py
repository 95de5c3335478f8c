"""Incident records in the console: the list with its filters, and one incident's
timeline told from the log, with the actions the reader's rights allow.

Both are records views: they go through the records service, which logs each view
with the person and the reason they gave once in this browser session (asked by
:func:`server.console.routes.reason_page`). Actions post to the API
(acknowledge, resolve, notes, review, the violence register) from ``data-api`` forms.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from server.console import pages
from server.console.access import RecordsPage
from server.console.pages import N_, Reader
from server.console.routes import PAGE, justification, reason_page
from server.models import Incident, IncidentKind, LogEntry, Outcome, PersonalData, State
from server.people.roles import Right
from server.people.tables import Person, ViolenceEntry
from server.records import Access, NoRecordError
from server.routes.deps import IncidentId, ServicesDep
from server.services import Services
from server.site import PHONE_PREFIX

router = APIRouter(prefix="/console", tags=["console"], responses=PAGE, include_in_schema=False)

E = TypeVar("E", bound=StrEnum)
#: Incidents shown per page of the list.
PER_PAGE = 50
#: Log entries that hold a text someone typed (personal data, by ref) and its field.
TYPED = {"note.added": "text", "review.signed_off": "remarks", "violence.recorded": None}
#: The days the list's filter takes (others are left out of it, with a word).
YEARS = range(2000, 2101)


@dataclass(frozen=True)
class Row:
    """One incident in the list."""

    incident: Incident
    room: str
    going: str | None


@dataclass(frozen=True)
class Event:
    """One step of a timeline: the log entry, the names of the people it names, the
    text someone typed (None if it holds none; "" once purged), and for a page's
    later entries the page's first entry (whom, which channel)."""

    n: int
    at: datetime
    type: str
    data: dict[str, Any]
    who: str | None
    text: str | None
    page: dict[str, Any] | None
    #: The first entry of its day (in the site's time zone): shown with its date.
    new_day: bool = False
    #: It holds a typed text the reader may not read: shown without it.
    hidden: bool = False
    #: A view: how many times this person opened the record, and the first time (the
    #: entry is their last view).
    times: int = 1
    first: datetime | None = None


def _names(services: Services, ids: set[str]) -> dict[str, str]:
    """People's names by id; an id with no account stands for itself."""
    with services.sessions() as s:
        found = dict(s.execute(select(Person.id, Person.name).where(Person.id.in_(ids))).all())
    return {i: found.get(i, i) for i in ids}


def _day(value: str | None, tz: ZoneInfo, *, end: bool = False) -> datetime | None:
    """A date from the filter (the site's day), as the moment it starts; ``end``: the
    start of the next day."""
    if not value:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        return None
    if day.year not in YEARS:
        return None
    return datetime.combine(day + timedelta(days=1 if end else 0), time(), tz)


def _one_of(choices: type[E], value: str) -> E | None:
    """The filter's value, or None for "any" (an empty field, or a value it cannot be)."""
    return next((c for c in choices if c.value == value), None)


@router.get("/incidents", summary="Incident records: the list, newest first, with filters")
async def incident_list(
    request: Request,
    services: ServicesDep,
    me: RecordsPage,
    *,
    room: Annotated[str, Query(max_length=63)] = "",
    state: Annotated[str, Query(max_length=16)] = "",
    kind: Annotated[str, Query(max_length=16)] = "",
    since: Annotated[str, Query(max_length=10, alias="from")] = "",
    until: Annotated[str, Query(max_length=10)] = "",
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
) -> Response:
    reason = await run_in_threadpool(justification, services, me)
    if reason is None:
        return reason_page(request, services, me)
    site = services.site
    tz = ZoneInfo(site.timezone)

    first, after = _day(since, tz), _day(until, tz, end=True)
    # Not a day, or one outside the years 2000 to 2100: left out of the filter, with a word.
    ignored = [v for v, d in ((since, first), (until, after)) if v and d is None]

    def read() -> tuple[list[Row], bool]:
        found = services.records.incidents(
            Access(by=me.person_id, justification=reason),
            state=_one_of(State, state),
            limit=PER_PAGE + 1,
            room=room or None,
            kind=_one_of(IncidentKind, kind),
            since=first,
            before=after,
            offset=(page - 1) * PER_PAGE,
        )
        names = _names(services, {i.acknowledged_by for i in found if i.acknowledged_by})
        rows = [
            Row(
                incident=i,
                room=site.room(i.room_id).label,
                going=names[i.acknowledged_by] if i.acknowledged_by else None,
            )
            for i in found[:PER_PAGE]
        ]
        return rows, len(found) > PER_PAGE

    rows, more = await run_in_threadpool(read)
    query = {
        "room": room,
        "state": state,
        "kind": kind,
        "from": since,
        "until": until,
    }
    return pages.page(
        request,
        services,
        me,
        "incidents.html",
        title=N_("Incidents"),
        rows=rows,
        # Rooms, then workers' phones (a phone's alarms are its "room").
        rooms=[*site.rooms, *(site.phone_room(phone_id) for phone_id, _ in site.phones)],
        states=list(State),
        kinds=list(IncidentKind),
        query=query,
        base="".join(f"{urlencode({k: v})}&" for k, v in query.items() if v),
        page_number=page,
        more=more,
        ignored=ignored,
    )


def timeline(services: Services, incident_id: int, reason: str, me: Reader) -> dict[str, Any]:
    """The incident and its timeline as ``me`` reads it (the view logged first);
    NoRecordError if there is no such incident."""
    records = services.records
    incident, entries = records.incident(incident_id, Access(by=me.person_id, justification=reason))
    # Who read the record is for reviewers only; each person's views told once.
    views = _views(records.views(incident_id)) if me.can(Right.REVIEW) else {}
    entries = sorted([*entries, *(last for last, _, _ in views.values())], key=lambda e: e.n)
    ids = {
        str(e.data[field])
        for e in entries
        for field in ("staff", "by")
        if isinstance(e.data.get(field), str)
    }
    if incident.acknowledged_by:
        ids.add(incident.acknowledged_by)
    names = _names(services, ids)
    refs = [e.data["ref"] for e in entries if _may_read(me, e) and "ref" in e.data]
    with services.sessions() as s:
        kept: dict[str, Any] = dict(
            s.execute(
                select(PersonalData.ref, PersonalData.value).where(PersonalData.ref.in_(refs))
            ).all()
        )
        in_register = s.get(ViolenceEntry, incident_id) is not None
    queued = {e.data["page"]: e.data for e in entries if e.type == "page.queued"}
    return {
        "incident": incident,
        "room": services.site.room(incident.room_id).label,
        "going": names.get(incident.acknowledged_by or ""),
        "events": _days(
            [_event(e, names, kept, queued, me=me, views=views) for e in entries],
            ZoneInfo(services.site.timezone),
        ),
        "in_register": in_register,
        "outcomes": list(Outcome),
        # A worker's phone's alarm: its map, and its own words for how it was raised.
        "phone": incident.device_id.startswith(PHONE_PREFIX),
    }


def _may_read(me: Reader, entry: LogEntry) -> bool:
    """Whether ``me`` may read the text ``entry`` holds (False if it holds none): review
    remarks and the violence register's account need the right *review*; a note that
    too, or *export*, or being its author. Others see that it is there, by whom, when."""
    if entry.type not in TYPED:
        return False
    if me.can(Right.REVIEW):
        return True
    return entry.type == "note.added" and (
        me.can(Right.EXPORT) or entry.data.get("by") == me.person_id
    )


def _views(entries: list[LogEntry]) -> dict[int, tuple[LogEntry, int, datetime]]:
    """The views by each person told once, at their last: by that entry's number, the
    entry, how many views, and the first one's time."""
    by: dict[str, tuple[LogEntry, int, datetime]] = {}
    for e in entries:  # oldest first
        who = str(e.data.get("by"))
        _, times, first = by.get(who, (e, 0, e.at))
        by[who] = (e, times + 1, first)
    return {last.n: (last, times, first) for last, times, first in by.values()}


def _days(events: list[Event], tz: ZoneInfo) -> list[Event]:
    """``events`` with the first of each day marked."""
    days = [e.at.astimezone(tz).date() for e in events]
    return [replace(e, new_day=i == 0 or days[i] != days[i - 1]) for i, e in enumerate(events)]


def _event(
    entry: LogEntry,
    names: dict[str, str],
    kept: dict[str, Any],
    queued: dict[Any, dict[str, Any]],
    *,
    me: Reader,
    views: dict[int, tuple[LogEntry, int, datetime]],
) -> Event:
    data = entry.data
    page = queued.get(data["page"]) if "page" in data and entry.type != "page.queued" else None
    person = data.get("staff") or data.get("by") or (page or {}).get("staff")
    text: str | None = None
    _, times, first = views.get(entry.n, (entry, 1, entry.at))
    if _may_read(me, entry):
        value = kept.get(data.get("ref", ""), "")
        field = TYPED[entry.type]
        text = str(value.get(field, "") if field and isinstance(value, dict) else value)
    return Event(
        n=entry.n,
        at=entry.at,
        type=entry.type,
        data=data,
        who=names.get(person, person) if isinstance(person, str) else None,
        text=text,
        page=page,
        hidden=entry.type in TYPED and not _may_read(me, entry),
        times=times,
        first=first,
    )


@router.get("/incidents/{incident_id}", summary="One incident's timeline, and what to do")
async def incident_page(
    incident_id: IncidentId, request: Request, services: ServicesDep, me: RecordsPage
) -> Response:
    reason = await run_in_threadpool(justification, services, me)
    if reason is None:
        return reason_page(request, services, me)
    try:
        values = await run_in_threadpool(timeline, services, incident_id, reason, me)
    except NoRecordError:
        return pages.page(
            request,
            services,
            me,
            "incident.html",
            title=N_("No such incident"),
            status=404,
            incident=None,
        )
    return pages.page(
        request,
        services,
        me,
        "incident.html",
        title=N_("Incident"),
        **values,
    )
