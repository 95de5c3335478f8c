"""The reports page in Chromium after two real presses (one acknowledged through the
API): the numbers, the SVG chart, the downloads with their reason; and the poster's
PDF, whose names print in any script."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pypdf
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from device.indicator import Light
from panicbutton.clock import ManualClock
from server.app import Server, build
from server.console import figures
from server.paging.notifier import ConsoleNotifier
from server.people.roles import Role
from server.settings import Settings
from tests import web
from tests.harness import (
    MANAGER,
    RECEPTION,
    System,
    browser_headers,
    open_person,
    sample_site,
    wait_until,
)
from tests.server.console.conftest import accessible, screenshot

if TYPE_CHECKING:
    from playwright.sync_api import Page

REASON = "Quarterly review of response times"
DASH = "\u2013"  # an en dash: no time, and ranges of days and hours


def test_reports_show_two_presses_one_acknowledged_with_a_chart_and_downloads(
    console: System, open_page: Callable[..., Page], tmp_path: Path
) -> None:
    assert console.server is not None
    services = console.server.services
    first, second = console.room("unit-1"), console.room("unit-2")
    assert wait_until(lambda: first.light is Light.ARMED and second.light is Light.ARMED)
    first.press()
    assert wait_until(lambda: len(console.incidents()) == 1)
    [one] = console.incidents()
    reception = console.headers("reception")
    taken = web.post(f"{console.api}/incidents/{one.id}/acknowledge", json={}, headers=reception)
    assert taken.status_code == 200, taken.text
    second.press()
    assert wait_until(lambda: len(console.incidents()) == 2)
    # Both alarms paged someone (the first page is part of the figures).
    assert wait_until(lambda: {e.incident_id for e in console.events("page.sent")} >= {1, 2})

    with services.sessions() as s:
        expected = figures.read(s, services.site, services.clock.now())
    [month] = expected.by_month
    ack = next(e for e in console.events("incident.acknowledged"))
    pressed = console.events("alert.raised")[0]
    assert month.acknowledge_median == round((ack.at - pressed.at).total_seconds(), 3)

    page = open_page("boss", "/console/reports", roles=(Role.MANAGER,))
    assert page.title().startswith("Reports")
    row = page.locator("#per-month tbody tr")
    assert row.count() == 1
    cells = [c.strip() for c in row.locator("th, td").all_inner_texts()]
    # Month, 2 alarms, medians, and one of the two acknowledged within 10, 40 and 90 s.
    assert cells[1] == "2"
    assert cells[3] == (
        f"{month.acknowledge_median:.1f}"
        if month.acknowledge_median < 10
        else f"{month.acknowledge_median:.0f}"
    )
    assert cells[6:] == ["50 % (1/2)", "50 % (1/2)", "50 % (1/2)"]
    rooms = {
        r.locator("th").inner_text(): r.locator("td").all_inner_texts()
        for r in page.locator("#per-room tbody tr").all()
    }
    assert rooms["Room 1"][-3:] == ["100 % (1/1)"] * 3
    assert rooms["Room 2"][-3:] == ["0 % (0/1)"] * 3
    assert rooms["Room 2"][2] == DASH  # never acknowledged: no time
    # The chart: one bar for the month, named for screen readers, the same numbers.
    chart = page.locator("svg#chart-within")
    assert chart.get_attribute("role") == "img"
    assert chart.locator("title").text_content() == (
        "Share of alarms acknowledged within 40 seconds, per month"
    )
    assert chart.locator("rect").count() == 1
    assert "50 %" in chart.locator("text").all_text_contents()
    # Units never tested are overdue against the yearly schedule.
    assert page.locator("#tests tbody tr.overdue").count() == 3
    # The inspector's part: the latest checkpoint and the key, as the API gives them.
    assert page.locator("#verifier-key").inner_text().strip() == str(services.records.verifier_key)
    assert page.locator("#checkpoint").inner_text().startswith(services.keeper.signer.name)
    accessible(page)
    screenshot(page, "report", tmp_path)

    # The manager's report comes with the reason typed, and is recorded as an export.
    form = page.locator("form[action='/api/v1/log/report.csv']")
    form.get_by_label("Reason").fill(REASON)
    with page.expect_download() as download:
        form.get_by_role("button", name="Download the report (CSV)").click()
    saved = Path(download.value.path()).read_text()
    assert saved.startswith("# panicbutton incident report")
    assert len(saved.strip().splitlines()) == 4 + 2  # 3 comments, the header, 2 incidents
    assert wait_until(lambda: len(console.events("record.exported")) == 1)
    assert console.events("record.exported")[0].data["by"] == "boss"
    with page.expect_download() as download:
        form.get_by_role("button", name="Download the report (PDF)").click()
    assert Path(download.value.path()).read_bytes().startswith(b"%PDF-")
    assert download.value.suggested_filename == "panicbutton-report.pdf"
    # The evidence export: refused by the form without a reason, then a verifiable bundle.
    evidence = page.locator("form[action='/api/v1/log/export']")
    evidence.get_by_role("button", name="Download the evidence export").click()
    assert evidence.get_by_label("Reason").evaluate("field => !field.validity.valid")
    evidence.get_by_label("Reason").fill(REASON)
    with page.expect_download() as download:
        evidence.get_by_role("button", name="Download the evidence export").click()
    assert download.value.suggested_filename == "panicbutton-log-full.zip"
    with zipfile.ZipFile(download.value.path()) as bundle:
        assert any(name.endswith("entries.jsonl") for name in bundle.namelist())
    assert [e.data["by"] for e in console.events("record.exported")] == ["boss"] * 3

    # The poster's page, from the link on the reports page; its PDF downloads.
    page.get_by_role("link", name="Print the poster").click()
    page.wait_for_url("**/console/poster")
    accessible(page)
    page.get_by_label("Nederlands").check()
    with page.expect_download() as download:
        page.get_by_role("button", name="Download the poster (PDF)").click()
    assert download.value.suggested_filename == "poster-nl.pdf"
    assert "In geval van nood" in pdf_text(Path(download.value.path()).read_bytes())


# -- the poster (no browser: a signed-in browser's cookie on a test client) ---------------

NAMES = ("Ștefania Върбанова", "Ιωάννα Παπαδοπούλου")


@pytest.fixture
def posted(tmp_path: Path) -> Iterator[tuple[Server, TestClient]]:
    """A site whose roster names Ștefania (weekday evenings) and Ioanna (always)."""
    settings = Settings(
        demo=True,
        database_url=f"sqlite:///{tmp_path / 'poster.sqlite3'}",
        log_checkpoint_file=tmp_path / "checkpoints.jsonl",
        twilio_auth_token=SecretStr("t" * 32),
        public_base_url="https://alarm.example.test",
    )
    site = sample_site(
        staff=[
            {"id": "stefania", "name": NAMES[0], "phone": RECEPTION, "language": "en"},
            {"id": "ioanna", "name": NAMES[1], "phone": "+32470000002", "language": "nl"},
            {"id": "manager", "name": "M", "phone": MANAGER, "language": "fr", "role": "manager"},
        ],
        duty={
            "on_duty": ["ioanna"],
            "shifts": [
                {
                    "staff": "stefania",
                    "days": ["mon", "tue", "wed", "thu", "fri"],
                    "start": "20:00",
                    "end": "04:00",
                }
            ],
        },
    )
    # Monday 10:00 in Brussels: Ioanna is on duty, Ștefania's evening shift is not.
    clock = ManualClock(datetime(2026, 11, 30, 9, 0, tzinfo=UTC))
    server = build(settings, site=site, notifier=ConsoleNotifier(lambda _: None), clock=clock)
    try:
        yield server, TestClient(server.app)
    finally:
        server.services.stop()


def pdf_text(pdf: bytes) -> str:
    """The text of a PDF as a reader copies it, lines joined."""
    return "\n".join(p.extract_text() for p in pypdf.PdfReader(io.BytesIO(pdf)).pages)


def _signed_in(server: Server, person_id: str, roles: tuple[Role, ...]) -> dict[str, str]:
    open_person(server.services, person_id, roles=roles)
    return browser_headers(server, person_id, agent="poster")


def test_poster_prints_the_numbers_the_reference_persons_and_the_rights_in_any_script(
    posted: tuple[Server, TestClient],
) -> None:
    server, client = posted
    boss = _signed_in(server, "boss", (Role.MANAGER,))
    page = client.get("/console/poster", headers=boss)
    assert page.status_code == 200
    assert NAMES[0] in page.text
    assert "+32470000001" in page.text

    answer = client.get("/console/poster.pdf", params={"language": "fr"}, headers=boss)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/pdf"
    assert answer.headers["content-disposition"] == 'attachment; filename="poster-fr.pdf"'
    assert answer.headers["cache-control"] == "no-store"
    text = pdf_text(answer.content)
    for shown in ("112", "101", "Police", "En cas d'urgence", *NAMES, "+32470000001"):
        assert shown in text, shown
    assert f"lun.{DASH}ven. 20:00{DASH}04:00" in text  # Ștefania's hours, in French
    assert "à tout moment" in text  # Ioanna is always on duty
    assert "Vous pouvez refuser un client" in text

    dutch = pdf_text(client.get("/console/poster.pdf?language=nl", headers=boss).content)
    assert "In geval van nood" in dutch
    assert "Politie" in dutch
    assert NAMES[0] in dutch

    # Only who is on duty now: Ioanna (always); Ștefania's shift is at night.
    now = pdf_text(client.get("/console/poster.pdf?language=en&who=now", headers=boss).content)
    assert NAMES[1] in now
    assert NAMES[0] not in now


def test_poster_needs_the_roster_right(posted: tuple[Server, TestClient]) -> None:
    server, client = posted
    inspector = _signed_in(server, "inspector-1", (Role.INSPECTOR,))
    assert client.get("/console/poster.pdf", headers=inspector).status_code == 403
    # An inspector sees the reports, without the poster's link.
    reports = client.get("/console/reports", headers=inspector)
    assert reports.status_code == 200
    assert "/console/poster" not in reports.text
