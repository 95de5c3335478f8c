"""The map of a worker's phone during its alarm: for signed-in staff in the console
(``/console/incidents/{id}/map``), and for the responder who opens the link in their
page's SMS (``/map/{token}``).

Both render ``_map.html``: the worker, the alarm's kind and state, what the worker
shared at check-in, and the newest positions with their accuracy and age, drawn by
the server as a small SVG (no tiles, no CDN: the console runs on a LAN) with links
that open the newest in a maps app (the responder's phone has its own internet).
``static/map.js`` fetches the page again every 15 s. Every opening is a view of the
incident's record (logged, at most once per 15 minutes per reader and reason).

The link (:meth:`server.urls.PublicUrls.map_link`) is signed and expires as an
acknowledgement link does; it names a page, so an incident and the member of staff
it was sent to, whose view it logs. It is read only, and opens as often as needed
until it expires. Once the alarm is over it shows no position (the console shows
them to reviewers until they are deleted). An expired or forged link gets a plain
page saying it expired, nothing more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from markupsafe import Markup, escape
from starlette.concurrency import run_in_threadpool

from server.console import i18n, pages
from server.console.access import RecordsPage
from server.console.pages import N_
from server.console.routes import PAGE, justification, reason_page
from server.mobile import positions
from server.mobile.positions import Fix, Whereabouts
from server.paging.links import MAP, read_token
from server.people.roles import Right
from server.people.tables import Person
from server.records import Access
from server.routes.deps import MEANING, IncidentId, ServicesDep, SettingsDep, text_body
from server.services import Services

router = APIRouter(prefix="/console", tags=["console"], responses=PAGE, include_in_schema=False)
#: The link in a page's SMS: for the responder's phone, no console around it.
links = APIRouter(
    tags=["map links"],
    responses={
        200: text_body("text/html", description="the map"),
        410: text_body("text/html", description=MEANING[410]),
    },
)

#: Seconds between two reads of an open map (``static/map.js``).
REFRESH = 15
#: The drawing's side, and its margin, in SVG units.
SIDE, MARGIN = 320.0, 18.0
#: Why a member of staff read the record through the link (kept with the view).
LINK_REASON = "responding to the alarm: opened the map link of their page"
#: Metres per degree of latitude, and of longitude at the equator (WGS 84, rounded).
M_PER_DEG_LAT, M_PER_DEG_LON = 110_574.0, 111_320.0
#: The least half-width a drawing shows, metres (one fix alone is not drawn as a point).
LEAST_HALF = 50.0


@dataclass(frozen=True)
class Shown:
    """A position as the map lists it."""

    fix: Fix
    #: "2 minutes ago", in the reader's language.
    ago: str
    #: "± 12 m" or "± 1.5 km".
    accuracy: str


def accuracy_text(metres: float) -> str:
    return f"± {metres / 1000:.1f} km" if metres >= 1000 else f"± {metres:.0f} m"


def geo_link(fix: Fix) -> str:
    """Opens the position in the phone's maps app (RFC 5870; ``q`` drops a pin)."""
    at = f"{fix.latitude:.6f},{fix.longitude:.6f}"
    return f"geo:{at}?q={at}"


def osm_link(fix: Fix) -> str:
    lat, lon = f"{fix.latitude:.6f}", f"{fix.longitude:.6f}"
    return f"https://www.openstreetmap.org/?mlat={lat}&mlon={lon}#map=17/{lat}/{lon}"


def _metres(fix: Fix, origin: Fix) -> tuple[float, float]:
    """East and north of ``origin``, metres (flat: a map of a few km)."""
    east_deg = (fix.longitude - origin.longitude + 540.0) % 360.0 - 180.0
    east = east_deg * M_PER_DEG_LON * math.cos(math.radians(origin.latitude))
    return east, (fix.latitude - origin.latitude) * M_PER_DEG_LAT


