"""What the sign-in tests share: a server on a hand-moved clock, people with links,
and a browser (TestClient over https) that follows the pages' forms."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select

from panicbutton.clock import ManualClock
from server.app import Server, build
from server.models import LogEntry
from server.paging.notifier import ConsoleNotifier
from server.people.links import issue_link
from server.people.roles import Role
from server.people.tables import Person
from server.settings import Settings
from tests.fakes.authenticator import Authenticator
from tests.harness import open_person, sample_site

BASE = "https://alarm.example.test"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) TestBrowser/1"
GOOD_PASSWORD = "violet harbour tractor minnow"
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@contextmanager
def running(
    database_url: str, tmp_path: Path, start: datetime = START, **overrides: Any
) -> Iterator[Server]:
    settings = Settings(
        demo=True,
        database_url=database_url,
        log_checkpoint_file=tmp_path / "checkpoints.jsonl",
        twilio_auth_token=SecretStr("t" * 32),
        **{"public_base_url": BASE, **overrides},
    )
    server = build(
        settings,
        site=sample_site(),
        notifier=ConsoleNotifier(lambda _: None),
        clock=ManualClock(start),
    )
    try:
        yield server
    finally:
        server.services.stop()
        server.services.engine.dispose()


def clock(server: Server) -> ManualClock:
    c = server.services.clock
    assert isinstance(c, ManualClock)
    return c


def invite(
    server: Server,
    person_id: str,
    *roles: Role,
    purpose: str = "enrol",
    hours: int = 72,
) -> str:
    """Open ``person_id`` (if new) with ``roles``; the path of a fresh link."""
    sv = server.services
    now = sv.clock.now()
    with sv.sessions() as s:
        new = s.get(Person, person_id) is None
    if new:
        open_person(sv, person_id, roles=roles or (Role.STAFF,), name=f"Name of {person_id}")
    with sv.sessions.begin() as s:
        token = issue_link(
            s, person_id=person_id, purpose=purpose, by="system", now=now, hours=hours
        )
    return f"/enrol/{token}"


def browser(server: Server, agent: str = BROWSER, address: str = "192.0.2.10") -> TestClient:
    return TestClient(
        server.app, base_url=BASE, headers={"User-Agent": agent}, client=(address, 40000)
    )


def form_csrf(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, page
    return match.group(1)


def enrol_password(
    client: TestClient, link: str, password: str = GOOD_PASSWORD, **form: str
) -> Any:
    page = client.get(link)
    assert page.status_code == 200, page.text
    secret = re.search(r'name="totp_secret" value="([A-Z2-7]+)"', page.text)
    assert secret
    return client.post(
        f"{link}/password",
        data={
            "csrf": form_csrf(page.text),
            "password": password,
            "totp_secret": secret.group(1),
            **form,
        },
        follow_redirects=False,
    )


def totp_secret_of(client: TestClient, link: str) -> tuple[str, str]:
    """(csrf, TOTP seed) shown on the link's page."""
    page = client.get(link)
    secret = re.search(r'name="totp_secret" value="([A-Z2-7]+)"', page.text)
    assert secret
    return form_csrf(page.text), secret.group(1)


def sign_in_password(
    client: TestClient,
    person_id: str,
    password: str = GOOD_PASSWORD,
    code: str = "",
    **headers: str,
) -> Any:
    csrf = form_csrf(client.get("/sign-in").text)
    return client.post(
        "/sign-in/password",
        data={"csrf": csrf, "id": person_id, "password": password, "code": code},
        headers=headers,
        follow_redirects=False,
    )


def enrol_passkey(client: TestClient, link: str, key: Authenticator, **create: Any) -> Any:
    csrf = form_csrf(client.get(link).text)
    options = client.post(f"{link}/passkey/options", headers={"X-CSRF-Token": csrf})
    assert options.status_code == 200, options.text
    credential = key.create(options.json(), **create)
    return client.post(
        f"{link}/passkey",
        json={"credential": credential, "label": "phone"},
        headers={"X-CSRF-Token": csrf},
    )


def passkey_options(client: TestClient) -> tuple[str, dict[str, Any]]:
    csrf = form_csrf(client.get("/sign-in").text)
    options = client.post("/sign-in/passkey/options", headers={"X-CSRF-Token": csrf})
    assert options.status_code == 200, options.text
    return csrf, options.json()


def sign_in_passkey(client: TestClient, key: Authenticator, **get: Any) -> Any:
    csrf, options = passkey_options(client)
    return client.post(
        "/sign-in/passkey",
        json={"credential": key.get(options, **get)},
        headers={"X-CSRF-Token": csrf},
    )


def events(server: Server, type_: str) -> list[dict[str, Any]]:
    with server.services.sessions() as s:
        return [
            e.data
            for e in s.scalars(select(LogEntry).where(LogEntry.type == type_).order_by(LogEntry.n))
        ]
