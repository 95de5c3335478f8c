"""Escalation step timing over many incidents: how late a due step runs, and is sent.

A server of its own (:class:`tests.harness.System`, fresh database) on a site
whose escalation is: step 0 at once to the two people on duty, step 1 after
``STEP1_AFTER`` s to all three staff, SMS only, then every 10 s. The bench opens
``n`` incidents ~0.2 s apart by publishing alerts (paho, QoS 1) from unit-1..3
in turn, each with a fresh alert id; nobody acknowledges. Once every incident's
step-1 SMS has gone out it reads:

* scheduler lag: ``lag_ms`` of every ``escalation.step_started`` event of a step
  >= 1 in the audit log (due time -> the job runs, on the server's clock);
* due -> SMS request: for each step-1 page, the fake Twilio's receipt of the
  request that carried it (found by the page's provider sid; ``Sent.at`` is
  ``time.monotonic()``, turned into wall time by an offset taken once at the
  start) minus the due time, the incident's ``received_at`` + ``STEP1_AFTER``.

Then it resolves every incident so nothing keeps paging.
"""

from __future__ import annotations

import textwrap
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from panicbutton.wire import QOS, Alert, alert_topic, new_alert_id, now_utc
from server.models import Incident, Outcome, Page, State
from server.site import Site
from tests.bench.floor import close, connect
from tests.bench.stats import SUMMARY_HEADERS, Summary, table
from tests.fakes.twilio import Sent
from tests.harness import DEVICES, System, sample_site, wait_until

STEP1_AFTER = 2
REPEAT_EVERY = 10
#: Seconds between two alerts.
SPACING = 0.2
TIMEOUT = 30.0

ESCALATION: dict[str, Any] = {
    "steps": [
        {"after": 0, "who": "on_duty", "channels": ["sms"]},
        {"after": STEP1_AFTER, "who": "all_staff", "channels": ["sms"]},
    ],
    "repeat_every": REPEAT_EVERY,
}


def escalation_site() -> Site:
    return sample_site(escalation=ESCALATION)


@dataclass
class EscalationRun:
    """Seconds."""

    incidents: int
    #: due -> job run (lag_ms), every step >= 1 that ran, by step number.
    lags: dict[int, list[float]] = field(default_factory=dict)
    #: due -> SMS request at the fake Twilio, one per step-1 page.
    sends: list[float] = field(default_factory=list)
    #: job run (page created) -> SMS request, one per step-1 page.
    pager: list[float] = field(default_factory=list)
    #: due -> SMS request for step-1 pages that went out alone (not bundled with
    #: pages of other incidents to the same person).
    alone: list[float] = field(default_factory=list)
    #: Step-1 pages that shared one SMS with pages of other incidents.
    bundled: int = 0
    #: Seconds from the first alert to the last step-1 SMS request.
    span: float = 0.0


def measure_escalation(
    *,
    mqtt_port: int,
    users: dict[str, str],
    database_url: str,
    folder: Path,
    incidents: int,
    progress: Callable[[str], None] | None = None,
) -> EscalationRun:
    """Run ``incidents`` incidents on a server of their own; see the module docstring."""
    folder.mkdir(parents=True, exist_ok=True)
    with System(
        mqtt_port=mqtt_port,
        users=users,
        database_url=database_url,
        folder=folder,
        site=escalation_site(),
        settings={"sms_bundle_window": 0.0, "call_bundle_window": 0.0},
    ) as system:
        # Step timing, not sender throughput: Twilio queues a sender's excess instead of
        # refusing it, so the fake's stricter per-sender 429 is off here.
        system.twilio.sender_rate = 0.0
        try:
            return _measure(system, incidents, progress)
        finally:
            _resolve_all(system)


