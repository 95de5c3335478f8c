"""Twilio as it really is: a long code takes about one SMS a second and an account one
call a second, and Twilio answers 429 when pushed. The pager queues each sender's
requests and lets them go at the configured rate, most urgent first, coalescing a
person's pages that meet in the queue; a 429 pauses the sender's whole queue.

The fake Twilio enforces its per-sender rate on the server's hand-moved clock, so a
minute of paging runs in a second or two.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from panicbutton.clock import ManualClock
from panicbutton.wire import Alert, new_alert_id, now_utc
from server.models import Page
from server.paging.fit import segments
from server.paging.pacing import FIRST, LATER, NEWS, TEXT, Pacer, Send
from tests.fakes.twilio import Sent
from tests.harness import FLOOR, MANAGER, RECEPTION, System, wait_until
from tests.server.test_monitoring import monitoring_token, scrape
from tests.server.test_twilio_limits import (
    LINK_SECRET,
    START,
    press,
    rooms_more,
    rooms_named,
    run_clock,
)

ROOMS = 30
#: One SMS and one call a second, each request spaced by the rate (as deployed).
PACED = {
    "twilio_sms_per_second": 1.0,
    "twilio_calls_per_second": 1.0,
    "twilio_burst": 1,
    # Bundle windows off: what coalesces here is the queue.
    "sms_bundle_window": 0.0,
    "call_bundle_window": 0.0,
}
SMS_ONLY = {
    "steps": [
        {"after": 0, "who": "on_duty", "channels": ["sms"]},
        {"after": 30, "who": "all_staff", "channels": ["sms"]},
    ],
    "repeat_every": 600,
}


def rooms(n: int) -> list[dict[str, Any]]:
    return [
        {"id": f"room-{i}", "label": f"Room {i}", "device": f"unit-{i}"} for i in range(1, n + 1)
    ]


def twilio_at(system: System, rate: float, burst: int) -> None:
    """The fake's per-sender rate. A burst of 2 at the configured rate: a request reaches
    Twilio a moment after its slot (a tick of the hand-moved clock, here), so two may
    arrive closer together than the rate while the average holds."""
    system.twilio.sender_rate, system.twilio.sender_burst = rate, burst
    system.twilio._buckets.clear()


def covered(texts: list[str]) -> tuple[int, list[int]]:
    """Rooms named plus rooms counted ("+N more rooms"), and the rooms named twice."""
    named = [n for t in texts for n in rooms_named(t)]
    twice = sorted({n for n in named if named.count(n) > 1})
    return len(set(named)) + sum(rooms_more(t) for t in texts), twice


@pytest.mark.clock(START)
@pytest.mark.site(rooms=rooms(ROOMS))
@pytest.mark.settings(link_secret=SecretStr(LINK_SECRET), **PACED)
def test_a_burst_of_alarms_at_twilio_s_rate_gets_no_429_and_names_every_room(
    system: System,
) -> None:
    twilio_at(system, 1.0, 2)
    for i in range(1, ROOMS + 1):
        press(system, f"unit-{i}")
    run_clock(system)
    assert system.twilio.refused == [], [(r.to[-3:], r.code) for r in system.twilio.refused]
    for phone in (RECEPTION, FLOOR):
        texts = system.twilio.to(phone)
        # A few bundles, not thirty SMS queued for half a minute.
        assert len(texts) <= 3, len(texts)
        assert covered(texts) == (ROOMS, []), texts
        heard = [c.spoken for c in system.twilio.calls_to(phone)]
        assert len(heard) <= 3, len(heard)
        assert covered(heard) == (ROOMS, []), heard
    # No sender went faster than its rate, an SMS counting each of its segments (a
    # request reaches the fake up to a tick of the clock after its slot).
    calls = [c.at for c in system.twilio.calls]
    assert calls[-1] - calls[0] >= len(calls) - 1 - 0.5, calls
    sms = system.twilio.sent
    slots = sum(segments(s.body) for s in sms[:-1])
    assert slots > len(sms) - 1  # the bundles are long
    assert sms[-1].at - sms[0].at >= slots - 0.5, ([s.at for s in sms], slots)


@pytest.mark.clock(START)
@pytest.mark.site(escalation=SMS_ONLY)
@pytest.mark.settings(**PACED)
def test_first_pages_of_new_alarms_go_before_later_steps_and_news(system: System) -> None:
    twilio_at(system, 1.0, 2)
    assert system.server is not None
    alarms = system.server.services.alerts
    clock = system.clock
    assert isinstance(clock, ManualClock)
    opened = clock.now()
    room_1 = Alert(device_id="unit-1", alert_id=new_alert_id(), seq=1, pressed_at=now_utc())
    alarms.handle(room_1)
    run_clock(system)
    # Step 1 of room 1 (everyone) is due in half a second.
    clock.advance(29.5 - (clock.now() - opened).total_seconds())
    before = len(system.twilio.sent)
    # Room 1 pressed again: news to both on duty, one of them at once (the sender was
    # idle); then rooms 2 and 3: first pages, queued behind that slot.
    alarms.handle(dataclasses.replace(room_1, presses=2))
    assert wait_until(lambda: len(system.twilio.sent) == before + 1)
    press(system, "unit-2")
    press(system, "unit-3")
    clock.advance(0.5)  # step 1: room 1 again to everyone, the manager too
    token = monitoring_token(system)

    def queued() -> float:
        return scrape(system, token)[1][("panicbutton_sends_queued", (("channel", "sms"),))]

    # Waiting: the news to the other, reception's and floor's first pages of rooms 2
    # and 3 (room 1's step 1 to them joined those), the manager's step 1; no page is
    # still being claimed.
    pager = system.server.services.pager
    assert wait_until(lambda: queued() == 4 and pager.backlog() == 4), (queued(), pager.backlog())
    run_clock(system)

    def what(s: Sent) -> str:
        if "again" in s.body or "opnieuw" in s.body:
            return "news"
        if s.to == MANAGER:
            return "later"  # room 1's step 1: the manager's only page
        return "first" if {2, 3} <= rooms_named(s.body) else s.body

    assert what(system.twilio.sent[before]) == "news"
    order = [what(s) for s in system.twilio.sent[before + 1 :]]
    assert order == ["first", "first", "later", "news"], order
    assert system.twilio.refused == []


@pytest.mark.clock(START)
@pytest.mark.site(escalation=SMS_ONLY, rooms=rooms(10))
@pytest.mark.settings(**PACED)
def test_a_429_pauses_the_sender_and_nothing_is_lost_or_sent_twice(system: System) -> None:
    twilio_at(system, 0.25, 1)  # Twilio takes a quarter of what the site was set to
    for i in range(1, 11):
        press(system, f"unit-{i}")
    run_clock(system)
    waits = [(r.at, r.retry_after) for r in system.twilio.refused]
    assert waits
    assert all(r.code == 20429 for r in system.twilio.refused)
    for phone in (RECEPTION, FLOOR):
        assert covered(system.twilio.to(phone)) == (10, []), system.twilio.to(phone)
    assert system.events("page.failed") == []
    assert system.events("escalation.hurried") == []
    # The sender's whole queue waits out each Retry-After: within it, at most the one
    # request already on its way reached Twilio.
    arrivals = [s.at for s in system.twilio.sent] + [at for at, _ in waits]
    for at, seconds in waits:
        assert seconds is not None
        assert len([a for a in arrivals if at < a < at + seconds]) <= 1, (at, seconds)


@pytest.mark.clock(START)
@pytest.mark.site(escalation=SMS_ONLY)
@pytest.mark.settings(**PACED)
def test_a_page_whose_alarm_is_taken_while_it_waits_is_never_sent(system: System) -> None:
    twilio_at(system, 1.0, 2)
    press(system, "unit-1")
    # The clock stands still: one page goes at once, the other waits for its slot.
    assert system.twilio.wait_for(lambda sent: len(sent) == 1)
    [first] = system.twilio.sent
    other = FLOOR if first.to == RECEPTION else RECEPTION
    assert system.server is not None
    _, figures = scrape(system, monitoring_token(system))  # /metrics shows it waiting
    assert figures[("panicbutton_sends_queued", (("channel", "sms"),))] == 1
    assert figures[("panicbutton_sends_queued", (("channel", "call"),))] == 0
    code = re.search(r"(?:Reply|Antwoord) (\d+)", first.body)
    assert code is not None
    answer = system.twilio.inbound_sms(
        system.sms_webhook, public_url=system.sms_webhook_public, from_=first.to, body=code[1]
    )
    assert answer.status_code == 200
    run_clock(system)
    # The other person hears who is going, never the alarm page itself.
    assert not any(rooms_named(t) and code[1] in t for t in system.twilio.to(other))
    assert any("going" in t or "gaat" in t for t in system.twilio.to(other))
    with system.server.services.sessions() as s:
        statuses = dict(s.execute(select(Page.staff_id, Page.status)).all())
    assert sorted(statuses.values()) == ["cancelled", "sent"], statuses
    assert len(system.events("page.cancelled")) == 1


def test_the_queue_lets_the_most_urgent_go_first_and_a_person_s_pages_as_one() -> None:
    clock = ManualClock()
    granted: list[Send] = []
    pacer = Pacer(clock=clock, rates={"sms": 1.0}, grant=granted.append)

    def send(rank: int, key: str | None = None, *pages: int) -> Send:
        person = (key, "sms") if key else None
        return Send(lane="sms", rank=rank, run=lambda s: None, key=person, page_ids=list(pages))

    def next_granted() -> Send:
        count = len(granted)
        pacer.settle(granted[-1], 0)  # the one before went to Twilio, one segment
        clock.advance(1.0)
        assert wait_until(lambda: len(granted) == count + 1)
        return granted[-1]

    try:
        news = send(NEWS)
        pacer.put(news)  # the sender was idle: at once
        assert wait_until(lambda: granted == [news])
        text, ann, bob = send(TEXT), send(LATER, "ann", 1), send(FIRST, "bob", 3)
        for queued in (text, ann, bob, send(FIRST, "ann", 2)):
            pacer.put(queued)
        assert pacer.waiting() == {"sms": 3}  # Ann's two pages are one request
        first = next_granted()
        # Ann's first page of an alarm leads her request, which keeps its place in line.
        assert (first is ann, first.page_ids, first.rank) == (True, [2, 1], FIRST)
        assert next_granted() is bob
        pacer.settle(bob, 0)
        pacer.pause("sms", 3.0)  # a 429: nothing goes for 3 s
        clock.advance(2.5)
        assert not wait_until(lambda: len(granted) == 4, 0.3)
        clock.advance(0.5)
        assert wait_until(lambda: granted[-1] is text)
        later = send(NEWS)
        pacer.put(later)
        clock.advance(5.0)  # the text is not settled yet: nothing else goes
        assert not wait_until(lambda: len(granted) == 5, 0.3)
        pacer.settle(text, 2)  # it was three SMS segments: three slots
        clock.advance(1.5)
        assert not wait_until(lambda: len(granted) == 5, 0.3)
        clock.advance(0.5)
        assert wait_until(lambda: granted[-1] is later)
    finally:
        assert pacer.close() == []


@pytest.mark.clock(START)
@pytest.mark.site(rooms=rooms(4), escalation=SMS_ONLY)
@pytest.mark.settings(**PACED)
def test_pages_waiting_for_a_slot_when_the_server_stops_are_queued_again_not_half_sent(
    system: System,
) -> None:
    # The clock stands still: after the first SMS, the others wait for the sender's slot.
    twilio_at(system, 1.0, 2)
    for i in range(1, 5):
        press(system, f"unit-{i}")
    assert system.server is not None
    pager = system.server.services.pager
    assert wait_until(lambda: len(system.twilio.sent) == 1 and pager.backlog() >= 1)
    pager.close()
    with system.server.services.sessions() as s:
        states = {p.status for p in s.scalars(select(Page))}
        sending = list(s.scalars(select(Page.id).where(Page.status == "sending")))
    # Given back as queued: the next start sends them at once, without asking Twilio
    # about each (they never reached it); only what went is recorded sent.
    assert sending == []
    assert states == {"sent", "pending"}


@pytest.mark.clock(START)
@pytest.mark.site(escalation=SMS_ONLY)
@pytest.mark.settings(**PACED)
def test_a_page_whose_claim_another_instance_took_over_is_not_sent_here_too(
    system: System,
) -> None:
    twilio_at(system, 1.0, 2)
    assert system.server is not None
    services = system.server.services
    press(system, "unit-1")

    def states() -> list[str]:
        with services.sessions() as s:
            return sorted(s.scalars(select(Page.status)))

    assert wait_until(lambda: states() == ["sending", "sent"])
    # The second on-duty page waits for the slot; meanwhile this instance stalled past
    # its lease and another instance took the page over (and sends it itself).
    with services.sessions.begin() as s:
        waiting = s.scalars(select(Page).where(Page.status == "sending")).one()
        waiting.claimed_by = "another-instance"
    run_clock(system, until=lambda: services.pager.backlog() == 0)
    assert len(system.twilio.sent) == 1  # never twice: the other instance sends it
    with services.sessions() as s:
        assert s.get_one(Page, waiting.id).status == "sending"
