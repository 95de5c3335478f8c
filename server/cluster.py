"""Several server instances on one database: who is alive, who keeps the log, and news
of each other's commits.

Each instance has a row in ``server_instances`` that it renews every
:data:`HEARTBEAT` seconds, renewing with it the leases of the pages it holds
("sending": under way, or held in memory for a bundle). A claim whose lease ran
out (its instance stopped: a crash, a SIGKILL, a lost network) is taken over by
a live instance (:meth:`server.paging.pager.Pager.take_over`,
:meth:`server.escalation.scheduler.Scheduler.run_due`). One alone behaves as a
single server always did.

On PostgreSQL the log keeper's duties go to one instance at a time, the holder of
a session-level advisory lock (:class:`KeeperLock`): a killed holder's connection
ends and with it the lock, and another instance takes the duties over within a
second. Commits are announced to the other instances with ``NOTIFY``
(:class:`Notices`), so their live boards and schedulers look at once.

SQLite is for one server only: a second instance on one SQLite file is refused at
start (:class:`SecondInstanceError`).
"""

from __future__ import annotations

import logging
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import psycopg
from sqlalchemy import Connection, Engine, create_engine, delete, select, update
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from panicbutton.clock import Clock
from server.db import changed, claim
from server.errors import SettingsError
from server.models import EscalationJob, JobStatus, Page, PageStatus, ServerInstance

__all__ = [
    "HEARTBEAT",
    "LEASE",
    "Cluster",
    "Instances",
    "KeeperLock",
    "Notices",
    "SecondInstanceError",
]

log = logging.getLogger(__name__)

#: Seconds between an instance's heartbeats (its row, and the leases of its pages).
HEARTBEAT = 1.0
#: Seconds a claim holds without a heartbeat: after this an instance counts as stopped.
LEASE = 5.0
#: The advisory lock that makes its holder the log keeper (any fixed 64-bit number).
KEEPER_LOCK = zlib.crc32(b"panicbutton/log-keeper")
#: The channel of :class:`Notices`.
CHANNEL = "panicbutton"


class SecondInstanceError(SettingsError):
    """Two server instances on one SQLite file: SQLite serves one server process."""


class Instances:
    """This instance's liveness row and leases, and the others' liveness.

    ``on_beat`` is called on the heartbeat thread after each heartbeat (the pager's
    take-over of lapsed pages); ``on_loss`` when an instance is found stopped.
    """

    def __init__(
        self,
        *,
        name: str,
        sessions: sessionmaker[Session],
        clock: Clock,
        single: bool = False,
        shared: bool = True,
        on_beat: Callable[[], object] = lambda: None,
        on_loss: Callable[[], object] = lambda: None,
    ) -> None:
        self.name = name
        self._sessions = sessions
        self._clock = clock
        self._single = single
        self._shared = shared
        self._warned = False
        self._on_beat = on_beat
        self._on_loss = on_loss
        self._started = clock.now()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live: set[str] = set()

    def lease(self) -> timedelta:
        return timedelta(seconds=LEASE)

    def check(self) -> None:
        """On SQLite (``single``), refuse to start beside another live instance."""
        if not self._single:
            return
        now = self._clock.now()
        with self._sessions() as s:
            other = s.scalar(
                select(ServerInstance.id).where(
                    ServerInstance.id != self.name, ServerInstance.seen_at > now - self.lease()
                )
            )
        if other is not None:
            raise SecondInstanceError(
                f"another server instance ({other}) is running on this SQLite database: "
                "SQLite serves one server process. Stop it, or move to PostgreSQL to run "
                "several (see the deployment docs, several server instances)"
            )

    def register(self) -> None:
        """Write this instance's row (again, after a restart under the same name)."""
        now = self._clock.now()
        with self._sessions.begin() as s:
            others = set(
                s.scalars(
                    select(ServerInstance.id).where(ServerInstance.seen_at > now - self.lease())
                )
            )
            mine = s.get(ServerInstance, self.name)
            if mine is None:
                s.add(ServerInstance(id=self.name, started_at=self._started, seen_at=now))
            else:
                mine.started_at, mine.seen_at = self._started, now
        self._live = others | {self.name}

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="instances", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop beating and hand back what this instance holds: its row goes, and the
        leases of its pages and jobs end now, so a live instance takes them at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        now = self._clock.now()
        try:
            with self._sessions.begin() as s:
                for table, busy in ((Page, PageStatus.SENDING), (EscalationJob, JobStatus.RUNNING)):
                    changed(
                        s,
                        update(table)
                        .where(table.claimed_by == self.name, table.status == busy)
                        .values(lease_until=now),
                    )
                changed(s, delete(ServerInstance).where(ServerInstance.id == self.name))
        except Exception:  # the database is away: the leases lapse by themselves
            log.exception("could not hand back this instance's claims; they lapse in %s s", LEASE)

    def live(self) -> set[str]:
        """Instances seen alive at the last heartbeat, this one included."""
        return set(self._live)

    def _run(self) -> None:
        while not self._clock.wait(self._stop, None, HEARTBEAT):
            try:
                self.beat()
            except Exception:  # the database is away: the next beat tries again
                log.exception("heartbeat failed; trying again")
                continue
            try:
                self._on_beat()
            except Exception:
                log.exception("taking over lapsed claims failed; trying again")

    def beat(self) -> None:
        """Renew this instance's row and the leases of the pages it holds; note who else
        is alive (and call ``on_loss`` when one stopped)."""
        now = self._clock.now()
        until = now + self.lease()
        with self._sessions.begin() as s:
            mine = changed(
                s,
                update(ServerInstance)
                .where(ServerInstance.id == self.name, ServerInstance.started_at == self._started)
                .values(seen_at=now),
            )
            if not mine:
                log.error(
                    "another server instance uses this instance's name %r (or this one was "
                    "taken for stopped): give each instance its own PANICBUTTON_MQTT_USERNAME",
                    self.name,
                )
                s.merge(ServerInstance(id=self.name, started_at=self._started, seen_at=now))
            # Skipping a page locked by a worker here (it is being recorded): one UPDATE
            # over many rows in no order would deadlock with a worker's record of a bundle.
            claim(
                s,
                Page,
                Page.claimed_by == self.name,
                Page.status == PageStatus.SENDING,
                values={"lease_until": until},
                order_by=(Page.id,),
            )
            live = set(
                s.scalars(
                    select(ServerInstance.id).where(ServerInstance.seen_at > now - self.lease())
                )
            )
        lost = self._live - live - {self.name}
        self._live = live | {self.name}
        if len(self._live) > 1 and not self._shared and not self._warned:
            self._warned = True
            log.error(
                "%d server instances share this database but this one does not share the "
                "broker's messages with them: every alert reaches each. Set "
                "PANICBUTTON_MQTT_SHARED=true on every instance",
                len(self._live),
            )
        if lost:
            log.warning("%d server instance(s) stopped: taking over their work", len(lost))
            self._on_loss()


