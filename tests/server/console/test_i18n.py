"""Every text of the console is in French and Dutch: the catalogues hold each text the
templates and console code mark (what `make messages` extracts), with the same
placeholders, and a page renders in the reader's language."""

from __future__ import annotations

import re
from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from server.console import i18n

ROOT = Path(__file__).resolve().parents[3]
METHODS = [
    ("server/console/**.py", "python"),
    ("server/console/templates/**.html", "jinja2"),
]
OPTIONS = {
    "server/console/templates/**.html": {
        "extensions": "jinja2.ext.i18n",
        "trim_blocks": "true",
        "lstrip_blocks": "true",
    }
}
PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def extracted() -> set[str]:
    keywords = {"_": None, "gettext": None, "ngettext": (1, 2), "N_": None}
    found = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
        str(ROOT), METHODS, OPTIONS, keywords=keywords
    ):
        found.add(message if isinstance(message, str) else message[0])
    return found


def test_every_text_is_translated_with_its_placeholders() -> None:
    texts = extracted()
    assert len(texts) > 30
    for language in ("fr", "nl"):
        with i18n.catalogue_path(language).open("rb") as po:
            catalogue = read_po(po, locale=language)
        held = {m.id: m.string for m in catalogue if m.id}
        missing = sorted(t for t in texts if not held.get(t))
        assert not missing, f"{language}: translate these (make messages): {missing}"
        stale = sorted(set(held) - texts)
        assert not stale, f"{language}: no longer used, run make messages: {stale}"
        for text in texts:
            assert set(PLACEHOLDER.findall(text)) == set(PLACEHOLDER.findall(str(held[text]))), (
                language,
                text,
            )


def test_compiled_catalogues_translate() -> None:
    assert i18n.translations("fr").gettext("I'm going") == "J'y vais"
    assert i18n.translations("nl").gettext("I'm going") == "Ik ga"
    assert i18n.translations("en").gettext("I'm going") == "I'm going"
