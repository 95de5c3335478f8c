"""The incident log as the server keeps it: exports an outsider verifies, access records,
personal data kept apart and purged, checkpoints in the database and in a file,
heartbeats and the nightly self-check. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import sqlite3
import time
import zipfile
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import delete, select, text, update

from panicbutton.cli import main
from panicbutton.log import canonical, checkpoints, spec, verify
from panicbutton.wire import Alert, new_alert_id, now_utc
from server.log.append import audit
from server.log.keeper import LogFailedError, LogKeeper
from server.models import LogEntry, PersonalData
from tests.harness import MANAGER, RECEPTION, System, reply_code, wait_until
from tests.log.test_standalone import run_verifier


def who(why: str = "quarterly review of alarms") -> dict[str, str]:
    return {"X-Panicbutton-Justification": why}


def client(system: System, person: str = "night-manager") -> httpx.Client:
    """The API as ``person`` (by default a manager who is not on the roster)."""
    return httpx.Client(base_url=system.api, headers=system.headers(person), timeout=30)


def keeper(system: System) -> LogKeeper:
    assert system.server is not None
    return system.server.services.keeper


def raise_alert(system: System, device: str = "unit-1", seq: int = 1) -> int:
    assert system.server is not None
    alert = Alert(device_id=device, alert_id=new_alert_id(), seq=seq, pressed_at=now_utc())
    incident = system.server.services.alerts.handle(alert).incident
    assert incident is not None
    return incident


def export(system: System, folder: Path, scope: str = "full", **params: str) -> Path:
    with client(system) as c:
        got = c.get("/log/export", params={"scope": scope, **params}, headers=who())
    assert got.status_code == 200, got.text
    assert got.headers["content-type"] == "application/zip"
    out = folder / f"{scope.replace(':', '-')}.zip"
    out.write_bytes(got.content)
    return out


def test_full_export_verifies_without_any_server_code(system: System, tmp_path: Path) -> None:
    incident = raise_alert(system)
    assert system.twilio.wait_for(lambda sent: len(sent) >= 2)
    reply = system.twilio.inbound_sms(
        system.sms_webhook,
        public_url=system.sms_webhook_public,
        from_=RECEPTION,
        body=reply_code(system.twilio.to(RECEPTION)),
    )
    assert reply.status_code == 200
    assert wait_until(lambda: system.incidents()[0].state == "acknowledged")
    system.wait_idle()  # the texts telling the others who is going are logged first
    bundle = export(system, tmp_path)
    key = str(keeper(system).signer.verifier)

    done = run_verifier(tmp_path, str(bundle), "--key", key)
    assert done.returncode in (verify.OK, verify.FINDINGS), done.stderr
    assert "verified:" in done.stdout
    with zipfile.ZipFile(bundle) as zf:
        names = {Path(n).name for n in zf.namelist()}
        entries = zf.read(next(n for n in zf.namelist() if n.endswith("entries.jsonl")))
    assert {"manifest.json", "entries.jsonl", "checkpoints.jsonl", "VERIFY.md"} <= names
    # The export recorded itself, and the bundle's checkpoint covers that record.
    types = [json.loads(line)["type"] for line in entries.splitlines()]
    assert types[-1] == "record.exported"
    assert "alert.raised" in types
    assert f'"incident":{incident}'.encode() in entries
    # No name or number of the site file is in the log.
    for member in system.site.staff:
        assert member.phone.encode() not in entries
        assert member.name.encode() not in entries


def test_edited_bundle_fails_in_the_verifier_at_that_file(system: System, tmp_path: Path) -> None:
    raise_alert(system)
    bundle = export(system, tmp_path)
    folder = tmp_path / "unzipped"
    with zipfile.ZipFile(bundle) as zf:
        zf.extractall(folder)
    [inner] = list(folder.iterdir())
    entries = inner / "entries.jsonl"
    entries.write_bytes(entries.read_bytes().replace(b'"room-1"', b'"room-2"', 1))

    done = run_verifier(tmp_path, str(inner))
    assert done.returncode == verify.FAILED
    assert "entries.jsonl does not match its SHA-256" in done.stderr


def test_incident_bundle_discloses_that_incident_only(system: System, tmp_path: Path) -> None:
    first = raise_alert(system, "unit-1")
    second = raise_alert(system, "unit-2")
    bundle = export(system, tmp_path, scope=f"incident:{first}")

    done = run_verifier(tmp_path, str(bundle), "--key", str(keeper(system).signer.verifier))
    assert done.returncode in (verify.OK, verify.FINDINGS), done.stderr
    with zipfile.ZipFile(bundle) as zf:
        body = zf.read(next(n for n in zf.namelist() if n.endswith("entries.jsonl")))
        proofs = zf.read(next(n for n in zf.namelist() if n.endswith("proofs.jsonl")))
    incidents = {json.loads(line)["incident"] for line in body.splitlines()}
    assert incidents == {first}
    assert f'"incident":{second}'.encode() not in body
    assert len(proofs.splitlines()) == len(body.splitlines())


def test_a_persons_bundle_carries_their_notes_and_proves_them(
    system: System, tmp_path: Path
) -> None:
    incident = raise_alert(system)
    with client(system) as c:
        added = c.post(
            f"/incidents/{incident}/notes",
            json={
                "by": "night-manager",
                "text": "Client left when staff knocked; worker unhurt.",
                "subjects": ["worker-17"],
            },
        )
        assert added.status_code == 201, added.text
        unrelated = c.post(
            f"/incidents/{incident}/notes",
            json={"by": "night-manager", "text": "Unit battery checked."},
        )
        assert unrelated.status_code == 201
    bundle = export(system, tmp_path, scope="person:worker-17")

    done = run_verifier(tmp_path, str(bundle), "--key", str(keeper(system).signer.verifier))
    assert done.returncode in (verify.OK, verify.FINDINGS), done.stderr
    assert "1 personal data row(s) matched" in done.stdout
    with zipfile.ZipFile(bundle) as zf:
        personal = zf.read(next(n for n in zf.namelist() if n.endswith("personal.jsonl")))
        body = zf.read(next(n for n in zf.namelist() if n.endswith("entries.jsonl")))
    assert b"worker unhurt" in personal
    assert b"battery" not in personal
    assert [json.loads(line)["type"] for line in body.splitlines()] == ["note.added"]


def test_purging_personal_data_keeps_the_log_verifiable(system: System, tmp_path: Path) -> None:
    incident = raise_alert(system)
    with client(system) as c:
        assert (
            c.post(
                f"/incidents/{incident}/notes",
                json={"by": "night-manager", "text": "Worker asked for a day off."},
            ).status_code
            == 201
        )
    assert system.server is not None
    services = system.server.services
    later = services.clock.now() + timedelta(days=services.retention.note + 1)
    from server.log.personal import purge_expired  # noqa: PLC0415 - the unit under test

    with services.sessions.begin() as s:
        gone = purge_expired(s, now=later, retention=services.retention)
    assert gone >= 1
    with services.sessions() as s:
        kinds = s.scalars(select(PersonalData.kind)).all()
        redacted = s.scalars(select(LogEntry).where(LogEntry.type == "record.redacted")).all()
    assert "note" not in kinds
    assert {r.data["kind"] for r in redacted} >= {"note"}
    assert keeper(system).self_verify(services.clock.now()) is not None
    bundle = export(system, tmp_path, with_personal="true")
    done = run_verifier(tmp_path, str(bundle), "--key", str(keeper(system).signer.verifier))
    assert done.returncode in (verify.OK, verify.FINDINGS), done.stderr
    assert b"day off" not in bundle.read_bytes()


def test_altered_personal_data_breaks_its_commitment(system: System, tmp_path: Path) -> None:
    incident = raise_alert(system)
    with client(system) as c:
        note = c.post(
            f"/incidents/{incident}/notes",
            json={"by": "night-manager", "text": "Staff arrived in 40 seconds."},
        ).json()
    assert system.server is not None
    with system.server.services.sessions.begin() as s:
        s.execute(
            update(PersonalData)
            .where(PersonalData.ref == note["ref"])
            .values(value={"text": "Staff arrived in 4 seconds."})
        )
    bundle = export(system, tmp_path, with_personal="true")
    done = run_verifier(tmp_path, str(bundle), "--key", str(keeper(system).signer.verifier))
    assert done.returncode == verify.FAILED
    assert f"personal data {note['ref']} does not match its commitment" in done.stderr


def test_views_and_exports_are_recorded_with_who_and_why(system: System, tmp_path: Path) -> None:
    incident = raise_alert(system)
    with client(system) as c:
        assert c.get(f"/incidents/{incident}").status_code == 400
        assert c.get("/log/export").status_code == 400
        assert c.get(f"/incidents/{incident}", headers=who()).status_code == 200
    export(system, tmp_path, scope=f"incident:{incident}")
    records = [
        (e.type, e.data["by"], e.data["scope"])
        for e in system.events()
        if e.type.startswith("record.")
    ]
    assert records == [
        ("record.viewed", "night-manager", f"incident:{incident}"),
        ("record.exported", "night-manager", f"incident:{incident}"),
    ]


def test_checkpoints_are_signed_and_also_kept_in_a_file(system: System) -> None:
    c = client(system)  # before counting: opening the reader's account is logged too
    raise_alert(system)
    system.wait_idle()  # no page or step left to add events
    size = len(system.events())
    # The keeper signs soon after every commit that appended (bursts share one); once it
    # starts keeping, it may append a heartbeat of its own, signed too.
    assert wait_until(lambda: _signed(system) == len(system.events()) >= size)
    size = _signed(system)
    with c:
        served = c.get("/log/checkpoint")
        verifier = checkpoints.VerifierKey.parse(c.get("/log/key").text)
    assert served.status_code == 200
    assert checkpoints.open_checkpoint(served.text, verifier).size == size
    assert system.settings.log_checkpoint_file is not None
    kept = [
        json.loads(line) for line in system.settings.log_checkpoint_file.read_text().splitlines()
    ]
    sizes = [checkpoints.open_checkpoint(note, verifier).size for note in kept]
    assert sizes == sorted(sizes)
    assert kept[-1] == served.text


def test_a_burst_of_commits_shares_one_checkpoint_signed_within_about_a_second(
    system: System,
) -> None:
    assert system.server is not None
    sessions = system.server.services.sessions
    system.wait_idle()
    assert wait_until(lambda: _signed(system) == len(system.events()))
    before = _checkpoints(system)
    for _ in range(20):  # a commit every 20 ms, as in a storm: never quiet for 0.25 s
        with sessions.begin() as s:
            audit(s, at=now_utc(), type="log.heartbeat")
        time.sleep(0.02)
    size = len(system.events())
    started = time.monotonic()
    assert wait_until(lambda: _signed(system) == size)
    print(f"\n  signed {time.monotonic() - started:.2f} s after the last commit")
    # Every entry is signed, by one checkpoint (two if a pass was already waiting),
    # not one per commit.
    assert _checkpoints(system) - before <= 2


def _checkpoints(system: System) -> int:
    with system.server.services.sessions() as s:  # type: ignore[union-attr]
        return int(s.scalar(text("SELECT count(*) FROM log_checkpoints")) or 0)


@pytest.mark.clock("2026-11-28T02:00:00+00:00")
def test_quiet_hours_still_get_a_signed_heartbeat(system: System) -> None:
    assert system.clock is not None
    assert system.server is not None
    before = len(system.events("log.heartbeat"))
    system.clock.advance(15 * 60)  # type: ignore[attr-defined]
    keeper(system).poke()
    assert wait_until(lambda: len(system.events("log.heartbeat")) == before + 1)
    size = len(system.events())
    # Signed by the keeper itself, soon after the heartbeat's commit.
    assert wait_until(lambda: _signed(system) >= size)


def _signed(system: System) -> int:
    with system.server.services.sessions() as s:  # type: ignore[union-attr]
        return int(s.scalar(text("SELECT max(size) FROM log_checkpoints")) or 0)


def test_nightly_self_check_records_ok_then_catches_an_edit(system: System) -> None:
    raise_alert(system)
    assert system.server is not None
    services = system.server.services
    assert keeper(system).self_verify(services.clock.now()) is not None
    [ok] = system.events("log.verified")
    assert ok.data["result"] == "ok"
    keeper(system).sign()
    # An edit behind the server's back (SQLite has no triggers; on PostgreSQL the
    # superuser turns them off first).
    with services.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SET session_replication_role = replica"))
        body = conn.scalar(text("SELECT body FROM log_entries WHERE type = 'alert.raised'"))
        conn.execute(
            text("UPDATE log_entries SET body = :b WHERE type = 'alert.raised'"),
            {"b": bytes(body).replace(b'"room-1"', b'"room-3"')},
        )
    assert keeper(system).self_verify(services.clock.now()) is None
    results = [e.data["result"] for e in system.events("log.verified")]
    assert results == ["ok", "failed"]


def test_export_report_names_its_bundle(system: System) -> None:
    raise_alert(system)
    with client(system) as c:
        csv_ = c.get("/log/report.csv", headers=who())
        pdf = c.get("/log/report.pdf", headers=who())
    assert csv_.status_code == 200
    assert pdf.status_code == 200
    assert "derived from log bundle sha256" in csv_.text
    assert "room-1" in csv_.text
    assert pdf.content.startswith(b"%PDF-1.4")
    assert pdf.content.rstrip().endswith(b"%%EOF")


def test_personal_data_deleted_without_redaction_is_reported(
    system: System, tmp_path: Path
) -> None:
    incident = raise_alert(system)
    with client(system) as c:
        note = c.post(
            f"/incidents/{incident}/notes",
            json={"by": "night-manager", "text": "Worker reported the client's threats."},
        ).json()
    assert system.server is not None
    # The application may delete personal data (purging needs it), so nothing stops
    # this; the verifier tells.
    with system.server.services.sessions.begin() as s:
        s.execute(delete(PersonalData).where(PersonalData.ref == note["ref"]))
    bundle = export(system, tmp_path, with_personal="true")
    done = run_verifier(tmp_path, str(bundle), "--key", str(keeper(system).signer.verifier))
    assert done.returncode == verify.FINDINGS
    assert (
        f"personal data {note['ref']} is gone, but no record.redacted entry says it was purged"
        in done.stdout
    )


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_database_restored_from_an_older_backup_is_caught_at_start(
    system: System, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert system.server is not None
    raise_alert(system, "unit-1")
    assert wait_until(lambda: _signed(system) == len(system.events()))
    database = Path(system.settings.database_url.removeprefix("sqlite:///"))
    backup = tmp_path / "backup.sqlite3"
    with sqlite3.connect(database) as live, sqlite3.connect(backup) as copy:
        live.backup(copy)
    raise_alert(system, "unit-2")
    assert wait_until(lambda: _signed(system) == len(system.events()))
    system.stop_server()
    with sqlite3.connect(backup) as copy, sqlite3.connect(database) as live:
        copy.backup(live)
    lines = _file_lines(system)

    system.start_server()

    assert wait_until(lambda: system.events("log.verified"))
    [verified] = system.events("log.verified")
    assert verified.data["result"] == "failed"
    # (The file's checkpoint of size 24 covers entries the older copy lacks, or, once the
    # restarted server appended, different ones.)
    assert "the incident log FAILED its check" in caplog.text
    assert "restored from a backup" in caplog.text
    # Nothing is signed over the older copy (the file's checkpoints would fork).
    with pytest.raises(LogFailedError):
        keeper(system).sign()
    assert _file_lines(system) == lines
    # The managers are told by SMS (alarms still work; the log needs a person).
    assert system.twilio.wait_for(
        lambda sent: any(
            s.to == MANAGER and s.body.startswith("PANNE: le journal des incidents") for s in sent
        )
    )


def test_a_staff_members_bundle_proves_their_own_roster_record_only(
    system: System, tmp_path: Path
) -> None:
    incident = raise_alert(system)
    with client(system, "floor") as c:
        assert (
            c.post(f"/incidents/{incident}/notes", json={"text": "On my way."}).status_code == 201
        )
    bundle = export(system, tmp_path, scope="person:manager")

    done = run_verifier(tmp_path, str(bundle), "--key", str(keeper(system).signer.verifier))
    assert done.returncode in (verify.OK, verify.FINDINGS), done.stderr
    with zipfile.ZipFile(bundle) as zf:
        personal = [
            json.loads(line)
            for line in zf.read(
                next(n for n in zf.namelist() if n.endswith("personal.jsonl"))
            ).splitlines()
        ]
        body = zf.read(next(n for n in zf.namelist() if n.endswith("entries.jsonl")))
    manager = next(m for m in system.site.staff if m.id == "manager")
    assert [p["value"] for p in personal] == [{"name": manager.name, "phone": manager.phone}]
    types = {json.loads(line)["type"] for line in body.splitlines()}
    assert "config.staff" in types
    # Nothing of the others: not the whole configuration, not a colleague's review.
    assert "config.changed" not in types
    assert b'"floor"' not in body
    for other in system.site.staff:
        if other.id != "manager":
            assert other.phone.encode() not in bundle.read_bytes()


def test_a_scope_that_is_not_an_id_is_refused_before_anything_is_logged(
    system: System,
) -> None:
    raise_alert(system)
    with client(system) as c:
        for scope in ("person:Jane Doe +32 470 12 34 56", "incident:²", "incident:9" * 30):
            refused = c.get("/log/export", params={"scope": scope}, headers=who())
            assert refused.status_code == 400, scope
            assert "scope must be full, incident:<number> or person:<id>" in refused.text
        missing = c.get("/log/export", params={"scope": "incident:424242"}, headers=who())
        assert missing.status_code == 404
    assert system.events("record.exported") == []


# -- a rewritten log is never signed ----------------------------------------------------
def rewrite_and_rechain(system: System) -> None:
    """What a database superuser does to make a rewrite look whole: change the alarm's
    room, recompute every later entry's prev and the log head, triggers off."""
    assert system.server is not None
    with system.server.services.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SET LOCAL session_replication_role = replica"))
        # The head's lock first, as an append takes it: no entry is added meanwhile.
        conn.execute(text("UPDATE log_state SET size = size WHERE id = 1"))
        rows = conn.execute(text("SELECT n, body FROM log_entries ORDER BY n")).all()
        tree, last = spec.Frontier(), spec.GENESIS
        for n, body in rows:
            entry = json.loads(bytes(body))
            if entry["type"] == "alert.raised":
                entry["data"]["room"] = "room-3"
            entry["prev"] = last.hex()
            new = canonical.dumps(entry)
            conn.execute(text("UPDATE log_entries SET body = :b WHERE n = :n"), {"b": new, "n": n})
            last = spec.leaf_hash(new)
            tree.append(last)
        conn.execute(
            text("UPDATE log_state SET frontier = :f, last_leaf = :l WHERE id = 1"),
            {"f": b"".join(tree.hashes), "l": last},
        )


