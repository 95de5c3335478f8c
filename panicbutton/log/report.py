"""A manager's report of incidents, derived from an exported log bundle.

:func:`incident_rows` folds the log's entries into one row per incident;
:func:`to_csv` and :func:`to_pdf` render those rows for a spreadsheet or for
print. Both renderings name their source (the bundle's SHA-256 and the signed
checkpoint it was checked against), so a reader can tie a printed page back to
the log that produced it.

Standard library only (with :mod:`.spec` and the thresholds of :mod:`.meaning`): this
runs in the standalone verifier's environment. The rows hold pseudonymous ids only, as the log does.

(Just over 300 lines: the rows and their two renderings, which must agree column
for column, read best side by side.)
"""

from __future__ import annotations

import base64
import csv
import io
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from panicbutton.log import checkpoints, spec
from panicbutton.log.meaning import LATE_MS, number

#: The report's columns, in order (the CSV header and the keys of each row).
COLUMNS = (
    "incident",
    "kind",
    "room",
    "device",
    "raised_at",
    "acknowledged_at",
    "acknowledged_by",
    "seconds_to_acknowledge",
    "resolved_at",
    "outcome",
    "presses",
    "pages_sent",
    "pages_failed",
    "late_steps",
    "state",
)
#: The incident kind of an incident that no button press opened, by its first entry.
_KIND_BY_FIRST_TYPE = {"device.offline_alerted": "unit_offline", "duty.gap_started": "duty_gap"}
_STEPS = ("escalation.step_started", "escalation.follow_up")


@dataclass
class _Incident:
    first_type: str
    first_at: str
    kind: str = ""
    room: str = ""
    device: str = ""
    raised_at: str = ""
    round_at: str = ""  # when the current round began: raised, or the latest reopen
    acknowledged_at: str = ""
    acknowledged_by: str = ""
    resolved_at: str = ""
    outcome: str = ""
    presses: int = 0
    pages_sent: int = 0
    pages_failed: int = 0
    late_steps: int = 0
    state: str = "open"

    def apply(self, type_: str, at: str, data: Mapping[str, Any]) -> None:
        if type_ == "alert.raised":
            self.kind, self.room = str(data.get("kind", "")), str(data.get("room", ""))
            self.device, self.raised_at, self.round_at = str(data.get("device", "")), at, at
            self.presses = max(self.presses, 1)
        elif type_ == "device.offline_alerted":
            self.device = str(data.get("device", ""))
        elif type_ == "incident.reopened":
            # NOTE: like the server, a reopen clears the last round's acknowledgement
            # and resolution: the row shows the incident as it stands now, and
            # seconds_to_acknowledge is then measured from the reopen.
            self.state, self.round_at = "open", at
            self.acknowledged_at = self.acknowledged_by = self.resolved_at = self.outcome = ""
        elif type_ == "incident.acknowledged":
            self.state, self.acknowledged_at = "acknowledged", at
            self.acknowledged_by = str(data.get("staff", ""))
        elif type_ == "incident.resolved":
            self.state, self.resolved_at = "resolved", at
            self.outcome = str(data.get("outcome", ""))
        self.presses = max(self.presses, number(data.get("presses")))
        self.pages_sent += type_ == "page.sent"
        self.pages_failed += type_ == "page.failed"
        self.late_steps += type_ in _STEPS and number(data.get("lag_ms")) > LATE_MS

    def row(self, incident: int) -> dict[str, str]:
        raised = self.raised_at or self.first_at
        waited = ""
        if self.acknowledged_at:
            start = spec.parse_time(self.round_at or raised)
            delta = spec.parse_time(self.acknowledged_at) - start
            waited = str(round(delta.total_seconds()))
        return {
            "incident": str(incident),
            "kind": self.kind or _KIND_BY_FIRST_TYPE.get(self.first_type, self.first_type),
            "room": self.room,
            "device": self.device,
            "raised_at": raised,
            "acknowledged_at": self.acknowledged_at,
            "acknowledged_by": self.acknowledged_by,
            "seconds_to_acknowledge": waited,
            "resolved_at": self.resolved_at,
            "outcome": self.outcome,
            "presses": str(self.presses),
            "pages_sent": str(self.pages_sent),
            "pages_failed": str(self.pages_failed),
            "late_steps": str(self.late_steps),
            "state": self.state,
        }


