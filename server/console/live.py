"""Keeping open boards live: one watcher per server instance reads the board when
something changed, and every open board (a Server-Sent Events stream) gets it.

What wakes the watcher: any commit of this instance (an alert, an
acknowledgement, a heartbeat; a SQLAlchemy ``after_commit`` hook), on PostgreSQL
a ``NOTIFY`` from another instance that appended to the log
(:class:`server.cluster.Notices`: an alarm taken in there shows here at once),
and every :data:`POLL` seconds a look at the database, for any other change.
It reads the board only when the log grew, a unit's record changed, a phone
shared a position or a resolved alarm aged off, so a quiet site costs two small queries
per poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

from sqlalchemy import Integer, cast, event, func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from server.console import board
from server.mobile.tables import Position
from server.models import DeviceRecord, LogEntry
from server.services import Services

log = logging.getLogger(__name__)

#: How often the watcher looks at the database for another instance's changes, in seconds.
POLL = 0.5
#: The least time between two reads of the board, in seconds (a burst is one read).
SETTLE = 0.02
#: How often an open board checks that its session still holds, in seconds.
SESSION_CHECK = 5.0
#: Live boards one browser session may hold open at once (tabs, a reconnect overlapping).
STREAMS_PER_SESSION = 4


class Hub:
    """The board as this instance last read it, and a way to wait for the next one."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self._latest: board.BoardView | None = None
        self._version = 0
        self._changed: asyncio.Condition | None = None
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._watchers = 0
        #: Open streams per session (its row key), for :data:`STREAMS_PER_SESSION`.
        self._streams: dict[str, int] = {}
        event.listen(services.sessions, "after_commit", self._committed)
        services.cluster.notices.subscribe(self._poke)

    def admit(self, session_key: str) -> bool:
        """Count one more stream of a session, if it may open one."""
        if self._streams.get(session_key, 0) >= STREAMS_PER_SESSION:
            return False
        self._streams[session_key] = self._streams.get(session_key, 0) + 1
        return True

    def release(self, session_key: str) -> None:
        left = self._streams.get(session_key, 0) - 1
        if left > 0:
            self._streams[session_key] = left
        else:
            self._streams.pop(session_key, None)

    def _committed(self, _session: Session) -> None:
        self._poke()

    def _poke(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            loop.call_soon_threadsafe(wake.set)

    def _signature(self) -> tuple[Any, ...]:
        now = self._services.clock.now()
        with self._services.sessions() as s:
            size = s.scalar(select(func.max(LogEntry.n)))
            units = s.execute(
                select(
                    func.count(),
                    func.sum(cast(DeviceRecord.online, Integer)),
                    func.max(DeviceRecord.last_seen),
                    func.sum(DeviceRecord.outbox),
                )
            ).one()
            # A phone's card says how long ago it last shared its position.
            fix = s.scalar(select(func.max(Position.received_at)))
        # A resolved alarm leaves the board after board.RECENT: a new minute re-reads it.
        return (size, tuple(units), fix, now.replace(second=0, microsecond=0))

    def _read(self) -> board.BoardView:
        services = self._services
        with services.sessions() as s:
            return board.read(s, services.site, services.clock.now())

    async def _watch(self) -> None:
        assert self._wake is not None
        assert self._changed is not None
        seen: tuple[Any, ...] | None = None
        while True:
            try:
                signature = await run_in_threadpool(self._signature)
                if signature != seen or self._latest is None:
                    view = await run_in_threadpool(self._read)
                    seen = signature
                    async with self._changed:
                        self._latest = view
                        self._version += 1
                        self._changed.notify_all()
            except Exception:  # the database is away: keep the last board, try again
                log.exception("the live board could not be read; trying again")
            self._wake.clear()
            # NOTE: asyncio.timeout, not wait_for: a wait_for cancelled while the event
            # loop shuts down left its inner wait pending, holding the shutdown up.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL):
                    await self._wake.wait()
            await asyncio.sleep(SETTLE)

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._loop is not loop:
            self._loop = loop
            self._wake = asyncio.Event()
            self._changed = asyncio.Condition()
            self._latest = None
            self._task = asyncio.create_task(self._watch())

    async def _stop_when_idle(self) -> None:
        if self._watchers == 0 and self._task is not None:
            self._task.cancel()
            self._task = None

    async def views(self) -> AsyncGenerator[board.BoardView]:
        """Each new board, the current one first, for as long as the caller iterates."""
        self._start()
        assert self._changed is not None
        changed = self._changed
        self._watchers += 1
        seen = 0

        def fresh() -> bool:
            return self._version > seen and self._latest is not None

        try:
            while True:
                async with changed:
                    await changed.wait_for(fresh)
                    seen = self._version
                    view = self._latest
                assert view is not None
                yield view
        finally:
            self._watchers -= 1
            await self._stop_when_idle()


async def stream(
    hub: Hub,
    render: Callable[[board.BoardView], str],
    gone: Callable[[], str | None],
    *,
    released: Callable[[], None] = lambda: None,
) -> AsyncIterator[dict[str, str]]:
    """The events of one open board: ``board`` with its HTML each time it changes, and
    ``signed-out`` with a page to go to (then the end) once ``gone`` names one: the
    session ended (signed out, expired, the account closed) or its rights changed
    (checked every :data:`SESSION_CHECK` seconds, whether or not the board changes).
    ``released`` is called once the stream ends."""
    views = hub.views()
    upcoming: asyncio.Future[board.BoardView] | None = None
    checked = time.monotonic()
    try:
        while True:
            if upcoming is None:
                upcoming = asyncio.ensure_future(anext(views))
            left = SESSION_CHECK - (time.monotonic() - checked)
            arrived, _ = await asyncio.wait({upcoming}, timeout=max(0.0, left))
            # NOTE: on the clock, not only when the board is quiet: a board that changes
            # all the time (a storm) must still stop once its session ends.
            if time.monotonic() - checked >= SESSION_CHECK:
                checked = time.monotonic()
                where = await run_in_threadpool(gone)
                if where is not None:
                    yield {"event": "signed-out", "data": where}
                    return
            if not arrived:
                continue
            view = upcoming.result()
            upcoming = None
            yield {"event": "board", "data": render(view)}
    finally:
        if upcoming is not None:
            upcoming.cancel()
            # The generator must be left before it can be closed.
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await upcoming
        await views.aclose()
        released()
