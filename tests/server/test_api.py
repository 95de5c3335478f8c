"""No open endpoint: the API needs a person (a personal token or a session); webhooks
need a signature; nobody acts as someone else."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select

from panicbutton.wire import Alert, new_alert_id, now_utc
from server.app import Server, build
from server.models import LogEntry, PersonalData
from server.paging.notifier import ConsoleNotifier
from server.settings import Settings
from tests.harness import bearer, person_token, sample_site

RETIRED = secrets.token_urlsafe(32)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    settings = Settings(
        demo=True,
        database_url=f"sqlite:///{tmp_path / 'api.sqlite3'}",
        log_checkpoint_file=tmp_path / "checkpoints.jsonl",
        api_token=SecretStr(RETIRED),
        twilio_auth_token=SecretStr("t" * 32),
        public_base_url="https://alarm.example.test",
    )
    sms: list[str] = []
    built = build(settings, site=sample_site(), notifier=ConsoleNotifier(sms.append))
    yield built
    built.services.stop()


def test_every_api_route_refuses_missing_or_wrong_token(server: Server) -> None:
    client = TestClient(server.app)
    good = person_token(server.services, "manager")
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {good}"},
        bearer(forged),
        bearer(RETIRED),
    ):
        assert client.get("/api/v1/incidents", headers=headers).status_code == 401
        assert client.get("/api/v1/incidents/1", headers=headers).status_code == 401
        assert (
            client.post(
                "/api/v1/incidents/1/resolve",
                headers=headers,
                json={"staff_id": "floor", "outcome": "genuine"},
            ).status_code
            == 401
        )


def test_the_retired_shared_token_is_refused_with_the_way_forward(server: Server) -> None:
    answer = TestClient(server.app).get("/api/v1/paging", headers=bearer(RETIRED))
    assert answer.status_code == 401
    assert "PANICBUTTON_API_TOKEN is retired" in answer.json()["detail"]
    assert "panicbutton people token" in answer.json()["detail"]


def test_nobody_acts_as_someone_else(server: Server) -> None:
    alert = Alert(device_id="unit-2", alert_id=new_alert_id(), seq=1, pressed_at=now_utc())
    incident = server.services.alerts.handle(alert).incident
    floor = TestClient(server.app, headers=bearer(person_token(server.services, "floor")))

    for path, body in (
        (f"/api/v1/incidents/{incident}/acknowledge", {"staff_id": "reception"}),
        (f"/api/v1/incidents/{incident}/resolve", {"staff_id": "manager", "outcome": "genuine"}),
        ("/api/v1/duty/takeover", {"staff_id": "reception"}),
    ):
        refused = floor.post(path, json=body)
        assert refused.status_code == 403, path
        assert "signed in as 'floor' and cannot act as" in refused.json()["detail"]

    going = floor.post(f"/api/v1/incidents/{incident}/acknowledge", json={})
    assert going.json()["acknowledged_by"] == "floor"
    with server.services.sessions() as s:
        acked = s.scalars(select(LogEntry).where(LogEntry.type == "incident.acknowledged")).one()
    assert acked.data == {"staff": "floor", "via": "console"}


def test_a_staff_member_cannot_export_a_colleagues_bundle_but_can_export_their_own(
    server: Server,
) -> None:
    floor = TestClient(server.app, headers=bearer(person_token(server.services, "floor")))
    why = {"X-Panicbutton-Justification": "my own access request"}

    colleague = floor.get("/api/v1/log/export?scope=person:reception", headers=why)
    assert colleague.status_code == 403
    assert "'export'" in colleague.json()["detail"]
    mine = floor.get("/api/v1/me/export", headers=why)
    assert mine.status_code == 200
    assert mine.headers["content-disposition"].endswith('panicbutton-log-person-floor.zip"')
    with server.services.sessions() as s:
        exported = s.scalars(select(LogEntry).where(LogEntry.type == "record.exported")).one()
    assert exported.data["by"] == "floor"
    assert exported.data["scope"] == "person:floor"


def test_docs_and_schema_are_not_served(server: Server) -> None:
    client = TestClient(server.app)
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert client.get(path).status_code == 404


def test_unsigned_webhook_is_refused(server: Server) -> None:
    client = TestClient(server.app)
    assert client.post("/twilio/sms", data={"From": "+32470000001", "Body": "1"}).status_code == 403


def test_incident_timeline_and_resolve_with_token(server: Server) -> None:
    client = TestClient(server.app, headers=bearer(person_token(server.services, "floor")))
    alert = Alert(device_id="unit-2", alert_id=new_alert_id(), seq=1, pressed_at=now_utc())
    feedback = server.services.alerts.handle(alert)

    board = {"X-Panicbutton-Justification": "on duty: board"}
    assert client.get("/api/v1/incidents").status_code == 400  # why, as any view
    listed = client.get("/api/v1/incidents", headers=board).json()
    assert [(i["id"], i["room_id"], i["state"]) for i in listed] == [
        (feedback.incident, "room-2", "open")
    ]
    # A board polls: one record per viewer and reason per 15 minutes, not one per poll.
    assert client.get("/api/v1/incidents", headers=board).status_code == 200
    with server.services.sessions() as s:
        scopes = [e.data["scope"] for e in s.scalars(select(LogEntry)) if e.type == "record.viewed"]
    assert scopes == ["incidents"]

    refused = client.post(
        f"/api/v1/incidents/{feedback.incident}/resolve",
        json={"staff_id": "floor", "outcome": "maybe"},
    )
    assert refused.status_code == 422
    done = client.post(
        f"/api/v1/incidents/{feedback.incident}/resolve",
        json={"staff_id": "floor", "outcome": "false_alarm"},
    )
    assert done.json()["state"] == "resolved"

    manager = TestClient(server.app, headers=bearer(person_token(server.services, "manager")))
    why = {"X-Panicbutton-Justification": "weekly review"}
    detail = manager.get(f"/api/v1/incidents/{feedback.incident}", headers=why).json()
    types = [e["type"] for e in detail["events"]]
    assert types[0] == "alert.raised"
    assert types.index("incident.resolved") > types.index("alert.raised")
    assert "escalation.plan_frozen" in types
    assert manager.get("/api/v1/incidents/999", headers=why).status_code == 404


def test_viewing_an_incident_needs_who_and_why_and_is_logged(server: Server) -> None:
    client = TestClient(server.app, headers=bearer(person_token(server.services, "manager")))
    alert = Alert(device_id="unit-1", alert_id=new_alert_id(), seq=1, pressed_at=now_utc())
    incident = server.services.alerts.handle(alert).incident
    url = f"/api/v1/incidents/{incident}"

    no_reason = client.get(url)
    assert no_reason.status_code == 400
    assert "X-Panicbutton-Justification" in no_reason.json()["detail"]

    why = {"X-Panicbutton-Justification": "worker asked what happened on her shift"}
    assert client.get(url, headers=why).status_code == 200
    with server.services.sessions() as s:
        viewed = s.scalars(select(LogEntry).where(LogEntry.type == "record.viewed")).one()
        kept = s.get(PersonalData, viewed.data["ref"])
    assert viewed.data["by"] == "manager"  # who is signed in, not who the caller says
    assert viewed.data["scope"] == f"incident:{incident}"
    # The reason is personal data, kept apart: the log holds its ref and commitment only.
    assert b"her shift" not in viewed.body
    assert kept is not None
    assert kept.value == {"justification": "worker asked what happened on her shift"}


def test_an_unknown_query_parameter_is_refused_with_the_ones_the_route_takes(
    server: Server,
) -> None:
    client = TestClient(server.app, headers=bearer(person_token(server.services, "manager")))
    why = {"X-Panicbutton-Justification": "night board"}
    misspelt = client.get("/api/v1/incidents?stat=open", headers=why)
    assert misspelt.status_code == 400
    assert misspelt.json()["detail"] == (
        "unknown query parameter(s) stat: this route takes limit, state"
    )
    assert client.get("/api/v1/incidents?state=open", headers=why).status_code == 200