def _measure(
    system: System, incidents: int, progress: Callable[[str], None] | None
) -> EscalationRun:
    assert system.server is not None
    sessions = system.server.services.sessions
    staff = len(system.site.staff)
    # wall time (time.time(), the server's clock) = time.monotonic() + offset
    offset = time.time() - time.monotonic()
    clients = {d: connect(d, d, system.users[d], system.mqtt_port) for d in DEVICES}
    seqs = dict.fromkeys(DEVICES, 0)

    def step1_sent() -> int:
        with sessions() as s:
            sent: int = (
                s.scalar(
                    select(func.count())
                    .select_from(Page)
                    .where(Page.step == 1, Page.channel == "sms", Page.status == "sent")
                )
                or 0
            )
        return sent

    # NOTE: only our alerts count: the broker may still hold messages queued for the
    # server's persistent session by earlier parts of the bench (the floor's).
    published: set[str] = set()
    try:
        first = time.monotonic()
        for i in range(incidents):
            time.sleep(max(0.0, first + i * SPACING - time.monotonic()))
            device = DEVICES[i % len(DEVICES)]
            seqs[device] += 1
            alert = Alert(
                device_id=device, alert_id=new_alert_id(), seq=seqs[device], pressed_at=now_utc()
            )
            published.add(alert.alert_id)
            clients[device].publish(alert_topic(device), alert.to_json(), qos=QOS)
        if progress is not None:
            progress(f"escalation: {incidents} alerts published; waiting for every step 1")
        if not wait_until(lambda: step1_sent() >= incidents * staff, TIMEOUT, 0.05):
            raise TimeoutError(
                f"bench: after {TIMEOUT} s only {step1_sent()} of {incidents * staff} "
                "step-1 SMS were sent"
            )
    finally:
        for client in clients.values():
            close(client)

    run = EscalationRun(incidents=incidents)
    for event in system.events("escalation.step_started"):
        step = int(event.data["step"])
        if step >= 1:
            run.lags.setdefault(step, []).append(event.data["lag_ms"] / 1000)
    with sessions() as s:
        received = {
            i.id: i.received_at.timestamp()
            for i in s.scalars(select(Incident).where(Incident.alert_id.in_(published)))
        }
        pages = list(
            s.scalars(
                select(Page).where(Page.channel == "sms", Page.incident_id.in_(list(received)))
            )
        )
    if len(received) != incidents:
        raise RuntimeError(f"bench: {incidents} alerts made {len(received)} incidents")
    by_sid: dict[str, Sent] = {sent.sid: sent for sent in list(system.twilio.sent)}
    share = Counter(p.provider_sid for p in pages if p.provider_sid)
    last = 0.0
    for page in pages:
        if page.step != 1:
            continue
        sent = by_sid.get(page.provider_sid or "")
        if sent is None:
            raise RuntimeError(f"bench: page {page.id} has no request at the fake Twilio")
        at = sent.at + offset
        due = received[page.incident_id] + STEP1_AFTER
        run.sends.append(at - due)
        run.pager.append(at - page.created_at.timestamp())
        if share[page.provider_sid or ""] > 1:
            run.bundled += 1
        else:
            run.alone.append(at - due)
        last = max(last, sent.at)
    run.span = last - first
    return run


def _resolve_all(system: System) -> None:
    """Close every incident (outcome: test), so nothing keeps paging."""
    if system.server is None:
        return
    services = system.server.services
    with services.sessions() as s:
        open_ids = list(s.scalars(select(Incident.id).where(Incident.state != State.RESOLVED)))
    for incident_id in open_ids:
        services.responder.resolve(
            incident_id=incident_id, staff_id="reception", outcome=Outcome.TEST
        )


def escalation_report(run: EscalationRun, db: str) -> list[str]:
    """The report's section, as lines."""
    rows: list[list[str]] = []
    all_lags = [lag for lags in run.lags.values() for lag in lags]
    if all_lags:
        rows.append(Summary.of(all_lags).row("(a) scheduler lag: due -> job runs (lag_ms)"))
        rows += [
            Summary.of(lags).row(f"  step {step}" + (" (first repeat)" if step >= 2 else ""))
            for step, lags in sorted(run.lags.items())
        ]
    if run.sends:
        rows.append(Summary.of(run.sends).row("(b) due -> step-1 SMS request at fake Twilio"))
        rows.append(Summary.of(run.pager).row("  job runs -> SMS request (pager)"))
    if run.alone and run.bundled:
        rows.append(Summary.of(run.alone).row("  (b) for SMS not bundled"))
    text = (
        f"{run.incidents} incidents opened {SPACING:.1f} s apart by alerts published (paho, "
        "QoS 1) from unit-1..3 in turn, a fresh alert id each. Escalation: step 0 at once to "
        f"the two on duty, step 1 after {STEP1_AFTER} s to all three staff (SMS only), then "
        f"every {REPEAT_EVERY} s; nobody acknowledges. (a) is lag_ms of each "
        "escalation.step_started event of a step >= 1 (server clock: due -> its job runs). "
        "(b) is, per step-1 page, the fake Twilio's receipt of the request carrying it "
        f"(matched by provider sid) minus the due time (incident received_at + {STEP1_AFTER} "
        "s), monotonic turned into wall time by one offset taken at the start. "
        f"{run.bundled} of {len(run.sends)} step-1 pages went out bundled with pages of "
        "other incidents for the same person (the pager holds a person's pages for up to "
        "3 s after an SMS about another incident, then sends one SMS listing the rooms)"
        + (", so (b) includes that hold, by design. " if run.bundled else ". ")
        + f"The last step-1 SMS went out {run.span:.1f} s after the first alert. In ms:"
    )
    return [
        "",
        f"4. Escalation step timing (server on {db}; a fresh database and server of its own)",
        textwrap.fill(text, 90, initial_indent="   ", subsequent_indent="   "),
        "",
        table(SUMMARY_HEADERS, rows),
    ]
