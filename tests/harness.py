"""The whole system on loopback, with real parts at every seam, for tests and benches.

Mosquitto (own config: passwords + ACL) <- room units (gpiozero MockFactory)
-> server (SQLite or PostgreSQL) -> twilio library -> :class:`FakeTwilio`.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import uvicorn
from gpiozero.pins.mock import MockFactory
from pydantic import SecretStr
from sqlalchemy import create_engine, func, select, text

from demo.broker import MosquittoProcess, find_mosquitto, free_port
from device.agent import Agent
from device.config import parse_config
from device.indicator import Light
from panicbutton.clock import Clock, ManualClock, SystemClock
from panicbutton.log import checkpoints
from panicbutton.wire import parse_topic
from server.app import Server, build
from server.models import EscalationJob, Incident, LogEntry, Page, PageStatus
from server.people import auth, directory
from server.people.roles import Right, Role, rights_of
from server.people.tables import ApiToken, Person
from server.routes.deps import session_cookie
from server.services import Services
from server.settings import Settings
from server.site import Site, parse_site
from server.units.broker import SERVER_USER, BrokerFiles
from tests.fakes.twilio import FakeTwilio
from tests.web import PATIENCE

__all__ = [
    "PG_ADMIN_URL",
    "System",
    "find_mosquitto",
    "postgres_database",
    "postgres_reachable",
    "start_mosquitto",
]

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
#: Seconds a stopping test server waits for open connections (live boards) to end.
SHUTDOWN_GRACE = 1
DEVICES = ("unit-1", "unit-2", "unit-3")
#: A second user with the server's rights, for tests and benches that watch the topics
#: (client ids are user names: watching as the server would push the server off).
MONITOR = "panicbutton-monitor"
RECEPTION, FLOOR, MANAGER = "+32470000001", "+32470000002", "+32470000003"
BUTTON, LED = 17, 27


#: Each unit's token for the HTTPS path; the site file holds only their hashes.
DEVICE_TOKENS = {d: f"token-for-{d}-{'x' * 24}" for d in DEVICES}


def sample_site(**changes: Any) -> Site:
    """Three rooms; Reception and Floor always on duty, a Manager; ``changes`` replace
    top-level tables of the site file (e.g. ``duty=...``, ``escalation=...``)."""
    rooms = [
        {
            "id": f"room-{i}",
            "label": f"Room {i}",
            "device": d,
            "device_token_sha256": hashlib.sha256(DEVICE_TOKENS[d].encode()).hexdigest(),
        }
        for i, d in enumerate(DEVICES, 1)
    ]
    data: dict[str, Any] = {
        "site": {"name": "Test house", "timezone": "Europe/Brussels"},
        "rooms": rooms,
        "staff": [
            {"id": "reception", "name": "Reception", "phone": RECEPTION, "language": "en"},
            {"id": "floor", "name": "Floor", "phone": FLOOR, "language": "nl"},
            {
                "id": "manager",
                "name": "Manager",
                "phone": MANAGER,
                "language": "fr",
                "role": "manager",
            },
        ],
        "duty": {"on_duty": ["reception", "floor"]},
    }
    return parse_site({**data, **changes}, "tests")


#: The roles of each staff member of :func:`sample_site` (and of anyone else by default).
SAMPLE_ROLES = {"manager": (Role.MANAGER, Role.STAFF), "night-manager": (Role.MANAGER,)}


#: Every right, as token scopes: a token that may do whatever its person's roles allow.
ALL_SCOPES = tuple(r.value for r in Right)


def open_person(
    services: Services,
    person_id: str,
    *,
    roles: Sequence[Role] | None = None,
    name: str | None = None,
    phone: str | None = None,
    language: str | None = None,
    confirmed: bool | None = None,
) -> None:
    """Open ``person_id``'s account (by the system) if there is none, and grant ``roles``.

    ``roles`` are by default those of :data:`SAMPLE_ROLES` or staff. A new account
    takes ``name``, ``phone`` and ``language``, by default those of the staff member of
    the site with that id (else the id, no phone, English); ``confirmed`` marks the
    phone as proved by its owner (by default only a staff member's is). An existing
    account keeps its details.
    """
    now = services.clock.now()
    member = next((s for s in services.site.staff if s.id == person_id), None)
    wanted = list(roles if roles is not None else SAMPLE_ROLES.get(person_id, (Role.STAFF,)))
    with services.sessions.begin() as session:
        if session.get(Person, person_id) is None:
            directory.add_person(
                session,
                person_id=person_id,
                name=name or (member.name if member else person_id),
                phone=phone or (member.phone if member else None),
                language=language or (member.language if member else "en"),
                phone_confirmed=confirmed if confirmed is not None else member is not None,
                by=directory.SYSTEM,
                now=now,
            )
        for role in wanted:
            # An inspector's access must end; a week is enough for a test.
            until = now + timedelta(days=7) if role is Role.INSPECTOR else None
            directory.grant(
                session, person_id=person_id, role=role, by=directory.SYSTEM, now=now, until=until
            )


def person_token(
    services: Services,
    person_id: str,
    *,
    roles: Sequence[Role] | None = None,
    scopes: Sequence[str] | None = None,
    days: int = 30,
    name: str | None = None,
    phone: str | None = None,
    confirmed: bool | None = None,
) -> str:
    """A personal API token for ``person_id``, as `panicbutton people token` makes one.

    The person's account is opened first if there is none, and given ``roles`` (see
    :func:`open_person`, which takes ``name``, ``phone`` and ``confirmed``). The token
    lasts ``days`` and carries ``scopes``, by default every right of the person's roles
    (:data:`ALL_SCOPES` for every right there is).
    """
    open_person(services, person_id, roles=roles, name=name, phone=phone, confirmed=confirmed)
    now = services.clock.now()
    with services.sessions.begin() as session:
        token_id, token, digest = auth.new_token_secret()
        held = auth.active_roles(session, person_id, now)
        session.add(
            ApiToken(
                id=token_id,
                person_id=person_id,
                secret_sha256=digest,
                label="tests",
                scopes=list(scopes) if scopes is not None else sorted(rights_of(held)),
                created_at=now,
                expires_at=now + timedelta(days=days),
                revoked_at=None,
                last_used_at=None,
            )
        )
    return token


def web_session(services: Services, person_id: str, *, agent: str) -> str:
    """A browser session for ``person_id``, as signing in makes one (bound to the
    browser's User-Agent ``agent``); its cookie's value."""
    with services.sessions.begin() as session:
        return auth.start_session(
            session, person_id=person_id, agent=agent, method="test", now=services.clock.now()
        )


def browser_headers(server: Server, person_id: str, *, agent: str) -> dict[str, str]:
    """The headers of a browser signed in as ``person_id``: its session cookie and
    User-Agent."""
    cookie = web_session(server.services, person_id, agent=agent)
    return {"Cookie": f"{session_cookie(server.settings)}={cookie}", "User-Agent": agent}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def write_log_key(path: Path, name: str = "panicbutton.test/log") -> Path:
    """A fresh log signing key at ``path`` (mode 600), as `panicbutton audit keygen` writes."""
    path.write_text(checkpoints.Signer.generate(name).private_text())
    path.chmod(0o600)
    return path


def wait_until(
    predicate: Callable[[], object], timeout: float = PATIENCE, step: float = 0.01
) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


#: The reply code in a page (SMS), in each language.
REPLY_CODE = re.compile(r"(?:Reply|Antwoord|Répondez) (\d+)")


def reply_code(texts: list[str], room: str | None = None) -> str:
    """The reply code of the newest page among ``texts`` (about ``room``, if given)."""
    for line in (ln for body in reversed(texts) for ln in reversed(body.splitlines())):
        found = REPLY_CODE.search(line)
        if found and (room is None or room in line):
            return found.group(1)
    raise AssertionError(f"no reply code{f' for {room}' if room else ''} in {texts!r}")


@dataclass
class Broker:
    """A test Mosquitto that a test can stop and start again on the same port."""

    port: int
    users: dict[str, str]
    process: MosquittoProcess

    def stop(self) -> None:
        self.process.stop()

    def start(self) -> None:
        self.process.start()


@contextlib.contextmanager
def start_mosquitto(
    folder: Path, devices: Sequence[str] = DEVICES, servers: Sequence[str] = ()
) -> Iterator[Broker]:
    """A Mosquitto with the server's and monitor's users, one user per device, and one
    per further server instance named in ``servers``."""
    users = {SERVER_USER: secrets.token_urlsafe(12), MONITOR: secrets.token_urlsafe(12)}
    users |= {u: secrets.token_urlsafe(12) for u in (*servers, *devices)}
    for attempt in range(5):  # a free port can be taken by another process before we bind it
        port = free_port()
        process = MosquittoProcess(
            BrokerFiles(
                folder,
                port,
                users,
                persistence=True,
                server_users=(SERVER_USER, MONITOR, *servers),
            )
        )
        try:
            process.start()
        except RuntimeError as exc:
            if "Address already in use" not in str(exc) or attempt == 4:
                raise
            continue
        break
    try:
        yield Broker(port, users, process)
    finally:
        process.stop()


def postgres_reachable() -> bool:
    try:
        with create_engine(PG_ADMIN_URL).connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception:  # noqa: BLE001 -- any failure to connect means "not here"
        return False
    return True


@contextlib.contextmanager
def postgres_database(name: str, template: str | None = None) -> Iterator[str]:
    """A new database ``name`` (a copy of the database ``template``, if given), dropped
    at the end."""
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    copy = f' TEMPLATE "{template}"' if template else ""
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"{copy}'))
        # A commit does not wait for the disk: the tests kill servers, never PostgreSQL
        # itself, and a server's committed work is in PostgreSQL once it commits. Three
        # workers creating and dropping databases otherwise stall each other's commits
        # for seconds on a shared disk.
        conn.execute(text(f'ALTER DATABASE "{name}" SET synchronous_commit = off'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


class Room:
    """A room unit under test: its agent, its mock pins and what its light showed."""

    def __init__(self, agent: Agent, factory: MockFactory) -> None:
        self.agent = agent
        self.factory = factory
        self.lights: list[Light] = []

    @property
    def light(self) -> Light | None:
        return self.agent.indicator.state

    @property
    def led_pin(self) -> Any:
        return self.factory.pin(LED)

    def press(self, hold: float = 0.05) -> None:
        pin = self.factory.pin(BUTTON)
        pin.drive_low()
        time.sleep(hold)
        pin.drive_high()


class System:
    """The server (HTTP on loopback) with a fake Twilio, against a given broker and database.

    ``settings`` overrides server settings. Supervision is slowed down by
    default (units not started in a test would otherwise page the manager).
    """

    def __init__(
        self,
        *,
        mqtt_port: int,
        users: dict[str, str],
        database_url: str,
        folder: Path,
        site: Site | None = None,
        broker: Broker | None = None,
        settings: dict[str, Any] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.mqtt_port = mqtt_port
        self.users = users
        self.folder = folder
        self.broker = broker
        self.clock = clock
        self.site = site or sample_site()
        self.twilio = FakeTwilio(
            account_sid="AC" + secrets.token_hex(16),
            auth_token=secrets.token_hex(16),
            clock=clock or SystemClock(),
        )
        self.http_port = free_port()
        self.settings = Settings(
            database_url=database_url,
            mqtt_port=mqtt_port,
            mqtt_password=SecretStr(users[SERVER_USER]),
            notifier="twilio",
            twilio_account_sid=self.twilio.account_sid,
            twilio_auth_token=SecretStr(self.twilio.auth_token),
            twilio_from="+32460000000",
            public_base_url="https://alarm.example.test/hooks",
            mqtt_client_id=f"server-{secrets.token_hex(3)}",
            http_port=self.http_port,
            site_file=folder / "unused.toml",
            offline_grace=3600.0,
            supervision_interval=0.5,
            log_key_file=write_log_key(folder / "log.key"),
            log_checkpoint_file=folder / "log-checkpoints.jsonl",
            # As fast as the fake Twilio takes by default (a test of pacing sets both).
            **self.twilio.pace(),
        ).model_copy(update=settings or {})
        self.rooms: list[Room] = []
        self.server: Server | None = None
        # Alert messages the server's MQTT side has finished with, by device, and how
        # many it is handling now (see wait_idle).
        self._handled: dict[str, int] = {}
        self._handling = 0
        self._handled_lock = threading.Lock()
        self._web: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # The public URL is what Twilio signs; the request really goes to loopback.
    @property
    def sms_webhook(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/twilio/sms"

    @property
    def sms_webhook_public(self) -> str:
        return f"{self.settings.public_base_url}/twilio/sms"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def api(self) -> str:
        return f"{self.base_url}/api/v1"

    def headers(self, person_id: str = "manager", **why: str) -> dict[str, str]:
        """API headers for ``person_id`` (a personal token made for them; by default
        the sample site's manager), plus ``why`` as the justification of a view."""
        assert self.server is not None
        token = person_token(self.server.services, person_id)
        justification = {"X-Panicbutton-Justification": why["why"]} if "why" in why else {}
        return bearer(token) | justification

    def __enter__(self) -> System:
        self.twilio.start()
        self.settings = self.settings.model_copy(
            update={"twilio_api_base_url": self.twilio.base_url}
        )
        self.start_server()
        return self

    def start_server(self) -> Server:
        """Start (or start again, as after a crash) the server on the same database."""
        self.server = build(self.settings, site=self.site, clock=self.clock)
        self._count_handled(self.server)
        # Routes sit under the public URL's path behind the TLS proxy in
        # production; here the app serves them at the root.
        self._web = uvicorn.Server(
            uvicorn.Config(
                self.server.app,
                host="127.0.0.1",
                port=self.http_port,
                log_level="warning",
                # Open live boards (event streams) are cut after this on stop, as in
                # production (server.app.web_server).
                timeout_graceful_shutdown=SHUTDOWN_GRACE,
            )
        )
        self._thread = threading.Thread(target=self._web.run, daemon=True)
        self._thread.start()
        server, web = self.server, self._web
        assert wait_until(lambda: web.started and server.ingest.connected.is_set(), PATIENCE), (
            "server did not start"
        )
        return server

    def _count_handled(self, server: Server) -> None:
        """Count the alert messages the server has handled (for :meth:`wait_idle`), by
        wrapping its paho callback (a message comes in) and its acknowledgement (it is
        handled: recorded, refused or left to resend): nothing else of the server changes."""
        ingest = server.ingest  # the test reads the ingest from outside
        client = ingest._client
        handle, done = client.on_message, ingest._done
        assert handle is not None

        def counted(c: Any, userdata: Any, msg: Any) -> None:
            with self._handled_lock:
                self._handling += 1
            handle(c, userdata, msg)

        def counted_done(topic: str, mid: int, qos: int) -> None:
            try:
                done(topic, mid, qos)
            finally:
                with self._handled_lock:
                    self._handling -= 1
                    try:
                        device_id, kind = parse_topic(topic)
                    except ValueError:
                        device_id, kind = "?", "?"
                    if kind == "alert":
                        self._handled[device_id] = self._handled.get(device_id, 0) + 1

        client.on_message = counted
        ingest._done = counted_done  # type: ignore[method-assign]

    def handled_alerts(self, device_id: str) -> int:
        """Alert messages on ``device_id``'s topic the server has handled."""
        with self._handled_lock:
            return self._handled.get(device_id, 0)

    def wait_idle(
        self, timeout: float = PATIENCE, *, published: dict[str, int] | None = None
    ) -> None:
        """Wait until nothing more is going to happen, or fail the test after ``timeout`` s.

        Idle means: every alert the units' links saw the broker accept (plus
        ``published`` more by device, for tests that publish by hand) has been
        handled by the server; no unit has an alert left to send while connected,
        and each unit's thread has caught up; no escalation job is due or running;
        no page is queued, held for a bundle or being sent (in the pager, nor pending
        in the database: step 0 commits its pages before it hands them over); no
        supervision pass is under way. The server's activity counters are read before and after, so
        work that came and went during the check is not missed. Assert absences
        (no duplicate, no second text) after this.
        """
        server = self.server
        assert server is not None
        services = server.services
        expected = dict(published or {})
        why = ["not checked yet"]

        def activity() -> tuple[object, ...]:
            with self._handled_lock:
                handled, handling = tuple(sorted(self._handled.items())), self._handling
            scheduler, supervisor = services.scheduler, server.supervisor
            busy = handling or scheduler.in_pass or supervisor.in_pass or services.alerts.paging
            return handled, busy, scheduler.passes, supervisor.passes

        def due_jobs() -> int:
            with services.sessions() as s:
                return (
                    s.scalar(
                        select(func.count())
                        .select_from(EscalationJob)
                        .where(
                            EscalationJob.status.in_(("pending", "running")),
                            EscalationJob.due_at <= services.clock.now(),
                        )
                    )
                    or 0
                )

        def unsent_pages() -> int:
            # The pager's backlog (below) counts only what it was handed: a step 0 run
            # by the ingest thread commits its pages a moment before it hands them over.
            # (A page left "sending" by a stopped instance is a test's own subject.)
            with services.sessions() as s:
                return (
                    s.scalar(
                        select(func.count())
                        .select_from(Page)
                        .where(Page.status == PageStatus.PENDING)
                    )
                    or 0
                )

        def idle() -> bool:
            before = activity()
            if before[1]:
                why[0] = "the server is handling a message, running due jobs or supervising"
                return False
            wanted = dict(expected)
            for room in self.rooms:
                agent = room.agent
                device_id = agent.config.device_id
                if agent.running:
                    if not agent.sync():
                        why[0] = f"{device_id}'s thread did not catch up"
                        return False
                    if agent.link.connected and agent.outbox.pending():
                        why[0] = (
                            f"{device_id} has {len(agent.outbox.pending())} unconfirmed alert(s)"
                        )
                        return False
                    if agent.https is not None and agent.https.busy:
                        why[0] = f"{device_id} is posting over HTTPS"
                        return False
                wanted[device_id] = wanted.get(device_id, 0) + agent.link.alerts_delivered
            for device_id, n in wanted.items():
                if (handled := self.handled_alerts(device_id)) < n:
                    why[0] = f"the server has handled {handled} of {n} alert(s) from {device_id}"
                    return False
            if (due := due_jobs()) != 0:
                why[0] = f"{due} escalation job(s) due"
                return False
            if (backlog := services.pager.backlog()) != 0:
                why[0] = f"{backlog} page(s) queued, held or being sent"
                return False
            if (unsent := unsent_pages()) != 0:
                why[0] = f"{unsent} page(s) pending in the database"
                return False
            if activity() != before:
                why[0] = "the server did more work while being checked"
                return False
            return True

        assert wait_until(idle, timeout), f"not idle after {timeout} s: {why[0]}"

    def stop_server(self, *, let_time_pass: bool = False) -> None:
        """Stop the server (up to 10 s). ``let_time_pass``: on a hand-moved clock, move it
        on while the server closes, for a page retry that waits on that clock (the pager's
        close waits for it); only at the end of a test, when no time is measured."""
        if self._web is not None and self._thread is not None:
            self._web.should_exit = True
            deadline = time.monotonic() + 10
            self._thread.join(0.2)
            while self._thread.is_alive() and time.monotonic() < deadline:
                if let_time_pass and isinstance(self.clock, ManualClock):
                    self.clock.advance(1.0)
                self._thread.join(0.05)
        self._web = None

    def room_config(self, device_id: str = "unit-1", **tables: dict[str, Any]) -> dict[str, Any]:
        """A unit's firmware config as parsed TOML; ``tables`` add or replace settings."""
        config: dict[str, Any] = {
            "device": {"id": device_id, "state_dir": str(self.folder / device_id)},
            "pins": {"button": BUTTON, "led": LED},
            "mqtt": {
                "host": "127.0.0.1",
                "port": self.mqtt_port,
                "password": self.users[device_id],
            },
        }
        for table, values in tables.items():
            config[table] = {**config.get(table, {}), **values}
        return config

    def https_table(self, device_id: str = "unit-1", after: float = 1.0) -> dict[str, Any]:
        return {"url": self.base_url, "token": DEVICE_TOKENS[device_id], "fallback_after": after}

    def room(
        self,
        device_id: str = "unit-1",
        *,
        clock: Clock | None = None,
        **tables: dict[str, Any],
    ) -> Room:
        """A started room unit; ``clock`` is the unit's (a ``panicbutton.clock.ManualClock``
        lets a test move its timers by hand)."""
        config = parse_config(self.room_config(device_id, **tables), f"test {device_id}")
        factory = MockFactory()
        room: Room
        agent = Agent(
            config,
            pin_factory=factory,
            on_light=lambda light: room.lights.append(light),  # noqa: PLW0108 -- room is bound below
            clock=clock,
        )
        room = Room(agent, factory)
        agent.start()
        self.rooms.append(room)
        return room

    def incidents(self) -> list[Incident]:
        assert self.server is not None
        with self.server.services.sessions() as s:
            return list(s.scalars(select(Incident).order_by(Incident.id)))

    def events(self, type_: str | None = None) -> list[LogEntry]:
        assert self.server is not None
        with self.server.services.sessions() as s:
            query = select(LogEntry).order_by(LogEntry.n)
            if type_ is not None:
                query = query.where(LogEntry.type == type_)
            return list(s.scalars(query))

    def __exit__(self, *exc: object) -> None:
        for room in self.rooms:
            room.agent.close()
        self.stop_server(let_time_pass=True)
        self.twilio.stop()
