"""A server on a hand-moved clock with a fake Twilio, and people with personal API
tokens, for the tests of the presence and violence registers."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select

from panicbutton.clock import ManualClock
from server.app import Server, build
from server.models import LogEntry
from server.people.roles import Role
from server.settings import Settings
from server.site import Site
from tests.fakes.twilio import FakeTwilio
from tests.harness import ALL_SCOPES, bearer, person_token, sample_site, write_log_key

START = datetime.fromisoformat("2026-11-30T09:00:00+00:00")


@dataclass
class Kit:
    server: Server
    twilio: FakeTwilio
    clock: ManualClock
    client: TestClient

    def person(self, person_id: str, name: str, *roles: Role) -> dict[str, str]:
        """Open an account with ``roles``; the headers of a personal API token for it."""
        # The token outlives the retention tests.
        token = person_token(
            self.server.services, person_id, roles=roles, name=name, scopes=ALL_SCOPES, days=3650
        )
        return bearer(token)

    def events(self, type_: str | None = None) -> list[dict[str, Any]]:
        """Entries of the log (``type``, ``incident``, ``data``), in order."""
        with self.server.services.sessions() as s:
            rows = list(s.scalars(select(LogEntry).order_by(LogEntry.n)))
        return [
            {"type": e.type, "incident": e.incident_id, "data": e.data}
            for e in rows
            if type_ is None or e.type == type_
        ]


@contextmanager
def kit(database_url: str, folder: Path, site: Site | None = None) -> Iterator[Kit]:
    """A server (not started: no broker, no threads but the pager's) on ``database_url``."""
    clock = ManualClock(START)
    twilio = FakeTwilio(
        account_sid="AC" + secrets.token_hex(16), auth_token=secrets.token_hex(16), clock=clock
    ).start()
    settings = Settings(
        database_url=database_url,
        notifier="twilio",
        mqtt_password=SecretStr(secrets.token_urlsafe(32)),
        link_secret=SecretStr(secrets.token_urlsafe(32)),
        twilio_account_sid=twilio.account_sid,
        twilio_auth_token=SecretStr(twilio.auth_token),
        twilio_from="+32460000000",
        twilio_api_base_url=twilio.base_url,
        public_base_url="https://alarm.example.test/hooks",
        site_file=folder / "unused.toml",
        sms_bundle_window=0.0,
        **twilio.pace(),
        log_key_file=write_log_key(folder / "log.key"),
        log_checkpoint_file=folder / "log-checkpoints.jsonl",
    )
    server = build(settings, site=site or sample_site(), clock=clock)
    try:
        yield Kit(server=server, twilio=twilio, clock=clock, client=TestClient(server.app))
    finally:
        server.services.stop()
        server.services.engine.dispose()
        twilio.stop()