def _file_lines(system: System) -> list[str]:
    assert system.settings.log_checkpoint_file is not None
    return system.settings.log_checkpoint_file.read_text().splitlines()


def _log_failed_texts(system: System) -> int:
    return sum(
        1
        for s in system.twilio.sent
        if s.to == MANAGER and s.body.startswith("PANNE: le journal des incidents")
    )


@pytest.mark.parametrize("by", ["an export", "the keeper after an alarm"])
def test_a_rewritten_and_rechained_log_is_never_signed(system: System, by: str) -> None:
    assert system.server is not None
    raise_alert(system)
    assert wait_until(lambda: _signed(system) == len(system.events()))
    assert wait_until(lambda: system.server.services.pager.backlog() == 0)  # type: ignore[union-attr]
    # The checkpoint is stored, then appended to the file: both, before looking.
    file = system.settings.log_checkpoint_file
    assert file is not None
    assert wait_until(lambda: _signed(system) == len(system.events()) and file.exists())
    signed, lines = _signed(system), _file_lines(system)

    rewrite_and_rechain(system)
    if by == "an export":
        with client(system) as c:
            got = c.get("/log/export", params={"scope": "full"}, headers=who())
        assert got.status_code == 503
        assert got.json()["detail"].startswith("the incident log failed its check (")
        assert "nothing is signed, so no export can be made" in got.json()["detail"]
    else:
        raise_alert(system, "unit-2")

    assert wait_until(lambda: system.events("log.verified"))
    [failed] = system.events("log.verified")
    assert failed.data["result"] == "failed"
    assert system.twilio.wait_for(lambda sent: _log_failed_texts(system) == 1)
    # Nothing was signed over the rewritten log: not in the database, not in the file;
    # and nothing will be (the keeper refuses from now on).
    with pytest.raises(LogFailedError):
        keeper(system).sign()
    assert _signed(system) == signed
    assert _file_lines(system) == lines

    # The next start's check does not say ok either, and still signs nothing.
    system.stop_server()
    system.start_server()
    assert wait_until(lambda: len(system.events("log.verified")) == 2)
    assert [e.data["result"] for e in system.events("log.verified")] == ["failed", "failed"]
    assert _signed(system) == signed
    assert _file_lines(system) == lines


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_cli_export_of_a_rewritten_log_signs_nothing(
    system: System,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert system.server is not None
    raise_alert(system)
    assert wait_until(lambda: _signed(system) == len(system.events()))
    system.stop_server()  # the server may be down: the export still checks before signing
    rewrite_and_rechain_offline(system)
    signed, lines = _signed_offline(system), _file_lines(system)
    cli_env(system, monkeypatch)

    code = main(
        [
            *("audit", "export", "--out", str(tmp_path / "log.zip"), "--by", "inspector-1"),
            *("--justification", "annual inspection of the alarm records"),
        ]
    )

    assert code == 2
    assert "the incident log failed its check (" in capsys.readouterr().err
    assert not (tmp_path / "log.zip").exists()
    assert _signed_offline(system) == signed
    assert _file_lines(system) == lines
    system.start_server()
    assert wait_until(lambda: len(system.events("log.verified")) == 2)
    # The export's own record of the failure, then the server's at its start.
    assert [e.data["result"] for e in system.events("log.verified")] == ["failed", "failed"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.clock("2026-11-28T02:00:00+00:00")
def test_managers_are_texted_every_hour_until_someone_acknowledges(
    system: System, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert system.server is not None
    assert system.clock is not None
    raise_alert(system)
    assert wait_until(lambda: _signed(system) == len(system.events()))
    rewrite_and_rechain(system)
    raise_alert(system, "unit-2")
    assert system.twilio.wait_for(lambda sent: _log_failed_texts(system) == 1)
    cli_env(system, monkeypatch)

    system.clock.advance(3600)  # type: ignore[attr-defined]
    keeper(system).poke()
    assert system.twilio.wait_for(lambda sent: _log_failed_texts(system) == 2)
    text_ = next(
        s.body for s in system.twilio.sent if s.to == MANAGER and s.body.startswith("PANNE")
    )
    assert "panicbutton audit acknowledge-failure" in text_

    assert main(["audit", "acknowledge-failure", "--by", "night-manager"]) == 2
    assert "--reason" in capsys.readouterr().err
    done = main(
        [
            *("audit", "acknowledge-failure", "--by", "night-manager"),
            *("--reason", "database restored by the host; auditor informed"),
        ]
    )
    assert done == 0
    assert "no longer texted" in capsys.readouterr().out
    [ack] = system.events("log.failure_acknowledged")
    assert ack.data["by"] == "night-manager"
    assert "restored" not in json.dumps(ack.data)  # the reason is personal data, kept apart

    system.clock.advance(3600)  # type: ignore[attr-defined]
    keeper(system).poke()
    # The keeper saw the acknowledgement when the next text fell due, and sent none.
    assert wait_until(lambda: not keeper(system).reminding)
    assert _log_failed_texts(system) == 2
    # Acknowledging stops the texts, not the refusal to sign.
    with pytest.raises(LogFailedError):
        keeper(system).sign()
    # Nothing left to acknowledge.
    assert main(["audit", "acknowledge-failure", "--by", "x", "--reason", "once more, why"]) == 2
    assert "no failed check of the log to acknowledge" in capsys.readouterr().err


def cli_env(system: System, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "PANICBUTTON_DEMO": "1",
        "PANICBUTTON_DATABASE_URL": system.settings.database_url,
        "PANICBUTTON_LOG_KEY_FILE": str(system.settings.log_key_file),
        "PANICBUTTON_LOG_CHECKPOINT_FILE": str(system.settings.log_checkpoint_file),
    }.items():
        monkeypatch.setenv(name, value)


def _signed_offline(system: System) -> int:
    with sqlite3.connect(system.settings.database_url.removeprefix("sqlite:///")) as db:
        return int(db.execute("SELECT max(size) FROM log_checkpoints").fetchone()[0] or 0)


def rewrite_and_rechain_offline(system: System) -> None:
    """``rewrite_and_rechain`` with the server stopped (SQLite, straight to the file)."""
    with sqlite3.connect(system.settings.database_url.removeprefix("sqlite:///")) as db:
        tree, last = spec.Frontier(), spec.GENESIS
        for n, body in db.execute("SELECT n, body FROM log_entries ORDER BY n").fetchall():
            entry = json.loads(bytes(body))
            if entry["type"] == "alert.raised":
                entry["data"]["room"] = "room-3"
            entry["prev"] = last.hex()
            new = canonical.dumps(entry)
            db.execute("UPDATE log_entries SET body = ? WHERE n = ?", (new, n))
            last = spec.leaf_hash(new)
            tree.append(last)
        db.execute(
            "UPDATE log_state SET frontier = ?, last_leaf = ? WHERE id = 1",
            (b"".join(tree.hashes), last),
        )
