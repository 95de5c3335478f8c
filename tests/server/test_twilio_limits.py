"""Every page fits Twilio's published limits, and what Twilio refuses is never sent
again unchanged.

The fake Twilio enforces Twilio's limits (Body at most 1,600 characters, inline
TwiML at most 4,000, ValidityPeriod 1-36,000 s, a per-sender rate answered with
429 and Retry-After) and answers with Twilio's error JSON; the server talks to
it through the real twilio library.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError

from panicbutton.clock import ManualClock
from panicbutton.wire import Alert, new_alert_id, now_utc
from server.errors import NotifierError, SiteError
from server.log.append import audit
from server.models import Page
from server.paging import messages, status
from server.paging.fit import BUNDLE_TEXTS, COMPACT_BUDGET, COMPACT_ROOM_CHARS, fit, split
from server.paging.notifier import TwilioNotifier
from server.site import parse_site
from tests import web
from tests.fakes.twilio import FakeTwilio
from tests.harness import FLOOR, RECEPTION, System, wait_until

#: Only step 0 within a test: step 1 (everyone) is far away.
ONLY_STEP0 = {
    "steps": [{"after": 0, "who": "on_duty"}, {"after": 3600, "who": "all_staff"}],
    "repeat_every": 600,
}
SMS_ONLY = {
    "steps": [
        {"after": 0, "who": "on_duty", "channels": ["sms"]},
        {"after": 3600, "who": "all_staff", "channels": ["sms"]},
    ],
    "repeat_every": 600,
}
CALL_ONLY = {
    "steps": [
        {"after": 0, "who": "on_duty", "channels": ["call"]},
        {"after": 3600, "who": "all_staff", "channels": ["call"]},
    ],
    "repeat_every": 600,
}
LINK_SECRET = "k" * 40
MANY = 40
#: Room labels are the site's own text, of any length.
LONG = "Room {i} " + "with a very long description of where it is, " * 4


def many_rooms(n: int = MANY) -> list[dict[str, Any]]:
    return [
        {"id": f"room-{i}", "label": LONG.format(i=i).strip(), "device": f"unit-{i}"}
        for i in range(1, n + 1)
    ]


def press(system: System, device: str) -> None:
    """What the ingest does with a unit's alert (MQTT is exercised by the storm test)."""
    assert system.server is not None
    system.server.services.alerts.handle(
        Alert(device_id=device, alert_id=new_alert_id(), seq=1, pressed_at=now_utc())
    )


def idle(system: System, timeout: float = 30.0) -> None:
    system.wait_idle(timeout=timeout)


#: The start of the hand-moved clock of tests that move the pager's time (its bundle
#: windows and waits) instead of sleeping through it.
START = "2026-11-27T21:00:00+00:00"


def run_clock(
    system: System, until: Callable[[], bool] | None = None, timeout: float = 30.0
) -> None:
    """Once the pager has taken every page made so far, move the server's hand-moved
    clock on half a second at a time until it has nothing queued, held or being sent
    (and ``until()`` holds), then wait for idle."""
    clock = system.clock
    assert isinstance(clock, ManualClock)
    assert system.server is not None
    services = system.server.services
    pager = services.pager

    def taken() -> bool:
        with services.sessions() as s:
            return not s.scalar(select(func.count()).where(Page.status == "pending"))

    # Pages made at one moment are bundled by that moment's clock, not a later one.
    assert wait_until(taken, timeout), "the pager did not take every page"

    def done() -> bool:
        if pager.backlog() == 0 and (until is None or until()):
            return True
        clock.advance(0.5)
        return False

    assert wait_until(done, timeout, step=0.05), f"pager not done: {pager.backlog()} left"
    idle(system, timeout)


def rooms_named(text: str) -> set[int]:
    return {int(n) for n in re.findall(r"Room (\d+)", text)}


def rooms_more(text: str) -> int:
    found = re.search(r"\+?(\d+) (?:more rooms|andere kamers)", text)
    return int(found.group(1)) if found else 0


