"""What a room unit's light should show for its incident, and sending it there.

The feedback goes out through an injected sink (the MQTT link in production),
read fresh under a lock so that two threads publishing for one incident
cannot leave an older state retained at the broker.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from panicbutton.wire import Alert, Feedback, FeedbackState
from server.incidents import FEEDBACK_FOR
from server.models import FROM_BUTTON, Incident, IncidentKind, State
from server.site import PHONE_PREFIX

#: Publishes feedback to a unit: (device id, feedback, retain).
FeedbackSink = Callable[[str, Feedback, bool], None]


def feedback_of(incident: Incident, now: datetime) -> Feedback:
    """Where ``incident`` stands, as its unit's feedback message."""
    return Feedback(
        alert_id=incident.alert_id,
        state=FEEDBACK_FOR[State(incident.state)],
        at=now,
        incident=incident.id,
        presses=incident.presses,
        round=incident.round,
    )


class Lights:
    """Tells room units where their alerts stand."""

    def __init__(self, *, sessions: sessionmaker[Session], publish: FeedbackSink) -> None:
        self._sessions = sessions
        self._publish = publish
        self._lock = threading.Lock()

    def show(self, incident: Incident, now: datetime) -> None:
        """Tell the unit of ``incident`` where it stands now (button incidents only);
        retained for a panic alert, not for a test. A test started from the server
        (``seq`` 0) is not the unit's alert: it is told nothing (its light would take
        an alert it does not hold for the one it shows)."""
        self.show_all([incident], now)

    def show_all(self, incidents: list[Incident], now: datetime) -> None:
        """:meth:`show` for each of ``incidents`` (alerts committed together), read
        fresh in one query."""
        ids = [
            i.id
            for i in incidents
            if i.kind in FROM_BUTTON
            and not (i.kind == IncidentKind.TEST and i.seq == 0)
            # A worker's phone reads its alarm's state over HTTPS (server.mobile).
            and not i.device_id.startswith(PHONE_PREFIX)
        ]
        if not ids:
            return
        with self._lock, self._sessions() as s:
            fresh = {i.id: i for i in s.scalars(select(Incident).where(Incident.id.in_(ids)))}
            for incident_id in ids:
                incident = fresh[incident_id]
                self._publish(
                    incident.device_id,
                    feedback_of(incident, now),
                    incident.kind == IncidentKind.PANIC,
                )

    def refuse(self, alert: Alert, now: datetime) -> Feedback:
        """Tell a unit its alert is over without opening anything (see
        :meth:`server.units.alerts.Alerts.handle`); not retained, so the feedback
        of its own alerts stays."""
        feedback = Feedback(
            alert_id=alert.alert_id,
            state=FeedbackState.RESOLVED,
            at=now,
            incident=0,
            presses=alert.presses,
        )
        self._publish(alert.device_id, feedback, False)
        return feedback
