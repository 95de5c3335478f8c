"""Runs escalation jobs when they fall due; re-drives jobs a crash left behind.

One thread sleeps until the earliest pending job's due time (or until woken
because a job was added or moved: here, or in another instance through
:class:`server.cluster.Notices`), claims each due job in turn (a conditional
UPDATE; on PostgreSQL ``FOR UPDATE SKIP LOCKED``, so several server instances
never run the same job nor wait on each other's), runs it in one transaction
with the pages it creates, then hands the pages to the pager. A claim names the
instance and lapses after :data:`STUCK_AFTER` seconds. Every ``watchdog``
seconds, and when an instance is found stopped, it also looks for jobs left
"running" by a process that died (a lapsed claim, one held by an instance no
longer alive, or one claimed under this instance's name before it started) and
puts them back (their pages are unique, so nothing is sent
twice). Alarm work is pushed, never polled at a coarse interval: a due job
runs within milliseconds of its time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from panicbutton.clock import Clock
from server import db
from server.cluster import LEASE
from server.log.append import audit
from server.models import EscalationJob, JobStatus

log = logging.getLogger(__name__)

#: A job "running" longer than this (seconds) was left by a process that died: a
#: job is one short transaction (its pages are sent afterwards, by the pager).
STUCK_AFTER = 10.0
#: Seconds a step 0 job stays claimed by the instance that recorded its alert and runs
#: it after the receipt (:func:`server.escalation.steps.defer`): a storm's last step 0
#: may wait behind a thousand receipts. Should the instance die, its jobs are taken
#: sooner: by another instance once it is found stopped, by its next start at once.
FIRST_LEASE = 60.0


class Scheduler:
    """``run_job(job_id, now)`` does one claimed job. ``wake`` is set by whoever adds
    or moves a job (the services get its ``set``); the scheduler then looks again.
    ``instance`` names this server instance in its claims; ``live()`` gives the instances
    alive (:class:`server.cluster.Instances`): a job another one holds is taken back
    once that one is gone."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        clock: Clock,
        run_job: Callable[[int, datetime], None],
        watchdog: float = 5.0,
        on_pass: Callable[[], object] = lambda: None,
        wake: threading.Event | None = None,
        instance: str = "local",
        live: Callable[[], set[str]] | None = None,
        holds: Callable[[], Collection[int]] = frozenset,
    ) -> None:
        """``holds()``: the incidents whose step 0 this instance's ingest has still to
        run (:meth:`server.units.alerts.Alerts.holds`); their jobs, born claimed by this
        instance, are never taken here, however long a storm keeps them waiting."""
        self._instance = instance
        self._holds = holds
        #: A job claimed under this instance's name before this moment was left by an
        #: earlier run of it (a crash): taken back at once, without waiting for its lease.
        self._started = clock.now()
        self._live = live
        self._on_pass = on_pass
        self._sessions = sessions
        self._clock = clock
        self._run_job = run_job
        self._watchdog = watchdog
        self._wake = wake or threading.Event()
        self._stop = threading.Event()
        #: Passes finished, and whether one is under way (for tests waiting for quiet).
        self.passes = 0
        self.in_pass = False
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)

    def start(self) -> None:
        """Start running due jobs (again, after :meth:`stop`)."""
        if self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def wake(self) -> None:
        """A job was added or moved: look again now."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            self.in_pass = True
            try:
                next_due = self.run_due()
            except Exception:  # the loop must outlive a database hiccup
                log.exception("escalation pass failed; trying again")
                next_due = None
            finally:
                self.in_pass = False
                self.passes += 1
            if self._stop.is_set():
                return
            self._clock.wait(self._wake, next_due, self._watchdog)

    def run_due(self) -> datetime | None:
        """Run every due job; return when the next one is due."""
        now = self._clock.now()
        self._redrive(now)
        self._on_pass()
        # One at a time: a job this instance has not claimed yet stays free for another.
        while (job_id := self._claim_next(now)) is not None:
            try:
                self._run_job(job_id, self._clock.now())
            except Exception:
                log.exception("escalation job %d failed; it will be re-driven", job_id)
        with self._sessions() as s:
            nxt: datetime | None = s.scalar(
                select(func.min(EscalationJob.due_at)).where(
                    EscalationJob.status == JobStatus.PENDING
                )
            )
        if nxt is not None and nxt.tzinfo is None:  # SQLite's min() bypasses the column type
            nxt = nxt.replace(tzinfo=UTC)
        return nxt

    def _claim_next(self, due: datetime) -> int | None:
        """Claim the earliest job due by ``due``; None when none is left unclaimed."""
        now = self._clock.now()
        with self._sessions.begin() as s:
            won = db.claim(
                s,
                EscalationJob,
                EscalationJob.status == JobStatus.PENDING,
                EscalationJob.due_at <= due,
                values={
                    "status": JobStatus.RUNNING,
                    "claimed_at": now,
                    "claimed_by": self._instance,
                    "lease_until": now + timedelta(seconds=STUCK_AFTER),
                },
                order_by=(EscalationJob.due_at, EscalationJob.id),
                limit=1,
            )
        return won[0] if won else None

    def _redrive(self, now: datetime) -> None:
        cutoff = now - timedelta(seconds=STUCK_AFTER)
        mine = EscalationJob.claimed_by == self._instance
        lapsed = or_(
            EscalationJob.lease_until < now,
            EscalationJob.lease_until.is_(None) & (EscalationJob.claimed_at < cutoff),
            mine & (EscalationJob.claimed_at < self._started),
            # A step 0 this instance's ingest gave up (the database was away, even to give
            # it back): it holds it no more. Never this scheduler's own: it runs one job
            # at a time, on this thread.
            mine & (EscalationJob.claimed_at < cutoff),
        )
        if self._live is not None:  # held by an instance that stopped: no need to wait
            gone = EscalationJob.claimed_by.not_in(self._live()) & (
                EscalationJob.claimed_at < now - timedelta(seconds=LEASE)
            )
            lapsed = or_(lapsed, gone)
        held = list(self._holds())
        if held:
            lapsed = lapsed & ~(mine & EscalationJob.incident_id.in_(held))
        with self._sessions.begin() as s:
            stuck = list(
                s.scalars(
                    select(EscalationJob)
                    .where(EscalationJob.status == JobStatus.RUNNING, lapsed)
                    .with_for_update(skip_locked=True)
                )
            )
            for job in stuck:
                job.status = JobStatus.PENDING
                audit(
                    s,
                    at=now,
                    type="escalation.job_redriven",
                    incident_id=job.incident_id,
                    kind=job.kind,
                    step=job.step,
                )
        if stuck:
            log.warning(
                "re-driving %d escalation job(s) left running by a stopped process", len(stuck)
            )