def _bar(half: float) -> float:
    """A round length (1, 2 or 5 times a power of ten, metres) about half of ``half``."""
    power = 10.0 ** math.floor(math.log10(half / 2))
    return max(step * power for step in (1.0, 2.0, 5.0) if step * power <= half / 2 + 1e-9)


def _length_text(metres: float) -> str:
    return f"{metres / 1000:g} km" if metres >= 1000 else f"{metres:g} m"


def drawing(fixes: list[Fix], *, title: str) -> Markup:
    """The positions (newest first) as an SVG: the newest at the centre in red, each in
    its accuracy circle, the track between them, north up, and a scale bar."""
    origin = fixes[0]
    points = [(*_metres(f, origin), f.accuracy) for f in fixes]
    half = max([LEAST_HALF] + [max(abs(x), abs(y)) + r for x, y, r in points])
    scale = (SIDE / 2 - MARGIN) / half  # SVG units per metre

    def at(x: float, y: float) -> str:
        return f'cx="{SIDE / 2 + x * scale:.1f}" cy="{SIDE / 2 - y * scale:.1f}"'

    side = f"{SIDE:.0f}"
    parts = [
        (
            f'<svg class="map" viewBox="0 0 {side} {side}" role="img" '
            'aria-labelledby="map-drawing-title" xmlns="http://www.w3.org/2000/svg">'
        ),
        f'<title id="map-drawing-title">{escape(title)}</title>',
        f'<rect width="{side}" height="{side}" fill="#f6f6f6" stroke="#c8c8c8"/>',
    ]
    # Oldest first, so the newest is drawn on top.
    for i, (x, y, r) in reversed(list(enumerate(points))):
        colour = "#b00020" if i == 0 else "#0b57d0"
        parts.append(
            f'<circle class="accuracy" {at(x, y)} r="{max(r * scale, 1):.1f}" fill="{colour}" '
            f'fill-opacity="0.1" stroke="{colour}" stroke-opacity="0.5"/>'
        )
    if len(points) > 1:
        track = " ".join(
            f"{SIDE / 2 + x * scale:.1f},{SIDE / 2 - y * scale:.1f}" for x, y, _ in points
        )
        parts.append(
            f'<polyline points="{track}" fill="none" stroke="#4a4a4a" stroke-dasharray="4 3"/>'
        )
    for i, (x, y, _) in reversed(list(enumerate(points))):
        kind, radius, colour = ("newest", 6, "#b00020") if i == 0 else ("fix", 3, "#0b57d0")
        parts.append(
            f'<circle class="{kind}" {at(x, y)} r="{radius}" fill="{colour}" '
            'stroke="#fff" stroke-width="1.5"/>'
        )
    bar = _bar(half)
    x0, y0, x1 = MARGIN, SIDE - MARGIN, MARGIN + bar * scale
    parts += [
        (
            f'<path class="scale" d="M{x0:.1f} {y0 - 4:.1f}V{y0:.1f}H{x1:.1f}V{y0 - 4:.1f}" '
            'fill="none" stroke="#1a1a1a" stroke-width="2"/>'
        ),
        (
            f'<text x="{x0:.1f}" y="{y0 - 8:.1f}" font-size="12" fill="#1a1a1a">'
            f"{_length_text(bar)}</text>"
        ),
        (
            f'<text x="{SIDE - MARGIN:.1f}" y="{MARGIN + 4:.1f}" font-size="13" '
            'text-anchor="end" fill="#1a1a1a">N ↑</text>'
        ),
        "</svg>",
    ]
    return Markup("".join(parts))  # noqa: S704 -- numbers we computed and an escaped title


