"""The poster for the venue's walls (royal decree of 20 October 2024: the emergency
numbers, the reference person's contact and the workers' rights must be posted): a
printable A4 PDF in French, Dutch or English, with the reference persons' names and
phone numbers as the roster has them now.

Drawn with fpdf2 in DejaVu Sans (the violence register's font), so any name prints,
Romanian, Bulgarian or Greek alike. The page needs the right ``roster``: whoever keeps
the roster keeps the poster up to date with it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Literal

from babel.dates import format_date, get_day_names
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from server import duty
from server.console import i18n, pages
from server.console.access import RosterPage
from server.console.pages import N_
from server.routes.deps import ServicesDep
from server.routes.violence import FONT
from server.site import Shift, Site

if TYPE_CHECKING:
    from fpdf import FPDF

router = APIRouter(prefix="/console", tags=["console"], include_in_schema=False)

BOLD = FONT.with_name("DejaVuSans-Bold.ttf")
Who = Literal["roster", "now"]
#: An en dash, for ranges of days and hours.
DASH = "\u2013"

#: The emergency numbers in Belgium, and what each is for.
NUMBERS = (("112", N_("Ambulance and fire brigade")), ("101", N_("Police")))
RIGHTS = (
    N_("You may refuse a client, refuse any act, and stop an act at any moment."),
    N_("You may set your own conditions for an act."),
    N_("A refusal may never be held against you: no sanction, no dismissal."),
    N_(
        "A reference person is there for you the whole time you work. Every room has "
        "an emergency button that alerts them at once."
    ),
    N_(
        "Violence by a client is entered in the register of violence, without your "
        "name unless you agree."
    ),
    N_("You may see the records that name you and get a copy of them."),
)
BUTTON = N_(
    "Press the button once. It makes no sound in the room; the reference person on duty "
    "is alerted at once, then the other staff. Nothing at the button can cancel the "
    "alarm. The light by the button shows when help is coming."
)
LAW = N_(
    "Law of 3 May 2024 on sex work under an employment contract; royal decree of 20 October 2024."
)


@dataclass(frozen=True)
class Contact:
    """A reference person as the poster shows them: name, phone, and when on duty."""

    name: str
    phone: str
    hours: str


def _days(days: frozenset[int], language: str) -> str:
    """Days of the week, runs of three or more shortened: "Mon-Fri, Sun" (an en dash)."""
    names = get_day_names("abbreviated", locale=language)
    runs: list[list[int]] = []
    for day in sorted(days):
        if runs and runs[-1][-1] == day - 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    return ", ".join(
        f"{names[r[0]]}{DASH}{names[r[-1]]}" if len(r) >= 3 else ", ".join(names[d] for d in r)
        for r in runs
    )


def _shift(shift: Shift, language: str) -> str:
    return f"{_days(shift.days, language)} {shift.start:%H:%M}{DASH}{shift.end:%H:%M}"


def contacts(
    site: Site, takeovers: list[duty.Takeover], now: datetime, who: Who, language: str
) -> list[Contact]:
    """The reference persons to print: everyone on the roster (``roster``: always on
    duty, then by shift, with their hours), or whoever is on duty ``now``. When the
    roster names nobody, the group paged when nobody is on duty."""
    gettext = i18n.translations(language).gettext
    hours: dict[str, list[str]] = {}
    if who == "now":
        for staff_id in duty.covering(site, takeovers, now):
            hours[staff_id] = [gettext("on duty now")]
    else:
        for staff_id in site.duty.always:
            hours.setdefault(staff_id, []).append(gettext("at all times"))
        for shift in site.duty.shifts:
            hours.setdefault(shift.staff, []).append(_shift(shift, language))
    if not hours:
        hours = {
            staff_id: [gettext("when nobody else is on duty")] for staff_id in site.duty.default
        }
    out = []
    for staff_id, when in hours.items():
        member = site.known(staff_id)
        if member is not None:  # only people who can be reached
            out.append(Contact(member.name, member.phone, "; ".join(when)))
    return out


def _numbers(doc: FPDF, site: Site, _: Callable[[str], str]) -> None:
    """The site's name, the title and the emergency numbers in two boxes."""
    width = doc.epw
    doc.set_font("DejaVu", size=12)
    doc.cell(width, 7, site.name, new_x="LMARGIN", new_y="NEXT")
    doc.set_font("DejaVu", "B", 30)
    doc.set_text_color(176, 0, 32)
    doc.cell(width, 16, _("In an emergency"), new_x="LMARGIN", new_y="NEXT")
    doc.set_text_color(26, 26, 26)
    doc.set_draw_color(176, 0, 32)
    doc.set_line_width(0.8)
    box, top = (width - 8) / 2, doc.get_y() + 2
    for i, (number, what) in enumerate(NUMBERS):
        x = doc.l_margin + i * (box + 8)
        doc.rect(x, top, box, 34)
        doc.set_xy(x, top + 3)
        doc.set_font("DejaVu", "B", 40)
        doc.cell(box, 18, number, align="C")
        doc.set_xy(x, top + 22)
        doc.set_font("DejaVu", size=13)
        doc.cell(box, 8, _(what), align="C")
    doc.set_xy(doc.l_margin, top + 40)


