"""Paging: sends the queued pages of an incident, at once and concurrently.

Pages are rows written in the same transaction as the incident (or the
escalation step), so a page survives a crash between commit and send:
:meth:`Pager.redrive` sends what is still queued at start. A worker claims a
page with a conditional UPDATE before sending, so two workers (or two server
instances) never send the same page. A page left half-sent by a crash is
looked up at the provider before it is sent again (:mod:`server.paging.recovery`).

Bursts: pages go out on a pool of workers, so many alerts never queue behind
one another, and a person's pages for several incidents within a few seconds
are bundled (:mod:`server.paging.bundles`). The workers take alarm pages first,
then plain texts, then re-press news: a page never waits behind news.

Limits: every request fits Twilio's (:mod:`server.paging.fit`). A page Twilio
refuses for what it says goes at once in a compact form, never again as it was,
and that person's next pages on that channel are compact for a while.

The pager reads and waits (bundle windows, sweeps, retries, 429s) on its clock.

(Just over 300 lines: the claim -> route -> send -> record path of one page reads
best whole; its parts are the modules named above.)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from panicbutton.clock import Clock, SystemClock
from server.models import Page
from server.paging import messages, status
from server.paging.bundles import BUNDLE_WINDOW, Bundles, Key
from server.paging.delivery import REFUSED_CONTENT, Sender
from server.paging.fit import BUDGET
from server.paging.notifier import Notifier
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
#: Order of the work queued for the workers: alarm pages first, then plain texts
#: (confirmations, stand-downs), then re-press news. A page never waits behind news.
PAGE, TEXT, NEWS = 0, 1, 2


class Pager:
    """Sends pages and plain texts on a pool of worker threads.

    ``callback_url(path)`` gives the public URL for Twilio's callbacks, or None
    when there is none (the demo); ``link_url``, ``list_url`` and ``map_url`` a page's
    signed links, or None. ``clock`` defaults to the real one. ``on_page_done(incident_id,
    page_id)`` is called on a worker thread after each page is sent or failed.
    """

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        site: SiteSource,
        notifier: Notifier,
        workers: int = 8,
        clock: Clock | None = None,
        callback_url: Callable[[str], str | None] = lambda path: None,
        link_url: Callable[[int, datetime], str | None] = lambda page_id, created: None,
        list_url: Callable[[int, datetime], str | None] = lambda page_id, created: None,
        map_url: Callable[[int, datetime], str | None] = lambda page_id, created: None,
        bundle_window: dict[str, float] | None = None,
        on_page_done: Callable[[int, int], None] = lambda incident_id, page_id: None,
    ) -> None:
        self._sessions = sessions
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
        self._closed = threading.Event()
        self._lock = threading.Lock()
        #: (staff, channel) -> monotonic time until which pages use the compact form.
        self._compact: dict[Key, float] = {}
        self._active: set[int] = set()  # pages this process has claimed and not recorded
        self._next_sweep = 0.0

    def backlog(self) -> int:
        """Sends queued or under way in this process, plus pages held for a bundle."""
        return self._bundles.held() + self._pool.pending()

    def dispatch(self, page_ids: list[int]) -> None:
        for page_id in page_ids:
            self._submit(self._send_page, page_id)

    def _submit(self, fn: Callable[..., object], *args: object, priority: int = PAGE) -> None:
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
        half_sent, ids = self._recovery.left_over()
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
        return self._redrive_claimed(self._recovery.stuck(older_than), "stuck while sending")

    def _redrive_claimed(self, pages: list[Page], why: str) -> int:
        """Send again those of ``pages`` (claimed, not recorded) the provider does not
        have, leaving out what this process is still sending or holding."""
        with self._lock:
            pages = [p for p in pages if p.id not in self._active]
        again = [p.id for p in pages if not self._recovery.went_out(p)]
        if again:
            log.warning("re-sending %d page(s) %s", len(again), why)
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
        if not status.claim(self._sessions, page_id):
            return
        with self._lock:
            self._active.add(page_id)
        try:
            self._route(page_id)
        except BaseException:
            with self._lock:
                self._active.discard(page_id)
            self._recover_later([page_id])
            raise

    def _route(self, page_id: int) -> None:
        """Send a claimed page now, or hold it for a bundle with others to the same person."""
        with self._sessions() as s:
            page = s.get_one(Page, page_id)
            key, incident_id = (page.staff_id, page.channel), page.incident_id
        if not self._bundles.hold(key, incident_id, page_id):
            self._send([page_id])

    def _flush(self, key: Key) -> None:
        if ids := self._bundles.release(key):
            try:
                self._send(ids)
            except BaseException:
                self._recover_later(ids)
                raise

    def _send(self, page_ids: list[int]) -> None:
        try:
            self._send_now(page_ids)
        finally:
            with self._lock:
                self._active.difference_update(page_ids)

    def _send_now(self, page_ids: list[int]) -> None:
        page_ids = status.still_wanted(self._sessions, page_ids, self._clock.now())
        if not page_ids:
            return
        try:
            rendered = self._renderer.render(page_ids, compact=self._compact_now(page_ids[0]))
        except LookupError as exc:  # the person can no longer be paged since it was queued
            status.fail(self._sessions, page_ids, f"cannot render: {exc}", self._clock.now())
            log.error("pages %s failed: cannot render: %s", page_ids, exc)
            # A failed page hurries the next step, whatever made it fail.
            with self._sessions() as s:
                done = [(s.get_one(Page, i).incident_id, i) for i in page_ids]
            for incident_id, page_id in done:
                self._on_page_done(incident_id, page_id)
            return
        sid, error = self._sender.send(rendered)
        if sid is None and error is not None and error.code in REFUSED_CONTENT:
            # Refused for what it says: never send those bytes again. The compact form
            # goes now, and this person's next pages on this channel are compact too
            # (a hurried step would otherwise build the same bundle again).
            log.warning(
                "%s to staff %s refused for its content (%s); sending the compact form",
                rendered.channel,
                rendered.member.id,
                error.code,
            )
            with self._lock:
                key = (rendered.member.id, rendered.channel)
                self._compact[key] = self._clock.monotonic() + COMPACT_FOR
            compact = self._renderer.render(page_ids, compact=True)
            if compact.body != rendered.body:
                rendered = compact
                sid, error = self._sender.send(rendered)
        status.record(self._sessions, page_ids, sid=sid, error=error, now=self._clock.now())
        for page_id, incident_id in zip(page_ids, rendered.incident_ids, strict=True):
            self._on_page_done(incident_id, page_id)
        if sid is not None:
            self._sender.send_more(rendered)  # after the record: the page went with the first

    def _compact_now(self, page_id: int) -> bool:
        with self._sessions() as s:
            page = s.get_one(Page, page_id)
            key = (page.staff_id, page.channel)
        with self._lock:
            return self._compact.get(key, 0.0) > self._clock.monotonic()

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
        it; ``on_done(sent)`` is called on the worker once Twilio took it, or not. Texts
        wait behind every queued page, and re-press news behind every other text.
        ``call``: ``body`` is the TwiML of a call instead (a test page's call)."""
        priority = NEWS if purpose == "repress" else TEXT
        if call:
            rendered = Rendered(member, "call", page_ids=[], incident_ids=[], body=body, step=0)
        else:  # cut: a room label or a name of any length
            rendered = Rendered.text(member, messages.cut(body, BUDGET["sms"]))
        self._submit(self._send_text, rendered, incident_id, purpose, on_done, priority=priority)

    def _send_text(
        self,
        rendered: Rendered,
        incident_id: int | None,
        purpose: str,
        on_done: Callable[[bool], None] | None,
    ) -> None:
        sid, error = self._sender.send(rendered)
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
        self._pool.shutdown()
        self._closed.set()