def notifier(twilio: FakeTwilio, **settings: Any) -> TwilioNotifier:
    from server.settings import Settings  # noqa: PLC0415 -- local to the helper

    # Only the Twilio settings matter here (the rest is checked at server start).
    return TwilioNotifier(
        Settings.model_construct(
            notifier="twilio",
            twilio_account_sid=twilio.account_sid,
            twilio_auth_token=SecretStr(twilio.auth_token),
            twilio_from="+32460000000",
            twilio_api_base_url=twilio.base_url,
            twilio_timeout=5.0,
            **settings,
        )
    )


@pytest.fixture
def twilio() -> Any:
    fake = FakeTwilio(account_sid="AC" + "1" * 32, auth_token="t" * 32).start()
    yield fake
    fake.stop()


def test_fake_twilio_refuses_what_twilio_refuses(twilio: FakeTwilio) -> None:
    plain = notifier(twilio)
    with pytest.raises(NotifierError) as body:
        plain.send_sms(RECEPTION, "x" * 1601)
    assert body.value.code == 21617
    assert not body.value.retryable
    assert plain.send_sms(RECEPTION, "x" * 1600).startswith("SM")
    # Twilio counts UTF-16 units: an emoji outside the BMP is two.
    with pytest.raises(NotifierError) as emoji:
        plain.send_sms(RECEPTION, "🚨" * 801)
    assert emoji.value.code == 21617
    assert plain.send_sms(RECEPTION, "🚨" * 800).startswith("SM")
    with pytest.raises(NotifierError) as twiml:
        plain.call(RECEPTION, "<Response><Say>" + "x" * 4000 + "</Say></Response>")
    assert twiml.value.code == 32018
    with pytest.raises(NotifierError) as validity:
        notifier(twilio, sms_validity=36001).send_sms(RECEPTION, "hello")
    assert validity.value.code == 90007
    # Twilio's error JSON, as the library reads it.
    raw = web.post(
        f"{twilio.base_url}/2010-04-01/Accounts/{twilio.account_sid}/Messages.json",
        data={"To": RECEPTION, "From": "+32460000000", "Body": "x" * 1601},
        auth=(twilio.account_sid, twilio.auth_token),
    )
    assert raw.status_code == 400
    assert raw.json() == {
        "code": 21617,
        "message": "The concatenated message body exceeds the 1600 character limit.",
        "more_info": "https://www.twilio.com/docs/errors/21617",
        "status": 400,
    }
    # A per-sender rate: beyond it 429 / 20429 with Retry-After, which the error carries.
    twilio.sender_rate, twilio.sender_burst = 0.25, 1
    twilio._buckets.clear()
    plain.send_sms(FLOOR, "first")
    with pytest.raises(NotifierError) as rate:
        plain.send_sms(FLOOR, "second")
    assert (rate.value.code, rate.value.retryable, rate.value.retry_after) == (20429, True, 4.0)
    assert [(r.status, r.code) for r in twilio.refused][-1] == (429, 20429)