def _heading(doc: FPDF, text: str) -> None:
    doc.ln(3)
    doc.set_font("DejaVu", "B", 17)
    doc.cell(doc.epw, 10, text, new_x="LMARGIN", new_y="NEXT")


def _text(doc: FPDF, text: str, size: float = 12, *, bold: bool = False) -> None:
    doc.set_font("DejaVu", "B" if bold else "", size)
    doc.multi_cell(doc.epw, size * 0.55, text, align="L", new_x="LMARGIN", new_y="NEXT")


def poster_pdf(site: Site, people: list[Contact], language: str, printed: datetime) -> bytes:
    """The poster as an A4 PDF."""
    from fpdf import FPDF  # noqa: PLC0415  # only the poster needs it

    _ = i18n.translations(language).gettext
    doc = FPDF(format="A4")
    doc.set_margins(18, 16, 18)
    doc.set_auto_page_break(True, margin=18)
    doc.add_font("DejaVu", fname=str(FONT))
    doc.add_font("DejaVu", style="B", fname=str(BOLD if BOLD.is_file() else FONT))
    doc.set_title(_("In an emergency") + f" {DASH} {site.name}")
    doc.add_page()
    _numbers(doc, site, _)
    _heading(doc, _("Your reference person"))
    for person in people:
        _text(doc, f"{person.name}   {person.phone}", 15, bold=True)
        _text(doc, person.hours, 11)
    if not people:
        _text(doc, _("Ask the manager."))
    _heading(doc, _("The emergency button"))
    _text(doc, _(BUTTON))
    _heading(doc, _("Your rights"))
    for right in RIGHTS:
        _text(doc, f"\u2022  {_(right)}")
        doc.ln(1)
    doc.ln(4)
    doc.set_text_color(74, 74, 74)
    printed_on = format_date(printed.astimezone(site.zone), "long", locale=language)
    printed_text = _("Printed on %(date)s. Print it again when the roster changes.")
    _text(doc, f"{_(LAW)} {printed_text % {'date': printed_on}}", 9)
    return bytes(doc.output())


Language = Annotated[Literal["fr", "nl", "en"] | None, Query(description="the poster's language")]
WhoQuery = Annotated[Who, Query(description="roster: everyone on the roster; now: on duty now")]


def _people(services: ServicesDep, who: Who, language: str) -> tuple[Site, list[Contact], datetime]:
    site, now = services.site, services.clock.now()
    with services.sessions() as s:
        takeovers = duty.takeovers(s, now)
    return site, contacts(site, takeovers, now, who, language), now


@router.get("/poster", summary="The poster: choose its language and who it names")
async def poster_page(
    request: Request, services: ServicesDep, me: RosterPage, who: WhoQuery = "roster"
) -> Response:
    _site, people, _now = await run_in_threadpool(_people, services, who, me.language)
    return pages.page(
        request,
        services,
        me,
        "poster.html",
        title=N_("The poster"),
        people=people,
        who=who,
        languages=(("fr", "Français"), ("nl", "Nederlands"), ("en", "English")),
    )


@router.get("/poster.pdf", summary="The poster as an A4 PDF for the venue's walls")
async def poster_file(
    services: ServicesDep, me: RosterPage, language: Language = None, who: WhoQuery = "roster"
) -> Response:
    lang = language or i18n.language_of(me.language)
    if not FONT.is_file():
        raise HTTPException(
            503,
            f"the poster needs the font {FONT}: install the Debian package fonts-dejavu-core "
            "(apt install fonts-dejavu-core)",
        )

    def make() -> bytes:
        site, people, now = _people(services, who, lang)
        return poster_pdf(site, people, lang, now)

    pdf = await run_in_threadpool(make)
    return Response(
        pdf,
        media_type="application/pdf",
        headers={
            **pages.HEADERS,
            "Content-Disposition": f'attachment; filename="poster-{lang}.pdf"',
        },
    )