def values(
    view: Whereabouts,
    *,
    label: str,
    language: str,
    now: datetime,
    kept_until: datetime | None = None,
) -> dict[str, Any]:
    """What ``_map.html`` shows of ``view`` for a reader of ``language`` at ``now``."""
    translations = i18n.translations(language)
    shown = [
        Shown(
            fix=f,
            ago=i18n.ago(now - f.taken_at, language=language),
            accuracy=accuracy_text(f.accuracy),
        )
        for f in view.positions
    ]
    newest = view.positions[0] if view.positions else None
    title = translations.gettext(
        "The last %(n)s positions, newest in red at the centre; each circle is its accuracy."
    ) % {"n": len(shown)}
    return {
        "m": view,
        "label": label,
        "shown": shown,
        "drawing": drawing(view.positions, title=title) if view.positions else None,
        "geo": geo_link(newest) if newest else None,
        "osm": osm_link(newest) if newest else None,
        "kept_until": kept_until,
        "refresh": None if view.over else REFRESH,
        "updated": now,
    }


def _read(
    services: Services, incident_id: int, who: Access, *, after_end: bool
) -> Whereabouts | None:
    """The incident's whereabouts, its view by ``who`` recorded before it is shown; None
    (and nothing recorded) if it is no phone's."""
    with services.sessions() as s:
        view = positions.whereabouts(s, incident_id, after_end=after_end)
    if view is not None:
        services.records.viewed(incident_id, who)
    return view


@router.get("/incidents/{incident_id}/map", summary="Where a worker's phone is during its alarm")
async def incident_map(
    incident_id: IncidentId,
    request: Request,
    services: ServicesDep,
    settings: SettingsDep,
    me: RecordsPage,
) -> Response:
    reason = await run_in_threadpool(justification, services, me)
    if reason is None:
        return reason_page(request, services, me)
    # After the end, positions are kept a few days for a review: reviewers still see them.
    reviewer = me.can(Right.REVIEW)
    who = Access(by=me.person_id, justification=reason)
    view = await run_in_threadpool(_read, services, incident_id, who, after_end=reviewer)
    if view is None:
        return pages.page(
            request, services, me, "incident_map.html", title=N_("Map"), status=404, m=None
        )
    kept = None
    if view.over and view.positions and view.resolved_at is not None:
        kept = view.resolved_at + timedelta(days=settings.retention_positions_days)
    return pages.page(
        request,
        services,
        me,
        "incident_map.html",
        title=N_("Map"),
        **values(
            view,
            label=services.site.room(view.room_id).label,
            language=me.language,
            now=services.clock.now(),
            kept_until=kept,
        ),
    )


def _language(services: Services, staff_id: str) -> str:
    with services.sessions() as s:
        person = s.get(Person, staff_id)
        return i18n.language_of(person.language if person is not None else None)


def _gone() -> HTMLResponse:
    texts = [
        Markup(pages.render_text("_map_gone.html", language=lang, lang=lang))  # noqa: S704 -- our autoescaped template
        for lang in i18n.LANGUAGES
    ]
    body = pages.render_text("map.html", language="en", lang="en", gone=texts)
    return HTMLResponse(body, status_code=410, headers=dict(pages.HEADERS))


@links.get("/map/{token}", response_class=Response)
def link_map(token: str, services: ServicesDep, settings: SettingsDep) -> Response:
    """Where the worker is: the last positions their phone shared during the alarm the
    page was about, and what they shared at check-in. Opening it changes nothing."""
    now = services.clock.now()
    page_id = read_token(settings.link_secret.get_secret_value(), token, now, kind=MAP)
    found = services.responder.page(page_id) if page_id is not None else None
    if found is None:
        return _gone()
    page, incident = found
    who = Access(by=page.staff_id, justification=LINK_REASON)
    view = _read(services, incident.id, who, after_end=False)
    if view is None:
        return _gone()
    language = _language(services, page.staff_id)
    site = services.site

    def when(moment: datetime | None, style: str = "short") -> str:
        return i18n.when(moment, language=language, timezone=site.timezone, style=style)

    body = pages.render_text(
        "map.html",
        language=language,
        lang=language,
        gone=None,
        when=when,
        **values(view, label=site.room(view.room_id).label, language=language, now=now),
    )
    return HTMLResponse(body, headers=dict(pages.HEADERS))
