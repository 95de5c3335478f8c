"""People and their API tokens for tests (opened and minted by
:func:`tests.harness.person_token`), and a server wired to a fake Twilio on loopback."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select

from panicbutton.clock import ManualClock
from server.app import Server, build
from server.models import LogEntry
from server.people import directory
from server.people.auth import sha256, start_session
from server.people.roles import Role
from server.people.tables import Person, WebSession
from server.routes.deps import session_cookie
from server.settings import Settings
from tests.fakes.twilio import FakeTwilio
from tests.harness import ALL_SCOPES, bearer, open_person, person_token, sample_site

BASE_URL = "https://alarm.example.test"


def add_person(
    server: Server,
    person_id: str,
    *roles: Role,
    phone: str | None = None,
    confirmed: bool = False,
    language: str = "en",
) -> None:
    """Open an account (by the system), with ``roles``; ``confirmed`` marks the phone
    as proved by its owner. A member of the sample site (already a person: the site is
    imported at start) gets the roles, and their phone confirmed or not as asked."""
    now = server.services.clock.now()
    with server.services.sessions.begin() as s:
        existing = s.get(Person, person_id)
        if existing is not None:
            directory.change(
                s,
                person_id=person_id,
                by=directory.SYSTEM,
                now=now,
                phone=phone,
                language=language,
            )
            existing.phone_confirmed_at = now if confirmed and existing.phone else None
    open_person(
        server.services,
        person_id,
        roles=roles,
        name=f"Name of {person_id}",
        phone=phone,
        language=language,
        confirmed=confirmed,
    )


def token_for(server: Server, person_id: str, scopes: Iterable[str] | None = None) -> str:
    """A personal API token for ``person_id``, carrying every right (or ``scopes``)."""
    every = ALL_SCOPES if scopes is None else list(scopes)
    return person_token(server.services, person_id, roles=(), scopes=every)


def client_as(server: Server, person_id: str) -> TestClient:
    """An HTTP client that calls as ``person_id`` (with a personal API token)."""
    return TestClient(server.app, headers=bearer(token_for(server, person_id)))


def browser_as(server: Server, person_id: str) -> TestClient:
    """An HTTP client that calls as ``person_id`` from a signed-in browser (a session
    cookie and its CSRF header), for what an API token may not do."""
    agent = "TestBrowser/1"
    now = server.services.clock.now()
    with server.services.sessions.begin() as s:
        cookie = start_session(s, person_id=person_id, agent=agent, method="password", now=now)
        s.flush()
        # This session's own token (several may start at one instant of a hand-moved clock).
        csrf = s.scalar(select(WebSession.csrf).where(WebSession.id_sha256 == sha256(cookie)))
    name = session_cookie(server.settings)
    return TestClient(
        server.app,
        base_url=BASE_URL,
        headers={"User-Agent": agent, "X-CSRF-Token": csrf or "", "Cookie": f"{name}={cookie}"},
    )


def entries(server: Server, *types: str) -> list[tuple[str, dict[str, Any]]]:
    """Log entries (type, data) of these types (every type if none), oldest first."""
    with server.services.sessions() as s:
        rows = s.scalars(select(LogEntry).order_by(LogEntry.n)).all()
        return [(e.type, e.data) for e in rows if not types or e.type in types]


def log_bodies(server: Server) -> list[bytes]:
    with server.services.sessions() as s:
        return list(s.scalars(select(LogEntry.body)))


@dataclass
class Served:
    server: Server
    twilio: FakeTwilio
    clock: ManualClock


@contextmanager
def served(database_url: str, tmp_path: Path, **settings: Any) -> Iterator[Served]:
    """The server (sample site, no MQTT) on ``database_url``, paging through the real
    twilio library to a fake Twilio, on a clock the test moves."""
    twilio = FakeTwilio(account_sid="AC" + secrets.token_hex(16), auth_token=secrets.token_hex(16))
    twilio.start()
    clock = ManualClock()
    config = Settings(
        demo=True,
        database_url=database_url,
        log_checkpoint_file=tmp_path / "checkpoints.jsonl",
        notifier="twilio",
        twilio_account_sid=twilio.account_sid,
        twilio_auth_token=SecretStr(twilio.auth_token),
        twilio_from="+32460000000",
        twilio_api_base_url=twilio.base_url,
        twilio_timeout=5.0,
        public_base_url=BASE_URL,
        **twilio.pace(),
        **settings,
    )
    server = build(config, site=sample_site(), clock=clock)
    try:
        yield Served(server=server, twilio=twilio, clock=clock)
    finally:
        server.services.stop()
        server.services.engine.dispose()
        twilio.stop()
