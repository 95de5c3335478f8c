"""The roster lives in the database: edits through the API (checked, versioned, logged)
hold for the next alarm on every server sharing the database; site files import and
export."""

from __future__ import annotations

import json
import time
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select

from panicbutton.wire import Alert, new_alert_id, now_utc
from server.app import Server, build
from server.errors import PeopleError, SiteError
from server.models import LogEntry, Page
from server.paging.notifier import ConsoleNotifier
from server.people import directory
from server.people.roles import Role
from server.people.tables import Person, SiteVersion
from server.roster import transfer
from server.roster.edit import StaleVersionError
from server.settings import Settings
from server.site import load_site, parse_site
from tests import web
from tests.harness import (
    ALL_SCOPES,
    FLOOR,
    MANAGER,
    RECEPTION,
    System,
    bearer,
    person_token,
    sample_site,
)
from tests.server.test_escalation import START, STEPS, alert, settle, sms

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
NEW_PHONE = "+32470009999"


def settings_for(url: str, tmp_path: Path) -> Settings:
    return Settings(
        demo=True,
        database_url=url,
        log_checkpoint_file=tmp_path / "checkpoints.jsonl",
        twilio_auth_token=SecretStr("t" * 32),
        public_base_url="https://alarm.example.test",
        site_file=tmp_path / "absent.toml",
    )


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[Server]:
    built = build(
        settings_for(database_url, tmp_path),
        site=sample_site(),
        notifier=ConsoleNotifier(lambda _: None),
    )
    yield built
    built.services.stop()
    built.services.engine.dispose()


def token_for(
    server: Server, person_id: str, role: Role, *, phone: str | None = None
) -> dict[str, str]:
    """A person with ``role`` and a personal API token; the Authorization header."""
    token = person_token(
        server.services, person_id, roles=[role], phone=phone, scopes=ALL_SCOPES, days=3650
    )
    return bearer(token)


def paged(server: Server, incident: int) -> set[str]:
    with server.services.sessions() as s:
        return set(s.scalars(select(Page.staff_id).where(Page.incident_id == incident)))


def press(server: Server, device: str = "unit-1") -> int:
    alert = Alert(device_id=device, alert_id=new_alert_id(), seq=1, pressed_at=now_utc())
    incident = server.services.alerts.handle(alert).incident
    assert incident is not None
    return incident


def config_entries(server: Server) -> list[dict[str, Any]]:
    with server.services.sessions() as s:
        bodies = s.scalars(
            select(LogEntry.body).where(LogEntry.type == "config.changed").order_by(LogEntry.n)
        )
        return [json.loads(b)["data"] for b in bodies]


def test_the_site_given_at_start_is_version_1_with_its_people(server: Server) -> None:
    with server.services.sessions() as s:
        versions = s.scalars(select(SiteVersion)).all()
        assert [(v.version, v.changed_by) for v in versions] == [(1, "system")]
        assert "phone" not in json.dumps(versions[0].document)  # no numbers in the document
        assert s.get(Person, "reception") is not None
    assert [s.id for s in server.services.site.staff] == ["reception", "floor", "manager"]
    [entry] = config_entries(server)
    assert (entry["by"], entry["version"]) == ("system", 1)


