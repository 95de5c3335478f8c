"""The console's texts in French and Dutch: Babel catalogues (``locales/<lang>/
LC_MESSAGES/console.po``), read and compiled in memory when the server starts.

English is the source language (the ``msgid``). A text missing from a catalogue
shows in English; ``tests/server/console/test_i18n.py`` holds every catalogue
to every text of the templates.
"""

from __future__ import annotations

import io
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import format_datetime, format_time, format_timedelta
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

LOCALES = Path(__file__).parent / "locales"
#: The console's languages, as a person's ``language`` spells them; English first.
LANGUAGES = ("en", "fr", "nl")
DOMAIN = "console"


def catalogue_path(language: str) -> Path:
    return LOCALES / language / "LC_MESSAGES" / f"{DOMAIN}.po"


@cache
def translations(language: str) -> NullTranslations:
    """The compiled catalogue of ``language`` (English, or an unknown one: the source)."""
    if language not in LANGUAGES or language == "en":
        return NullTranslations()
    with catalogue_path(language).open("rb") as po:
        catalogue = read_po(po, locale=language, domain=DOMAIN)
    compiled = io.BytesIO()
    write_mo(compiled, catalogue)
    compiled.seek(0)
    return Translations(fp=compiled, domain=DOMAIN)


def language_of(value: str | None) -> str:
    """A person's language if the console has it, else English."""
    return value if value in LANGUAGES else "en"


def when(moment: datetime | None, *, language: str, timezone: str, style: str = "short") -> str:
    """``moment`` in the site's time zone, as ``language`` writes dates ("" for None);
    ``style`` is Babel's (short, medium, long) or ``time`` (the time of day alone)."""
    if moment is None:
        return ""
    if style == "time":
        return format_time(
            moment.astimezone(ZoneInfo(timezone)), format="medium", locale=Locale.parse(language)
        )
    return format_datetime(
        moment.astimezone(ZoneInfo(timezone)), format=style, locale=Locale.parse(language)
    )


def ago(elapsed: timedelta, *, language: str) -> str:
    """How long ago something was, as ``language`` says it ("2 minutes ago", rounded to
    the unit shown). Under a second, or a moment ahead, is "1 second ago"."""
    return format_timedelta(
        -max(elapsed, timedelta(seconds=1)),
        add_direction=True,
        threshold=1.0,
        locale=Locale.parse(language_of(language)),
    )
