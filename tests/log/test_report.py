"""The manager's report: rows folded from real log entries, the CSV and the PDF."""

from __future__ import annotations

import csv
import hashlib
import io
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from panicbutton.log import checkpoints, report, spec

START = datetime(2026, 11, 28, 21, 4, 5, 123000, tzinfo=UTC)
ORIGIN = "panicbutton.example/log"


class Log:
    """A small log of real, chained entries, built one event at a time."""

    def __init__(self) -> None:
        self.tree = spec.Frontier()
        self.entries: list[spec.Entry] = []
        self.now = START

    def add(self, type_: str, incident: int | None = None, *, after: float = 0, **data: Any) -> str:
        """Append an event ``after`` seconds after the previous one; returns its time."""
        self.now += timedelta(seconds=after)
        raw = spec.entry_bytes(
            n=len(self.entries),
            at=self.now,
            type_=type_,
            incident=incident,
            data=data,
            prev=self.tree.root(),
        )
        self.tree.append(spec.leaf_hash(raw))
        self.entries.append(spec.parse_entry(raw))
        return spec.format_time(self.now)

    def raise_alert(self, incident: int, room: str = "room-3", kind: str = "panic") -> str:
        return self.add(
            "alert.raised",
            incident,
            after=1,
            alert_id=f"{incident:032x}",
            device=f"unit-{room}",
            room=room,
            seq=incident,
            kind=kind,
            device_time=spec.format_time(self.now),
        )

    def bundle_sha256(self) -> str:
        return hashlib.sha256(b"\n".join(e.raw for e in self.entries)).hexdigest()

    def checkpoint(self) -> str:
        return checkpoints.checkpoint_text(ORIGIN, len(self.entries), self.tree.root())


def by_incident(log: Log) -> dict[str, dict[str, str]]:
    return {row["incident"]: row for row in report.incident_rows(log.entries)}


# -- rows --------------------------------------------------------------------------------
def test_acknowledged_panic_shows_who_and_how_fast() -> None:
    log = Log()
    log.add("server.started", version="1.0")
    raised = log.raise_alert(7)
    log.add("escalation.step_started", 7, step=0, due=raised, lag_ms=40)
    log.add("page.queued", 7, page=1, staff="s-0041", channel="sms", step=0)
    log.add("page.sent", 7, page=1, provider_id="p1", bundled=False, recovered=False)
    log.add("page.failed", 7, page=2, code="30003")
    log.add("alert.re_pressed", 7, after=5, alert_id=f"{7:032x}", presses=3)
    acked = log.add("incident.acknowledged", 7, after=37.4, staff="s-0041", via="sms")
    resolved = log.add("incident.resolved", 7, after=300, staff="s-0041", outcome="genuine")

    [row] = report.incident_rows(log.entries)

    assert list(row) == list(report.COLUMNS)
    assert row == {
        "incident": "7",
        "kind": "panic",
        "room": "room-3",
        "device": "unit-room-3",
        "raised_at": raised,
        "acknowledged_at": acked,
        "acknowledged_by": "s-0041",
        "seconds_to_acknowledge": "42",
        "resolved_at": resolved,
        "outcome": "genuine",
        "presses": "3",
        "pages_sent": "1",
        "pages_failed": "1",
        "late_steps": "0",
        "state": "resolved",
    }


def test_unacknowledged_incident_is_open_with_blanks() -> None:
    log = Log()
    log.raise_alert(3)
    log.add("page.sent", 3, page=1, provider_id="p1", bundled=False, recovered=False)

    row = by_incident(log)["3"]

    assert row["state"] == "open"
    assert row["acknowledged_at"] == row["acknowledged_by"] == ""
    assert row["seconds_to_acknowledge"] == ""
    assert row["presses"] == "1"


def test_reopened_incident_is_open_again_until_acknowledged_again() -> None:
    log = Log()
    log.raise_alert(5)
    log.add("incident.acknowledged", 5, after=20, staff="s-0007", via="sms")
    log.add("incident.resolved", 5, after=60, staff="s-0007", outcome="false_alarm")
    log.add("incident.reopened", 5, after=600, round=1, presses=2)

    row = by_incident(log)["5"]
    assert row["state"] == "open"
    assert row["acknowledged_by"] == row["resolved_at"] == row["outcome"] == ""
    assert row["presses"] == "2"

    acked = log.add("incident.acknowledged", 5, after=15, staff="s-0009", via="call")
    row = by_incident(log)["5"]
    assert row["state"] == "acknowledged"
    assert (row["acknowledged_by"], row["acknowledged_at"]) == ("s-0009", acked)
    # measured from the reopen (the round that was acknowledged), not the first press
    assert row["seconds_to_acknowledge"] == "15"