def test_a_roster_change_through_the_api_pages_the_new_person_at_the_next_alarm(
    server: Server,
) -> None:
    boss = token_for(server, "boss", Role.MANAGER)
    client = TestClient(server.app, headers=boss)
    assert paged(server, press(server)) == {"reception", "floor"}
    with server.services.sessions.begin() as s:
        directory.add_person(
            s,
            person_id="night",
            name="Night",
            by="boss",
            now=NOW,
            roles=[Role.STAFF],
            phone=NEW_PHONE,
            phone_confirmed=True,
        )
    read = client.get("/api/v1/site").json()
    answer = client.put(
        "/api/v1/site/duty", json={"version": read["version"], "on_duty": ["night"]}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["version"] == read["version"] + 1
    assert paged(server, press(server, "unit-2")) == {"night"}
    entry = config_entries(server)[-1]
    assert (entry["by"], entry["version"]) == ("boss", read["version"] + 1)
    assert entry["duty"]["always"] == ["night"]


def test_a_change_made_by_a_second_server_is_seen_by_the_first(
    server: Server, database_url: str, tmp_path: Path
) -> None:
    other = build(
        settings_for(database_url, tmp_path / "b"), notifier=ConsoleNotifier(lambda _: None)
    )
    try:
        boss = token_for(other, "boss", Role.MANAGER)
        client = TestClient(other.app, headers=boss)
        version = client.get("/api/v1/site").json()["version"]
        shift = {"staff": "manager", "start": "00:00", "end": "00:00"}
        answer = client.post("/api/v1/site/shifts", json={"version": version, "shift": shift})
        assert answer.status_code == 200, answer.text
        assert (
            client.put(
                "/api/v1/site/duty", json={"version": version + 1, "on_duty": []}
            ).status_code
            == 200
        )
    finally:
        other.services.stop()
        other.services.engine.dispose()
    # In force here within PANICBUTTON_SITE_REFRESH_SECONDS (1 s by default).
    time.sleep(1.05)
    assert paged(server, press(server)) == {"manager"}


def test_an_invalid_edit_is_refused_with_the_problem_and_nothing_applied(server: Server) -> None:
    client = TestClient(server.app, headers=token_for(server, "boss", Role.MANAGER))
    before = client.get("/api/v1/site").json()
    shift = {"staff": "nobody-here", "start": "08:00", "end": "18:00"}
    answer = client.post("/api/v1/site/shifts", json={"version": before["version"], "shift": shift})
    assert answer.status_code == 422
    assert "'nobody-here'" in answer.json()["detail"]
    assert "nothing was changed" in answer.json()["detail"]
    bad_steps = {"version": before["version"], "steps": [{"after": 30, "who": "on_duty"}]}
    answer = client.put("/api/v1/site/escalation", json=bad_steps)
    assert answer.status_code == 422
    assert "after = 0" in answer.json()["detail"]
    assert client.get("/api/v1/site").json() == before
    assert len(config_entries(server)) == 1


def test_a_stale_version_is_refused(server: Server) -> None:
    client = TestClient(server.app, headers=token_for(server, "boss", Role.MANAGER))
    version = client.get("/api/v1/site").json()["version"]
    room = {"version": version, "label": "Kitchen", "device": "unit-9"}
    assert client.put("/api/v1/site/rooms/kitchen", json=room).status_code == 200
    again = client.put("/api/v1/site/rooms/kitchen", json={**room, "label": "Old kitchen"})
    assert again.status_code == 409
    assert f"version {version + 1}" in again.json()["detail"]
    doc = client.get("/api/v1/site").json()
    assert [r["label"] for r in doc["document"]["rooms"] if r["id"] == "kitchen"] == ["Kitchen"]
    # The whole document, as read, goes back with its version.
    whole = client.put(
        "/api/v1/site",
        json={
            "version": doc["version"],
            "document": {**doc["document"], "test": {"recipients": ["floor"]}},
        },
    )
    assert whole.status_code == 200, whole.text
    assert whole.json()["document"]["test"] == {"recipients": ["floor"]}


def test_editing_needs_the_roster_right(server: Server) -> None:
    client = TestClient(server.app, headers=token_for(server, "helper", Role.STAFF))
    assert client.get("/api/v1/site").status_code == 200
    version = client.get("/api/v1/site").json()["version"]
    answer = client.put("/api/v1/site/test", json={"version": version, "recipients": []})
    assert answer.status_code == 403
    assert TestClient(server.app).get("/api/v1/site").status_code == 401


def test_an_unconfirmed_phone_is_not_paged(server: Server) -> None:
    client = TestClient(server.app, headers=token_for(server, "boss", Role.MANAGER))
    with server.services.sessions.begin() as s:
        directory.add_person(
            s, person_id="new", name="New", by="boss", now=NOW, roles=[Role.STAFF], phone=NEW_PHONE
        )
    version = client.get("/api/v1/site").json()["version"]
    assert (
        client.put(
            "/api/v1/site/duty", json={"version": version, "on_duty": ["new", "floor"]}
        ).status_code
        == 200
    )
    assert paged(server, press(server)) == {"floor"}
    assert "new" not in {s.id for s in server.services.site.staff}
    with server.services.sessions.begin() as s:
        s.get_one(Person, "new").phone_confirmed_at = NOW
    assert paged(server, press(server, "unit-2")) == {"floor", "new"}


SITE_FILE = """
[site]
name = "Imported"
timezone = "Europe/Brussels"

[[rooms]]
id = "room-1"
label = "Room 1"
device = "unit-1"

[[staff]]
id = "reception"
name = "Reception"
phone = "+32470000001"
language = "fr"

[[staff]]
id = "night"
name = "Night"
phone = "+32470000077"
language = "en"
role = "manager"

[duty]
default = ["night"]

[[duty.shifts]]
staff = "reception"
days = ["mon", "tue"]
start = "08:00"
end = "18:00"
"""


def test_import_shows_a_masked_diff_then_applies_in_one_transaction(
    server: Server, tmp_path: Path
) -> None:
    path = tmp_path / "site.toml"
    path.write_text(SITE_FILE)
    site = load_site(path)
    sv = server.services
    with sv.sessions() as s:
        plan = transfer.plan(s, site, NOW)
    text = "\n".join(plan.lines)
    assert "+ staff night (manager, en, +324******77)" in text
    assert "+32470000077" not in text
    assert "- staff floor" in text
    assert "- room room-2" in text
    assert "+ shift reception mon,tue 08:00-18:00" in text
    assert "! manager manager is not in the file" in text
    with sv.sessions.begin() as s:
        version = transfer.apply(
            s,
            site,
            by="system",
            now=NOW,
            expected=plan.version,
            phones_confirmed=True,
            retention=sv.retention,
            digest_key=b"k" * 32,
        )
    assert version == plan.version + 1
    assert {s.id for s in sv.site.staff} == {"reception", "night", "manager"}
    assert [r.id for r in sv.site.rooms] == ["room-1"]


def test_an_import_with_a_problem_applies_nothing(server: Server, tmp_path: Path) -> None:
    sv = server.services
    bad_phone = SITE_FILE.replace('"+32470000077"', '"0470 00 00 77"')
    path = tmp_path / "bad.toml"
    path.write_text(bad_phone)
    with pytest.raises(SiteError, match="international form"):
        load_site(path)
    path.write_text(SITE_FILE.replace('staff = "reception"', 'staff = "ghost"'))
    with pytest.raises(SiteError, match="'ghost'"):
        load_site(path)
    # A number someone outside the file holds: refused when applied; nothing stays.
    taken = token_for(server, "boss", Role.WORKER, phone="+32470000077")
    assert taken
    before = sv.site
    with pytest.raises(PeopleError, match="someone else's"), sv.sessions.begin() as s:
        transfer.apply(
            s,
            parse_site(tomllib.loads(SITE_FILE)),
            by="system",
            now=NOW,
            expected=None,
            phones_confirmed=True,
            retention=sv.retention,
            digest_key=b"k" * 32,
        )
    assert sv.site == before
    with sv.sessions() as s:
        assert s.get(Person, "night") is None


def test_a_stale_import_is_refused(server: Server) -> None:
    sv = server.services
    with pytest.raises(StaleVersionError), sv.sessions.begin() as s:
        transfer.apply(
            s,
            sample_site(),
            by="system",
            now=NOW,
            expected=0,
            phones_confirmed=True,
            retention=sv.retention,
            digest_key=b"k" * 32,
        )


def test_export_imports_back_to_the_same_configuration(server: Server, tmp_path: Path) -> None:
    sv = server.services
    with sv.sessions() as s:
        text, warnings = transfer.export(s, NOW)
    assert warnings == []
    path = tmp_path / "export.toml"
    path.write_text(text)
    again = load_site(path)
    assert again == sv.site
    assert again == sample_site()
    with sv.sessions() as s:
        assert transfer.plan(s, again, NOW).lines == []


def test_a_server_with_no_configuration_starts_and_still_opens_incidents(
    database_url: str, tmp_path: Path
) -> None:
    built = build(settings_for(database_url, tmp_path), notifier=ConsoleNotifier(lambda _: None))
    try:
        assert built.services.site.rooms == ()
        incident = press(built)
        assert paged(built, incident) == set()
    finally:
        built.services.stop()
        built.services.engine.dispose()


def test_a_site_file_is_imported_once_at_the_first_start(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(database_url, tmp_path).model_copy(
        update={"site_file": tmp_path / "site.toml"}
    )
    (tmp_path / "site.toml").write_text(SITE_FILE)
    built = build(settings, notifier=ConsoleNotifier(lambda _: None))
    try:
        assert {s.id for s in built.services.site.staff} == {"reception", "night"}
        assert built.services.book.version() == 1
    finally:
        built.services.stop()
        built.services.engine.dispose()
    (tmp_path / "site.toml").write_text(SITE_FILE.replace("Room 1", "Room one"))
    again = build(settings, notifier=ConsoleNotifier(lambda _: None))
    try:
        assert again.services.site.rooms[0].label == "Room 1"  # the database is the truth now
        # ... and the operator who edited the file is told, at every start.
        said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert any("differs from the configuration in force (version 1)" in m for m in said)
        assert any("panicbutton site import" in m for m in said)
    finally:
        again.services.stop()
        again.services.engine.dispose()


def test_the_site_commands_import_then_export_the_same_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from panicbutton.cli import main  # noqa: PLC0415

    monkeypatch.setenv("PANICBUTTON_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.sqlite3'}")
    source = tmp_path / "site.toml"
    source.write_text(SITE_FILE)
    broken = tmp_path / "broken.toml"
    broken.write_text(SITE_FILE.replace('default = ["night"]', 'default = ["ghost"]'))
    assert main(["site", "import", str(broken), "--yes"]) == 2
    assert "'ghost'" in capsys.readouterr().err
    assert main(["site", "import", str(source), "--yes", "--phones-confirmed"]) == 0
    shown = capsys.readouterr().out
    assert "+ staff night (manager, en, +324******77)" in shown
    assert "+32470000077" not in shown
    assert "version 1" in shown
    out = tmp_path / "export.toml"
    assert main(["site", "export", "--out", str(out)]) == 0
    assert load_site(out) == load_site(source)
    assert main(["site", "import", str(out), "--yes"]) == 0
    assert "nothing changes" in capsys.readouterr().out


@pytest.mark.clock(START)
def test_the_running_server_pages_who_the_api_put_on_duty_at_the_next_alarm(
    system: System,
) -> None:
    """Real broker, real HTTP, fake Twilio: no restart between the edit and the alarm."""
    assert system.server is not None
    sv = system.server.services
    headers = token_for(system.server, "boss", Role.MANAGER)
    with sv.sessions.begin() as s:
        directory.add_person(
            s,
            person_id="night",
            name="Night",
            by="boss",
            now=sv.clock.now(),
            roles=[Role.STAFF],
            phone=NEW_PHONE,
            phone_confirmed=True,
        )
    version = web.get(f"{system.api}/site", headers=headers).json()["version"]
    answer = web.put(
        f"{system.api}/site/duty", json={"version": version, "on_duty": ["night"]}, headers=headers
    )
    assert answer.status_code == 200, answer.text
    alert(system)
    settle(system)
    assert system.twilio.wait_for(lambda _: len(system.twilio.to(NEW_PHONE)) == 1)
    assert "Room 1" in system.twilio.to(NEW_PHONE)[0]
    assert system.twilio.to(RECEPTION) == []
    assert system.twilio.to(FLOOR) == []
    [entry] = [e for e in system.events("config.changed") if e.data["by"] == "boss"]
    assert entry.data["version"] == version + 1


@pytest.mark.clock(START)
@pytest.mark.site(escalation=STEPS)
def test_an_open_alarm_goes_on_paging_when_its_room_is_removed_and_its_taker_closed(
    system: System,
) -> None:
    """The configuration changes under an open alarm: its room is removed and the person
    on duty by take-over is closed. The next step still pages everyone left, naming the
    room by its id, and the next alarm pages the others, not the closed person."""
    from tests.server.test_escalation import advance  # noqa: PLC0415

    assert system.server is not None
    sv = system.server.services
    headers = token_for(system.server, "boss", Role.MANAGER)
    reception = {"Authorization": system.headers("reception")["Authorization"]}
    took = web.post(f"{system.api}/duty/takeover", json={}, headers=reception)
    assert took.status_code == 204, took.text
    first = alert(system)
    settle(system)
    # The take-over: reception alone is paged at step 0.
    assert [t for t in sms(system, RECEPTION) if t.startswith("ALARM")]
    assert not [t for t in sms(system, FLOOR) if t.startswith("ALARM")]
    current = web.get(f"{system.api}/site", headers=headers).json()
    document = current["document"]
    document["rooms"] = [r for r in document["rooms"] if r["id"] != "room-1"]
    changed = web.put(
        f"{system.api}/site",
        json={"version": current["version"], "document": document},
        headers=headers,
    )
    assert changed.status_code == 200, changed.text
    with sv.sessions.begin() as s:
        directory.close(s, person_id="reception", by="boss", now=sv.clock.now())

    advance(system, 31)  # step 1: all staff
    settle(system)
    assert any(t.startswith("ALARM room-1") for t in sms(system, FLOOR)), sms(system, FLOOR)
    assert any("room-1" in t for t in sms(system, MANAGER)), sms(system, MANAGER)
    with sv.sessions() as s:
        failed = s.scalars(
            select(Page.staff_id).where(Page.incident_id == first, Page.status == "failed")
        )
        # Only the closed person's pages of the frozen plan fail (and hurry the next step).
        assert set(failed) == {"reception"}
    second = alert(system, "unit-2")
    advance(system, 25)  # past the bundle windows (SMS 3 s, calls 20 s) of the pages just sent
    settle(system)
    assert "reception" not in paged(system.server, second)
    assert paged(system.server, second)  # the others are on duty, not nobody


def test_an_import_that_would_page_nobody_is_refused(database_url: str, tmp_path: Path) -> None:
    """A fresh database and a file whose numbers nobody has confirmed: applied as is,
    every alarm would page no one. Refused with the way forward; nothing applied."""
    from sqlalchemy.orm import sessionmaker  # noqa: PLC0415

    from server.db import make_engine, migrate  # noqa: PLC0415

    engine = make_engine(database_url)
    migrate(engine)
    sessions = sessionmaker(engine)
    site = parse_site(tomllib.loads(SITE_FILE))
    arguments: dict[str, Any] = {
        "by": "system",
        "now": NOW,
        "expected": None,
        "retention": settings_for(database_url, tmp_path).retention(),
        "digest_key": b"k" * 32,
    }
    with pytest.raises(PeopleError, match="nobody could be paged"), sessions.begin() as s:
        transfer.apply(s, site, phones_confirmed=False, **arguments)
    with sessions() as s:
        assert s.scalars(select(SiteVersion)).all() == []
        assert s.scalars(select(Person)).all() == []
    with sessions.begin() as s:
        transfer.apply(s, site, phones_confirmed=True, **arguments)
    engine.dispose()
