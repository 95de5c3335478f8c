"""Alerts that arrive together are recorded in one transaction (group commit), and one
that cannot be recorded does not take the others with it."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import select

from panicbutton.clock import ManualClock
from panicbutton.wire import Alert, Feedback, FeedbackState, new_alert_id, now_utc
from server import incidents
from server.escalation.scheduler import FIRST_LEASE, STUCK_AFTER, Scheduler
from server.models import EscalationJob, JobStatus
from tests.harness import FLOOR, RECEPTION, System, wait_until

START = "2026-11-27T21:00:00+00:00"


def alert(device: str, pressed_at: datetime | None = None) -> Alert:
    return Alert(
        device_id=device, alert_id=new_alert_id(), seq=1, pressed_at=pressed_at or now_utc()
    )


def test_alerts_that_come_together_open_one_incident_each_in_one_commit(
    system: System,
) -> None:
    assert system.server is not None
    alerts = [alert(d) for d in ("unit-1", "unit-2", "unit-3")]
    outcomes = system.server.services.alerts.handle_many(alerts)
    assert [o.state for o in outcomes if isinstance(o, Feedback)] == [FeedbackState.RECEIVED] * 3
    opened = {i.alert_id: i for i in system.incidents()}
    assert set(opened) == {a.alert_id for a in alerts}
    # One transaction, one moment: the three were received at the same instant.
    assert len({i.received_at for i in opened.values()}) == 1


def test_an_alert_that_fails_in_a_batch_fails_alone(system: System) -> None:
    assert system.server is not None
    # A device time without a time zone cannot go into the database: recording it fails.
    bad = alert("unit-2", pressed_at=datetime(2026, 11, 30, 12, 0))
    alerts = [alert("unit-1"), bad, alert("unit-3")]
    outcomes = system.server.services.alerts.handle_many(alerts)
    assert isinstance(outcomes[0], Feedback)
    assert "naive datetime" in str(outcomes[1])
    assert isinstance(outcomes[2], Feedback)
    assert {i.alert_id for i in system.incidents()} == {alerts[0].alert_id, alerts[2].alert_id}
    # Redelivered, the two that were recorded open nothing new.
    again = system.server.services.alerts.handle_many([alerts[0], alerts[2]])
    assert [o.incident for o in again if isinstance(o, Feedback)] == [
        o.incident for o in (outcomes[0], outcomes[2]) if isinstance(o, Feedback)
    ]
    assert len(system.incidents()) == 2
    # The batch's rollback gave its numbers back: the log has no gap.
    numbers = [e.n for e in system.events()]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))


def test_an_alert_whose_step_0_never_ran_here_is_paged_by_the_scheduler(
    system: System,
) -> None:
    """The unit heard "received" after the incident's commit, and the server stopped
    before step 0's own: step 0 waits as a pending job, and the scheduler pages it
    (the plan frozen then, at the alert's time), once."""
    assert system.server is not None
    services = system.server.services
    site = services.book()
    lone = alert("unit-1")
    room = site.room_for_device(lone.device_id)
    assert room is not None
    now = services.clock.now()
    # What the first commit leaves; the second (Alerts.page_waiting) never comes.
    with services.sessions.begin() as s:
        result = incidents.record_alert(
            session=s, site=site, room=room, alert=lone, now=now, defer=True
        )
    assert result.deferred
    assert system.twilio.to(RECEPTION) == []
    services.scheduler.wake()
    assert system.twilio.wait_for(
        lambda sent: {s.to for s in sent} >= {RECEPTION, FLOOR}, timeout=10
    )
    system.wait_idle()
    [frozen] = system.events("escalation.plan_frozen")
    assert frozen.data["plan"]["opened"] == now.isoformat()
    # Once, and by the scheduler alone.
    assert [len(system.twilio.to(p)) for p in (RECEPTION, FLOOR)] == [1, 1]


def _born_claimed(system: System) -> int:
    """An alert recorded as the ingest records one: its step 0 job claimed by this
    instance, to be run after the receipt. Returns its incident."""
    assert system.server is not None
    services = system.server.services
    site = services.book()
    lone = alert("unit-1")
    room = site.room_for_device(lone.device_id)
    assert room is not None
    with services.sessions.begin() as s:
        result = incidents.record_alert(
            session=s,
            site=site,
            room=room,
            alert=lone,
            now=services.clock.now(),
            defer=True,
            claimed_by=system.settings.instance_name,
        )
    assert result.deferred
    return result.incident.id


def test_a_step_0_its_own_run_claimed_is_paged_at_once_by_the_next_start(
    system: System,
) -> None:
    """Step 0's job is born claimed by the instance that recorded the alert (no
    scheduler races it for the job); should that run die before step 0, the next start
    under the same name pages it at once, without waiting for the claim to lapse."""
    assert system.server is not None
    services = system.server.services
    name = system.settings.instance_name
    _born_claimed(system)
    # The next start's scheduler, as the crashed run left the database.
    again = Scheduler(
        sessions=services.sessions,
        clock=services.clock,
        run_job=services.runner.run_job,
        instance=name,
    )
    again.run_due()
    assert system.twilio.wait_for(
        lambda sent: {s.to for s in sent} >= {RECEPTION, FLOOR}, timeout=10
    )
    system.wait_idle()
    assert [len(system.twilio.to(p)) for p in (RECEPTION, FLOOR)] == [1, 1]


def test_an_alert_twice_in_a_batch_opens_one_incident_and_each_press_is_in_sequence(
    system: System,
) -> None:
    """A unit's resend that came with its first copy opens nothing more; two alerts of
    one unit in one batch follow each other in its sequence (no gap is logged)."""
    assert system.server is not None
    first = alert("unit-1")
    second = Alert(device_id="unit-1", alert_id=new_alert_id(), seq=2, pressed_at=now_utc())
    outcomes = system.server.services.alerts.handle_many([first, alert("unit-2"), first, second])
    feedback = [o for o in outcomes if isinstance(o, Feedback)]
    assert len(feedback) == 4
    assert feedback[0].incident == feedback[2].incident
    assert len({f.incident for f in feedback}) == 3
    assert len(system.incidents()) == 3
    kinds = [e.type for e in system.events()]
    assert kinds.count("alert.raised") == 3
    assert not [k for k in kinds if k.startswith("device.sequence")], kinds


def _scheduler_pass(system: System, seconds: float) -> None:
    """Move the clock on, and wait for a whole pass of the scheduler after it."""
    assert system.server is not None
    assert isinstance(system.clock, ManualClock)
    system.clock.advance(seconds)
    scheduler = system.server.services.scheduler
    for _ in range(2):  # the first may have begun before the clock moved
        before = scheduler.passes
        scheduler.wake()
        assert wait_until(lambda: scheduler.passes > before)  # noqa: B023 -- waited here


def _step_0_ran_once(system: System) -> None:
    """One plan, one step 0 (later steps, due by then on the moved clock, may follow)."""
    assert len(system.events("escalation.plan_frozen")) == 1
    steps = [e.data["step"] for e in system.events("escalation.step_started")]
    assert steps.count(0) == 1, steps


@pytest.mark.clock(START)
def test_a_step_0_the_ingest_gave_up_is_taken_by_its_own_scheduler(system: System) -> None:
    """Step 0 failed and so did giving its job back (the database was away): the job is
    still claimed by this instance, which no longer holds it. Its own scheduler pages it
    once the claim is older than a stuck job's, not after the first lease (a minute)."""
    assert system.server is not None
    _born_claimed(system)
    _scheduler_pass(system, STUCK_AFTER + 1)
    assert system.twilio.wait_for(lambda sent: {s.to for s in sent} >= {RECEPTION, FLOOR})
    system.wait_idle()
    _step_0_ran_once(system)
    assert len(system.events("escalation.job_redriven")) == 1


@pytest.mark.clock(START)
def test_a_step_0_the_ingest_holds_is_never_taken_by_the_scheduler(system: System) -> None:
    """In a long storm a step 0 may wait behind the receipts for longer than its first
    lease: its scheduler leaves it to the ingest, which holds it, so that the two never
    run one step 0 together. Once the ingest lets go of it, the scheduler takes it."""
    assert system.server is not None
    alerts = system.server.services.alerts
    incident = _born_claimed(system)
    alerts._running.add(incident)  # the ingest is about to run it
    _scheduler_pass(system, FIRST_LEASE + STUCK_AFTER)
    with system.server.services.sessions() as s:
        job = s.scalars(select(EscalationJob).where(EscalationJob.incident_id == incident)).one()
        assert (job.status, job.claimed_by) == (JobStatus.RUNNING, system.settings.instance_name)
    assert system.twilio.sent == []
    alerts._running.discard(incident)  # it gave up
    _scheduler_pass(system, 1)
    assert system.twilio.wait_for(lambda sent: {s.to for s in sent} >= {RECEPTION, FLOOR})
    system.wait_idle()
    _step_0_ran_once(system)
