"""Incident records in Chromium: a real press read in the list and its timeline (the
reason asked once per session, each view logged with the person), resolved with a note
from the page, reviewed and put in the violence register by a manager; typed text
stays text, and a change without the session's CSRF token is refused."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select, update

from device.indicator import Light
from panicbutton.wire import Alert, new_alert_id
from server.app import Server, build
from server.models import Incident, LogEntry
from server.paging.notifier import ConsoleNotifier
from server.people import auth, violence
from server.people.roles import Role
from server.people.tables import WebSession
from server.records import LIST_VIEW_EVERY
from server.routes.deps import session_cookie
from server.settings import Settings
from tests.harness import (
    DEVICE_TOKENS,
    DEVICES,
    RECEPTION,
    System,
    open_person,
    sample_site,
    wait_until,
    web_session,
)
from tests.server.console.conftest import accessible, screenshot
from tests.server.people_kit import kit

if TYPE_CHECKING:
    from playwright.sync_api import Dialog, Page

#: Typed text that would run or turn the line around, were it not kept as text.
XSS = "<img src=x onerror=alert(1)>"
BIDI = "\u202e"
ROOMS = [
    {
        "id": f"room-{i}",
        "label": f"Room {i} {XSS} {BIDI}gnol" if i == 1 else f"Room {i}",
        "device": d,
        "device_token_sha256": hashlib.sha256(DEVICE_TOKENS[d].encode()).hexdigest(),
    }
    for i, d in enumerate(DEVICES, 1)
]


def give_reason(page: Page, reason: str = "checking the night's alarm") -> None:
    """Answer the page that asks why (once per session)."""
    page.locator("textarea#reason").fill(reason)
    page.locator("form[action='/console/reason'] button").click()
    page.wait_for_load_state()


def timeline(page: Page) -> list[str]:
    types: list[str] = page.locator("ol.timeline > li").evaluate_all(
        "els => els.map(e => e.dataset.type)"
    )
    return types


@pytest.mark.site(rooms=ROOMS)
def test_a_press_is_read_resolved_with_a_note_and_reviewed_from_its_record(
    console: System, open_page: Callable[..., Page], tmp_path: Path
) -> None:
    room = console.room("unit-1")
    assert wait_until(lambda: room.light is Light.ARMED), room.lights
    room.press()
    assert console.twilio.wait_for(lambda _: bool(console.twilio.to(RECEPTION)))
    [incident] = console.incidents()
    dialogs: list[str] = []

    def dialog(shown: Dialog) -> None:
        dialogs.append(shown.message)
        shown.dismiss()

    # The manager (French) opens the list: asked why, once for the list and the record.
    manager = open_page("manager", "/console/incidents")
    manager.on("dialog", dialog)
    assert manager.locator("table.incidents").count() == 0
    give_reason(manager)
    rows = manager.locator("tr.incident-row")
    assert rows.count() == 1
    label = rows.first.locator("td").nth(1)
    assert label.inner_text() == "Room 1 <img src=x onerror=alert(1)> \\u202egnol"
    assert manager.locator("main img").count() == 0
    assert manager.locator("#f-room option[value='room-1']").inner_text() == label.inner_text()
    accessible(manager)
    rows.first.get_by_role("link").click()
    manager.wait_for_url(f"**/console/incidents/{incident.id}")
    assert manager.locator("textarea#reason").count() == 0  # not asked twice
    seen = timeline(manager)
    for step in ("alert.raised", "escalation.plan_frozen", "page.queued", "page.sent"):
        assert step in seen, seen
    assert seen[-1] == "record.viewed"
    assert "Manager" in manager.locator("ol.timeline > li").last.inner_text()
    viewed = console.events("record.viewed")[-1].data
    assert (viewed["by"], viewed["scope"]) == ("manager", f"incident:{incident.id}")
    # A change without the session's CSRF token is refused, though the cookie goes along.
    refused = manager.request.post(
        f"{console.base_url}/api/v1/incidents/{incident.id}/notes", data={"text": "no token"}
    )
    assert refused.status == 403, refused.text()

    # Reception (English, staff) goes, then resolves with a note, from the record.
    reception = open_page("reception", f"/console/incidents/{incident.id}")
    reception.on("dialog", dialog)
    give_reason(reception, "I am answering this alarm")
    assert reception.locator("form#review, form#violence").count() == 0
    reception.get_by_role("button", name="I'm going").click()
    reception.locator("li[data-type='incident.acknowledged']").wait_for()
    assert (
        "Reception is going (from the console)."
        in reception.locator("li[data-type='incident.acknowledged']").inner_text()
    )
    assert wait_until(lambda: room.light is Light.HELP_COMING), room.lights
    reception.locator("#outcome").select_option("false_alarm")
    reception.locator("#resolve-note").fill(f"Guest said {XSS} {BIDI}evil")
    reception.get_by_role("button", name="Resolve").click()
    reception.locator("li[data-type='note.added']").wait_for()
    assert reception.locator("#state").inner_text() == "Resolved (false alarm)"
    resolved = reception.locator("li[data-type='incident.resolved']").inner_text()
    assert "Reception resolved the incident: false alarm." in resolved
    note = reception.locator("li[data-type='note.added'] blockquote")
    assert note.inner_text() == "Guest said <img src=x onerror=alert(1)> \\u202eevil"
    assert reception.locator("main img").count() == 0
    # Staff hold no right to review nor to keep the register: the API refuses them too.
    for url, body in (
        (f"/api/v1/incidents/{incident.id}/review", {}),
        ("/api/v1/violence", {"incident_id": incident.id, "account": "not mine to say"}),
    ):
        status = reception.evaluate(
            """async ([url, body]) => (await fetch(url, {method: "POST", headers: {
            "Content-Type": "application/json", "X-CSRF-Token":
            document.querySelector("meta[name=csrf]").content}, body: JSON.stringify(body)}))
            .status""",
            [url, body],
        )
        assert status == 403, url
    accessible(reception)
    screenshot(reception, "incident", tmp_path)

    # The manager signs off the review and records the violence register's entry.
    manager.reload()
    manager.locator("#remarks").fill("Talked it through with the team.")
    manager.locator("form#review button").click()
    manager.locator("li[data-type='review.signed_off']").wait_for()
    manager.locator("#account").fill(f"A guest shouted {XSS}")
    manager.locator("form#violence button").click()
    manager.locator("li[data-type='violence.recorded']").wait_for()
    assert manager.locator("form#violence").count() == 0
    assert "Talked it through" in manager.locator("li[data-type='review.signed_off']").inner_text()
    accessible(manager)
    # Staff see that the review and the register's entry are there, not what they say,
    # nor who opened the record; their own note they read.
    reception.reload()
    reviewed = reception.locator("li[data-type='review.signed_off']").inner_text()
    assert "Talked it through" not in reviewed
    assert "(Its text is shown only to managers.)" in reviewed
    assert "A guest shouted" not in reception.locator("main").inner_text()
    assert reception.locator("li[data-type='record.viewed']").count() == 0
    assert "Guest said" in reception.locator("li[data-type='note.added']").inner_text()

    # The list's filters: by state, room, kind and day.
    today = date.today()
    for query, count in (
        ("state=resolved&room=room-1", 1),
        ("state=open", 0),
        ("kind=test", 0),
        (f"from={today + timedelta(days=2)}", 0),
        (f"from={today - timedelta(days=1)}&until={today + timedelta(days=1)}", 1),
    ):
        manager.goto(f"{console.base_url}/console/incidents?{query}")
        assert manager.locator("tr.incident-row").count() == count, query
    manager.locator("#f-state").select_option("resolved")
    manager.locator("form.filters button").click()
    manager.wait_for_url("**state=resolved**")
    assert manager.locator("tr.incident-row").count() == 1
    assert dialogs == []


# -- the list's filters and pages, without a browser ---------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    settings = Settings(
        demo=True,
        cookies_secure=False,
        database_url=f"sqlite:///{tmp_path / 'incidents.sqlite3'}",
        log_checkpoint_file=tmp_path / "checkpoints.jsonl",
        twilio_auth_token=SecretStr("t" * 32),
        public_base_url="https://alarm.example.test",
    )
    built = build(settings, site=sample_site(), notifier=ConsoleNotifier(lambda _: None))
    yield built
    built.services.stop()


def signed_in(server: Server, person_id: str, *, reason: str | None) -> TestClient:
    """A browser signed in as ``person_id``, with ``reason`` given in its session."""
    services = server.services
    open_person(services, person_id)
    cookie = web_session(services, person_id, agent="tests")
    if reason is not None:
        with services.sessions.begin() as s:
            key = WebSession.id_sha256 == auth.sha256(cookie)
            s.execute(update(WebSession).where(key).values(justification=reason))
    client = TestClient(server.app, headers={"User-Agent": "tests"})
    client.cookies.set(session_cookie(server.settings), cookie)
    return client


def rows(html: str) -> list[str]:
    """The incident numbers the list shows, in order."""
    return re.findall(r'<a href="/console/incidents/(\d+)">', html)


def test_the_list_filters_and_pages_newest_first_and_logs_one_view(server: Server) -> None:
    services = server.services
    start = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    with services.sessions.begin() as s:
        for n in range(1, 56):
            at = start + timedelta(days=n // 10)
            s.add(
                Incident(
                    alert_id=f"a{n:031d}",
                    device_id="unit-2" if n % 5 == 0 else "unit-1",
                    room_id="room-2" if n % 5 == 0 else "room-1",
                    kind="test" if n % 7 == 0 else "panic",
                    seq=n,
                    pressed_at=at,
                    received_at=at,
                    state="resolved" if n % 2 else "open",
                )
            )
    before = len(
        [e for e in server_events(server, "record.viewed") if e.data["scope"] == "incidents"]
    )
    client = signed_in(server, "reception", reason=None)
    asked = client.get("/console/incidents")
    assert asked.status_code == 200
    assert 'name="reason"' in asked.text
    assert not rows(asked.text)

    client = signed_in(server, "reception", reason="looking back at March")
    first = client.get("/console/incidents")
    assert rows(first.text) == [str(n) for n in range(55, 5, -1)]  # 50, newest first
    assert 'rel="next" href="/console/incidents?page=2"' in first.text
    second = client.get("/console/incidents?page=2")
    assert rows(second.text) == ["5", "4", "3", "2", "1"]
    assert 'rel="prev"' in second.text
    assert 'rel="next"' not in second.text
    # Room, state, kind and days (the site's, both included) narrow it; an empty field is "any".
    expect = {
        "room=room-2&state=&kind=": [str(n) for n in range(55, 0, -5)],
        "state=resolved&kind=test&room=": ["49", "35", "21", "7"],
        "from=2026-03-02&until=2026-03-02": [str(n) for n in range(19, 9, -1)],
        "from=2026-03-06": ["55", "54", "53", "52", "51", "50"],
        "until=2026-02-28": [],
        "state=open&room=room-2&page=2": [],
    }
    for query, numbers in expect.items():
        assert rows(client.get(f"/console/incidents?{query}").text) == numbers, query
    filtered = client.get("/console/incidents?from=2026-03-01&room=")
    assert 'href="/console/incidents?from=2026-03-01&amp;page=2"' in filtered.text
    # Read many times, the list is one view in the log (per reader and reason, 15 min).
    after = [e for e in server_events(server, "record.viewed") if e.data["scope"] == "incidents"]
    assert len(after) == before + 1
    assert after[-1].data["by"] == "reception"

    missing = client.get("/console/incidents/9999")
    assert missing.status_code == 404
    assert "There is no such incident." in missing.text


def server_events(server: Server, type_: str) -> list[LogEntry]:
    with server.services.sessions() as s:
        return list(s.scalars(select(LogEntry).where(LogEntry.type == type_)))


# -- who reads what on an incident's page, and its views, without a browser ----------


def test_typed_text_and_views_show_only_to_who_may_read_them(
    database_url: str, tmp_path: Path
) -> None:
    """Staff see that a note by someone else, the review and the register's entry are
    there (by whom, when) but not their text, nor who opened the record; an inspector
    reads notes; a manager reads all. Reloading is one view per person and reason in
    15 minutes, and each person's views are told on one line."""
    with kit(database_url, tmp_path) as k:
        services = k.server.services
        alarm = Alert(device_id="unit-1", alert_id=new_alert_id(), seq=1, pressed_at=k.clock.now())
        incident = services.alerts.handle(alarm).incident
        other = services.alerts.handle(
            Alert(device_id="unit-2", alert_id=new_alert_id(), seq=1, pressed_at=k.clock.now())
        ).incident
        services.records.add_note(incident, by="floor", text="NOTE-PLANTED", subjects=[])
        services.records.sign_off(incident, by="manager", remarks="REMARK-PLANTED")
        with services.sessions.begin() as s:
            violence.record_entry(
                s,
                incident_id=incident,
                account="ACCOUNT-PLANTED",
                worker_id=None,
                by="manager",
                now=k.clock.now(),
                retention=services.retention,
            )
        open_person(services, "inspector-1", roles=[Role.INSPECTOR], name="Inspector")
        open_person(services, "boss", roles=[Role.MANAGER], name="Boss")  # reads English
        reason = "checking the alarm of this morning"
        clients = {
            who: signed_in(k.server, who, reason=reason)
            for who in ("reception", "inspector-1", "boss")
        }
        url = f"/console/incidents/{incident}"

        def page(who: str, path: str = url) -> str:
            """The page's HTML, with its text (tags left out) after a NUL."""
            answer = clients[who].get(path)
            assert answer.status_code == 200, answer.text
            html: str = answer.text
            words = " ".join(re.sub(r"<[^>]+>", " ", html).split())
            return html + "\0" + re.sub(r" ([.:,])", r"\1", words)

        def views(scope: str) -> list[str]:
            return [
                e.data["by"]
                for e in sorted(server_events(k.server, "record.viewed"), key=lambda e: e.n)
                if e.data["scope"] == scope
            ]

        staff = page("reception")
        assert "Note by Floor:" in staff
        assert "Manager signed off the review." in staff
        assert "Manager recorded this incident in the violence register:" in staff
        for planted in ("NOTE-PLANTED", "REMARK-PLANTED", "ACCOUNT-PLANTED"):
            assert planted not in staff, planted
        assert "(Its text is shown only to its author, managers and inspectors.)" in staff
        assert staff.rsplit("\0")[1].count("(Its text is shown only to managers.)") == 2
        assert 'data-type="record.viewed"' not in staff

        inspector = page("inspector-1")
        assert "NOTE-PLANTED" in inspector
        assert "REMARK-PLANTED" not in inspector
        assert "ACCOUNT-PLANTED" not in inspector
        assert 'data-type="record.viewed"' not in inspector

        manager = page("boss")
        for planted in ("NOTE-PLANTED", "REMARK-PLANTED", "ACCOUNT-PLANTED"):
            assert planted in manager, planted
        assert "Reception opened this record." in manager
        assert "Inspector opened this record." in manager

        # Reloaded again and again: one view each in the log, until 15 minutes pass.
        for _ in range(3):
            page("reception")
            page("boss")
        assert views(f"incident:{incident}") == ["reception", "inspector-1", "boss"]
        k.clock.advance(LIST_VIEW_EVERY + 1)
        page("reception")
        page("reception", f"/console/incidents/{other}")
        assert views(f"incident:{incident}") == ["reception", "inspector-1", "boss", "reception"]
        assert views(f"incident:{other}") == ["reception"]
        # The other incident's view is not this one's; reception's two views are one line.
        manager = page("boss")
        assert manager.count('data-type="record.viewed"') == 3
        assert "Reception opened this record 2 times, first at" in manager
        assert "Boss opened this record 2 times, first at" in manager
        assert "Inspector opened this record." in manager
        other_page = page("boss", f"/console/incidents/{other}")
        assert "Reception opened this record." in other_page
        assert "Inspector" not in other_page


def test_days_outside_2000_to_2100_are_left_out_of_the_filter_with_a_word(
    server: Server,
) -> None:
    client = signed_in(server, "reception", reason="looking back at March")
    for query in ("until=9999-12-31", "from=0001-01-01", "from=1999-12-31&until=2101-01-01"):
        answer = client.get(f"/console/incidents?{query}")
        assert answer.status_code == 200, query
        assert "Days from the years 2000 to 2100 only:" in answer.text, query
        assert 'id="ignored"' in answer.text
    fine = client.get("/console/incidents?from=2000-01-01&until=2100-12-31")
    assert fine.status_code == 200
    assert 'id="ignored"' not in fine.text