def test_late_steps_are_counted() -> None:
    log = Log()
    raised = log.raise_alert(2)
    log.add("escalation.step_started", 2, step=0, due=raised, lag_ms=200)
    log.add("escalation.step_started", 2, step=1, due=raised, lag_ms=15_000)  # on the line
    log.add("escalation.step_started", 2, step=2, due=raised, lag_ms=15_001)
    log.add("incident.acknowledged", 2, staff="s-0001", via="sms")
    log.add("escalation.follow_up", 2, step=1, due=raised, lag_ms=90_000)

    assert by_incident(log)["2"]["late_steps"] == "2"


def test_unit_offline_incident_takes_its_kind_from_the_first_entry() -> None:
    log = Log()
    log.add("device.offline", device="unit-9", reason="silent")
    alerted = log.add("device.offline_alerted", 11, after=120, device="unit-9", since="x")
    log.add("incident.acknowledged", 11, after=9, staff="system", via="resolve")
    log.add("incident.resolved", 11, staff="system", outcome="recovered")

    row = by_incident(log)["11"]
    assert (row["kind"], row["device"], row["room"]) == ("unit_offline", "unit-9", "")
    assert (row["raised_at"], row["seconds_to_acknowledge"]) == (alerted, "9")
    assert (row["presses"], row["state"]) == ("0", "resolved")


def test_rows_are_ordered_by_incident_and_skip_entries_without_one() -> None:
    log = Log()
    for incident in (12, 2, 30):
        log.raise_alert(incident)
    log.add("log.heartbeat")

    assert [r["incident"] for r in report.incident_rows(log.entries)] == ["2", "12", "30"]


# -- CSV ---------------------------------------------------------------------------------
def test_csv_names_its_source_then_holds_the_rows() -> None:
    log = Log()
    log.raise_alert(1)
    log.add("incident.acknowledged", 1, after=4, staff="s-0002", via="sms")
    signer = checkpoints.Signer.generate(ORIGIN)
    note = signer.sign_checkpoint(len(log.entries), log.tree.root()).note

    text = report.to_csv(
        report.incident_rows(log.entries), bundle_sha256=log.bundle_sha256(), checkpoint=note
    ).decode("utf-8")

    lines = text.split("\r\n")
    origin, size, root = log.checkpoint().split("\n")[:3]
    assert lines[:3] == [
        "# panicbutton incident report",
        f"# derived from log bundle sha256 {log.bundle_sha256()}",
        f"# checkpoint: {origin} {size} {root}",
    ]
    table = list(csv.DictReader(io.StringIO("\r\n".join(lines[3:]))))
    assert table == report.incident_rows(log.entries)


def test_csv_neutralises_formula_looking_cells() -> None:
    log = Log()
    log.raise_alert(1, room="=HYPERLINK(1)")
    log.raise_alert(2, room="-2+3")
    log.raise_alert(3, room="@sum")
    log.raise_alert(4, room="room-4")
    rows = report.incident_rows(log.entries)

    text = report.to_csv(rows, bundle_sha256=log.bundle_sha256(), checkpoint=log.checkpoint())

    table = list(csv.DictReader(io.StringIO(text.decode().split("\r\n", 3)[3])))
    assert [r["room"] for r in table] == ["'=HYPERLINK(1)", "'-2+3", "'@sum", "room-4"]


def test_csv_refuses_a_malformed_source() -> None:
    log = Log()
    with pytest.raises(ValueError, match="64 lowercase hex"):
        report.to_csv([], bundle_sha256="abc", checkpoint=log.checkpoint())
    with pytest.raises(ValueError, match="checkpoint"):
        report.to_csv([], bundle_sha256="0" * 64, checkpoint="origin\nnot a size\nroot\n")


# -- PDF ---------------------------------------------------------------------------------
def check_structure(pdf: bytes) -> int:
    """Assert the PDF is well formed enough for any reader; returns its page count."""
    assert pdf.startswith(b"%PDF-1.4\n")
    assert pdf.rstrip().endswith(b"%%EOF")
    startxref = int(re.findall(rb"startxref\n(\d+)\n", pdf)[-1])
    assert pdf[startxref:].startswith(b"xref\n0 ")
    first, count = map(int, pdf[startxref:].split(b"\n")[1].split())
    assert first == 0
    lines = pdf[startxref:].split(b"\n")[2 : 2 + count]
    assert lines[0] == b"0000000000 65535 f "
    for number, line in enumerate(lines[1:], start=1):
        assert len(line) + 1 == 20  # each entry is 20 bytes with its LF
        assert line.endswith(b" 00000 n ")
        offset = int(line[:10])
        assert pdf[offset:].startswith(b"%d 0 obj" % number)
    assert re.search(rb"trailer\n<< /Size %d /Root 1 0 R" % count, pdf)
    for length, body in re.findall(rb"/Length (\d+) >>\nstream\n(.*?)\nendstream", pdf, re.S):
        assert int(length) == len(body)
    [pages] = re.findall(rb"/Type /Pages /Kids \[([^\]]*)\] /Count (\d+)", pdf)
    page_objects = re.findall(rb"/Type /Page\b(?!s)", pdf)
    assert int(pages[1]) == len(page_objects) == len(pages[0].split(b" 0 R")) - 1
    return len(page_objects)