def incident_rows(entries: Iterable[spec.Entry]) -> list[dict[str, str]]:
    """One row per incident (entries with an incident id), ordered by incident id.

    Each row maps every name in :data:`COLUMNS` to a string (blank when the log
    says nothing). ``state`` is open, acknowledged or resolved; a reopened
    incident is open again, and its acknowledgement and resolution fields are
    those of the current round (blank until someone acknowledges it again).
    """
    incidents: dict[int, _Incident] = {}
    for e in sorted(entries, key=lambda e: e.n):
        if e.incident is None:
            continue
        acc = incidents.setdefault(e.incident, _Incident(first_type=e.type, first_at=e.at))
        acc.apply(e.type, e.at, e.data)
    return [incidents[i].row(i) for i in sorted(incidents)]


def _source(bundle_sha256: str, checkpoint: str) -> tuple[str, int, str]:
    """Check the provenance values; returns the checkpoint's (origin, size, root base64).

    ``checkpoint`` is a checkpoint's text or its whole signed note (its first
    three lines are the checkpoint). Raises ValueError for a malformed value.
    """
    if not re.fullmatch(r"[0-9a-f]{64}", bundle_sha256):
        raise ValueError("bundle_sha256 must be 64 lowercase hex digits")
    origin, size, root = checkpoints.parse_checkpoint_text(
        "\n".join(checkpoint.split("\n")[:3]) + "\n"
    )
    checkpoints.checkpoint_text(origin, size, root)  # refuses an origin with spaces or controls
    return origin, size, base64.b64encode(root).decode()


def _neutralise(cell: str) -> str:
    # NOTE: a spreadsheet runs a cell that starts with one of these as a formula
    # (CSV injection); a leading apostrophe makes it plain text.
    return "'" + cell if cell[:1] in ("=", "+", "-", "@", "\t", "\r") else cell


def to_csv(rows: Sequence[Mapping[str, str]], *, bundle_sha256: str, checkpoint: str) -> bytes:
    """The rows as UTF-8 CSV with a header row, after ``# `` comment lines naming the source.

    ``checkpoint`` is the checkpoint (or the signed note) the bundle was checked against.
    """
    origin, size, root = _source(bundle_sha256, checkpoint)
    out = io.StringIO(newline="")
    out.write("# panicbutton incident report\r\n")
    out.write(f"# derived from log bundle sha256 {bundle_sha256}\r\n")
    out.write(f"# checkpoint: {origin} {size} {root}\r\n")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([_neutralise(row.get(c, "")) for c in COLUMNS])
    return out.getvalue().encode("utf-8")


# -- PDF ---------------------------------------------------------------------------------
PAGE_W, PAGE_H, MARGIN = 842, 595, 36  # A4 landscape, in points
ROW_SIZE, LEADING = 8, 11
#: The table's columns: (row key, heading, width in points); 740 of the 770 available.
PDF_COLUMNS = (
    ("incident", "incident", 48),
    ("kind", "kind", 70),
    ("room", "room", 90),
    ("raised_at", "raised at (UTC)", 118),
    ("acknowledged_by", "acknowledged by", 90),
    ("seconds_to_acknowledge", "s to ack", 50),
    ("state", "state", 72),
    ("outcome", "outcome", 90),
    ("pages_failed", "pages failed", 60),
    ("late_steps", "late steps", 52),
)
_TABLE_TOP = PAGE_H - MARGIN - 82  # baseline of the table's headings
ROWS_PER_PAGE = (_TABLE_TOP - LEADING - MARGIN - 14) // LEADING + 1


def _pdf_str(text: str) -> bytes:
    # NOTE: WinAnsiEncoding agrees with Latin-1 on printable characters only, so
    # control characters (including Latin-1's 0x80-0x9F) become "?" too.
    safe = "".join(c if " " <= c <= "~" or "\xa0" <= c <= "\xff" else "?" for c in text)
    raw = safe.encode("latin-1").replace(b"\\", b"\\\\")
    return b"(" + raw.replace(b"(", b"\\(").replace(b")", b"\\)") + b")"


def _fit(cell: str, width: int, size: int = ROW_SIZE) -> str:
    # Helvetica's common glyphs are at most ~0.6 em wide: a conservative budget.
    most = int(width / (size * 0.6))
    return cell if len(cell) <= most else cell[: most - 3] + "..."


def _text(x: float, y: float, text: str, *, size: int = ROW_SIZE, font: str = "F1") -> bytes:
    return b"BT /%s %d Tf %.1f %.1f Td %s Tj ET\n" % (font.encode(), size, x, y, _pdf_str(text))