@pytest.mark.clock(START)
@pytest.mark.site(escalation=ONLY_STEP0, rooms=many_rooms())
@pytest.mark.settings(link_secret=SecretStr(LINK_SECRET), call_bundle_window=2.0)
def test_a_bundle_of_many_rooms_fits_and_names_or_counts_every_room(system: System) -> None:
    for i in range(1, MANY + 1):
        press(system, f"unit-{i}")
    run_clock(system)
    assert system.twilio.refused == [], [(r.to, r.code) for r in system.twilio.refused]
    for phone in (RECEPTION, FLOOR):
        texts = system.twilio.to(phone)
        assert all(len(t) <= 1000 for t in texts), [len(t) for t in texts]
        named = [rooms_named(t) for t in texts]
        # Every room is named once or counted, and no text is longer than Twilio takes.
        assert sum(len(n) + rooms_more(t) for n, t in zip(named, texts, strict=True)) == MANY
        assert len(set().union(*named)) == sum(len(n) for n in named)
        calls = system.twilio.calls_to(phone)
        assert all(len(c.twiml) <= 3000 for c in calls)
        spoken = [re.search(r"<Say[^>]*>([^<]*)</Say>", c.twiml) for c in calls]
        heard = [s.group(1) if s else "" for s in spoken]
        assert sum(len(rooms_named(h)) + rooms_more(h) for h in heard) == MANY, heard
    # The bundle ends with a link to the person's open alarms: all of them, each with
    # its own button, under /ack/ like every link.
    bundles = [t for t in system.twilio.to(RECEPTION) if re.search(r"\+\d+ more rooms\.", t)]
    assert bundles, system.twilio.to(RECEPTION)
    bundle = bundles[0]
    link = bundle.split()[-1]
    assert link.startswith(f"{system.settings.public_base_url}/ack/")
    local = link.replace(system.settings.public_base_url, system.base_url)
    shown = web.get(local, timeout=30)  # a busy machine: the page lists many rooms
    assert shown.status_code == 200
    assert shown.headers["Cache-Control"] == "no-store"
    # Every alarm of this bundle and the older ones, oldest first; none opened later.
    listed = rooms_named(shown.text)
    assert rooms_named(bundle) <= listed
    assert listed == set(range(1, max(listed) + 1))
    chosen = re.findall(r'name="page" value="(\d+)"', shown.text)[5]
    done = web.post(local, data={"confirm": "1", "page": chosen}, timeout=30)
    assert "You are going" in done.text
    assert [i.state for i in system.incidents()].count("acknowledged") == 1
    assert web.post(local, data={"confirm": "1", "page": chosen}, timeout=30).status_code == 410


@pytest.mark.site(escalation=SMS_ONLY)
def test_a_page_refused_for_its_content_goes_compact_not_unchanged(system: System) -> None:
    system.twilio.fail(RECEPTION, code=21617, message="too long", times=1)
    press(system, "unit-1")
    idle(system)
    [refused] = [r for r in system.twilio.refused if r.to == RECEPTION]
    [accepted] = system.twilio.to(RECEPTION)
    assert accepted != refused.params["Body"]
    assert accepted.startswith("ALARM Room 1")
    assert system.events("escalation.hurried") == []
    assert [e.data["page"] for e in system.events("page.failed")] == []
    # The person's next page on that channel is compact from the start.
    press(system, "unit-2")
    idle(system)
    assert len(system.twilio.to(RECEPTION)) == 2
    assert system.twilio.to(RECEPTION)[1].startswith("ALARM Room 2")
    assert ", code " in system.twilio.to(RECEPTION)[1]
    assert len([r for r in system.twilio.refused if r.to == RECEPTION]) == 1


@pytest.mark.site(escalation=CALL_ONLY)
def test_a_call_refused_for_its_content_goes_compact_not_unchanged(system: System) -> None:
    system.twilio.fail(RECEPTION, code=32018, message="Twiml too long", times=1)
    press(system, "unit-1")
    idle(system)
    [refused] = [r for r in system.twilio.refused if r.to == RECEPTION]
    [accepted] = system.twilio.calls_to(RECEPTION)
    assert accepted.twiml != refused.params["Twiml"]
    assert accepted.spoken.startswith("Alarm. Room 1.")
    assert accepted.twiml.count("<Say") < refused.params["Twiml"].count("<Say")
    assert system.events("escalation.hurried") == []


@pytest.mark.clock(START)
@pytest.mark.site(escalation=SMS_ONLY)
def test_too_many_requests_are_waited_out_not_failed(system: System) -> None:
    system.twilio.sender_rate, system.twilio.sender_burst = 0.25, 1
    press(system, "unit-1")
    run_clock(system)  # each 429 asks to wait 4 s
    assert len(system.twilio.to(RECEPTION)) == 1
    assert len(system.twilio.to(FLOOR)) == 1
    assert any(r.code == 20429 for r in system.twilio.refused)
    assert system.events("page.failed") == []
    assert system.events("escalation.hurried") == []