def shown_text(pdf: bytes) -> list[str]:
    """The strings shown by the (uncompressed) content streams, unescaped."""
    strings = re.findall(rb"\(((?:\\.|[^\\)])*)\) Tj", pdf)
    return [re.sub(rb"\\(.)", rb"\1", s).decode("latin-1") for s in strings]


def make_pdf(log: Log, title: str = "Incident report, Riverside clinic") -> bytes:
    return report.to_pdf(
        report.incident_rows(log.entries),
        title=title,
        bundle_sha256=log.bundle_sha256(),
        checkpoint=log.checkpoint(),
        generated_at="2026-12-01T09:00:00.000Z",
    )


def test_small_pdf_is_one_page_with_provenance_and_summary() -> None:
    log = Log()
    log.raise_alert(1)
    log.add("incident.acknowledged", 1, after=30, staff="s-0002", via="sms")
    log.raise_alert(2, kind="test")

    pdf = make_pdf(log)

    assert check_structure(pdf) == 1
    text = shown_text(pdf)
    root = log.checkpoint().split("\n")[2]
    assert "Incident report, Riverside clinic" in text
    assert f"derived from log bundle sha256 {log.bundle_sha256()}" in text
    assert f"checkpoint {ORIGIN}, tree size {len(log.entries)}, root {root}" in text
    assert "generated at 2026-12-01T09:00:00.000Z" in text
    assert (
        "incidents 2 | panic alarms 1 | acknowledged 1 | seconds to acknowledge: median 30,"
        " max 30 | open 1 | late steps 0"
    ) in text
    assert "page 1 of 1" in text


def test_pdf_of_200_incidents_runs_over_several_pages() -> None:
    log = Log()
    for incident in range(1, 201):
        raised = log.raise_alert(incident, room=f"room-{incident % 9}")
        log.add("escalation.step_started", incident, step=0, due=raised, lag_ms=incident * 100)
        if incident % 4:
            log.add("incident.acknowledged", incident, after=incident, staff="s-0003", via="sms")

    pdf = make_pdf(log)

    pages = check_structure(pdf)
    assert pages > 1
    text = shown_text(pdf)
    assert f"page 1 of {pages}" in text
    assert f"page {pages} of {pages}" in text
    assert {str(i) for i in range(1, 201)} <= set(text)
    assert any("| late steps 50" in t for t in text)  # lag over 15 s: incidents 151..200
    # An independent reader, where installed (only this part is optional).
    if shutil.which("pdftotext") is not None:
        extracted = extract_text(pdf)
        assert "Incident report, Riverside clinic" in extracted
        assert re.search(r"\b200\b", extracted)


def test_pdf_escapes_and_replaces_awkward_text() -> None:
    log = Log()
    log.raise_alert(1, room="a(b)c\\d")
    title = "Report (draft) \\ Zürich \u2603 \u0085"

    pdf = make_pdf(log, title=title)

    check_structure(pdf)
    assert b"(Report \\(draft\\) \\\\ Z\xfcrich ? ?) Tj" in pdf
    assert b"(a\\(b\\)c\\\\d) Tj" in pdf
    assert "Report (draft) \\ Zürich ? ?" in shown_text(pdf)


def test_pdf_cuts_long_cells_short() -> None:
    log = Log()
    log.raise_alert(1, room="r" * 80)

    text = shown_text(make_pdf(log))

    [cell] = [t for t in text if t.startswith("rrr")]
    assert cell.endswith("...")
    assert len(cell) < 30


def test_pdf_of_an_empty_log_still_has_a_page() -> None:
    log = Log()
    log.add("log.heartbeat")

    pdf = make_pdf(log)

    assert check_structure(pdf) == 1
    assert "no incidents in this log" in shown_text(pdf)


def extract_text(pdf: bytes) -> str:
    """The text poppler's pdftotext reads from ``pdf`` (an independent reader)."""
    done = subprocess.run(
        ["pdftotext", "-layout", "-", "-"], input=pdf, capture_output=True, check=True, timeout=60
    )
    return done.stdout.decode("utf-8", "replace")
