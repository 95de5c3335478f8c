"""Incident records in Chromium: a real press read in the list and its timeline (the
reason asked once per session, each view logged with the person), resolved with a note
from the page, reviewed and put in the violence register by a manager; typed text
stays text, and a change without the session's CSRF token is refused."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from device.indicator import Light
from tests.harness import DEVICE_TOKENS, DEVICES, RECEPTION, System, wait_until
from tests.server.console.conftest import accessible, screenshot

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
    # Staff hold no right to review: the API refuses them even with the token.
    answer = reception.evaluate(
        """async (url) => (await fetch(url, {method: "POST", headers: {"Content-Type":
        "application/json", "X-CSRF-Token": document.querySelector('meta[name=csrf]').content},
        body: "{}"})).status""",
        f"/api/v1/incidents/{incident.id}/review",
    )
    assert answer == 403
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