@pytest.mark.site(escalation=ONLY_STEP0)
def test_a_call_twilio_took_before_a_crash_is_not_placed_again(system: System) -> None:
    press(system, "unit-1")
    idle(system)
    [call] = system.twilio.calls_to(RECEPTION)
    assert system.server is not None
    services = system.server.services
    # The server dies after Twilio accepted the call and before it recorded it: the
    # page is left "sending", with no call id.
    system.stop_server()
    with services.sessions.begin() as s:
        page_id = s.scalar(
            select(Page.id).where(Page.staff_id == "reception", Page.channel == "call")
        )
        s.execute(
            update(Page)
            .where(Page.id == page_id)
            .values(
                status="sending",
                provider_sid=None,
                sent_at=None,
                created_at=now_utc() - timedelta(seconds=2),
            )
        )
    system.start_server()
    idle(system)
    assert len(system.twilio.calls_to(RECEPTION)) == 1, "the call was placed twice"
    with system.server.services.sessions() as s:
        page = s.get_one(Page, page_id)
        assert (page.status, page.provider_sid) == ("sent", call.sid)
    assert any(
        e.data.get("recovered") and e.data["page"] == page_id for e in system.events("page.sent")
    )


@pytest.mark.clock(START)
@pytest.mark.site(escalation=SMS_ONLY, rooms=many_rooms())
@pytest.mark.settings(link_secret=SecretStr(LINK_SECRET))
def test_a_status_callback_reaches_every_page_of_a_big_bundle(system: System) -> None:
    for i in range(1, MANY + 1):
        press(system, f"unit-{i}")
    run_clock(system)
    bundle = next(s for s in system.twilio.sent if s.to == RECEPTION and "more rooms" in s.body)
    with system.server.services.sessions() as s:  # type: ignore[union-attr]
        pages = set(s.scalars(select(Page.id).where(Page.provider_sid == bundle.sid)))
    # More pages than the callback's URL can name.
    assert len(pages) > 20
    url = bundle.params["StatusCallback"]
    public = system.settings.public_base_url
    answer = system.twilio.signed_post(
        url.replace(public, system.base_url),
        {"MessageSid": bundle.sid, "MessageStatus": "undelivered", "ErrorCode": "30003"},
        public_url=url,
    )
    assert answer.status_code == 200
    # Every alarm of the undelivered bundle knows it, and its next step is brought forward.
    assert {e.data["page"] for e in system.events("page.status")} == pages
    hurried = {e.incident_id for e in system.events("escalation.hurried")}
    with system.server.services.sessions() as s:  # type: ignore[union-attr]
        incidents = set(s.scalars(select(Page.incident_id).where(Page.id.in_(pages))))
    assert hurried == incidents


