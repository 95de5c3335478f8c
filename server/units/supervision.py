"""Supervision of room units: a unit that goes silent is a button that cannot alert.

A unit says "online" with a heartbeat (default every 20 s) and its Last Will
says "offline" when the broker loses it. This loop also catches a unit that is
connected but silent (a hung agent): no status for ``silence`` seconds marks it
offline. Managers are told once a unit has been offline for ``grace`` seconds
(so a brief reconnect is not a page), and told again when it returns.

With the defaults (heartbeat 20 s, unit keepalive 15 s, silence 35 s, a pass
every 5 s) a unit is shown offline within 45 s of its last heartbeat however it
is lost: within a second when its socket closes (the broker publishes its Last
Will, written within :data:`~server.units.statuses.WINDOW`), within 1.5
keepalives (22.5 s) when the broker stops hearing it, and within silence plus
one pass (40 s) when it stays connected but says nothing. The 5 s left are for
what the sum leaves out: the pass's own time (passes are ``interval`` apart
from the end of one to the start of the next) and the statuses' way in (a
heartbeat is timed when the server takes it, not when the unit sent it); with
a silence of 40 s the sum was the whole 45 s, and a bench of 10,000 units saw
46 s. Silence is 1.75 heartbeat periods: a live unit (20 s, 1 s of jitter) is
never that quiet unless it missed a beat. Managers are paged ``grace`` later
(NFPA 72 asks supervision within 60 min for a single path; a panic button
deserves better).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from panicbutton.clock import Clock
from server.continuity import Continuity
from server.models import DeviceRecord
from server.news import Tell
from server.paging import messages
from server.rota import Rota
from server.site import LiveSite, Room, SiteSource
from server.units.statuses import Statuses

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SupervisionTimes:
    """Seconds: no status for ``silence`` marks a unit offline; managers are paged after
    ``grace`` offline; the loop runs every ``interval``."""

    silence: float = 35.0
    grace: float = 15.0
    interval: float = 5.0
    #: Seconds the server's own broker link may be down before managers are told.
    link_grace: float = 30.0


class Supervisor(LiveSite):
    """A thread that checks units, the server's own broker link, duty gaps ahead and
    the continuity of the reference person while workers are present."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        site: SiteSource,
        clock: Clock,
        statuses: Statuses,
        rota: Rota,
        tell: Tell,
        times: SupervisionTimes,
        link_up: Callable[[], bool] = lambda: True,
        continuity: Continuity | None = None,
    ) -> None:
        self._sessions = sessions
        self._sites = site
        self._clock = clock
        self._statuses = statuses
        self._rota = rota
        self._tell = tell
        self._link_up = link_up
        self._continuity = continuity
        self._link_down_since: datetime | None = None
        self._link_alerted = False
        self._times = times
        self._stop = threading.Event()
        #: Passes finished, and whether one is under way (for tests waiting for quiet).
        self.passes = 0
        self.in_pass = False
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)
        self._started = clock.now()
        #: Units known to have a record (so a pass asks the database only about new rooms).
        self._recorded: set[str] = set()

    def start(self) -> None:
        # The silence is judged from now: a slow start (pages left by a crash looked up
        # at Twilio) must not count against units whose heartbeats are not in yet.
        self._started = self._clock.now()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _run(self) -> None:
        warned: set[datetime | None] = set()
        while not self._stop.wait(self._times.interval):
            self.in_pass = True
            checks: list[tuple[str, Callable[[], object]]] = [
                ("units", self.check),
                ("own broker link", self._check_own_link),
                ("duty gaps ahead", lambda: self._rota.check_gap(warned)),
            ]
            if self._continuity is not None:
                checks.append(("reference person's continuity", self._continuity.check))
            try:
                # Each check on its own: one that fails must not skip the others.
                for name, check in checks:
                    try:
                        check()
                    except Exception:  # the loop must outlive a database hiccup
                        log.exception("supervision check of %s failed; trying again", name)
            finally:
                self.in_pass = False
                self.passes += 1

    def _check_own_link(self) -> None:
        """The server's own broker link: if it is down, every unit looks silent, so
        say what is really wrong (once), and when it is back."""
        now = self._clock.now()
        if self._link_up():
            if self._link_alerted:
                log.warning("broker link restored")
                self._tell.managers(
                    lambda m: messages.server_link_back(m.language), purpose="server_link"
                )
            self._link_down_since, self._link_alerted = None, False
            return
        self._link_down_since = self._link_down_since or now
        down = self._link_down_since
        if not self._link_alerted and now - down >= timedelta(seconds=self._times.link_grace):
            self._link_alerted = True
            log.error("no broker link since %s: telling managers", down.isoformat())
            self._tell.managers(
                lambda m: messages.server_link_lost(
                    m.language, since=down, timezone=self._site.timezone
                ),
                purpose="server_link",
            )

    def _record_new_units(self) -> None:
        """A record for each unit of the site never heard of since this database began,
        all in one transaction, or each in its own if that fails: the unit's first
        message may make it meanwhile, which must not fail the pass for every other room."""
        rooms = [room for room in self._site.rooms if room.device not in self._recorded]
        if not rooms:
            return
        with self._sessions() as s:
            self._recorded.update(s.scalars(select(DeviceRecord.device_id)))
        new = [room.device for room in rooms if room.device not in self._recorded]
        if not new:
            return
        try:  # all in one transaction (10,000 rooms on a first start: not 10,000 commits)
            self._insert(new)
        except IntegrityError:  # a unit's first message made its record meanwhile
            for device in new:
                with contextlib.suppress(IntegrityError):  # recorded by its own message
                    self._insert([device])
        self._recorded.update(new)

    def _insert(self, devices: list[str]) -> None:
        with self._sessions.begin() as s:
            s.add_all(
                DeviceRecord(
                    device_id=device, last_seq=0, online=False, offline_since=self._started
                )
                for device in devices
            )

    def check(self) -> list[str]:
        """One pass; returns the device ids managers were just told are offline.

        Writes the heartbeats heard since the last pass first (one transaction), so
        silence is judged on fresh last-seen times, then reads only the units that
        are due a change: online but silent, or offline and not yet told."""
        try:
            self._statuses.flush()
        except Exception:
            # The beats not written are queued again, so their units still count as heard.
            log.exception("could not write the units' statuses; judging silence all the same")
        now = self._clock.now()
        silent_before = now - timedelta(seconds=self._times.silence)
        # Judge silence only while the server hears the broker, and not before it
        # could have heard a heartbeat since it started (retained ones do not count).
        judge = self._link_up() and now - self._started >= timedelta(seconds=self._times.silence)
        alert_before = now - timedelta(seconds=self._times.grace)
        self._record_new_units()
        rooms = {room.device: room for room in self._site.rooms}
        if judge:
            self._statuses.mark_silent(rooms, before=silent_before, now=now)
        with self._sessions() as s:
            rows = s.execute(
                select(DeviceRecord.device_id, DeviceRecord.offline_since).where(
                    DeviceRecord.online.is_(False), DeviceRecord.offline_alerted.is_(False)
                )
            )
            due = {device: since for device, since in rows}  # noqa: C416
        newly: list[tuple[Room, datetime]] = []
        for room in rooms.values():  # in the site's order
            if room.device not in due:
                continue
            since = due[room.device] or self._started
            if since <= alert_before:
                newly.append((room, since))  # marked alerted with its incident
        for room, since in newly:
            log.error(
                "unit %s (%s) offline since %s: telling managers",
                room.device,
                room.id,
                since.isoformat(timespec="seconds"),
            )
            try:
                self._statuses.offline(room, since)
            except Exception:  # the next pass tries again: the unit is not marked yet
                log.exception("could not open the offline alert for %s", room.device)
        return [room.device for room, _ in newly]
