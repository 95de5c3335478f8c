"""Findings a reviewer must see, read from the entries' meaning, not their integrity:
alarms never acknowledged, never paged, late or stopped paging, alerts lost between unit
and server, silent periods of the server (``VERIFY.md`` section 11)."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta

from panicbutton.log import spec
from panicbutton.log.verdict import Report

#: An escalation step that started later than this after its due time is late.
LATE_MS = 15_000
#: Heartbeats are every 15 minutes; a longer silence than this is reported.
SILENCE = timedelta(minutes=20)
#: A plan's repeat beyond this (seconds) is no plan the server makes; it is not checked.
MAX_REPEAT = 10**7
#: Slack after the plan's repeat before an open alarm counts as no longer paged.
PAGING_SLACK = timedelta(seconds=60)
#: An alarm whose plan is not frozen this long after it was raised was never paged
#: (step 0 follows the opening entries within a second, seconds in a storm).
PLAN_SLACK = timedelta(seconds=60)


def check_meaning(  # noqa: PLR0912 - one branch per kind of finding
    entries: Sequence[spec.Entry], report: Report, *, full: bool
) -> None:
    """Findings a reviewer must see: alarms never acknowledged, late or stopped paging,
    alerts lost between unit and server, silent periods of the server."""
    if not entries:
        return
    end = spec.parse_time(entries[-1].at)
    by_incident: dict[int, list[spec.Entry]] = defaultdict(list)
    seqs: dict[str, list[tuple[int, int]]] = defaultdict(list)
    last_beat: datetime | None = None
    for e in entries:
        if e.incident is not None:
            by_incident[e.incident].append(e)
        if e.type == "alert.raised" and number(e.data.get("seq")) >= 1:
            # seq 0: a test started from the server (test.started), not the unit's number.
            seqs[str(e.data.get("device"))].append((number(e.data.get("seq")), e.n))
        elif e.type == "device.sequence_gap":
            report.findings.append(
                f"entry {e.n}: unit {e.data.get('device')} skipped alert numbers "
                f"{e.data.get('expected')}..{number(e.data.get('got')) - 1}: alerts never received"
            )
        elif e.type == "device.sequence_back":
            report.findings.append(
                f"entry {e.n}: unit {e.data.get('device')} sent alert number "
                f"{e.data.get('got')} after {e.data.get('previous')}: an old outbox put back, "
                "or a unit replaying numbers"
            )
        elif e.type == "alert.refused":
            report.findings.append(
                f"entry {e.n}: unit {e.data.get('device')} sent an alert id that another unit's "
                "incident holds (a cloned unit, or a unit's credentials misused): refused"
            )
        elif e.type in ("escalation.step_started", "escalation.follow_up"):
            lag = number(e.data.get("lag_ms"))
            if lag > LATE_MS:
                report.findings.append(
                    f"entry {e.n}: incident {e.incident} step {e.data.get('step')} started "
                    f"{lag / 1000:.1f} s after it was due"
                )
        elif e.type == "log.verified" and e.data.get("result") == "failed":
            report.findings.append(
                f"entry {e.n}: the server's own check of the log failed: the stored log did "
                "not match its signed checkpoints then (see the server's log of that time)"
            )
        elif e.type == "log.heartbeat" and full:
            at = spec.parse_time(e.at)
            if last_beat and at - last_beat > SILENCE:
                report.findings.append(
                    f"entry {e.n}: no heartbeat from {spec.format_time(last_beat)} to {e.at}: "
                    "the server was not running or not writing its log"
                )
            last_beat = at
    if full and last_beat is not None and end - last_beat > SILENCE:
        report.findings.append(
            f"entry {entries[-1].n}: no heartbeat from {spec.format_time(last_beat)} to the "
            f"log's last entry at {entries[-1].at}: the server was not running or not "
            "writing its log"
        )
    for device, numbers in seqs.items():
        # In log order: a number lower than the one before is a reset (a new outbox),
        # not a gap.
        for (a, _), (b, n) in itertools.pairwise(numbers):
            if b > a + 1 and not any(
                f"unit {device} skipped alert numbers {a + 1}.." in f for f in report.findings
            ):
                report.findings.append(
                    f"entry {n}: unit {device} alert numbers {a + 1}..{b - 1} never reached the log"
                )
    for incident, evs in sorted(by_incident.items()):
        _check_incident(incident, evs, end, report)


def number(value: object) -> int:
    """A count or a duration from an entry; 0 when it is not a number (the format checks
    names, not values: a meaning check must not crash on an odd value)."""
    return value if type(value) is int else 0


def _check_incident(
    incident: int, evs: Sequence[spec.Entry], end: datetime, report: Report
) -> None:
    raised = next((e for e in evs if e.type == "alert.raised"), None)
    if raised is None or raised.data.get("kind") not in spec.ALARM_KINDS:
        return
    acked = False
    planned = False
    last_page = spec.parse_time(raised.at)
    repeat: int | None = None
    for e in evs:
        if e.type == "incident.acknowledged":
            acked = True
        elif e.type == "incident.reopened":
            acked = False
            last_page = spec.parse_time(e.at)
        elif e.type == "escalation.plan_frozen":
            planned = True
            plan = e.data.get("plan") or {}
            repeat = number(plan.get("repeat_every")) if isinstance(plan, dict) else None
        elif e.type == "escalation.step_started":
            last_page = spec.parse_time(e.at)
    if not planned and end - spec.parse_time(raised.at) > PLAN_SLACK:
        report.findings.append(
            f"incident {incident}: raised at {raised.at}, but no escalation plan was frozen "
            f"by {spec.format_time(end)}: no one was paged for it"
        )
    if acked:
        return
    report.open_incidents.append(incident)
    if (
        repeat
        and 0 < repeat <= MAX_REPEAT
        and end - last_page > timedelta(seconds=repeat) + PAGING_SLACK
    ):
        report.findings.append(
            f"incident {incident}: open and unacknowledged, but no one was paged after "
            f"{spec.format_time(last_page)} (log ends {spec.format_time(end)})"
        )
