"""Alerts that arrive together are recorded in one transaction (group commit), and one
that cannot be recorded does not take the others with it."""

from __future__ import annotations

from datetime import datetime

from panicbutton.wire import Alert, Feedback, FeedbackState, new_alert_id, now_utc
from server import incidents
from server.escalation.scheduler import Scheduler
from tests.harness import FLOOR, RECEPTION, System


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


def test_a_step_0_its_own_run_claimed_is_paged_at_once_by_the_next_start(
    system: System,
) -> None:
    """Step 0's job is born claimed by the instance that recorded the alert (no
    scheduler races it for the job); should that run die before step 0, the next start
    under the same name pages it at once, without waiting for the claim to lapse."""
    assert system.server is not None
    services = system.server.services
    site = services.book()
    lone = alert("unit-1")
    room = site.room_for_device(lone.device_id)
    assert room is not None
    name = system.settings.instance_name
    with services.sessions.begin() as s:
        result = incidents.record_alert(
            session=s,
            site=site,
            room=room,
            alert=lone,
            now=services.clock.now(),
            defer=True,
            claimed_by=name,
        )
    assert result.deferred
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
