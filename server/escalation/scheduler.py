"""Runs escalation jobs when they fall due; re-drives jobs a crash left behind.

One thread sleeps until the earliest pending job's due time (or until woken
because a job was added or moved), claims each due job with a conditional
UPDATE (so several server instances never run the same job), runs it in one
transaction with the pages it creates, then hands the pages to the pager.
Every ``watchdog`` seconds it also looks for jobs left "running" by a process
that died, and puts them back (their pages are unique, so nothing is sent
twice). Alarm work is pushed, never polled at a coarse interval: a due job
runs within milliseconds of its time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from panicbutton.clock import Clock
from server.db import changed
from server.log.append import audit
from server.models import EscalationJob, JobStatus

log = logging.getLogger(__name__)

#: A job "running" longer than this (seconds) was left by a process that died: a
#: job is one short transaction (its pages are sent afterwards, by the pager).
STUCK_AFTER = 10.0


class Scheduler:
    """``run_job(job_id, now)`` does one claimed job. ``wake`` is set by whoever adds
    or moves a job (the services get its ``set``); the scheduler then looks again."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        clock: Clock,
        run_job: Callable[[int, datetime], None],
        watchdog: float = 5.0,
        on_pass: Callable[[], object] = lambda: None,
        wake: threading.Event | None = None,
    ) -> None:
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
        with self._sessions() as s:
            due = list(
                s.scalars(
                    select(EscalationJob.id)
                    .where(EscalationJob.status == JobStatus.PENDING, EscalationJob.due_at <= now)
                    .order_by(EscalationJob.due_at, EscalationJob.id)
                )
            )
        for job_id in due:
            if self._claim(job_id):
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

    def _claim(self, job_id: int) -> bool:
        with self._sessions.begin() as s:
            claimed = changed(
                s,
                update(EscalationJob)
                .where(EscalationJob.id == job_id, EscalationJob.status == JobStatus.PENDING)
                .values(status=JobStatus.RUNNING, claimed_at=self._clock.now()),
            )
        return bool(claimed)

    def _redrive(self, now: datetime) -> None:
        cutoff = now - timedelta(seconds=STUCK_AFTER)
        with self._sessions.begin() as s:
            stuck = list(
                s.scalars(
                    select(EscalationJob).where(
                        EscalationJob.status == JobStatus.RUNNING, EscalationJob.claimed_at < cutoff
                    )
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