@pytest.mark.clock(START)
@pytest.mark.site(escalation=ONLY_STEP0)
def test_a_page_whose_record_fails_is_looked_up_and_never_sent_twice(
    system: System, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Twilio takes the SMS and the call, then recording one of them fails once (a
    # locked database, say): the page must end up recorded, sent once, without a restart.
    failed: list[str] = []

    def flaky(session: Any, **fields: Any) -> None:
        if fields.get("type") == "page.sent" and len(failed) < 2:
            failed.append(str(fields["page"]))
            raise OperationalError("INSERT", {}, Exception("database is locked"))
        audit(session, **fields)

    monkeypatch.setattr(status, "audit", flaky)  # the name page records are written by
    press(system, "unit-1")
    assert wait_until(lambda: len(failed) == 2)
    # Looked up a few seconds (of the server's clock) later.
    run_clock(system, until=lambda: len(system.events("page.sent")) == 4)
    for phone in (RECEPTION, FLOOR):
        assert len(system.twilio.to(phone)) == 1, system.twilio.to(phone)
        assert len(system.twilio.calls_to(phone)) == 1
    recovered = [e.data["page"] for e in system.events("page.sent") if e.data.get("recovered")]
    assert sorted(map(str, recovered)) == sorted(failed)
    with system.server.services.sessions() as s:  # type: ignore[union-attr]
        assert set(s.scalars(select(Page.status))) == {"sent"}


@pytest.mark.clock(START)
@pytest.mark.site(escalation=SMS_ONLY, rooms=many_rooms(4))
@pytest.mark.settings(link_secret=SecretStr(LINK_SECRET))
def test_a_list_link_never_reaches_an_alarm_opened_after_it(system: System) -> None:
    for i in (1, 2, 3):
        press(system, f"unit-{i}")
    run_clock(system)
    bundle = next(t for t in system.twilio.to(RECEPTION) if "All your open alarms" in t)
    local = bundle.split()[-1].replace(system.settings.public_base_url, system.base_url)
    press(system, "unit-4")  # later: this link was never about it
    run_clock(system)
    listed = rooms_named(web.get(local).text)
    # The pager may have sent room 1 alone before rooms 2 and 3 were pressed (it runs
    # on its own thread), so the bundle holds two or three rooms: never room 4.
    assert 4 not in listed
    assert len(listed) >= 2
    assert listed <= {1, 2, 3}
    with system.server.services.sessions() as s:  # type: ignore[union-attr]
        room_4 = s.scalar(
            select(Page.id).where(Page.staff_id == "reception", Page.incident_id == 4)
        )
    refused = web.post(local, data={"confirm": "1", "page": str(room_4)})
    assert refused.status_code == 410
    assert [i.state for i in system.incidents()].count("acknowledged") == 0


STORM = 30


@pytest.mark.site(
    escalation=SMS_ONLY,
    rooms=[
        {"id": f"room-{i}", "label": f"Room {i}", "device": f"unit-{i}"}
        for i in range(1, STORM + 1)
    ],
)
def test_a_storm_of_mashed_buttons_sends_the_bundle_first_and_few_news(system: System) -> None:
    assert system.server is not None
    services = system.server.services
    # A slow sender (2 SMS a second): what waits behind what shows.
    system.twilio.sender_rate, system.twilio.sender_burst = 2.0, 4
    start = time.monotonic()
    alerts = [
        Alert(device_id=f"unit-{i}", alert_id=new_alert_id(), seq=1, pressed_at=now_utc())
        for i in range(1, STORM + 1)
    ]
    for a in alerts:  # every room pressed three times, within the bundle window
        for presses in (1, 2, 3):
            services.alerts.handle(dataclasses.replace(a, presses=presses))
    print(f"\n  presses took {time.monotonic() - start:.1f} s")

    def bundle(phone: str) -> list[float]:
        return [s.at for s in system.twilio.sent if s.to == phone and len(rooms_named(s.body)) > 1]

    assert system.twilio.wait_for(lambda sent: all(bundle(p) for p in (RECEPTION, FLOOR)), 60)
    for phone in (RECEPTION, FLOOR):
        # The bundle of the other rooms goes out when the bundle window (3 s) after the
        # first page ends, not behind a queue of news texts.
        first = min(s.at for s in system.twilio.sent if s.to == phone)
        print(f"  {phone[-3:]}: bundle {bundle(phone)[0] - first:.1f} s after the first page")
        assert bundle(phone)[0] - first < 3.0 + 2.0, (phone[-3:], bundle(phone)[0] - first)
    idle(system)
    for phone in (RECEPTION, FLOOR):
        news = [t for t in system.twilio.to(phone) if "again" in t or "opnieuw" in t]
        assert len(news) <= 1, (phone[-3:], len(news))


#: Emoji are two UTF-16 units each, as Twilio counts (a Python ``len`` says one).
EMOJI_LABEL = "Room 1 " + "🚨" * 900
#: A name as long as an account's may be (200 characters, 390 UTF-16 units).
EMOJI_NAME = "Reception " + "😀" * 190


def units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


@pytest.mark.site(
    escalation=SMS_ONLY,
    rooms=[{"id": "room-1", "label": EMOJI_LABEL, "device": "unit-1"}],
    staff=[
        {"id": "reception", "name": EMOJI_NAME, "phone": RECEPTION, "language": "en"},
        {"id": "floor", "name": "Floor", "phone": FLOOR, "language": "nl"},
    ],
)
def test_emoji_room_labels_and_names_fit_twilio_in_every_text(system: System) -> None:
    assert system.server is not None
    first = Alert(device_id="unit-1", alert_id=new_alert_id(), seq=1, pressed_at=now_utc())
    system.server.services.alerts.handle(first)
    system.server.services.alerts.handle(dataclasses.replace(first, presses=2))
    idle(system)

    def inbound(phone: str, body: str) -> None:
        answer = system.twilio.inbound_sms(
            system.sms_webhook, public_url=system.sms_webhook_public, from_=phone, body=body
        )
        assert answer.status_code == 200
        idle(system)

    [page] = [t for t in system.twilio.to(RECEPTION) if t.startswith("ALARM")]
    code = re.search(r"Reply (\d+)", page)
    assert code is not None
    inbound(RECEPTION, code.group(1))
    inbound(FLOOR, code.group(1))  # not Floor's code: told Floor's codes, with the room
    assert system.twilio.refused == [], [(r.to, r.code) for r in system.twilio.refused]
    reception, floor = system.twilio.to(RECEPTION), system.twilio.to(FLOOR)
    said = {
        "page": page,
        "news": next(t for t in reception if "pressed again" in t),
        "confirmation": next(t for t in reception if t.startswith("Thanks.")),
        "code needed": next(t for t in floor if t.startswith("Niet gedaan")),
        "stand-down": next(t for t in floor if " gaat naar " in t),
    }
    for what, text in said.items():
        # The room (and the name) are there, cut to a few words, well within Twilio's.
        assert text.startswith(("Room 1 🚨", "ALARM Room 1 🚨", "Reception 😀")) or (
            "Room 1 🚨" in text
        ), (what, text[:80])
        assert units(text) <= 200, (what, units(text))


BIG = 200


@pytest.mark.clock(START)
@pytest.mark.site(
    escalation=SMS_ONLY,
    rooms=[
        {"id": f"room-{i}", "label": f"Room {i}", "device": f"unit-{i}"} for i in range(1, BIG + 1)
    ],
)
def test_without_links_a_big_bundle_sends_every_room_and_its_code(system: System) -> None:
    assert not system.settings.link_secret  # no full-list link to send instead
    system.twilio.sender_rate = 0.0  # the rate is another test's subject
    for i in range(1, BIG + 1):
        press(system, f"unit-{i}")
    run_clock(system, timeout=60)
    assert system.twilio.refused == [], [(r.to, r.code) for r in system.twilio.refused]
    assert system.server is not None
    with system.server.services.sessions() as s:
        pages = s.execute(select(Page.staff_id, Page.incident_id, Page.reply_code)).all()
    room_of = {i.id: int(i.room_id.removeprefix("room-")) for i in system.incidents()}
    for phone, staff_id, word in ((RECEPTION, "reception", "Reply"), (FLOOR, "floor", "Antwoord")):
        texts = system.twilio.to(phone)
        assert len(texts) <= 20, len(texts)  # about 18 pages a text, a few bundles
        assert all(units(t) <= 1000 for t in texts)
        got = {
            (int(room), int(code))
            for t in texts
            for room, code in re.findall(rf"Room (\d+) \w+ \d\d:\d\d\. {word} (\d+)", t)
        }
        want = {(room_of[i], code) for who, i, code in pages if who == staff_id}
        assert got == want, sorted(want - got)[:5]


def test_a_bundle_without_a_link_is_at_most_twelve_texts_then_counts() -> None:
    lines = [f"ALARM Room {i} at 22:04. Reply {100 + i} if you are going." for i in range(1, 401)]
    rooms = [f"room-{i}" for i in range(1, 401)]
    texts = split(
        lines, rooms, 1000, lambda more: messages.bundle_footer("en", more=more, link=None), most=12
    )
    assert len(texts) == BUNDLE_TEXTS == 12
    assert all(units(t) <= 1000 for t in texts)
    named = [n for t in texts for n in rooms_named(t)]
    assert len(named) == len(set(named))
    assert texts[-1].endswith(f"+{400 - len(named)} more rooms.")
    assert rooms_more(texts[-1]) + len(named) == 400


def test_a_compact_follow_up_bundle_keeps_the_count_and_the_link() -> None:
    link = "https://panicbutton.residentie-zonneschijn.be/hooks/ack/" + "t" * 120
    room = messages.room_label("Kamer 12 (eerste verdieping, oostvleugel)", COMPACT_ROOM_CHARS)
    at = now_utc()
    lines = [
        messages.follow_up(
            "fr",
            room=room,
            name="Marie-Christine Vandenbroucke-Van Der Elst 😀😀😀",
            at=at,
            timezone="Europe/Brussels",
            code=100 + i,
        )
        for i in range(30)
    ]
    body = fit(
        lines,
        [f"room-{i}" for i in range(30)],
        COMPACT_BUDGET["sms"],
        lambda more: messages.bundle_footer("fr", more=more, link=link),
    )
    assert units(body) <= COMPACT_BUDGET["sms"]
    assert body.startswith("TOUJOURS OUVERT: Kamer 12")
    assert body.endswith(f"+29 autres chambres. Toutes vos alertes ouvertes : {link}")


def test_staff_names_are_cut_in_follow_ups() -> None:
    text = messages.follow_up(
        "en", room="Room 1", name="😀" * 900, at=now_utc(), timezone="Europe/Brussels", code=123
    )
    assert units(text) < 200
    assert text.endswith("Reply 123g (handled) or 123f (false alarm) to close.")


@pytest.mark.site(escalation=CALL_ONLY)
@pytest.mark.settings(call_bundle_window=0.0)
def test_a_half_sent_call_never_takes_another_half_sent_calls_place(system: System) -> None:
    press(system, "unit-1")
    press(system, "unit-2")
    idle(system)
    assert system.server is not None
    services = system.server.services
    system.stop_server()
    # Both of reception's call pages were left "sending" by a crash; Twilio got only
    # Room 2's call. Room 1's page must not be taken as sent by Room 2's call.
    system.twilio.calls[:] = [
        c for c in system.twilio.calls if not (c.to == RECEPTION and "Room 1" in c.spoken)
    ]
    with services.sessions.begin() as s:
        s.execute(
            update(Page)
            .where(Page.staff_id == "reception", Page.channel == "call")
            .values(status="sending", provider_sid=None, sent_at=None)
        )
    system.start_server()
    idle(system)
    heard = [c.spoken for c in system.twilio.calls_to(RECEPTION)]
    assert any("Room 1" in h for h in heard), heard


def test_the_refusals_of_a_close_by_sms_cut_names_and_rooms_like_every_text() -> None:
    """ "482g" on an alarm not yet taken, or taken by someone else: the answer names the
    room and the taker, cut as every other text cuts them (the room may be the site's
    name, for a duty gap)."""
    long_room = "Chambre " + "é" * 2000
    for lang in ("fr", "nl", "en"):
        texts = [
            messages.take_first(lang, room=long_room, code=482),
            messages.not_yours(lang, room=long_room, name=EMOJI_NAME),
        ]
        for text in texts:
            assert units(text) < 200, text
            assert "482" in text or "Chambre" in text


@pytest.mark.parametrize("bad", ["Ann\u0001e", "Ann\u001be", "Ann\x08e"])
def test_a_name_with_a_control_character_is_refused_before_it_reaches_a_call(
    bad: str,
) -> None:
    """Spoken in a call, such a name would make the TwiML no XML at all (Twilio 12100)."""
    with pytest.raises(SiteError, match="control character"):
        parse_site(
            {
                "rooms": [{"id": "room-1", "label": "Room 1", "device": "unit-1"}],
                "staff": [{"id": "ann", "name": bad, "phone": "+32470000001"}],
                "duty": {"on_duty": ["ann"]},
            }
        )
