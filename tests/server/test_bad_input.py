"""Bad input gets a clear 4xx (or a clear one-line rejection), never a 500 or a traceback.

HTTP on the ASGI app with real storage (SQLite and PostgreSQL); MQTT through a
real Mosquitto to the running server; the site file through the real command.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import SecretStr
from sqlalchemy import create_engine, text

from device.indicator import Light
from panicbutton.wire import (
    Alert,
    LinkState,
    Status,
    alert_topic,
    new_alert_id,
    now_utc,
    status_topic,
)
from server.app import Server, build
from server.db import make_engine
from server.errors import SiteError
from server.paging.notifier import ConsoleNotifier
from server.settings import Settings
from tests import web
from tests.harness import (
    DEVICE_TOKENS,
    PG_ADMIN_URL,
    System,
    bearer,
    person_token,
    postgres_database,
    sample_site,
    wait_until,
)

WHY = {"X-Panicbutton-Justification": "weekly review"}
UNIT = {"Authorization": f"Bearer {DEVICE_TOKENS['unit-1']}"}
TOO_BIG = [2**31, 2**63, 2**64 + 1]
#: 2,000 levels of nesting: deeper than Python's JSON parser can follow.
DEEP = b"[" * 2000 + b"]" * 2000


def make_server(database_url: str, folder: Path) -> Server:
    settings = Settings(
        demo=True,
        database_url=database_url,
        log_checkpoint_file=folder / "checkpoints.jsonl",
        twilio_auth_token=SecretStr("t" * 32),
        public_base_url="https://alarm.example.test",
    )
    return build(settings, site=sample_site(), notifier=ConsoleNotifier(lambda _: None))


@pytest.fixture
def client(database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    server = make_server(database_url, tmp_path)
    try:
        yield TestClient(
            server.app,
            raise_server_exceptions=False,
            headers=bearer(person_token(server.services, "manager")),
        )
    finally:
        server.services.stop()
        server.services.engine.dispose()


def alert_body(**changes: Any) -> bytes:
    alert = Alert(device_id="unit-1", alert_id=new_alert_id(), seq=1, pressed_at=now_utc())
    return json.dumps({**json.loads(alert.to_json()), **changes}).encode()


@pytest.mark.parametrize("big", TOO_BIG)
def test_incident_id_out_of_range_is_refused_on_every_incident_route(
    client: TestClient, big: int
) -> None:
    answers = [
        client.get(f"/api/v1/incidents/{big}", headers=WHY),
        client.post(f"/api/v1/incidents/{big}/acknowledge", json={"staff_id": "manager"}),
        client.post(
            f"/api/v1/incidents/{big}/resolve", json={"staff_id": "manager", "outcome": "genuine"}
        ),
        client.post(f"/api/v1/incidents/{big}/notes", json={"by": "manager", "text": "note"}),
        client.post(f"/api/v1/incidents/{big}/review", json={"by": "manager"}),
    ]
    for answer in answers:
        assert answer.status_code == 422, (answer.request.url, answer.text)
        assert "incident_id" in answer.text
        assert "less than or equal to 2147483647" in answer.text


def test_incident_export_of_an_id_out_of_range_is_not_found(client: TestClient) -> None:
    answer = client.get("/api/v1/log/export", params={"scope": "incident:9999999999"}, headers=WHY)
    assert answer.status_code == 404
    assert answer.json() == {"detail": "no incident 9999999999"}


@pytest.mark.parametrize("hours", [1e308, 1e6, -1, 0, 1e-320, 0.2])
def test_takeover_hours_out_of_range_is_refused(client: TestClient, hours: float) -> None:
    answer = client.post("/api/v1/duty/takeover", json={"staff_id": "manager", "hours": hours})
    assert answer.status_code == 422, answer.text
    [error] = answer.json()["detail"]
    assert error["loc"] == ["body", "hours"]
    assert error["msg"] in (
        "Input should be greater than or equal to 0.25",
        "Input should be less than or equal to 168",
    )


@pytest.mark.parametrize("hours", ["12", True])
def test_takeover_hours_that_are_no_number_are_refused(client: TestClient, hours: object) -> None:
    answer = client.post("/api/v1/duty/takeover", json={"staff_id": "manager", "hours": hours})
    assert answer.status_code == 422, answer.text
    [error] = answer.json()["detail"]
    assert (error["loc"], error["msg"]) == (["body", "hours"], "Input should be a valid number")


@pytest.mark.parametrize("hours", [0.25, 12, 168])
def test_takeover_hours_within_range_is_taken(client: TestClient, hours: float) -> None:
    answer = client.post("/api/v1/duty/takeover", json={"staff_id": "manager", "hours": hours})
    assert answer.status_code == 204


def test_deeply_nested_json_from_a_unit_is_refused(client: TestClient) -> None:
    answer = client.post("/api/v1/devices/unit-1/alerts", content=DEEP, headers=UNIT)
    assert answer.status_code == 422
    assert answer.json() == {"detail": "alert payload is not JSON: it is nested too deeply"}


@pytest.mark.parametrize("field", ["seq", "presses"])
@pytest.mark.parametrize("big", TOO_BIG)
def test_unit_count_out_of_range_is_refused(client: TestClient, field: str, big: int) -> None:
    answer = client.post(
        "/api/v1/devices/unit-1/alerts", content=alert_body(**{field: big}), headers=UNIT
    )
    assert answer.status_code == 422, answer.text
    assert answer.json() == {"detail": f"alert.{field} must be at most 2147483647, got {big}"}


@pytest.mark.parametrize("moment", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59"])
def test_unit_time_out_of_range_is_refused(client: TestClient, moment: str) -> None:
    answer = client.post(
        "/api/v1/devices/unit-1/alerts", content=alert_body(pressed_at=moment), headers=UNIT
    )
    assert answer.status_code == 422, answer.text
    assert answer.json() == {
        "detail": f"alert.pressed_at {moment!r} is out of range in UTC; send UTC"
    }


def test_deeply_nested_json_on_the_api_is_refused(client: TestClient) -> None:
    answer = client.post(
        "/api/v1/duty/takeover", content=DEEP, headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 400
    assert answer.json() == {
        "detail": "the JSON body is nested too deeply to read; send the object this route documents"
    }


TEN_MB = 10 * 1024 * 1024


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/api/v1/duty/takeover", "application/json"),
        ("/api/v1/incidents/1/notes", "application/json"),
        ("/api/v1/devices/unit-1/alerts", "application/json"),
        ("/twilio/sms", "application/x-www-form-urlencoded"),
        ("/twilio/status", "application/x-www-form-urlencoded"),
        ("/ack/token", "application/x-www-form-urlencoded"),
    ],
)
def test_huge_body_is_refused_with_413(client: TestClient, path: str, content_type: str) -> None:
    body = b'{"text": "' + b"x" * TEN_MB + b'"}'
    if "form" in content_type:
        body = b"Body=" + b"x" * TEN_MB
    headers = {"Content-Type": content_type, **(UNIT if "devices" in path else {})}
    answer = client.post(path, content=body, headers=headers)
    assert answer.status_code == 413, answer.text[:200]
    assert "at most 65536 bytes" in answer.json()["detail"]
    # Without a Content-Length (chunked), the body is cut off as it streams in.
    chunked = client.post(path, content=iter([body[:40000], body[40000:]]), headers=headers)
    assert chunked.status_code == 413, chunked.text[:200]


def test_wrong_method_names_every_method_of_the_path(client: TestClient) -> None:
    answer = client.request("OPTIONS", "/ack/some-token")
    assert answer.status_code == 405
    assert answer.headers["Allow"] == "GET, POST"
    assert answer.json() == {"detail": "OPTIONS is not allowed here; use GET, POST"}


@pytest.mark.parametrize("path", ["/ack/some-token/", "/api/v1/incidents/", "/twilio/sms/"])
def test_a_trailing_slash_is_not_found_rather_than_redirected(
    client: TestClient, path: str
) -> None:
    # A redirect would be built from the Host header over plain http: for a link that
    # drops https and the proxy's path prefix.
    answer = client.request("GET", path, headers=WHY, follow_redirects=False)
    assert answer.status_code == 404, answer.headers
    assert "Location" not in answer.headers


@pytest.mark.parametrize("pages", ["99999999999", "1,-2", "x"])
def test_signed_callback_with_page_ids_out_of_range_is_refused(system: System, pages: str) -> None:
    for route in ("status", "voice"):
        query = f"/twilio/{route}?pages={pages}"
        answer = system.twilio.signed_post(
            system.base_url + query,
            {"CallSid": "CA" + "0" * 32, "CallStatus": "completed", "Digits": "1"},
            public_url=system.settings.public_base_url + query,
        )
        assert answer.status_code == 422, answer.text
        [error] = answer.json()["detail"]
        assert (error["loc"], error["type"]) == (["query", "pages"], "string_pattern_mismatch")


def test_incident_list_of_an_unknown_state_is_refused(client: TestClient) -> None:
    # A NUL byte made PostgreSQL fail (500) with the query's parameters in the log.
    for state in ("a\x00b", "closed"):
        answer = client.get("/api/v1/incidents", params={"state": state}, headers=WHY)
        assert answer.status_code == 422, answer.text
        [error] = answer.json()["detail"]
        assert error["loc"] == ["query", "state"]
        assert "'open', 'acknowledged' or 'resolved'" in error["msg"]
    listed = client.get("/api/v1/incidents", params={"state": "open"}, headers=WHY)
    assert listed.status_code == 200


@pytest.mark.parametrize(
    ("route", "params"),
    [
        ("sms", {"From": "+32470000001", "Body": "ok", "MessageSid": "SM\x00x"}),
        ("sms", {"From": "+32470000001", "Body": "a\x00b", "MessageSid": "SMnul1"}),
        ("status?pages=1", {"MessageSid": "SMnul4", "MessageStatus": "fail\x00ed"}),
        ("voice?pages=1", {"CallSid": "CA\x00", "Digits": "1"}),
    ],
)
def test_signed_webhook_with_a_nul_byte_is_refused(
    system: System, route: str, params: dict[str, str]
) -> None:
    query = f"/twilio/{route}"
    answer = system.twilio.signed_post(
        system.base_url + query, params, public_url=system.settings.public_base_url + query
    )
    assert answer.status_code == 400, answer.text
    assert answer.json() == {"detail": "a form field holds a NUL byte, which no Twilio field has"}


@pytest.mark.postgres
def test_a_database_error_never_logs_the_parameters(pg_available: None, tmp_path: Path) -> None:
    with postgres_database(f"pb_test_{secrets.token_hex(4)}") as url:
        engine = make_engine(url)
        try:
            with engine.connect() as conn, pytest.raises(Exception) as caught:
                conn.execute(text("SELECT :value"), {"value": "private-note\x00"})
        finally:
            engine.dispose()
    assert "private-note" not in str(caught.value)
    assert "hidden due to hide_parameters=True" in str(caught.value)


# -- MQTT: a payload that can never be recorded is rejected, a failure is left for resend --
def publish_raw(
    system: System, device_id: str, payloads: list[bytes], topic: str | None = None
) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device_id)
    client.username_pw_set(device_id, system.users[device_id])
    client.connect("127.0.0.1", system.mqtt_port)
    client.loop_start()
    try:
        for payload in payloads:
            client.publish(topic or alert_topic(device_id), payload, qos=1).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def test_unrecordable_mqtt_alerts_are_rejected_in_one_line(
    system: System, caplog: pytest.LogCaptureFixture
) -> None:
    good = Alert(device_id="unit-2", alert_id=new_alert_id(), seq=1, pressed_at=now_utc())
    bad = [
        alert_body(device_id="unit-2", seq=2**63),
        alert_body(device_id="unit-2", seq=2**31),
        alert_body(device_id="unit-2", presses=2**63),
        DEEP,
    ]
    assert system.server is not None
    with caplog.at_level(logging.INFO, logger="server.units.ingest"):
        publish_raw(system, "unit-2", [*bad, good.to_json()])
        assert wait_until(lambda: len(system.incidents()) == 1)
        assert wait_until(lambda: system.server is not None and system.server.ingest.rejected == 4)
    assert [i.alert_id for i in system.incidents()] == [good.alert_id]
    lines = [
        r for r in caplog.records if r.name == "server.units.ingest" and r.levelno >= logging.ERROR
    ]
    assert [r.getMessage() for r in lines] == [
        f"rejected message on pb/v1/dev/unit-2/alert: {why}"
        for why in (
            f"alert.seq must be at most 2147483647, got {2**63}",
            f"alert.seq must be at most 2147483647, got {2**31}",
            f"alert.presses must be at most 2147483647, got {2**63}",
            "alert payload is not JSON: it is nested too deeply",
        )
    ]
    assert all(r.exc_info is None for r in lines), "a rejection is one line, no traceback"


def test_unrecordable_mqtt_status_is_rejected_in_one_line(
    system: System, caplog: pytest.LogCaptureFixture
) -> None:
    status = Status(device_id="unit-3", state=LinkState.ONLINE, at=now_utc())
    huge = json.dumps({**json.loads(status.to_json()), "outbox": 2**63}).encode()
    assert system.server is not None
    with caplog.at_level(logging.INFO, logger="server.units.ingest"):
        publish_raw(system, "unit-3", [huge], topic=status_topic("unit-3"))
        assert wait_until(lambda: system.server is not None and system.server.ingest.rejected == 1)
    lines = [
        r for r in caplog.records if r.name == "server.units.ingest" and r.levelno >= logging.ERROR
    ]
    why = f"status.outbox must be at most 2147483647, got {2**63}"
    assert [r.getMessage() for r in lines] == [
        f"rejected message on pb/v1/dev/unit-3/status: {why}"
    ]


@pytest.mark.parametrize(
    "database_url",
    ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
    indirect=True,
)
def test_a_status_with_control_characters_is_kept_without_them(system: System) -> None:
    """A NUL in a unit's free text (PostgreSQL refuses NUL in text) must not keep its
    status, nor any other unit's written in the same flush, out of the record."""
    status = Status(device_id="unit-3", state=LinkState.ONLINE, at=now_utc())
    dirty = json.dumps(
        {**json.loads(status.to_json()), "error": "link\x00lost\nFORGED LINE", "version": "1.0\x00"}
    ).encode()
    other = Status(device_id="unit-2", state=LinkState.ONLINE, at=now_utc(), error="clean")
    publish_raw(system, "unit-3", [dirty], topic=status_topic("unit-3"))
    publish_raw(system, "unit-2", [other.to_json()], topic=status_topic("unit-2"))

    def seen() -> dict[str, dict[str, Any]]:
        answer = web.get(f"{system.api}/units", headers=system.headers(), timeout=10)
        answer.raise_for_status()
        return {u["device_id"]: u for u in answer.json()}

    assert wait_until(lambda: all(seen()[d]["online"] for d in ("unit-2", "unit-3"))), seen()
    units = seen()
    assert units["unit-3"]["error"] == "linklostFORGED LINE"
    assert units["unit-3"]["version"] == "1.0"
    assert units["unit-2"]["error"] == "clean"
    assert system.server is not None
    assert system.server.ingest.rejected == 0


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_database_outage_leaves_the_alert_for_the_unit_to_resend(
    system: System, caplog: pytest.LogCaptureFixture
) -> None:
    room = system.room("unit-1", mqtt={"resend_max": 1.0})
    assert wait_until(lambda: room.light is Light.ARMED), room.lights
    name = system.settings.database_url.rsplit("/", 1)[1]
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn, caplog.at_level(logging.INFO, logger="server.units.ingest"):
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
            room.press()
            assert wait_until(
                lambda: any("will resend" in r.getMessage() for r in caplog.records), 15
            )
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        assert wait_until(lambda: room.light is Light.RECEIVED, 30), room.lights
    finally:
        admin.dispose()
    assert [i.room_id for i in system.incidents()] == ["room-1"]
    assert system.server is not None
    assert system.server.ingest.rejected == 0
    assert not any("rejected message" in r.getMessage() for r in caplog.records)


