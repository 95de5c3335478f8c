"""The presence register: check in and out, who is here, counts in the log (never
a worker's id), and the reference person's continuity while workers are present."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from panicbutton.wire import Alert, new_alert_id
from server.errors import PeopleError
from server.models import Incident
from server.people.roles import Role
from server.people.tables import Presence
from tests.harness import MANAGER, sample_site
from tests.server.people_kit import kit

CHECK_IN, CHECK_OUT = "/api/v1/presence/check-in", "/api/v1/presence/check-out"
#: Nobody always on duty and no shift: the roster leaves every moment uncovered.
NO_ROSTER = {"default": ["reception"]}
WORKERS = ("w-1", "w-2")
#: Types of entry the presence register and the continuity check write.
OURS = ("presence.changed", "alert.raised", "duty.gap_started", "duty.gap_ended")


def test_worker_checks_in_and_out_and_the_log_counts(database_url: str, tmp_path: Path) -> None:
    with kit(database_url, tmp_path) as k:
        me = k.person("w-1", "Ioana Popescu", Role.WORKER)
        first = k.client.post(CHECK_IN, json={"room": "room-2"}, headers=me)
        assert first.status_code == 200, first.text
        assert (first.json()["name"], first.json()["room"]) == ("Ioana Popescu", "room-2")
        again = k.client.post(CHECK_IN, json={}, headers=me)
        assert again.status_code == 409
        assert "already checked in" in again.json()["detail"]
        here = k.client.get("/api/v1/presence", headers=me).json()
        assert [p["person"] for p in here] == ["w-1"]

        k.clock.advance(3600)
        out = k.client.post(CHECK_OUT, json={}, headers=me)
        assert out.status_code == 200
        assert out.json()["checked_out_at"] == "2026-11-30T10:00:00Z"
        # The room is forgotten once the stay ends (never joinable with the incidents).
        assert out.json()["room"] is None
        twice = k.client.post(CHECK_OUT, json={}, headers=me)
        assert twice.status_code == 409
        assert "not checked in" in twice.json()["detail"]
        assert k.client.get("/api/v1/presence", headers=me).json() == []
        assert [e["data"] for e in k.events("presence.changed")] == [
            {"present": 1, "by": "self"},
            {"present": 0, "by": "self"},
        ]


def test_unknown_room_is_refused_with_the_rooms_to_choose(
    database_url: str, tmp_path: Path
) -> None:
    with kit(database_url, tmp_path) as k:
        me = k.person("w-1", "W one", Role.WORKER)
        refused = k.client.post(CHECK_IN, json={"room": "cellar"}, headers=me)
        assert refused.status_code == 422
        assert "room-1" in refused.json()["detail"]
        assert k.events("presence.changed") == []


def test_worker_acts_only_for_self_and_staff_for_anyone(database_url: str, tmp_path: Path) -> None:
    with kit(database_url, tmp_path) as k:
        one = k.person("w-1", "W one", Role.WORKER)
        two = k.person("w-2", "Горан", Role.WORKER)
        staff = k.person("nurse", "Nurse", Role.STAFF)

        other = k.client.post(CHECK_IN, json={"person": "w-2"}, headers=one)
        assert other.status_code == 403
        assert "only yourself" in other.json()["detail"]
        # Staff are not workers: they check others in, not themselves.
        assert k.client.post(CHECK_IN, json={}, headers=staff).status_code == 403
        assert k.client.post(CHECK_IN, json={"person": "nurse"}, headers=staff).status_code == 403
        for worker in WORKERS:
            done = k.client.post(CHECK_IN, json={"person": worker}, headers=staff)
            assert done.status_code == 200, done.text

        by_staff = k.client.get("/api/v1/presence", headers=staff).json()
        assert {(p["person"], p["name"]) for p in by_staff} == {
            ("w-1", "W one"),
            ("w-2", "Горан"),
        }
        assert [p["person"] for p in k.client.get("/api/v1/presence", headers=two).json()] == [
            "w-2"
        ]
        k.clock.advance(60)
        assert k.client.post(CHECK_OUT, json={"person": "w-1"}, headers=staff).status_code == 200

        window = {"since": "2026-11-30T08:00:00Z", "until": "2026-11-30T12:00:00Z"}
        history = "/api/v1/presence/history"
        assert k.client.get(history, params=window, headers=one).status_code == 403
        stays = k.client.get(history, params=window, headers=staff).json()
        assert [(s["person"], s["checked_out_at"] is None) for s in stays] == [
            ("w-1", False),
            ("w-2", True),
        ]
        assert [e["data"] for e in k.events("presence.changed")] == [
            {"present": 1, "by": "nurse"},
            {"present": 2, "by": "nurse"},
            {"present": 1, "by": "nurse"},
        ]


def test_alert_records_how_many_workers_are_present_and_no_worker_id(
    database_url: str, tmp_path: Path
) -> None:
    with kit(database_url, tmp_path) as k:
        for worker in WORKERS:
            k.client.post(CHECK_IN, json={}, headers=k.person(worker, worker.upper(), Role.WORKER))
        k.server.services.alerts.handle(
            Alert(device_id="unit-1", alert_id=new_alert_id(), seq=1, pressed_at=k.clock.now())
        )
        [raised] = k.events("alert.raised")
        assert raised["data"]["present"] == 2
        for entry in k.events():
            if entry["type"] in OURS:
                assert not set(WORKERS) & set(map(str, entry["data"].values())), entry


def test_duty_gap_while_a_worker_is_in_pages_managers_until_a_takeover(
    database_url: str, tmp_path: Path
) -> None:
    with kit(database_url, tmp_path, site=sample_site(duty=NO_ROSTER)) as k:
        sv = k.server.services
        assert sv.continuity.check() == ""  # nobody present: no gap to page about
        me = k.person("w-1", "W one", Role.WORKER)
        assert k.client.post(CHECK_IN, json={}, headers=me).status_code == 200

        [started] = k.events("duty.gap_started")
        assert started["data"] == {"present": 1}
        # The manager (French) is paged by SMS, as for a technical incident.
        assert k.twilio.wait_for(lambda sent: any(s.to == MANAGER for s in sent))
        [page] = k.twilio.to(MANAGER)
        assert page.startswith("SANS GARDE")
        assert "Répondez DUTY" in page
        assert sv.continuity.check() == ""  # one gap, one incident
        # A manager replies with the code: dealing with it; the gap stays until a take-over.
        taken = sv.responder.acknowledge(
            incident_id=started["incident"], staff_id="manager", via="console"
        )
        assert taken is not None
        assert taken.state == "acknowledged"
        assert sv.continuity.check() == ""

        k.clock.advance(600)
        sv.rota.takeover(staff_id="floor")
        assert sv.continuity.check() == "ended"
        [ended] = k.events("duty.gap_ended")
        assert ended["data"] == {"seconds": 600, "by": "floor"}
        assert ended["incident"] == started["incident"]
        with sv.sessions() as s:
            gap = s.get_one(Incident, started["incident"])
            assert (gap.kind, gap.state, gap.outcome) == ("duty_gap", "resolved", "recovered")
        assert k.twilio.wait_for(
            lambda _: any("de nouveau de garde" in t for t in k.twilio.to(MANAGER))
        )
        assert not any(e["type"] == "alert.raised" for e in k.events())


def test_no_gap_page_when_nobody_is_checked_in(database_url: str, tmp_path: Path) -> None:
    with kit(database_url, tmp_path, site=sample_site(duty=NO_ROSTER)) as k:
        me = k.person("w-1", "W one", Role.WORKER)
        k.server.services.continuity.check()
        assert k.events("duty.gap_started") == []
        # A worker who came and left: the gap closes when the last worker leaves.
        k.client.post(CHECK_IN, json={}, headers=me)
        k.clock.advance(30)
        k.client.post(CHECK_OUT, json={}, headers=me)
        [ended] = k.events("duty.gap_ended")
        assert ended["data"] == {"seconds": 30, "by": None}
        k.clock.advance(30)
        assert k.server.services.continuity.check() == ""
        assert len(k.events("duty.gap_started")) == 1
        with k.server.services.sessions() as s:
            assert s.scalars(select(Incident)).one().state == "resolved"


def test_presence_rows_are_deleted_after_their_retention(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with kit(database_url, tmp_path) as k:
        one = k.person("w-1", "W one", Role.WORKER)
        two = k.person("w-2", "W two", Role.WORKER)
        k.client.post(CHECK_IN, json={}, headers=one)
        k.client.post(CHECK_OUT, json={}, headers=one)
        k.clock.advance(timedelta(days=300).total_seconds())
        k.client.post(CHECK_IN, json={}, headers=two)  # still in: never purged
        k.client.post(CHECK_IN, json={}, headers=one)
        k.client.post(CHECK_OUT, json={}, headers=one)  # out 300 days later: kept
        k.clock.advance(timedelta(days=66).total_seconds())
        entries = len(k.events())
        with caplog.at_level(logging.INFO, logger="server.log.keeper"):
            k.server.services.keeper.purge(k.clock.now())
        assert "deleted 1 register row(s) (presence, violence) past retention" in caplog.text
        with k.server.services.sessions() as s:
            left = [(p.person_id, p.checked_out_at is None) for p in s.scalars(select(Presence))]
        assert sorted(left) == [("w-1", False), ("w-2", True)]
        assert len(k.events()) == entries  # presence rows were never in the log


def test_closing_a_checked_in_workers_account_checks_them_out(
    database_url: str, tmp_path: Path
) -> None:
    from server.people import directory  # noqa: PLC0415

    with kit(database_url, tmp_path) as k:
        me = k.person("w-1", "W one", Role.WORKER)
        assert k.client.post(CHECK_IN, json={"room": "room-1"}, headers=me).status_code == 200
        k.person("w-2", "W two", Role.WORKER)
        with k.server.services.sessions.begin() as s:
            directory.close(s, person_id="w-1", by="boss", now=k.clock.now())
        assert [e["data"] for e in k.events("presence.changed")] == [
            {"present": 1, "by": "self"},
            {"present": 0, "by": "boss"},
        ]
        # Nobody is present any more: no duty-gap incident pages the managers for them.
        assert k.server.services.continuity.check() == ""
        for reserved in ("self", "system"):
            with (
                k.server.services.sessions.begin() as s,
                pytest.raises(PeopleError, match="is reserved"),
            ):
                directory.add_person(s, person_id=reserved, name="x", by="boss", now=k.clock.now())
