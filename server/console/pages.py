"""Rendering a console page: the template in the reader's language, the navigation
their rights open, and the headers every page carries.

Every page is private (``Cache-Control: no-store``) and its Content-Security-Policy
allows scripts and styles only from this server (no inline script, no ``eval``),
no framing and no referrer. Templates autoescape, and texts that people typed
(room names, notes, names) are wrapped in ``<bdi>`` by the ``person_text``
filter, so HTML, JavaScript and bidi controls in them render as inert text.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

from server.console import i18n
from server.people.auth import Principal
from server.people.roles import Right
from server.people.tables import Person
from server.services import Services

#: What every console answer carries (pages, fragments, files).
HEADERS: Mapping[str, str] = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


def N_(text: str) -> str:  # noqa: N802  # gettext's name for "translated where shown"
    """Marks an English text for the catalogues; it is translated where it is shown."""
    return text


@dataclass(frozen=True)
class Section:
    """A part of the console in the navigation: its path, its label (English source
    text, translated when shown) and the right that opens it."""

    path: str
    label: str
    right: Right


#: The navigation, in order; each reader sees the sections their rights open.
SECTIONS = (
    Section("/console/board", N_("Board"), Right.BOARD),
    Section("/console/incidents", N_("Incidents"), Right.RECORDS),
    Section("/console/presence", N_("Presence"), Right.PRESENCE),
    Section("/console/people", N_("People"), Right.PEOPLE),
    Section("/console/roster", N_("Roster"), Right.ROSTER),
    Section("/console/units", N_("Units"), Right.UNITS),
    Section("/console/reports", N_("Reports"), Right.EXPORT),
)

#: Unicode's bidi controls: kept out of what people typed, so that a name cannot turn
#: the rest of a line around (the text is also isolated in ``<bdi>``).
_BIDI = {ch for ch in map(chr, range(0x2000, 0x2070)) if unicodedata.category(ch) == "Cf"} | {
    "\u061c",
    "\u200e",
    "\u200f",
}


def person_text(value: object) -> Markup:
    """Text someone typed (a room name, a note, a person's name), as inert HTML: escaped,
    bidi controls shown as ``\\u`` codes, isolated in ``<bdi>``."""
    text = "" if value is None else str(value)
    shown = "".join(f"\\u{ord(ch):04x}" if ch in _BIDI else ch for ch in text)
    return Markup("<bdi>") + escape(shown) + Markup("</bdi>")


def _environment(language: str) -> Environment:
    env = Environment(
        loader=PackageLoader("server", "console/templates"),
        autoescape=select_autoescape(["html", "svg"]),
        undefined=StrictUndefined,
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_translations(i18n.translations(language), newstyle=True)  # type: ignore[attr-defined]  # added by the i18n extension
    env.filters["person_text"] = person_text
    return env


#: One environment per language: translations are bound to an environment, and a
#: page in French must not race one in Dutch.
_ENVIRONMENTS = {language: _environment(language) for language in i18n.LANGUAGES}


@dataclass(frozen=True)
class Reader:
    """Who reads a page: their id, name, language and rights."""

    principal: Principal
    name: str
    language: str

    @property
    def person_id(self) -> str:
        return self.principal.person_id

    def can(self, right: Right) -> bool:
        return self.principal.can(right)


def reader(services: Services, principal: Principal) -> Reader:
    """The signed-in person, with their name and language from their account."""
    with services.sessions() as session:
        person = session.get(Person, principal.person_id)
        name = person.name if person is not None else principal.person_id
        language = i18n.language_of(person.language if person is not None else None)
    return Reader(principal=principal, name=name, language=language)


def render_text(template: str, *, language: str, **values: Any) -> str:
    """A template (or fragment) rendered in ``language``, nothing around it."""
    return _ENVIRONMENTS[i18n.language_of(language)].get_template(template).render(**values)


def page(
    request: Request,
    services: Services,
    me: Reader,
    template: str,
    *,
    title: str,
    status: int = 200,
    **values: Any,
) -> HTMLResponse:
    """A whole console page: ``template`` (which extends ``layout.html``) for ``me``.

    ``title`` is an English source text, translated in the page."""
    site = services.site

    def when(moment: datetime | None, style: str = "short") -> str:
        return i18n.when(moment, language=me.language, timezone=site.timezone, style=style)

    body = render_text(
        template,
        language=me.language,
        me=me,
        csrf=me.principal.csrf or "",
        sections=[s for s in SECTIONS if me.can(s.right)],
        here=request.url.path,
        site_name=site.name,
        title=title,
        when=when,
        **values,
    )
    return HTMLResponse(body, status_code=status, headers=dict(HEADERS))