def _summary(rows: Sequence[Mapping[str, str]]) -> str:
    waits = [int(r["seconds_to_acknowledge"]) for r in rows if r.get("seconds_to_acknowledge")]
    median = f"{statistics.median(waits):g}" if waits else "-"
    return (
        f"incidents {len(rows)} | panic alarms {sum(r.get('kind') == 'panic' for r in rows)}"
        f" | acknowledged {sum(bool(r.get('acknowledged_at')) for r in rows)}"
        f" | seconds to acknowledge: median {median}, max {max(waits) if waits else '-'}"
        f" | open {sum(r.get('state') == 'open' for r in rows)}"
        f" | late steps {sum(int(r.get('late_steps') or 0) for r in rows)}"
    )


def _page(head: list[str], chunk: Sequence[Mapping[str, str]], k: int, n: int) -> bytes:
    """One page's content stream: the header block (on every page, so that a page
    separated from the rest still names its source), the table part, the footer."""
    full = PAGE_W - 2 * MARGIN
    out = [_text(MARGIN, PAGE_H - MARGIN - 14, _fit(head[0], full, 14), size=14, font="F2")]
    for i, line in enumerate(head[1:]):
        out.append(_text(MARGIN, PAGE_H - MARGIN - 32 - 12 * i, _fit(line, full, 9), size=9))
    x, y = MARGIN, _TABLE_TOP
    for _key, heading, width in PDF_COLUMNS:
        out.append(_text(x, y, heading, font="F2"))
        x += width
    out.append(b"0.5 w %d %.1f m %d %.1f l S\n" % (MARGIN, y - 3, PAGE_W - MARGIN, y - 3))
    for row in chunk:
        x, y = MARGIN, y - LEADING
        for key, _heading, width in PDF_COLUMNS:
            out.append(_text(x, y, _fit(row.get(key, ""), width)))
            x += width
    if not chunk:
        out.append(_text(MARGIN, y - LEADING, "no incidents in this log"))
    out.append(_text(MARGIN, MARGIN - 14, _fit(head[0], 500)))
    out.append(_text(PAGE_W - MARGIN - 60, MARGIN - 14, f"page {k} of {n}"))
    return b"".join(out)


def to_pdf(
    rows: Sequence[Mapping[str, str]],
    *,
    title: str,
    bundle_sha256: str,
    checkpoint: str,
    generated_at: str,
) -> bytes:
    """The rows as a printable PDF 1.4 (A4 landscape, Helvetica, uncompressed).

    Every page carries the title, the provenance (bundle hash, checkpoint origin,
    size and root, ``generated_at`` as given) and a summary line, then part of
    the table and "page k of N". Long cells are cut short with "...".
    """
    origin, size, root = _source(bundle_sha256, checkpoint)
    head = [
        title,
        f"derived from log bundle sha256 {bundle_sha256}",
        f"checkpoint {origin}, tree size {size}, root {root}",
        f"generated at {generated_at}",
        _summary(rows),
    ]
    chunks = [rows[i : i + ROWS_PER_PAGE] for i in range(0, len(rows), ROWS_PER_PAGE)] or [[]]
    n = len(chunks)
    # Objects 1-5 are fixed; page k (from 0) is object 6 + 2k, its content 7 + 2k.
    kids = b" ".join(b"%d 0 R" % (6 + 2 * k) for k in range(n))
    font = b"<< /Type /Font /Subtype /Type1 /BaseFont /%s /Encoding /WinAnsiEncoding >>"
    objects = [
        b"<< /Type /Catalog /Pages 3 0 R >>",
        b"<< /Title %s /Producer (panicbutton report) >>" % _pdf_str(title),
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, n),
        font % b"Helvetica",
        font % b"Helvetica-Bold",
    ]
    for k, chunk in enumerate(chunks):
        stream = _page(head, chunk, k + 1, n)
        objects.append(
            b"<< /Type /Page /Parent 3 0 R /MediaBox [0 0 %d %d] /Contents %d 0 R"
            b" /Resources << /Font << /F1 4 0 R /F2 5 0 R >> >> >>" % (PAGE_W, PAGE_H, 7 + 2 * k)
        )
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
    return _assemble(objects)


def _assemble(objects: list[bytes]) -> bytes:
    """Number the objects from 1 and write them with an exact cross-reference table."""
    # NOTE: the binary comment line tells transfer tools the file is not text.
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for obj_id, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (obj_id, body)
    xref = len(out)
    # Each xref line is exactly 20 bytes: 10 digits, space, 5 digits, space, flag, space, LF.
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 2 0 R >>\n" % (len(objects) + 1)
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)
