"""The reports page: response times, tests and duty gaps from the log (with bar charts
drawn here as SVG), the manager's report and the evidence export to download, and the
log's latest signed checkpoint and verifier key for inspectors.

The figures count events; they open no incident record, so the page asks no reason.
Each download goes through the API (``/api/v1/log/...``) with the reason typed in its
form, and is recorded there as an export.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from babel.dates import format_date
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from server.console import figures, pages
from server.console.access import ExportPage
from server.console.figures import Figures, Summary
from server.console.pages import N_
from server.people.roles import Right
from server.routes.deps import ServicesDep

router = APIRouter(prefix="/console", tags=["console"], include_in_schema=False)

#: Months a chart shows at most (the newest); the tables show every month.
CHART_MONTHS = 12


@dataclass(frozen=True)
class Bar:
    """One bar of a chart: its label, its value and the value as the chart writes it."""

    label: str
    value: float
    shown: str


def month_name(key: str, language: str) -> str:
    """ "2026-11" as ``language`` names the month: "Nov 2026", "nov. 2026"."""
    year, month = key.split("-")
    return format_date(date(int(year), int(month), 1), "MMM y", locale=language)


def seconds(value: float | None) -> str:
    """A duration in seconds as the tables show it (an en dash for none)."""
    if value is None:
        return "\u2013"
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def percent(share: float) -> str:
    return f"{round(share * 100)} %"


def charts(by_month: list[Summary], language: str) -> dict[str, list[Bar]]:
    """The bars of each chart: the median seconds to acknowledge, and the share
    acknowledged within 40 s, of the last :data:`CHART_MONTHS` months."""
    recent = by_month[-CHART_MONTHS:]
    forty = figures.WITHIN.index(40)
    return {
        "acknowledge": [
            Bar(
                month_name(s.key, language),
                s.acknowledge_median or 0.0,
                seconds(s.acknowledge_median),
            )
            for s in recent
        ],
        "within": [
            Bar(month_name(s.key, language), s.shares()[forty] * 100, percent(s.shares()[forty]))
            for s in recent
        ],
    }


@router.get("/reports", summary="Reports: response times, tests, duty gaps; exports")
async def reports_page(request: Request, services: ServicesDep, me: ExportPage) -> Response:
    site = services.site
    now = services.clock.now()

    def read() -> tuple[Figures, str | None]:
        with services.sessions() as s:
            found = figures.read(s, site, now)
        return found, services.records.latest_checkpoint()

    found, checkpoint = await run_in_threadpool(read)
    rooms = {r.id: r.label for r in site.rooms}
    return pages.page(
        request,
        services,
        me,
        "reports.html",
        title=N_("Reports"),
        figures=found,
        within=figures.WITHIN,
        test_every_days=figures.TEST_EVERY.days,
        charts=charts(found.by_month, me.language),
        month=lambda key: month_name(key, me.language),
        room_label=lambda room_id: rooms.get(room_id) or site.room(room_id).label,
        seconds=seconds,
        percent=percent,
        checkpoint=checkpoint,
        verifier_key=str(services.records.verifier_key),
        can_poster=me.can(Right.ROSTER),
    )
