"""Paging: sends the queued pages of an incident, at once and concurrently.

Pages are rows written in the same transaction as the incident (or the
escalation step), so a page survives a crash between commit and send:
:meth:`Pager.redrive` sends what is still queued at start. A worker claims a
page before sending (a conditional UPDATE; on PostgreSQL ``FOR UPDATE SKIP
LOCKED``), so two workers (or two server instances) never send the same page. A
page left half-sent by a crash is looked up at the provider before it is sent
again (:mod:`server.paging.recovery`). A claim names this instance and lasts while
its heartbeat renews it (:mod:`server.cluster`): the pages of an instance that
stopped, held for a bundle or half-sent, are taken over by a live one
(:meth:`Pager.take_over`), and so are the pages it queued but never claimed.

Bursts: pages are claimed on a pool of workers, so many alerts never queue
behind one another, and a person's pages for several incidents within a few
seconds are bundled (:mod:`server.paging.bundles`). Then each request waits in
its sender's queue for a slot at the rate Twilio takes (:mod:`server.paging.pacing`):
first pages of new alarms first, then later steps, plain texts, re-press news;
pages to a person that meet in the queue go as one, and a 429 pauses the sender.

Limits: every request fits Twilio's (:mod:`server.paging.fit`). A page Twilio
refuses for what it says goes at once in a compact form, never again as it was,
and that person's next pages on that channel are compact for a while.

The pager reads and waits (bundle windows, sweeps, slots, retries, 429s) on its clock.

(About 440 lines: the claim -> route -> queue -> send -> record path of one page,
and the texts that share its queues and its 429 handling, read best whole; its
parts are the modules named above.)
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from concurrent.futures import Future
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy.orm import Session, sessionmaker

from panicbutton.clock import Clock, SystemClock
from server.cluster import LEASE
from server.errors import NotifierError
from server.metrics import Metrics
from server.models import Incident, Page
from server.paging import messages, status
from server.paging.bundles import BUNDLE_WINDOW, Bundles, Key
from server.paging.delivery import RATE_WAIT_MAX, RATE_WAIT_MIN, REFUSED_CONTENT, Sender
from server.paging.fit import BUDGET, segments
from server.paging.notifier import Notifier
from server.paging.pacing import FIRST, LATER, NEWS, TEXT, Pacer, Send
from server.paging.pool import PriorityPool
from server.paging.recovery import Recovery
from server.paging.render import Rendered, Renderer
from server.site import SiteSource, Staff

__all__ = ["Pager"]

log = logging.getLogger(__name__)

#: Seconds after an unexpected failure before a claimed page is looked up and re-sent.
RECOVER_AFTER = 3.0
#: Seconds between sweeps for pages stuck "sending", and how old such a page must be.
SWEEP_EVERY = 30.0
STUCK_AFTER = 90.0
#: Seconds a person's pages on a channel stay compact after a refusal for content.
COMPACT_FOR = 600.0
#: Each sender's pace when none is given: as fast as the workers go (the console).
UNPACED = {"sms": math.inf, "call": math.inf}
#: The workers' order: claiming a page (at once), then each request as its slot comes,
#: by its rank in the sender's queue (:mod:`server.paging.pacing`).
CLAIM = FIRST


class Pager:
    """Sends pages and plain texts on a pool of worker threads.

    ``callback_url(path)`` gives the public URL for Twilio's callbacks, or None
    when there is none (the demo); ``link_url``, ``list_url`` and ``map_url`` a page's
    signed links, or None. ``clock`` defaults to the real one. ``on_page_done(incident_id,
    page_id)`` is called on a worker thread after each page is sent or failed. ``metrics``
    counts what became of each page, and times each alarm's first. ``rates``: requests
    a second each sender takes, by channel (settings: PANICBUTTON_TWILIO_SMS_PER_SECOND
    and _CALLS_PER_SECOND; None: not paced), ``burst`` at once at most. ``instance``
    names this server instance in the claims it makes (:mod:`server.cluster`).
    """

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        site: SiteSource,
        notifier: Notifier,
        metrics: Metrics,
        workers: int = 8,
        clock: Clock | None = None,
        callback_url: Callable[[str], str | None] = lambda path: None,
        link_url: Callable[[int, datetime], str | None] = lambda page_id, created: None,
        list_url: Callable[[int, datetime], str | None] = lambda page_id, created: None,
        map_url: Callable[[int, datetime], str | None] = lambda page_id, created: None,
        bundle_window: dict[str, float] | None = None,
        rates: dict[str, float] | None = None,
        burst: int = 1,
        on_page_done: Callable[[int, int], None] = lambda incident_id, page_id: None,
        instance: str = "local",
    ) -> None:
        self._sessions = sessions
        self._instance = instance
        self._metrics = metrics
        self._notifier = notifier
        self._clock = clock or SystemClock()
        self._on_page_done = on_page_done
        self._renderer = Renderer(
            sessions=sessions,
            site=site,
            callback_url=callback_url,
            link_url=link_url,
            list_url=list_url,
            map_url=map_url,
        )
        self._sender = Sender(notifier=notifier, clock=self._clock, callback_url=callback_url)
        self._recovery = Recovery(
            sessions=sessions, notifier=notifier, renderer=self._renderer, clock=self._clock
        )
        self._bundles = Bundles(
            clock=self._clock,
            windows=bundle_window or BUNDLE_WINDOW,
            on_open=lambda key, seconds: self._later(seconds, self._flush, key),
        )
        self._pool = PriorityPool(workers, "pager")
        self._pacer = Pacer(
            clock=self._clock,
            rates=rates or UNPACED,
            burst=burst,
            grant=lambda send: self._submit(send.run, send, priority=send.rank),
        )
        metrics.watch_queues(self._pacer.waiting)
        self._closed = threading.Event()
        self._lock = threading.Lock()
        #: (staff, channel) -> monotonic time until which pages use the compact form.
        self._compact: dict[Key, float] = {}
        self._active: set[int] = set()  # pages this process has claimed and not recorded
        self._queued: set[int] = set()  # pages handed to the workers and not yet claimed
        self._taking_over = False  # a take_over queued or under way
        self._late: set[int] = set()  # pages sent again after a crash: they wait no more
        self._next_sweep = 0.0

    def backlog(self) -> int:
        """Sends waiting for a slot, queued or under way in this process, plus pages held
        for a bundle."""
        return self._bundles.held() + self._pacer.backlog() + self._pool.pending()

    def claim_in(self, session: Session, page_ids: list[int]) -> list[status.Claimed]:
        """Claim new pages for this instance in the transaction that wrote them
        (``session``'s, before its commit); after the commit, :meth:`send_claimed` hands
        them to their sender with no claim of their own to commit first. Should the
        process stop between the two, they are pages claimed and not recorded: looked up
        at the provider and sent after the next start, or by another instance once the
        claim lapses (:meth:`redrive`, :meth:`take_over`)."""
        until = self._clock.now() + timedelta(seconds=LEASE)
        return status.claim_new(session, page_ids, by=self._instance, until=until)

    def send_claimed(self, claimed: list[status.Claimed]) -> None:
        """Send pages :meth:`claim_in` claimed, their transaction committed: each is
        queued for its sender (or held for a bundle) on the calling thread."""
        for c in claimed:
            self._hand_over(c.page_id, partial(self._take, c))

    def dispatch(self, page_ids: list[int]) -> None:
        with self._lock:
            self._queued.update(page_ids)
        for page_id in page_ids:
            self._submit(self._send_page, page_id)

    def _submit(self, fn: Callable[..., object], *args: object, priority: int = CLAIM) -> None:
        try:
            future = self._pool.submit(priority, fn, *args)
        except RuntimeError:
            # Closed (a bundle's timer fired after shutdown): the held pages stay
            # queued in the database and the next start re-drives them.
            log.info("pager closed; a held send is left for the next start")
            return
        future.add_done_callback(self._log_failure)

    @staticmethod
    def _log_failure(future: Future[object]) -> None:
        if not future.cancelled() and (exc := future.exception()) is not None:
            # A page left "sending" is re-driven by sweep(), from the scheduler's loop.
            log.error("a send failed unexpectedly: %r", exc, exc_info=exc)

    def _later(self, seconds: float, fn: Callable[..., object], *args: object) -> None:
        """Queue ``fn(*args)`` for the workers after ``seconds`` of the clock's time."""

        def wait_then_submit() -> None:
            # Cut short by close(), whose closed pool then refuses the work.
            self._clock.wait(self._closed, None, seconds)
            self._submit(fn, *args)

        threading.Thread(target=wait_then_submit, name="pager_timer", daemon=True).start()

    # -- pages an earlier run or a failed send left -------------------------------------
    def redrive(self) -> int:
        """Send every page left queued or half-sent by an earlier run; return how many."""
        half_sent, ids = self._recovery.left_over(self._instance)
        ids += [page.id for page in half_sent if not self._recovery.went_out(page)]
        if ids:
            log.warning("sending %d page(s) queued before a restart", len(ids))
        self.dispatch(sorted(ids))
        return len(ids)

    def request_sweep(self) -> None:
        """From the scheduler's loop: run :meth:`sweep` on a worker when it is due (it may
        ask Twilio, which must not hold up due escalation steps)."""
        if self._clock.monotonic() >= self._next_sweep:
            self._next_sweep = self._clock.monotonic() + SWEEP_EVERY
            self._submit(self.sweep, STUCK_AFTER, True)

    def sweep(self, older_than: float = STUCK_AFTER, due: bool = False) -> int:
        """Re-drive pages stuck "sending" (a worker died between claim and record):
        not ones this process is still sending or holding. At most every 30 s."""
        if not due and self._clock.monotonic() < self._next_sweep:
            return 0
        self._next_sweep = max(self._next_sweep, self._clock.monotonic() + SWEEP_EVERY)
        stuck = self._recovery.stuck(older_than, self._instance)
        return self._redrive_claimed(stuck, "stuck while sending")

    def request_take_over(self) -> None:
        """From the heartbeat (:mod:`server.cluster`): run :meth:`take_over` on a worker,
        unless one is still under way (it may ask Twilio, which must not hold up the
        heartbeat that keeps this instance's own claims alive)."""
        with self._lock:
            if self._taking_over:
                return
            self._taking_over = True
        self._submit(self.take_over)

    def take_over(self) -> int:
        """Take the pages of an instance that stopped. Its claims lapsed: each page is
        looked up at the provider and sent again if it is not there (held for a bundle,
        or half-sent). Pages it queued and never claimed are sent too (a live instance's
        that waited as long are claimed by whichever instance comes first: never twice).
        Returns how many go again."""
        try:
            now = self._clock.now()
            lease = timedelta(seconds=LEASE)
            lapsed = status.lapsed(self._sessions, by=self._instance, now=now, lease=lease)
            again = self._redrive_claimed(lapsed, "claimed by a stopped server instance")
            with self._lock:
                busy = self._queued | self._active
            unclaimed = status.unclaimed(self._sessions, before=now - lease)
            waiting = [i for i in unclaimed if i not in busy]
            if waiting:
                log.warning("sending %d page(s) queued by a stopped server instance", len(waiting))
                self.dispatch(waiting)
            return again + len(waiting)
        finally:
            with self._lock:
                self._taking_over = False

    def _redrive_claimed(self, pages: list[Page], why: str) -> int:
        """Send again those of ``pages`` (claimed, not recorded) the provider does not
        have, leaving out what this process is still sending or holding."""
        with self._lock:
            pages = [p for p in pages if p.id not in self._active]
        again = [p.id for p in pages if not self._recovery.went_out(p)]
        if again:
            log.warning("re-sending %d page(s) %s", len(again), why)
            with self._lock:
                self._late.update(again)
            self.dispatch(again)
        return len(again)

    def _recover_later(self, page_ids: list[int]) -> None:
        """A send failed unexpectedly (a database write, say): the provider may or may not
        have the page. It stays "sending" (so a restart, too, asks the provider before
        sending it again) and is looked up and re-sent shortly, not after a restart."""
        self._later(RECOVER_AFTER, self._recover, page_ids)

    def _recover(self, page_ids: list[int]) -> None:
        self._redrive_claimed(self._recovery.still_sending(page_ids), "after a failed send")

    # -- one page -------------------------------------------------------------------
    def _send_page(self, page_id: int) -> None:
        with self._lock:
            self._queued.discard(page_id)
        until = self._clock.now() + timedelta(seconds=LEASE)
        if status.claim(self._sessions, page_id, by=self._instance, until=until):
            self._hand_over(page_id, partial(self._route, page_id))

    def _hand_over(self, page_id: int, route: Callable[[], None]) -> None:
        """Hold a claimed page as this process's to send, and ``route`` it to its sender;
        should that fail, the page is looked up and sent again shortly."""
        with self._lock:
            self._active.add(page_id)
        try:
            route()
        except BaseException as exc:
            with self._lock:
                self._active.discard(page_id)
            self._recover_later([page_id])
            if not isinstance(exc, Exception):
                raise
            log.error("page %d could not be queued for its sender: %r", page_id, exc, exc_info=exc)

    def _route(self, page_id: int) -> None:
        with self._sessions() as s:
            page = s.get_one(Page, page_id)
            claimed = status.Claimed.of(page, s.get_one(Incident, page.incident_id))
        self._take(claimed)

    def _take(self, claimed: status.Claimed) -> None:
        """Queue a claimed page for its sender, or hold it for a bundle with others to the
        same person (not a page sent again after a crash: it waited long enough)."""
        page_id, key = claimed.page_id, claimed.key
        with self._lock:
            late = page_id in self._late
            self._late.discard(page_id)
        if late or not self._bundles.hold(key, claimed.incident_id, page_id):
            rank = FIRST if claimed.first else LATER
            self._put(
                Send(lane=key[1], rank=rank, run=self._send_pages, key=key, page_ids=[page_id])
            )

    def _flush(self, key: Key) -> None:
        if ids := self._bundles.release(key):
            try:
                self._queue(key, ids)
            except BaseException:
                self._recover_later(ids)
                raise

    def _queue(self, key: Key, page_ids: list[int]) -> None:
        """Queue pages to one person on one channel (a bundle) for their sender's next
        slot: first pages of alarms rank first, later steps, follow-ups and technical
        alerts next."""
        with self._sessions() as s:
            pages = [s.get_one(Page, i) for i in page_ids]
            first = any(
                status.Claimed.of(p, s.get_one(Incident, p.incident_id)).first for p in pages
            )
        rank = FIRST if first else LATER
        self._put(Send(lane=key[1], rank=rank, run=self._send_pages, key=key, page_ids=page_ids))

    def _send_pages(self, send: Send) -> None:
        """On a worker, in the sender's slot: send pages to one person (one, or a bundle)."""
        done = False
        try:
            done = self._send_now(send)
        except BaseException:
            done = True
            self._pacer.settle(send, -1)  # if it never reached Twilio, its slot is free
            self._recover_later(send.page_ids)
            raise
        finally:
            if done:
                with self._lock:
                    self._active.difference_update(send.page_ids)

    def _send_now(self, send: Send) -> bool:
        """Send, or record why not; False if the pages went back to the sender's queue
        (Twilio asked to wait, or the compact form is to go in the next slot)."""
        channel = send.lane
        # After the wait for the slot: nobody is paged about an alarm someone took.
        wanted = status.still_wanted(
            self._sessions, send.page_ids, self._clock.now(), by=self._instance
        )
        self._metrics.pages(channel, "cancelled", len(send.page_ids) - len(wanted))
        with self._lock:
            self._active.difference_update(set(send.page_ids) - set(wanted))
        page_ids = send.page_ids = wanted
        if not page_ids:
            self._pacer.settle(send, -1)  # nothing to send: the slot is free
            return True
        compact = self._compact_now(send.key)
        try:
            rendered = self._renderer.render(page_ids, compact=compact)
        except LookupError as exc:  # the person can no longer be paged since it was queued
            self._pacer.settle(send, -1)
            status.fail(self._sessions, page_ids, f"cannot render: {exc}", self._clock.now())
            self._metrics.pages(channel, "failed", len(page_ids))
            log.error("pages %s failed: cannot render: %s", page_ids, exc)
            # A failed page hurries the next step, whatever made it fail.
            with self._sessions() as s:
                done = [(s.get_one(Page, i).incident_id, i) for i in page_ids]
            for incident_id, page_id in done:
                self._on_page_done(incident_id, page_id)
            return True
        self._metrics.first_request(rendered.opened, self._clock.now())
        result = self._deliver(send, rendered)
        if result is None:
            return False
        sid, error = result
        if sid is None and error is not None and error.code in REFUSED_CONTENT and not compact:
            # Refused for what it says: never send those bytes again. The compact form
            # goes in the sender's next slot, and this person's next pages on this
            # channel are compact too (a hurried step would otherwise build the same
            # bundle again).
            log.warning(
                "%s to staff %s refused for its content (%s); sending the compact form",
                rendered.channel,
                rendered.member.id,
                error.code,
            )
            with self._lock:
                key = (rendered.member.id, rendered.channel)
                self._compact[key] = self._clock.monotonic() + COMPACT_FOR
            if self._renderer.render(page_ids, compact=True).body != rendered.body:
                self._put(send)
                return False
        status.record(self._sessions, page_ids, sid=sid, error=error, now=self._clock.now())
        self._metrics.pages(channel, _outcome(sid, error), len(page_ids))
        for page_id, incident_id in zip(page_ids, rendered.incident_ids, strict=True):
            self._on_page_done(incident_id, page_id)
        if sid is not None:
            # The rooms that did not fit the first SMS (after the record: the pages went
            # with the first, which carries the status callback); each takes a slot.
            for body in rendered.more:
                further = partial(self._send_further, rendered=Rendered.text(rendered.member, body))
                self._put(Send(lane="sms", rank=send.rank, run=further))
        return True

    def _compact_now(self, key: Key | None) -> bool:
        """Whether pages to this person on this channel (a page send's key) go in the
        compact form now (see :data:`COMPACT_FOR`)."""
        with self._lock:
            return key is not None and self._compact.get(key, 0.0) > self._clock.monotonic()

    def _deliver(
        self, send: Send, rendered: Rendered
    ) -> tuple[str | None, NotifierError | None] | None:
        """Hand ``rendered`` to Twilio: its id, or None and the error. None alone when
        Twilio asked to wait (429): the sender's whole queue is paused for the
        ``Retry-After`` and ``send`` is back in its place. An SMS takes a slot of the
        sender for each of its segments. Beyond :data:`RATE_WAIT_MAX`
        seconds of such pauses a request counts as failed."""
        self._pacer.settle(send, segments(rendered.body) - 1 if rendered.channel == "sms" else 0)
        sid, error = self._sender.send(rendered)
        if error is None or error.retry_after is None or send.paused >= RATE_WAIT_MAX:
            return sid, error
        pause = min(max(error.retry_after, RATE_WAIT_MIN), RATE_WAIT_MAX)
        send.paused += pause
        self._pacer.pause(send.lane, pause)
        self._put(send)
        return None

    def _put(self, send: Send) -> None:
        if not self._pacer.put(send):
            # Closed: claimed pages are looked up and sent after the next start.
            log.info("pager closed; a %s waiting for its slot is left", send.lane)

    def _send_further(self, send: Send, *, rendered: Rendered) -> None:
        result = self._deliver(send, rendered)
        if result is not None and result[0] is None:
            log.warning("a further SMS of a bundle to staff %s failed", rendered.member.id)

    # -- plain texts ------------------------------------------------------------------
    def send_text(
        self,
        member: Staff,
        body: str,
        *,
        incident_id: int | None,
        purpose: str,
        on_done: Callable[[bool], None] | None = None,
        call: bool = False,
    ) -> None:
        """Send a plain text (confirmation, stand-down, news) in the background and log
        it; ``on_done(sent)`` is called on the worker once Twilio took it, or not. In
        the sender's queue texts wait behind every page, and re-press news behind every
        other text. ``call``: ``body`` is the TwiML of a call instead (a test page's call)."""
        if call:
            rendered = Rendered(member, "call", page_ids=[], incident_ids=[], body=body, step=0)
        else:  # cut: a room label or a name of any length
            rendered = Rendered.text(member, messages.cut(body, BUDGET["sms"]))
        run = partial(
            self._send_text,
            rendered=rendered,
            incident_id=incident_id,
            purpose=purpose,
            on_done=on_done,
        )
        self._put(Send(lane=rendered.channel, rank=NEWS if purpose == "repress" else TEXT, run=run))

    def _send_text(
        self,
        send: Send,
        *,
        rendered: Rendered,
        incident_id: int | None,
        purpose: str,
        on_done: Callable[[bool], None] | None,
    ) -> None:
        result = self._deliver(send, rendered)
        if result is None:
            return
        sid, error = result
        status.record_text(
            self._sessions,
            rendered.member.id,
            sent=sid is not None,
            error=error,
            now=self._clock.now(),
            incident_id=incident_id,
            purpose=purpose,
        )
        if on_done is not None:
            on_done(sid is not None)

    def close(self) -> None:
        if left := self._pacer.close():
            log.warning(
                "pager closed with %d request(s) waiting for their sender's slot: their pages "
                "are sent after the next start, their texts are not",
                len(left),
            )
        self._pool.shutdown()  # what the workers are sending is sent and recorded
        self._closed.set()
        # Claimed and never handed to Twilio (held for a bundle, waiting for a slot): given
        # back as queued, so the next start (or another instance) sends them at once
        # instead of looking each up at Twilio first.
        with self._lock:
            unsent = sorted(self._active)
        try:
            status.release(self._sessions, unsent, by=self._instance)
        except Exception:  # the database is down: the next start looks them up instead
            log.exception("could not give back %d unsent page(s) at stop", len(unsent))


def _outcome(sid: str | None, error: NotifierError | None) -> str:
    """What became of a send, as :mod:`server.metrics` counts it: Twilio took it, refused
    the request itself (nothing to retry), or could not take it."""
    if sid is not None:
        return "sent"
    return "refused" if error is not None and not error.retryable else "failed"
