"""What the server counts for Prometheus (``GET /metrics``): alarms taken, pages and what
became of them, how long an alarm waits for its first page and for someone to take it,
and, read when Prometheus asks, what is queued and which units are online.

Counters and histograms move where the event happens (one call each, after its
commit); the gauges are read from the database at each scrape (:class:`Depths`), so
nothing has to be kept in step. Each server has a registry of its own, never the
process's global default: two servers in one process (the tests) count apart.

No personal data, and no label of unbounded number: a label is a kind, a channel or a
status. Never a phone number, a name, a person's, room's or unit's id.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from panicbutton.clock import Clock
from server.models import (
    ALARM_KINDS,
    DeviceRecord,
    EscalationJob,
    IncidentKind,
    JobStatus,
    LogState,
    Page,
    PageStatus,
)
from server.site import SiteSource

__all__ = ["CHANNELS", "PAGE_STATUSES", "Depths", "Metrics"]

#: The kinds of alarm counted: a person in danger, and a unit's test.
KINDS: Final = (*ALARM_KINDS, IncidentKind.TEST)
CHANNELS: Final = ("sms", "call")
#: What became of a page. Ours: ``sent`` (Twilio took it), ``refused`` (Twilio said
#: no to the request: a bad or opted-out number, a body it will not take), ``failed``
#: (Twilio could not be reached or failed after the retries, or the page could not
#: be written), ``cancelled`` (its alarm was taken while it waited). Twilio's, from its
#: status callbacks: ``delivered`` (an SMS delivered, a call answered) and
#: ``undelivered`` (an SMS or call that did not reach the phone).
PAGE_STATUSES: Final = ("sent", "refused", "failed", "cancelled", "delivered", "undelivered")
#: Seconds: from a few milliseconds (one alarm, as measured in issue 15) to a storm.
FIRST_PAGE_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
#: Seconds: someone answers within seconds, or after several steps of escalation.
ACKNOWLEDGED_BUCKETS: Final = (5, 10, 20, 30, 60, 120, 180, 300, 600, 900, 1800, 3600)
#: Alarms remembered as timed, so that only the first page of each is: enough for a
#: storm of alarms whose first pages are all still going out.
TIMED_KEPT: Final = 10_000


class Metrics:
    """The server's counters and histograms, and its registry (what ``/metrics`` shows)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._alarms = Counter(
            "panicbutton_alarms",
            "Alarms taken (new incidents) by kind: panic, duress, missed_checkout, test.",
            ["kind"],
            registry=self.registry,
        )
        self._pages = Counter(
            "panicbutton_pages",
            "Pages by channel (sms, call) and what became of them (sent, refused, failed, "
            "cancelled; delivered, undelivered as Twilio reports).",
            ["channel", "status"],
            registry=self.registry,
        )
        self._first_page = Histogram(
            "panicbutton_first_page_seconds",
            "Seconds from the server taking an alarm in (or a press reopening it) to the "
            "request to Twilio for its first page.",
            buckets=FIRST_PAGE_BUCKETS,
            registry=self.registry,
        )
        self._acknowledged = Histogram(
            "panicbutton_acknowledged_seconds",
            "Seconds from the server taking an alarm in (or a press reopening it) to "
            "someone acknowledging it.",
            buckets=ACKNOWLEDGED_BUCKETS,
            registry=self.registry,
        )
        # Every series from the start, at 0: a rate needs the series before its first event.
        for kind in KINDS:
            self._alarms.labels(kind)
        for channel in CHANNELS:
            for status in PAGE_STATUSES:
                self._pages.labels(channel, status)
        self._lock = threading.Lock()
        self._timed: OrderedDict[tuple[int, datetime], None] = OrderedDict()

    def alarm(self, kind: str) -> None:
        """A new alarm of ``kind`` was committed (not a redelivery nor a re-press)."""
        if kind in KINDS:
            self._alarms.labels(kind).inc()

    def pages(self, channel: str, status: str, count: int = 1) -> None:
        """``count`` pages on ``channel`` reached ``status`` (one of :data:`PAGE_STATUSES`)."""
        self._pages.labels(channel, status).inc(count)

    def first_request(self, opened: Iterable[tuple[int, datetime]], now: datetime) -> None:
        """A request to Twilio is about to go for the first step of these alarms (incident
        id, when its round opened): the first such request of each is timed."""
        for key in opened:
            with self._lock:
                if key in self._timed:
                    continue
                self._timed[key] = None
                if len(self._timed) > TIMED_KEPT:
                    self._timed.popitem(last=False)
            self._first_page.observe(max(0.0, (now - key[1]).total_seconds()))

    def acknowledged(self, opened: datetime, now: datetime) -> None:
        """An alarm whose round opened at ``opened`` was acknowledged at ``now``."""
        self._acknowledged.observe(max(0.0, (now - opened).total_seconds()))

    def watch(self, *, sessions: sessionmaker[Session], site: SiteSource, clock: Clock) -> None:
        """Read the queues, the units and the log from the database at each scrape."""
        self.registry.register(Depths(sessions=sessions, site=site, clock=clock))

    def watch_queues(self, waiting: Callable[[], dict[str, int]]) -> None:
        """Read ``waiting()`` (requests waiting for their sender's slot, by channel) at
        each scrape."""
        self.registry.register(_Queued(waiting))

    def exposition(self) -> bytes:
        """Everything, in Prometheus' text format (reads the database)."""
        return generate_latest(self.registry)


class Depths:
    """Gauges read with a few small queries when Prometheus scrapes (the registry does
    not call :meth:`collect` before: it is registered without ``describe``)."""

    def __init__(self, *, sessions: sessionmaker[Session], site: SiteSource, clock: Clock) -> None:
        self._sessions = sessions
        self._site = site
        self._clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        units = {room.device for room in self._site().rooms}
        now = self._clock.now()
        with self._sessions() as s:
            pending = s.scalar(
                select(func.count()).select_from(Page).where(Page.status == PageStatus.PENDING)
            )
            due = s.scalar(
                select(func.count())
                .select_from(EscalationJob)
                .where(EscalationJob.status == JobStatus.PENDING, EscalationJob.due_at <= now)
            )
            online = set(s.scalars(select(DeviceRecord.device_id).where(DeviceRecord.online)))
            size = s.scalar(select(LogState.size).where(LogState.id == 1))
        up = len(units & online)
        yield GaugeMetricFamily(
            "panicbutton_pages_pending",
            "Pages queued and not yet taken up by a sender.",
            value=pending or 0,
        )
        yield GaugeMetricFamily(
            "panicbutton_escalation_jobs_due",
            "Escalation steps due now or overdue and not yet run (for more than a moment: "
            "the scheduler is behind).",
            value=due or 0,
        )
        family = GaugeMetricFamily(
            "panicbutton_units",
            "The site's room units, online (connected, heartbeating) or offline (or never "
            "heard from).",
            labels=["state"],
        )
        family.add_metric(["online"], up)
        family.add_metric(["offline"], len(units) - up)
        yield family
        yield GaugeMetricFamily(
            "panicbutton_log_entries", "Entries in the incident log.", value=size or 0
        )


class _Queued:
    """The pager's queues (in memory), read when Prometheus scrapes."""

    def __init__(self, waiting: Callable[[], dict[str, int]]) -> None:
        self._waiting = waiting

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "panicbutton_sends_queued",
            "Requests to Twilio (pages, bundles, texts) waiting for their sender's next "
            "slot at the configured rate, by channel (sms, call).",
            labels=["channel"],
        )
        waiting = self._waiting()
        for channel in CHANNELS:
            family.add_metric([channel], waiting.get(channel, 0))
        yield family
