"""No credential in any log: the server as deployed (`panicbutton server`, access
log on, everything at DEBUG), walked through every route that takes a token,
then its whole output searched for every token it issued.

The same run shows the database files are private (mode 600). A second run writes JSON
lines (``PANICBUTTON_LOG_FORMAT=json``): each line one object, redacted the same way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import signal
import stat
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from demo.broker import free_port
from panicbutton.redact import REDACTED, protect_handlers, redact
from panicbutton.wire import Alert
from server.app import build
from server.db import make_engine, migrate
from server.paging.links import make_token
from server.paging.notifier import mask
from server.people import auth
from server.settings import Settings
from server.units.broker import SERVER_USER
from tests import web
from tests.conftest import missing
from tests.fakes.twilio import FakeTwilio
from tests.harness import (
    DEVICE_TOKENS,
    FLOOR,
    RECEPTION,
    Broker,
    find_mosquitto,
    sample_site,
    start_mosquitto,
    wait_until,
    write_log_key,
)

PUBLIC = "https://alarm.example.test/hooks"
SITE = f"""
[site]
name = "Log house"

[[rooms]]
id = "room-1"
label = "Room 1"
device = "unit-1"
device_token_sha256 = "{hashlib.sha256(DEVICE_TOKENS["unit-1"].encode()).hexdigest()}"

[[staff]]
id = "reception"
name = "Reception"
phone = "{RECEPTION}"

[[staff]]
id = "floor"
name = "Floor"
phone = "{FLOOR}"