class KeeperLock:
    """Whether this instance is the log keeper: on PostgreSQL the holder of a
    session-level advisory lock on a connection of its own; elsewhere always."""

    def __init__(self, engine: Engine) -> None:
        # A connection of its own, never pooled: closing it must end the session (and the
        # lock with it), not hand it back to the pool still holding the lock.
        self._engine = create_engine(engine.url, poolclass=NullPool, hide_parameters=True)
        self._conn: Connection | None = None

    def held(self) -> bool:
        """Hold the lock, taking it if it is free; False while another instance holds it."""
        if self._engine.dialect.name != "postgresql":
            return True
        try:
            if self._conn is not None:
                self._conn.exec_driver_sql("SELECT 1")  # the lock lives as long as this
                return True
            conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            # A holder whose host lost power or network never closes its socket: the
            # database notices within about 11 s, not the system's default 2 hours, and
            # the lock passes to another instance.
            for setting in ("idle = 5", "interval = 2", "count = 3"):
                conn.exec_driver_sql(f"SET tcp_keepalives_{setting}")
            got = conn.exec_driver_sql(f"SELECT pg_try_advisory_lock({KEEPER_LOCK})").scalar()
        except Exception:  # the connection (and with it the lock) is gone
            log.exception("lost the log keeper's lock; trying to take it again")
            self.release()
            return False
        if got:
            self._conn = conn
            log.info("this instance keeps the incident log")
            return True
        conn.close()
        return False

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()  # the session ends, and its lock with it
            except Exception:  # noqa: BLE001 -- gone already: so is the lock
                log.debug("the keeper lock's connection was gone already")


class Notices:
    """PostgreSQL ``LISTEN``/``NOTIFY`` between instances: each commit here is announced
    (coalesced) to the others, whose ``subscribe``\\ d callbacks then run. Elsewhere it
    does nothing (one instance: its own commits are seen directly)."""

    def __init__(self, engine: Engine) -> None:
        self._enabled = engine.dialect.name == "postgresql"
        self._dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._callbacks: list[Callable[[], object]] = []
        self._pending = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._own_pid = 0

    def subscribe(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` (on the listening thread) when another instance committed."""
        self._callbacks.append(callback)

    def committed(self, *_: object) -> None:
        """Something was committed here: announce it soon (many commits, one notice)."""
        if self._enabled:
            self._pending.set()

    def start(self) -> None:
        if not self._enabled:
            return
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._forever, args=(work,), name=name, daemon=True)
            for name, work in (("notify", self._announce), ("listen", self._listen))
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._pending.set()
        for thread in self._threads:
            thread.join(5)

    def _forever(self, work: Callable[[psycopg.Connection[tuple[object, ...]]], None]) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._dsn, autocommit=True) as conn:
                    work(conn)
            except Exception:  # the database is away: boards poll meanwhile
                log.exception("notices between instances failed; again in a second")
                self._stop.wait(1.0)

    def _announce(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        self._own_pid = conn.info.backend_pid
        while not self._stop.is_set():
            self._pending.wait()
            self._pending.clear()
            # At stop too: the notice wakes this instance's listener, which would
            # otherwise wait out its second (the others take it for one more commit).
            conn.execute(f"NOTIFY {CHANNEL}")

    def _listen(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        conn.execute(f"LISTEN {CHANNEL}")
        while not self._stop.is_set():
            for notice in conn.notifies(timeout=1.0):  # ends after a second, to check _stop
                if self._stop.is_set():
                    break
                if notice.pid != self._own_pid:
                    for callback in self._callbacks:
                        callback()


@dataclass(frozen=True)
class Cluster:
    """This instance among the others: liveness, the keeper's lock and notices."""

    instances: Instances
    keeper_lock: KeeperLock
    notices: Notices

    def start(self) -> None:
        """Before anything is claimed: this instance's row, then notices and heartbeats."""
        self.instances.register()
        self.notices.start()
        self.instances.start()

    def stop(self) -> None:
        """After the work stopped: hand back claims, stop notices, let the lock go."""
        self.instances.stop()
        self.notices.stop()
        self.keeper_lock.release()