# -- the site file ----------------------------------------------------------------------
def start_server(site: Path, folder: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PANICBUTTON_")}
    return subprocess.run(
        [sys.executable, "-m", "panicbutton.cli", "server"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={
            **clean,
            "PANICBUTTON_DEMO": "1",
            "PANICBUTTON_SITE_FILE": str(site),
            "PANICBUTTON_DATABASE_URL": f"sqlite:///{folder / 'db.sqlite3'}",
        },
    )


def test_binary_site_file_stops_the_server_with_a_clear_message(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_bytes(b'[site]\nname = "Caf\xe9"\n\x00\x01\xff\xfe')
    result = start_server(site, tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    # (Alembic's own INFO lines may come first: only the last line is ours.)
    assert result.stderr.strip().splitlines()[-1] == (
        f"panicbutton server: site file {site} is not UTF-8 text (byte 0xe9 at offset 18): "
        "save it as UTF-8 (a text editor's 'UTF-8' encoding) and start again"
    )


def test_site_file_with_a_value_of_the_wrong_kind_stops_the_server_clearly(
    tmp_path: Path,
) -> None:
    site = tmp_path / "site.toml"
    site.write_text('site = "Test house"\nrooms = 5\n')
    result = start_server(site, tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"panicbutton server: site file {site}: a table or value is not of the kind expected "
        "('str' object has no attribute 'get'); compare it with "
        "firmware_config/site.example.toml"
    )


def test_a_site_file_nested_too_deeply_stops_the_server_with_a_message(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text("z = " + "[" * 5000 + "]" * 5000)
    result = start_server(site, tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"panicbutton server: site file {site}: arrays or tables are nested too deeply to "
        "read; a site file needs only a few levels (see firmware_config/site.example.toml)"
    )


@pytest.mark.parametrize("hours", ["0", "-1", "1e308", "nan", '"8"', "true", "1e-320", "0.2"])
def test_site_file_takeover_hours_out_of_range_is_refused(hours: str) -> None:
    data = tomllib.loads(f"takeover_hours = {hours}")
    with pytest.raises(SiteError) as refused:
        sample_site(duty={"on_duty": ["reception"], **data})
    assert str(refused.value) == (
        "site file tests: [duty] takeover_hours must be a number of hours from 0.25 (a "
        f"quarter of an hour) to 168 (a week), got {data['takeover_hours']!r}"
    )


@pytest.mark.parametrize(
    ("route", "body", "content_type"),
    [
        ("/api/v1/duty/takeover", b'{"staff_id": NaN}', "application/json"),
        ("/api/v1/incidents/1/acknowledge", b'{"staff_id": Infinity}', "application/json"),
        ("/api/v1/incidents/1/notes", b"\xff\xfe not text", "text/plain"),
        ("/api/v1/duty/takeover", b"\xff", "multipart/form-data; boundary=x"),
        ("/api/v1/incidents/1/notes", b'{"text": "\\ud800", "about": []}', "application/json"),
    ],
)
def test_values_json_cannot_carry_get_a_clear_4xx(
    client: TestClient, route: str, body: bytes, content_type: str
) -> None:
    answer = client.post(route, content=body, headers={"Content-Type": content_type, **WHY})
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.json()["detail"]


def test_a_note_holding_half_a_character_is_refused(client: TestClient) -> None:
    made = client.post("/api/v1/devices/unit-1/alerts", content=alert_body(), headers=UNIT)
    assert made.status_code == 200
    incident = made.json()["incident"]
    for route, body in (
        ("notes", b'{"by": "manager", "text": "a\\ud800b"}'),
        ("review", b'{"by": "manager", "remarks": "a\\udc00"}'),
    ):
        answer = client.post(
            f"/api/v1/incidents/{incident}/{route}",
            content=body,
            headers={"Content-Type": "application/json", **WHY},
        )
        assert answer.status_code == 422, answer.text
        assert answer.json()["detail"][0]["loc"][0] == "body"
        assert "\\ud8" not in answer.text  # the personal text is not sent back