[duty]
on_duty = ["reception", "floor"]
"""


@dataclass
class Run:
    """One run of the real server: its output, what the walk was answered, its folder."""

    output: str
    folder: Path
    issued: list[str]
    answers: dict[str, httpx.Response] = field(default_factory=dict)
    #: The database files' modes while the server runs, after it wrote.
    modes: dict[str, str] = field(default_factory=dict)


def _server_env(folder: Path, broker: Broker, twilio: FakeTwilio, http_port: int) -> dict[str, str]:
    (folder / "site.toml").write_text(SITE, encoding="utf-8")
    return {
        **os.environ,
        "PANICBUTTON_DATABASE_URL": f"sqlite:///{folder / 'panicbutton.sqlite3'}",
        "PANICBUTTON_SITE_FILE": str(folder / "site.toml"),
        "PANICBUTTON_HTTP_PORT": str(http_port),
        "PANICBUTTON_API_TOKEN": secrets.token_urlsafe(32),
        "PANICBUTTON_MQTT_PORT": str(broker.port),
        "PANICBUTTON_MQTT_PASSWORD": broker.users[SERVER_USER],
        "PANICBUTTON_MQTT_CLIENT_ID": f"server-{secrets.token_hex(3)}",
        "PANICBUTTON_NOTIFIER": "twilio",
        "PANICBUTTON_TWILIO_ACCOUNT_SID": twilio.account_sid,
        "PANICBUTTON_TWILIO_AUTH_TOKEN": twilio.auth_token,
        "PANICBUTTON_TWILIO_FROM": "+32460000000",
        "PANICBUTTON_TWILIO_API_BASE_URL": twilio.base_url,
        "PANICBUTTON_PUBLIC_BASE_URL": PUBLIC,
        "PANICBUTTON_LINK_SECRET": secrets.token_urlsafe(32),
        "PANICBUTTON_LOG_KEY_FILE": str(write_log_key(folder / "log.key")),
        "PANICBUTTON_LOG_CHECKPOINT_FILE": str(folder / "log-checkpoints.jsonl"),
        **twilio.pace_env(),
    }


def _walk(base: str, env: dict[str, str], twilio: FakeTwilio, run: Run) -> None:
    """Raise an alarm, then use its links as a phone, a link preview and an attacker would."""
    alert = Alert(
        device_id="unit-1",
        alert_id=uuid.uuid4().hex,
        seq=1,
        pressed_at=datetime.now(UTC),
    )
    unit = {"Authorization": f"Bearer {DEVICE_TOKENS['unit-1']}"}
    pressed = web.post(
        f"{base}/api/v1/devices/unit-1/alerts", content=alert.to_json(), headers=unit
    )
    assert pressed.status_code == 200, pressed.text
    assert twilio.wait_for(lambda sent: len({s.to for s in sent if "/ack/" in s.body}) == 2)
    links = {s.to: s.body.split()[-1] for s in twilio.sent if "/ack/" in s.body}
    tokens = {to: link.rsplit("/ack/", 1)[1] for to, link in links.items()}
    expired = make_token(env["PANICBUTTON_LINK_SECRET"], 1, datetime.now(UTC) - timedelta(hours=3))
    api_token = env["PANICBUTTON_API_TOKEN"]  # retired, but still a configured secret
    personal = auth.new_token_secret()[1]  # a personal token's shape, wherever it shows
    run.issued += [*tokens.values(), expired, api_token, personal]
    floor, reception = tokens[FLOOR], tokens[RECEPTION]
    preview = {"User-Agent": "WhatsApp/2.23 (link preview)"}
    client = httpx.Client(base_url=base, timeout=10)
    run.answers = {
        "preview HEAD": client.head(f"/ack/{floor}", headers=preview),
        "preview GET": client.get(f"/ack/{floor}", headers=preview),
        "GET with a query": client.get(f"/ack/{floor}?utm_source=sms"),
        "POST": client.post(f"/ack/{floor}", data={"confirm": "1"}),
        "POST again": client.post(f"/ack/{floor}", data={"confirm": "1"}),
        "GET after": client.get(f"/ack/{reception}"),
        "POST without confirm": client.post(f"/ack/{reception}"),
        "GET expired": client.get(f"/ack/{expired}"),
        "POST expired": client.post(f"/ack/{expired}", data={"confirm": "1"}),
        "GET forged": client.get(f"/ack/{floor[:-4]}AAAA"),
        "PUT": client.put(f"/ack/{floor}"),
        "under a longer path": client.get(f"/ack/{reception}/more"),
    }
    # Near misses an attacker or a mangling client sends: no route, but logged.
    for near in ("/ack%252F", "/ack\\", "/ack;/", "/api/v1/x/"):
        assert client.get(near + reception).status_code == 404
    # A secret where none belongs: the API token as a query parameter.
    client.get("/api/v1/paging", params={"access_token": api_token})
    client.get(f"/api/v1/paging?token={api_token}")
    client.get(f"/api/v1/paging?{personal}")
    client.get(f"/enrol/{personal}")
    client.close()
    run.modes = {
        f.name: oct(stat.S_IMODE(f.stat().st_mode)) for f in run.folder.glob("panicbutton.sqlite3*")
    }


def _serve(
    folder: Path, walk: Callable[[str, dict[str, str], FakeTwilio, Run], None], **extra: str
) -> Run:
    """Run `panicbutton -v server` (its settings: :func:`_server_env` and ``extra``), let
    ``walk`` use it, stop it with Ctrl-C; the run, with its whole output."""
    if find_mosquitto() is None:
        missing("mosquitto is not installed (apt install mosquitto)")
    twilio = FakeTwilio(account_sid="AC" + secrets.token_hex(16), auth_token=secrets.token_hex(16))
    twilio.start()
    http_port = free_port()
    with start_mosquitto(folder / "mosquitto") as broker:
        env = _server_env(folder, broker, twilio, http_port) | extra
        process = subprocess.Popen(
            [sys.executable, "-m", "panicbutton.cli", "-v", "server"],
            env=env,
            cwd=folder,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        base = f"http://127.0.0.1:{http_port}"
        run = Run(output="", folder=folder, issued=[])
        try:
            assert wait_until(lambda: _up(base) or process.poll() is not None, 30)
            walk(base, env, twilio, run)
        finally:
            process.send_signal(signal.SIGINT)
            try:
                run.output, _ = process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                run.output, _ = process.communicate()
            twilio.stop()
    return run


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _serve(tmp_path_factory.mktemp("served"), _walk)


def _up(base: str) -> bool:
    try:
        return web.get(f"{base}/api/v1/log/key", timeout=1).status_code < 500
    except httpx.HTTPError:
        return False


def test_no_issued_token_reaches_the_server_output(served: Run) -> None:
    assert served.answers["POST"].status_code == 200, served.output[-3000:]
    # The access log was on and logged the walk (so the search below means something).
    assert '"GET /ack/' in served.output
    assert "/api/v1/paging?access_token=" in served.output
    # Two links, an expired one, the retired shared token, a personal token: the search
    # below has something to find.
    assert len(served.issued) == 5
    assert '"GET /enrol/' in served.output
    assert all(re.fullmatch(r"[\w.-]{20,}", token) for token in served.issued)
    leaked = [token for token in served.issued if token in served.output]

    assert leaked == []
    assert f'"GET /ack/{REDACTED} HTTP/1.1" 200' in served.output
    assert f'"POST /ack/{REDACTED} HTTP/1.1" 410' in served.output
    assert "DEBUG" in served.output  # everything was logged
    # The near misses reached the access log (so their absence above means something).
    for path in ("/ack%252F", "/ack%5C", "/ack%3B/", "/api/v1/x/"):
        assert f'"GET {path}' in served.output, path


def test_link_pages_are_never_cached_nor_referred(served: Run) -> None:
    for name, answer in served.answers.items():
        assert answer.headers.get("Cache-Control") == "no-store", name
        assert answer.headers.get("Referrer-Policy") == "no-referrer", name
    assert served.answers["POST again"].status_code == 410
    assert served.answers["GET expired"].status_code == 410
    assert served.answers["PUT"].status_code == 405


def test_a_link_page_that_fails_is_not_cached_either(tmp_path: Path) -> None:
    database = tmp_path / "pb.sqlite3"
    settings = Settings(
        demo=True,
        notifier="console",
        database_url=f"sqlite:///{database}",
        log_checkpoint_file=None,
        link_secret=SecretStr(secrets.token_urlsafe(32)),
    )
    server = build(settings, site=sample_site())
    token = make_token(settings.link_secret.get_secret_value(), 1, datetime.now(UTC))
    # The database is gone under the running server: the page cannot be read (500).
    server.services.engine.dispose()
    database.unlink()
    try:
        answer = TestClient(server.app, raise_server_exceptions=False).get(f"/ack/{token}")
    finally:
        server.services.stop()
        server.services.engine.dispose()

    assert answer.status_code == 500
    assert answer.headers.get("Cache-Control") == "no-store"
    assert answer.headers.get("Referrer-Policy") == "no-referrer"


def test_database_files_are_private(served: Run) -> None:
    # Names, numbers and notes are in there: the main file, its WAL and shared memory.
    assert served.modes == {
        "panicbutton.sqlite3": "0o600",
        "panicbutton.sqlite3-wal": "0o600",
        "panicbutton.sqlite3-shm": "0o600",
    }


@pytest.mark.parametrize("form", ["file:{path}?uri=true", "file://{path}?mode=rwc&uri=1"])
def test_a_database_named_in_uri_form_is_private_too(tmp_path: Path, form: str) -> None:
    path = tmp_path / "pb.sqlite3"
    umask = os.umask(0o022)  # what a shell usually has: files readable by all
    try:
        engine = make_engine("sqlite:///" + form.format(path=path))
        try:
            migrate(engine)
        finally:
            engine.dispose()
    finally:
        os.umask(umask)
    modes = {f.name: oct(stat.S_IMODE(f.stat().st_mode)) for f in tmp_path.glob("pb.sqlite3*")}
    assert modes["pb.sqlite3"] == "0o600"
    assert set(modes.values()) == {"0o600"}


def test_a_traceback_naming_a_link_is_redacted(tmp_path: Path) -> None:
    path = tmp_path / "server.log"
    handler = logging.FileHandler(path)
    logger = logging.getLogger("tests.server.traceback")
    logger.addHandler(handler)
    token = "AAAAAAAAAAEAAAAAaWxSbQ.abcdefghijklmnopqrstuv"
    secret = secrets.token_urlsafe(32)
    try:
        protect_handlers([secret])
        try:
            raise RuntimeError(f"could not fetch https://x.example/ack/{token} with {secret}")
        except RuntimeError:
            logger.exception("failed: %s", f"/ack/{token}?sig={secret[:10]}")
    finally:
        logger.removeHandler(handler)
        handler.close()

    text = path.read_text(encoding="utf-8")
    assert "Traceback" in text
    assert token not in text
    assert secret not in text
    assert secret[:10] not in text


TOKEN = "AAAAAAAAAAEAAAAAaWxSbQ.abcdefghijklmnopqrs_-v"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('"GET /ack/abc.def HTTP/1.1" 200', f'"GET /ack/{REDACTED} HTTP/1.1" 200'),
        ("GET /x?page=2&api_key=s3cr3t&b=1", f"GET /x?page=2&api_key={REDACTED}&b=1"),
        ("postgresql+psycopg://app:pw@db/pb", f"postgresql+psycopg://app:{REDACTED}@db/pb"),
        ("Authorization: Bearer abcdefgh12345", f"Authorization: Bearer {REDACTED}"),
        ("POST /twilio/voice?pages=1,2", "POST /twilio/voice?pages=1,2"),
        # Shaped like a link token (22 + 22 base64url characters), wherever it shows.
        (f"GET /ack%252F{TOKEN} x", f"GET /ack%252F{REDACTED} x"),
        (f"GET /ACK%5C{TOKEN}", f"GET /ACK%5C{REDACTED}"),
        (f"GET /ack%3B/{TOKEN}", f"GET /ack%3B/{REDACTED}"),
        (f"page token {TOKEN}== was used", f"page token {REDACTED}== was used"),
        ("GET /api/v1/incidents?state=open", "GET /api/v1/incidents?state=open"),
        ("GET /api/v1/incidents/7", "GET /api/v1/incidents/7"),
    ],
)
def test_redact_keeps_what_is_not_a_secret(line: str, expected: str) -> None:
    assert redact(line) == expected


def _walk_briefly(base: str, env: dict[str, str], twilio: FakeTwilio, run: Run) -> None:
    """Raise an alarm (the SMS name phone numbers in the server's log, masked), ask for
    liveness, and send the retired API token where no secret belongs."""
    alert = Alert(
        device_id="unit-1", alert_id=uuid.uuid4().hex, seq=1, pressed_at=datetime.now(UTC)
    )
    pressed = web.post(
        f"{base}/api/v1/devices/unit-1/alerts",
        content=alert.to_json(),
        headers={"Authorization": f"Bearer {DEVICE_TOKENS['unit-1']}"},
    )
    assert pressed.status_code == 200, pressed.text
    assert twilio.wait_for(lambda sent: len(sent) == 2)
    assert web.get(f"{base}/healthz").status_code == 200
    run.issued.append(env["PANICBUTTON_API_TOKEN"])
    web.get(f"{base}/api/v1/paging", params={"access_token": env["PANICBUTTON_API_TOKEN"]})


@pytest.fixture(scope="module")
def served_json(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _serve(
        tmp_path_factory.mktemp("served-json"), _walk_briefly, PANICBUTTON_LOG_FORMAT="json"
    )


def test_json_logs_are_one_redacted_object_a_line(served_json: Run) -> None:
    lines = [json.loads(line) for line in served_json.output.splitlines() if line.strip()]

    assert len(lines) > 20  # everything at DEBUG: the search below means something
    assert all(set(line) >= {"time", "level", "logger", "message"} for line in lines)
    assert {"DEBUG", "INFO"} <= {line["level"] for line in lines}
    messages = [line["message"] for line in lines]
    # Uvicorn's access log follows the same format.
    access = [line["message"] for line in lines if line["logger"] == "uvicorn.access"]
    assert any('"GET /healthz HTTP/1.1" 200' in m for m in access), access
    assert any(f"/api/v1/paging?access_token={REDACTED} " in m for m in access), access
    # The numbers paged are masked; no secret, no number in full anywhere.
    for number in (RECEPTION, FLOOR):
        assert any(m.startswith(f"SMS to {mask(number)} handed to Twilio") for m in messages)
        assert number.lstrip("+") not in served_json.output
    assert [token for token in served_json.issued if token in served_json.output] == []


def test_a_json_line_is_redacted_before_it_is_encoded(tmp_path: Path) -> None:
    path = tmp_path / "server.log"
    handler = logging.FileHandler(path)
    logger = logging.getLogger("tests.server.json")
    logger.addHandler(handler)
    # Quotes and a backslash: escaped in JSON, so a search of the encoded line would miss it.
    secret = 'pass"word\\' + secrets.token_urlsafe(16)
    try:
        protect_handlers([secret], json_lines=True)
        try:
            raise RuntimeError(f"could not log in with {secret}")
        except RuntimeError:
            logger.exception('failed at "/ack/%s"', TOKEN)
    finally:
        protect_handlers(json_lines=False)
        logger.removeHandler(handler)
        handler.close()

    [line] = path.read_text(encoding="utf-8").splitlines()
    entry = json.loads(line)
    assert (entry["level"], entry["logger"]) == ("ERROR", "tests.server.json")
    assert entry["message"] == f'failed at "/ack/{REDACTED}"'
    assert entry["exception"].startswith("Traceback")
    assert f"could not log in with {REDACTED}" in entry["exception"]
    assert secret not in line
    assert json.dumps(secret)[1:-1] not in line
