"""Shared fixtures: real Mosquitto, real PostgreSQL, a fake Twilio, the server.

A test that needs Mosquitto or PostgreSQL skips with a reason where they are
missing, and fails instead under PANICBUTTON_REQUIRE_INTEGRATION=1 (CI).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from panicbutton.clock import ManualClock
from server.db import make_engine, migrate
from tests.harness import (
    PG_ADMIN_URL,
    Broker,
    System,
    find_mosquitto,
    postgres_database,
    postgres_reachable,
    sample_site,
    start_mosquitto,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM = "/usr/bin/chromium"
REQUIRE = os.environ.get("PANICBUTTON_REQUIRE_INTEGRATION") == "1"


#: Tests that run many real processes and clients at once (storms, a failover, a fleet,
#: the server as deployed): on one xdist worker, one after another (``make test`` runs
#: ``--dist loadgroup``), so that they never load the machine together and slow the
#: timed tests beside them.
HEAVY = pytest.mark.xdist_group("heavy")


def missing(what: str) -> None:
    """Skip for a missing dependency, or fail where CI requires it."""
    if REQUIRE:
        pytest.fail(f"{what} (PANICBUTTON_REQUIRE_INTEGRATION=1 forbids skipping)")
    pytest.skip(what)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A real Mosquitto on a free loopback port, with passwords, ACL and persistence."""
    if find_mosquitto() is None:
        missing("mosquitto is not installed (apt install mosquitto)")
    with start_mosquitto(tmp_path / "mosquitto") as handle:
        yield handle


@pytest.fixture(scope="session")
def chromium() -> Iterator[Browser]:
    """Headless Chromium (Debian's, driven by Playwright) for this test process: one
    Playwright per process, so every browser test shares it (each opens its own
    context)."""
    if shutil.which(CHROMIUM) is None:
        missing(f"Chromium is not installed at {CHROMIUM} (apt install chromium)")
    try:
        from playwright.sync_api import sync_playwright  # noqa: PLC0415
    except ImportError:
        missing("playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--autoplay-policy=no-user-gesture-required",
                # Passkeys need a secure context: http://localhost, here on IPv4.
                "--host-resolver-rules=MAP localhost 127.0.0.1",
            ],
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def pg_available() -> None:
    if not postgres_reachable():
        missing(f"PostgreSQL is not reachable at {PG_ADMIN_URL}")


@pytest.fixture(scope="session")
def schema_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], str]]:
    """The URL of a database of a kind (``sqlite``, ``postgres``) at the newest schema,
    migrated once per session (and worker), on first use; dropped at the end."""
    made: dict[str, str] = {}
    with contextlib.ExitStack() as stack:

        def template(kind: str) -> str:
            if kind not in made:
                if kind == "sqlite":
                    url = f"sqlite:///{tmp_path_factory.mktemp('schema') / 'template.sqlite3'}"
                else:
                    url = stack.enter_context(
                        postgres_database(f"pb_template_{secrets.token_hex(4)}")
                    )
                engine = make_engine(url)
                migrate(engine)
                engine.dispose()  # a PostgreSQL template must have no connection
                made[kind] = url
            return made[kind]

        yield template


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each storage test runs on SQLite and on PostgreSQL (a fresh database).

    For a test that starts a :class:`System` (the ``system`` fixture) the database is a
    copy of one the migrations brought to the newest schema once per session: they took
    half of each server start. Every other test gets an empty database, and the server
    started on a copy still runs the migrations (there is nothing left to do).
    """
    template = None
    if "system" in request.fixturenames:
        if request.param == "postgres":
            request.getfixturevalue("pg_available")
        template = request.getfixturevalue("schema_template")(request.param)
    if request.param == "sqlite":
        path = tmp_path / "test.sqlite3"
        if template is not None:
            shutil.copy2(template.removeprefix("sqlite:///"), path)  # mode 600 kept
        yield f"sqlite:///{path}"
        return
    request.getfixturevalue("pg_available")
    with postgres_database(
        f"pb_test_{secrets.token_hex(4)}",
        template=template.rsplit("/", 1)[1] if template else None,
    ) as url:
        yield url


@pytest.fixture
def system(
    broker: Broker, database_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[System]:
    """Broker + fake Twilio + server (HTTP on loopback); room units made on demand.

    Markers: ``@pytest.mark.settings(name=value)`` changes server settings;
    ``@pytest.mark.site(table=...)`` replaces tables of the site file;
    ``@pytest.mark.clock("2026-03-29T00:59:00+00:00")`` runs the server on a
    clock the test moves by hand (``system.clock.advance(seconds)``).
    """
    marker = request.node.get_closest_marker("settings")
    overrides = dict(marker.kwargs) if marker else {}
    site_marker = request.node.get_closest_marker("site")
    clock_marker = request.node.get_closest_marker("clock")
    clock = ManualClock(datetime.fromisoformat(clock_marker.args[0])) if clock_marker else None
    if clock is not None:
        # The instance's heartbeat renews its claims every real second; a clock moved by
        # hand outruns it (tests move it seconds at a time), and claims measured on it
        # would lapse between two beats of this live, lone instance, which would then
        # take over its own pages. Nothing here tests taking over (tests/server/
        # test_cluster.py and tests/test_failover.py do, on real time).
        patch = request.getfixturevalue("monkeypatch")
        for module in ("server.cluster", "server.paging.pager", "server.escalation.scheduler"):
            patch.setattr(f"{module}.LEASE", 24 * 3600.0)
    with System(
        mqtt_port=broker.port,
        users=broker.users,
        database_url=database_url,
        folder=tmp_path,
        broker=broker,
        settings=overrides,
        clock=clock,
        site=sample_site(**site_marker.kwargs) if site_marker else None,
    ) as sys_:
        yield sys_
