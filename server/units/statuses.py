"""A unit's status (heartbeat, Last Will, clean stop), and a unit going offline or
coming back: a technical incident that pages managers until the unit returns.

Nothing here writes a status on the MQTT thread: a transaction per status there
would hold up every message behind it (alerts too), and 10,000 units coming up at
once are 10,000 first "online" statuses. Heartbeats are cheap: a live "online"
from a unit already online changes nothing but its last-seen time and health
figures, so only the newest per unit is kept in memory. Changes of state (online
after offline or never heard of, a Last Will, a clean stop) are queued in order.
:meth:`Statuses.flush` writes both in one transaction: changes first, then beats.
It runs :data:`WINDOW` after the first change queued (so the board and the
offline alarm see a change within a fraction of a second), at each supervision
pass (every few seconds, for the beats), and at stop (nothing queued is lost on a
clean stop). A silent unit is marked offline by the supervision pass, at once.

A crash loses at most the last window of changes and the last few seconds of
last-seen times, never a state for long: units' retained statuses replay (a
retained "offline" marks a unit offline; a retained "online" proves nothing),
a unit's next heartbeat after a lost "online" is a change again (the database
says offline), and the supervision pass waits ``silence`` after start before
judging anyone silent.

With two server instances (each hearing some of the statuses), one may mark a
unit offline that the other thinks online: that instance's next flush finds the
unit offline with an older last-seen time than its beat, and writes the beat as
the change it is (online again).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Collection
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from panicbutton.clock import Clock
from panicbutton.wire import LinkState, Status
from server import incidents
from server.errors import ServerError
from server.escalation import steps
from server.log.append import audit
from server.models import DeviceRecord, Incident, IncidentKind, Outcome, State
from server.news import Tell
from server.paging import messages
from server.paging.pager import Pager
from server.site import LiveSite, Room, Site, SiteSource

log = logging.getLogger(__name__)

#: Seconds from the first change of state queued to its write (with every other
#: change and beat queued by then): short beside the 45 s in which a dropped unit
#: must be shown offline, long enough to make one transaction of a burst.
WINDOW = 0.25

#: Devices per statement when a flush asks which of its units another instance
#: marked offline (well under SQLite's limit of bound parameters).
_CHUNK = 500

#: A heartbeat's write: only over a unit still online and not seen since (a change
#: of state, written at once, is never overwritten by an older beat).
_BEAT = (
    update(DeviceRecord)
    .where(
        DeviceRecord.device_id == bindparam("b_device"),
        DeviceRecord.online.is_(True),
        or_(DeviceRecord.last_seen.is_(None), DeviceRecord.last_seen < bindparam("b_seen")),
    )
    .values(
        last_seen=bindparam("b_seen"),
        error=bindparam("b_error"),
        uptime=bindparam("b_uptime"),
        outbox=bindparam("b_outbox"),
        version=bindparam("b_version"),
    )
)

#: A change of state waiting to be written: the status, when it came, whether retained.
_Change = tuple[Status, datetime, bool]
#: Heartbeats waiting to be written: the newest per unit, and when it came.
_Beats = dict[str, tuple[Status, datetime]]


class UnknownDeviceError(ServerError, LookupError):
    """A status from a unit the site file does not list."""


class Statuses(LiveSite):
    """Keeps each unit's online state, and opens and closes its offline alarms."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        site: SiteSource,
        clock: Clock,
        pager: Pager,
        tell: Tell,
        wake: Callable[[], object],
        window: float = WINDOW,
    ) -> None:
        self._sessions = sessions
        self._sites = site
        self._clock = clock
        self._pager = pager
        self._tell = tell
        self._wake = wake
        #: Seconds from the first change queued to its write (see :data:`WINDOW`).
        self.window = window
        #: The site whose rooms are mapped by device below (see :meth:`_room`).
        self._rooms: tuple[Site | None, dict[str, Room]] = (None, {})
        #: Guards the five below: statuses come on the MQTT thread, flushes on the
        #: supervisor's, the timer's and the stopping one's.
        self._lock = threading.Lock()
        #: Each unit's online state as written or queued (loaded on the first status).
        self._online: dict[str, bool] | None = None
        #: Heartbeats not yet written: the newest per unit, and when it came.
        self._beats: _Beats = {}
        #: Changes of state not yet written, in the order they came: (status, when, retained).
        self._changes: list[_Change] = []
        #: The timer that flushes the changes queued, while one is due (none once stopped).
        self._timer: threading.Timer | None = None
        self._stopped = False
        #: One flush at a time: changes and beats are written in the order they came.
        self._writing = threading.Lock()
        #: Heartbeats and changes written by flushes, and flushes that wrote any (for
        #: tests and figures).
        self.beats_written = 0
        self.changes_written = 0
        self.flushes = 0

    def handle(self, status: Status, *, retained: bool = False) -> None:
        """A unit's status: heartbeat, Last Will or clean stop. Only queued: see
        :meth:`flush`."""
        if self._room(status.device_id) is None:
            raise UnknownDeviceError(f"device {status.device_id!r} is not in the site file")
        now = self._clock.now()
        with self._lock:
            known = self._known().get(status.device_id)
            if status.state is LinkState.ONLINE and known is not None:
                if retained:
                    return  # no proof of life, and the unit is on record already
                if known:
                    self._beats[status.device_id] = (status, now)  # for the next flush
                    return
            self._queue(status, now=now, retained=retained)

    def _queue(self, status: Status, *, now: datetime, retained: bool) -> None:
        """Queue a status that may change a unit's state (the caller holds the lock),
        and have it written within the window."""
        self._beats.pop(status.device_id, None)  # this one is newer
        self._changes.append((status, now, retained))
        if not (retained and status.state is LinkState.ONLINE):
            # As it will be written (a retained "online" proves nothing: the flush
            # says what the database holds).
            self._known()[status.device_id] = status.state is LinkState.ONLINE
        if self._timer is None and not self._stopped:
            self._timer = threading.Timer(self.window, self._flush_due)
            self._timer.name = "statuses"
            self._timer.daemon = True
            self._timer.start()

    def queued(self) -> tuple[int, int]:
        """(changes of state, heartbeats) waiting for the next flush."""
        with self._lock:
            return len(self._changes), len(self._beats)

    def _flush_due(self) -> None:
        with self._lock:
            self._timer = None
        try:
            self.flush()
        except Exception:  # kept for the next flush: the supervision pass tries again
            log.exception("could not write the units' statuses; trying again")

    def stop(self) -> None:
        """Write whatever is queued (a clean stop loses no change and no beat)."""
        with self._lock:
            timer, self._timer = self._timer, None
            self._stopped = True  # no timer from now: it could fire after the database closes
        if timer is not None:
            timer.cancel()
        self.flush()
        if self.queued()[0]:
            self.flush()  # a beat another instance's "offline" made a change of state

    def _room(self, device_id: str) -> Room | None:
        """The room of a unit, from a map made once per site version (the site's own
        lookup walks every room: at 500 statuses a second over 10,000 rooms, too slow)."""
        site = self._site
        rooms_of, rooms = self._rooms
        if rooms_of is not site:
            rooms = {room.device: room for room in site.rooms}
            self._rooms = (site, rooms)
        return rooms.get(device_id)

    def _known(self) -> dict[str, bool]:
        """Each unit's online state as written or queued (the caller holds the lock)."""
        if self._online is None:
            with self._sessions() as s:
                rows = s.execute(select(DeviceRecord.device_id, DeviceRecord.online))
                self._online = {device: online for device, online in rows}  # noqa: C416
        return self._online

    def flush(self) -> int:
        """Write the changes of state and the heartbeats queued, in one transaction;
        returns how many. The lock is held only to take them, so statuses keep coming
        while it writes; if the write fails they are queued again for the next flush."""
        with self._writing:
            with self._lock:
                changes, self._changes = self._changes, []
                beats, self._beats = self._beats, {}
            if not changes and not beats:
                return 0
            try:
                back, lost, recorded = self._write(changes, beats)
            except DataError:
                # A value the database refuses: the others must not wait behind it for
                # ever (every later flush would fail on it again).
                back, lost, recorded = self._write_apart(changes, beats)
            except Exception:
                self._requeue(changes, beats)
                raise
            self.changes_written += len(changes)
            self.beats_written += len(beats)
            self.flushes += 1
        if recorded:
            with self._lock:
                known = self._known()
                for device, online in recorded.items():
                    known.setdefault(device, online)  # unless a newer status says
        # Each unit's follow-up on its own: one failing must not skip the others.
        for device in back:
            if (room := self._room(device)) is not None:
                try:
                    self.online(room)
                except Exception:
                    log.exception("unit %s is back, but its offline alarm was not closed", device)
        for status, seen in lost:
            # Marked offline by another instance before this beat: it is back.
            log.info(
                "unit %s was marked offline elsewhere; its heartbeat says online", status.device_id
            )
            self._again(status, seen)
        return len(changes) + len(beats)

    def _write_apart(
        self, changes: list[_Change], beats: _Beats
    ) -> tuple[list[str], list[tuple[Status, datetime]], dict[str, bool]]:
        """:meth:`_write`, each change and beat in a transaction of its own, after the
        database refused a value in a batch: the one it refuses is dropped (logged, as
        a refused message is), the rest written. Any other failure stops here and what
        is not written yet is queued again."""
        back: list[str] = []
        lost: list[tuple[Status, datetime]] = []
        recorded: dict[str, bool] = {}
        items: list[tuple[list[_Change], _Beats]] = [([c], {}) for c in changes]
        items += [([], {device: beat}) for device, beat in beats.items()]
        for i, (one_change, one_beat) in enumerate(items):
            try:
                b, lo, r = self._write(one_change, one_beat)
            except DataError as exc:
                status = one_change[0][0] if one_change else next(iter(one_beat.values()))[0]
                log.error(
                    "rejected status of unit %s: the database refuses a value in it (%s)",
                    status.device_id,
                    type(exc.orig).__name__,
                )
                continue
            except Exception:
                rest = items[i:]
                self._requeue(
                    [c for cs, _ in rest for c in cs],
                    {d: beat for _, bs in rest for d, beat in bs.items()},
                )
                raise
            back += b
            lost += lo
            recorded.update(r)
        return back, lost, recorded

    def _write(
        self, changes: list[_Change], beats: _Beats
    ) -> tuple[list[str], list[tuple[Status, datetime]], dict[str, bool]]:
        """One transaction: the changes in order, then the beats. Returns the units
        managers were told are offline that are back, the beats of units another
        instance marked offline, and what the database holds for units first heard
        of by a retained "online"."""
        rows = [
            {
                "b_device": device,
                "b_seen": seen,
                "b_error": status.error,
                "b_uptime": status.uptime,
                "b_outbox": status.outbox,
                "b_version": status.version[:32],
            }
            for device, (status, seen) in beats.items()
        ]
        try:
            return self._write_once(changes, rows, beats)
        except IntegrityError:
            # A unit's first status raced the record the supervisor makes for each new
            # room: the record is there now, so once more.
            return self._write_once(changes, rows, beats)

    def _write_once(
        self, changes: list[_Change], rows: list[dict[str, Any]], beats: _Beats
    ) -> tuple[list[str], list[tuple[Status, datetime]], dict[str, bool]]:
        back: list[str] = []
        recorded: dict[str, bool] = {}
        with self._sessions.begin() as s:
            for status, now, retained in changes:
                if incidents.record_status(session=s, status=status, now=now, retained=retained):
                    back.append(status.device_id)
                if retained and status.state is LinkState.ONLINE:
                    device = s.get(DeviceRecord, status.device_id)  # in the session already
                    recorded[status.device_id] = bool(device and device.online)
            s.flush()  # the changes, before the beats' statement reads the table
            if rows:
                s.connection().execute(_BEAT, rows)
            lost = self._marked_offline(s, beats) if beats else []
        return back, lost, recorded

    def _requeue(self, changes: list[_Change], beats: _Beats) -> None:
        """Not written: back in the queues for the next flush, before what came since
        (a newer beat of the same unit wins), so a database hiccup never loses a change
        nor makes a beating unit look silent."""
        with self._lock:
            self._changes[:0] = changes
            for device, beat in beats.items():
                if device not in self._beats or self._beats[device][1] < beat[1]:
                    self._beats[device] = beat

    @staticmethod
    def _marked_offline(
        s: Session, beats: dict[str, tuple[Status, datetime]]
    ) -> list[tuple[Status, datetime]]:
        """The beats whose unit is offline in the database as of before the beat."""
        found: list[tuple[Status, datetime]] = []
        devices = list(beats)
        for chunk in (devices[i : i + _CHUNK] for i in range(0, len(devices), _CHUNK)):
            rows = s.execute(
                select(DeviceRecord.device_id, DeviceRecord.last_seen).where(
                    DeviceRecord.device_id.in_(chunk), DeviceRecord.online.is_(False)
                )
            )
            for device, last_seen in rows:
                status, seen = beats[device]
                if last_seen is None or last_seen < seen:
                    found.append((status, seen))
        return found

    def _again(self, status: Status, seen: datetime) -> None:
        with self._lock:
            if status.device_id in self._beats:
                self._known()[status.device_id] = False  # the newer beat does it next flush
                return
            self._queue(status, now=seen, retained=False)

    def mark_silent(
        self, devices: Collection[str], *, before: datetime, now: datetime
    ) -> list[str]:
        """Mark offline each of ``devices`` online but not heard from since ``before``
        (a beat or a change waiting for the next flush counts as heard). Returns
        their ids."""
        # NOTE: not while a flush writes: a beat it took is in neither queue until it
        # commits, and its unit would look silent.
        with self._writing, self._lock, self._sessions() as s:
            changing = {status.device_id for status, _, _ in self._changes}
            silent = [
                d
                for d in s.scalars(
                    select(DeviceRecord).where(
                        DeviceRecord.online.is_(True),
                        or_(DeviceRecord.last_seen.is_(None), DeviceRecord.last_seen < before),
                    )
                )
                if d.device_id in devices
                and d.device_id not in self._beats
                and d.device_id not in changing
            ]
            if not silent:
                return []  # nothing written: no transaction to commit
            for device in silent:
                incidents.mark_offline(
                    session=s, device=device, reason="silent", now=device.last_seen or now
                )
            s.commit()
            known = self._known()
            for device in silent:
                known[device.device_id] = False
            return [d.device_id for d in silent]

    def offline(self, room: Room, since: datetime) -> None:
        """A unit is offline: a technical incident that pages managers until acknowledged."""
        now = self._clock.now()
        with self._sessions.begin() as s:
            device = s.get(DeviceRecord, room.device)
            if device is None or device.offline_alerted or device.online:
                return  # told already, back meanwhile (a flush since the pass read it), unknown
            # NOTE: marked in the same transaction as the incident: never "told" without it.
            device.offline_alerted = True
            incident = Incident(
                alert_id=uuid.uuid4().hex,
                device_id=room.device,
                room_id=room.id,
                kind=IncidentKind.UNIT_OFFLINE,
                seq=0,
                pressed_at=since,
                received_at=now,
                state=State.OPEN,
                presses=1,
            )
            s.add(incident)
            s.flush()
            audit(
                s,
                at=now,
                type="device.offline_alerted",
                incident_id=incident.id,
                device=room.device,
                since=since,
            )
            pages = steps.start(session=s, site=self._site, incident=incident, now=now)
        self._pager.dispatch(pages)
        self._wake()

    def online(self, room: Room) -> None:
        """A unit that managers were told is offline is back: close its technical incidents."""
        now = self._clock.now()
        with self._sessions.begin() as s:
            open_ = list(
                s.scalars(
                    select(Incident).where(
                        Incident.device_id == room.device,
                        Incident.kind == IncidentKind.UNIT_OFFLINE,
                        Incident.state != State.RESOLVED,
                    )
                )
            )
            for incident in open_:
                incidents.resolve(
                    session=s,
                    incident=incident,
                    staff_id="system",
                    outcome=Outcome.RECOVERED,
                    now=now,
                )
        for incident in open_:
            self._tell.paged(
                incident.id,
                lambda m: messages.unit_online(m.language, room=room.label),
                purpose="unit_online",
            )
