"""What staff read and hear about a worker's phone's alarm: which kind it is (a press,
a duress PIN, a missed check-out) in one GSM-7 segment where the name allows, the
map of the phone with every page, and bundles of many phone alarms within Twilio's
limits."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from panicbutton.wire import new_alert_id, now_utc
from server.models import IncidentKind
from server.paging import messages
from server.paging.links import MAP, read_token
from server.site import LANGUAGES, Language
from tests.harness import FLOOR, RECEPTION, wait_until
from tests.server.people_helpers import BASE_URL, Served, served

SECRET = "m" * 40
#: The GSM 03.38 default alphabet (one unit each) and its extension table (two each).
GSM7 = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = "^{}\\[~]|€"
MAP_LINK = re.compile(rf"(?:Map|Kaart|Carte): {re.escape(BASE_URL)}/map/(\S+)")


def gsm7_units(text: str) -> int | None:
    """Septets ``text`` takes in GSM-7, or None if it needs UCS-2 (a 70-character segment)."""
    if any(c not in GSM7 and c not in GSM7_EXTENDED for c in text):
        return None
    return sum(2 if c in GSM7_EXTENDED else 1 for c in text)


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("kind", ["panic", "duress", "missed_checkout"])
def test_a_phones_alarm_is_one_gsm7_segment_with_an_ordinary_name(
    lang: Language, kind: str
) -> None:
    at = datetime(2026, 11, 28, 21, 4, tzinfo=UTC)
    for room in ("Name of w-17 (mobile)", "Marie-Christine Dubois (mobile)"):
        text = messages.page(
            lang, kind=kind, room=room, at=at, timezone="Europe/Brussels", code=48213
        )
        assert room in text
        assert "22:04" in text
        assert (gsm7_units(text) or 999) <= 160, (len(text), text)


def test_duress_and_missed_checkout_say_what_they_are_in_each_language() -> None:
    at = datetime(2026, 11, 28, 21, 4, tzinfo=UTC)
    said = {
        (kind, lang): messages.page(
            lang, kind=kind, room="Anna (mobile)", at=at, timezone="Europe/Brussels", code=482
        )
        for kind in ("duress", "missed_checkout")
        for lang in LANGUAGES
    }
    assert said["duress", "en"] == (
        "DURESS Anna (mobile) at 22:04: silent alarm, duress PIN used at check-out. "
        "Cannot speak freely. Reply 482 if you are going."
    )
    assert said["duress", "fr"].startswith("CONTRAINTE Anna (mobile) à 22:04: alerte silencieuse")
    assert "Ne peut parler librement. Répondez 482 si vous y allez." in said["duress", "fr"]
    assert said["duress", "nl"].startswith("DWANG Anna (mobile) om 22:04: stil alarm, dwangcode")
    assert said["duress", "nl"].endswith("Antwoord 482 als u gaat.")
    assert said["missed_checkout", "en"] == (
        "MISSED CHECK-OUT Anna (mobile) at 22:04: did not check out in time. "
        "Reply 482 if you are going."
    )
    assert said["missed_checkout", "fr"].startswith("SANS NOUVELLES Anna (mobile) à 22:04:")
    assert said["missed_checkout", "nl"].startswith("NIET AFGEMELD Anna (mobile) om 22:04:")
    # A call says the kind after the worker's name; a press says the name only.
    assert messages.room_spoken("en", "Anna (mobile)", kind="panic") == "Anna (mobile)"
    assert "duress alarm, silent" in messages.room_spoken("en", "Anna (mobile)", kind="duress")
    assert "sous contrainte" in messages.room_spoken("fr", "Anna (mobile)", kind="duress")
    assert "onder dwang" in messages.room_spoken("nl", "Anna (mobile)", kind="duress")


def test_texts_about_a_phone_say_help_the_worker_not_go_to_a_room() -> None:
    room = "Anna (mobile)"
    assert messages.stand_down("en", name="Bob", room=room, phone=True) == (
        "Bob is going to help Anna (mobile)."
    )
    assert (
        messages.stand_down("fr", name="Bob", room=room, phone=True)
        == "Bob va aider Anna (mobile)."
    )
    assert messages.stand_down("nl", name="Bob", room=room, phone=True) == (
        "Bob gaat Anna (mobile) helpen."
    )
    assert messages.closed("en", room=room, phone=True) == "The alarm of Anna (mobile) is closed."
    assert messages.not_yours("en", room=room, name="Bob", phone=True) == (
        "Not done: the alarm of Anna (mobile) was taken by Bob, who closes it."
    )
    # A room keeps its words.
    assert messages.stand_down("en", name="Bob", room="Room 3") == "Bob is going to Room 3."


@pytest.fixture
def site(database_url: str, tmp_path: Path) -> Iterator[Served]:
    with served(database_url, tmp_path, link_secret=SecretStr(SECRET)) as running:
        yield running


def raise_alarm(site: Served, phone_id: str, kind: IncidentKind) -> None:
    site.server.services.mobile.raise_alarm(
        phone_id=phone_id, alert_id=new_alert_id(), pressed_at=now_utc(), kind=kind, via="checkin"
    )


def quiet(count: Callable[[], int], still: float = 0.5, longest: float = 10.0) -> None:
    """Wait until ``count()`` has not changed for ``still`` seconds (at most ``longest``)."""
    deadline = time.monotonic() + longest
    seen, since = count(), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < still:
        time.sleep(0.05)
        now = count()
        if now != seen:
            seen, since = now, time.monotonic()


def map_page(site: Served, text: str) -> int | None:
    """The page id the map link in ``text`` opens, if it is genuine and fresh."""
    found = MAP_LINK.search(text)
    assert found, text
    return read_token(SECRET, found.group(1), site.clock.now(), kind=MAP)


def test_duress_and_missed_checkout_pages_read_right_and_carry_the_map(site: Served) -> None:
    raise_alarm(site, "ab" * 8, IncidentKind.DURESS)
    assert site.twilio.wait_for(lambda sent: {RECEPTION, FLOOR} <= {s.to for s in sent})
    [reception] = site.twilio.to(RECEPTION)
    [floor] = site.twilio.to(FLOOR)
    label = "abababababababab (mobile)"  # a phone the site no longer knows: named by its id
    assert reception.startswith(f"DURESS {label} at "), reception
    assert "Cannot speak freely. Reply " in reception
    assert floor.startswith(f"DWANG {label} om "), floor
    for text in (reception, floor):
        # The acknowledgement link (as for a press), then the map of the phone.
        assert f" {BASE_URL}/ack/" in text
        assert map_page(site, text) is not None
    # The call says it is a duress alarm.
    assert site.twilio.wait_for_calls(lambda calls: any(c.to == RECEPTION for c in calls))
    call = site.twilio.calls_to(RECEPTION)[0]
    assert "abababababababab (mobile): duress alarm, silent." in call.spoken
    # A missed check-out, once the bundle windows have passed.
    site.clock.advance(30)
    raise_alarm(site, "cd" * 8, IncidentKind.MISSED_CHECKOUT)
    assert site.twilio.wait_for(lambda sent: len(site.twilio.to(FLOOR)) >= 2)
    missed = site.twilio.to(FLOOR)[-1]
    assert missed.startswith("NIET AFGEMELD cdcdcdcdcdcdcdcd (mobile) om "), missed
    assert map_page(site, missed) is not None


def test_a_bundle_of_many_phone_alarms_fits_twilio_and_maps_each(site: Served) -> None:
    kinds = [IncidentKind.PANIC, IncidentKind.DURESS, IncidentKind.MISSED_CHECKOUT]
    many = 40
    for n in range(many):
        raise_alarm(site, f"{n:016x}", kinds[n % 3])

    def told() -> tuple[list[str], list[str], list[int]]:
        texts = site.twilio.to(RECEPTION)
        named = [ln for t in texts for ln in t.splitlines() if "(mobile)" in ln]
        more = [int(m) for t in texts for m in re.findall(r"\+(\d+) more rooms\.", t)]
        return texts, named, more

    # The bundle windows of SMS (3 s) and calls (20 s), before any next step.
    site.clock.advance(3)
    assert wait_until(lambda: bool(told()[0]))
    quiet(lambda: len(told()[0]))  # every SMS of that window out before the calls' one
    site.clock.advance(20)
    assert wait_until(lambda: len(told()[1]) + sum(told()[2]) >= many)
    assert wait_until(
        lambda: any("duress alarm, silent" in c.spoken for c in site.twilio.calls_to(RECEPTION)),
        10,
    )
    assert site.twilio.refused == [], [(r.to, r.code) for r in site.twilio.refused]
    texts, named, more = told()
    assert len(texts) >= 2, texts
    assert all(messages.units(t) <= 1600 for t in texts), [len(t) for t in texts]
    # Every alarm is named once or counted; each named carries the map of its phone.
    assert len(named) + sum(more) == many, texts
    assert len({ln.split(" (mobile)")[0].split()[-1] for ln in named}) == len(named)
    assert all(map_page(site, line) is not None for line in named)
    # Each named alarm says its kind (which kinds are named and which counted depends
    # on the order the pages met in the sender's queue).
    assert any(ln.startswith("DURESS ") for ln in named)
    heads = ("ALARM ", "DURESS ", "MISSED CHECK-OUT ")
    assert all(ln.startswith(heads) for ln in named), named
    bundles = [t for t in texts if "more rooms." in t]
    assert bundles, texts
    assert all(f"All your open alarms: {BASE_URL}/ack/" in t for t in bundles)
    calls = site.twilio.calls_to(RECEPTION)
    assert all(messages.units(c.twiml) <= 4000 for c in calls)
    assert any("duress alarm, silent" in c.spoken for c in calls)
