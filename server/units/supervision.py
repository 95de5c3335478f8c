"""Supervision of room units: a unit that goes silent is a button that cannot alert.

A unit says "online" with a heartbeat (default every 20 s) and its Last Will
says "offline" when the broker loses it (after 1.5 keepalives, about 22 s).
This loop also catches a unit that is connected but silent (a hung agent):
no status for ``silence`` seconds marks it offline. Managers are told once a
unit has been offline for ``grace`` seconds (so a brief reconnect is not a
page), and told again when it returns. With the defaults a unit that drops is
reported within 45 s and one that goes silent within 50 s (NFPA 72 asks
supervision within 60 min for a single path; a panic button deserves better).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from panicbutton.clock import Clock
from server import incidents
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

    silence: float = 45.0
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

    def start(self) -> None:
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
        each in its own transaction: the unit's first message may make it meanwhile,
        which must not fail the pass for every other room."""
        with self._sessions() as s:
            known = set(s.scalars(select(DeviceRecord.device_id)))
        for room in self._site.rooms:
            if room.device in known:
                continue
            try:
                with self._sessions.begin() as s:
                    s.add(
                        DeviceRecord(
                            device_id=room.device,
                            last_seq=0,
                            online=False,
                            offline_since=self._started,
                        )
                    )
            except IntegrityError:
                pass  # recorded by the unit's own first message

    def check(self) -> list[str]:
        """One pass; returns the device ids managers were just told are offline."""
        now = self._clock.now()
        silent_before = now - timedelta(seconds=self._times.silence)
        # Judge silence only while the server hears the broker, and not before it
        # could have heard a heartbeat since it started (retained ones do not count).
        judge = self._link_up() and now - self._started >= timedelta(seconds=self._times.silence)
        alert_before = now - timedelta(seconds=self._times.grace)
        newly: list[tuple[Room, datetime]] = []
        self._record_new_units()
        with self._sessions.begin() as s:
            for room in self._site.rooms:
                device = s.get(DeviceRecord, room.device)
                if device is None:  # its first message raced the record: next pass
                    continue
                if (
                    judge
                    and device.online
                    and (device.last_seen is None or device.last_seen < silent_before)
                ):
                    incidents.mark_offline(
                        session=s, device=device, reason="silent", now=device.last_seen or now
                    )
                since = device.offline_since or self._started
                if not device.online and not device.offline_alerted and since <= alert_before:
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
