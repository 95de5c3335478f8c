"""Paging: sends the queued pages of an incident, at once and concurrently.

Pages are rows written in the same transaction as the incident (or the
escalation step), so a page survives a crash between commit and send:
:meth:`Pager.redrive` sends what is still queued at start. A worker claims a
page with a conditional UPDATE before sending, so two workers (or two server
instances) never send the same page. A page left half-sent by a crash is
looked up at the provider before it is sent again.

Bursts: pages go out on a pool of workers, so many alerts never queue behind
one another. When one person gets pages for several incidents within a few
seconds, the first goes out at once and the others are bundled into one SMS
(or one call) that lists the rooms, instead of a flood. The workers take alarm
pages first, then plain texts, then re-press news: a page never waits behind news.

Limits: every request fits Twilio's limits by construction. A bundle names as
many rooms as fit a budget well under Twilio's (an SMS ``Body`` at most 1,600
characters, inline call TwiML at most 4,000), says how many more there are and
links to the person's full list; room labels are cut to a fixed length. A page
Twilio refuses for what it says (size or content) is never sent again as it
was: it goes at once in a compact form, and that person's next pages on that
channel use the compact form for a while. A 429 is waited out (its
``Retry-After``), not counted as a refusal.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from panicbutton.clock import Clock, SystemClock
from server.errors import NotifierError
from server.log.append import audit
from server.models import Incident, Page
from server.paging import messages
from server.paging.notifier import Notifier
from server.site import Site, Staff

log = logging.getLogger(__name__)

#: Tries per page for errors that may pass (provider 5xx, 429, timeouts), and the pause between.
RETRIES = 3
RETRY_PAUSE = 1.0
#: Seconds after an unexpected failure before a claimed page is looked up and re-sent.
RECOVER_AFTER = 3.0
#: Default seconds after a page to one person during which their pages for *other*
#: incidents are bundled, by channel (settings: PANICBUTTON_SMS_BUNDLE_WINDOW, ...).
BUNDLE_WINDOW = {"sms": 3.0, "call": 20.0}
#: What a page may hold, in UTF-16 units as Twilio counts them (an emoji is two): an SMS
#: body (Twilio refuses over 1,600, 21617) and a call's TwiML after XML escaping (Twilio
#: refuses over 4,000, 32018). Well under Twilio's, and small enough for a person to read
#: or hear in a hurry.
BUDGET = {"sms": 1000, "call": 3000}
#: The compact form, used after Twilio refused a page for what it says.
COMPACT_BUDGET = {"sms": 320, "call": 1500}
COMPACT_ROOM_CHARS = 20
#: Rooms a call names (each is said twice); the others are counted.
CALL_ROOMS = 5
#: Seconds a person's pages on a channel stay compact after such a refusal.
COMPACT_FOR = 600.0
#: Twilio codes that refuse what a request says (its size or content), not whom it is
#: for: 21617/21658 body too long, 21619 no body, 32018 TwiML too long, 11750 TwiML
#: response too large, 12100 TwiML that cannot be parsed.
REFUSED_CONTENT = frozenset({21617, 21658, 21619, 32018, 11750, 12100})
#: Most seconds one send waits out 429s (each ``Retry-After``) before it counts as failed.
RATE_WAIT_MAX = 60.0
#: Page ids a callback URL names (the webhooks read at most this many).
CALLBACK_PAGES = 20
#: Most SMS one bundle is sent as when there is no full-list link (no
#: PANICBUTTON_LINK_SECRET): the rooms that do not fit the first go in further SMS,
#: each within budget, and the last counts what still did not fit. 200 rooms with
#: ordinary labels fit in 12.
BUNDLE_TEXTS = 12
#: Order of the work queued for the workers: alarm pages first, then plain texts
#: (confirmations, stand-downs), then re-press news. A page never waits behind news.
PAGE, TEXT, NEWS = 0, 1, 2


class _Pool:
    """Worker threads taking the most urgent queued work first (lowest priority number,
    then first come); like a ThreadPoolExecutor, submit gives a Future and raises
    RuntimeError once closed, and shutdown runs what is queued."""

    def __init__(self, workers: int, name: str) -> None:
        self._queue: queue.PriorityQueue[
            tuple[int, int, Future[object] | None, Callable[..., object], tuple[object, ...]]
        ] = queue.PriorityQueue()
        self._order = itertools.count()
        self._closed = False
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}_{i}", daemon=True)
            for i in range(workers)
        ]
        for t in self._threads:
            t.start()

    def submit(self, priority: int, fn: Callable[..., object], *args: object) -> Future[object]:
        future: Future[object] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new work after shutdown")
            self._queue.put((priority, next(self._order), future, fn, args))
        return future

    def _work(self) -> None:
        while True:
            _, _, future, fn, args = self._queue.get()
            if future is None:  # shutdown: everything queued before it has run
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the Future, like an executor
                future.set_exception(exc)
            else:
                future.set_result(result)

    def shutdown(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            last = 1 << 30  # after every queued piece of work
            for _ in self._threads:
                self._queue.put((last, next(self._order), None, print, ()))
        for t in self._threads:
            if t is not threading.current_thread():
                t.join()


@dataclass(frozen=True, slots=True)
class Rendered:
    """A page ready to send: where, what, and which page rows it stands for."""

    member: Staff
    channel: str
    page_ids: list[int]
    incident_ids: list[int]
    body: str  # SMS text, or TwiML for a call
    step: int
    #: Further SMS after ``body``: the rooms of a bundle that did not fit, when there is
    #: no full-list link to send instead.
    more: tuple[str, ...] = ()


class Pager:
    """Sends pages and plain texts on a pool of worker threads.

    ``callback_url(path)`` gives the public URL for Twilio's callbacks, or None
    when there is none (the demo).
    """

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        site: Site,
        notifier: Notifier,
        workers: int = 8,
        clock: Clock | None = None,
        callback_url: Callable[[str], str | None] = lambda path: None,
        link_url: Callable[[int, datetime], str | None] = lambda page_id, created: None,
        list_url: Callable[[int, datetime], str | None] = lambda page_id, created: None,
        bundle_window: dict[str, float] | None = None,
        on_page_done: Callable[[int, int], None] = lambda incident_id, page_id: None,
    ) -> None:
        self._sessions = sessions
        self._site = site
        self._notifier = notifier
        self._clock = (clock or SystemClock()).now
        self._callback_url = callback_url
        self._link_url = link_url
        self._list_url = list_url
        #: (staff, channel) -> monotonic time until which pages use the compact form.
        self._compact: dict[tuple[str, str], float] = {}
        self._bundle_window = bundle_window or BUNDLE_WINDOW
        self._pool = _Pool(workers, "pager")
        self._inflight: set[Future[object]] = set()
        self._lock = threading.Lock()
        #: (staff, channel) -> (monotonic time, incident id) of the last page sent.
        self._last_sent: dict[tuple[str, str], tuple[float, int]] = {}
        self._held: dict[tuple[str, str], list[int]] = {}
        self._active: set[int] = set()  # pages this process has claimed and not recorded
        self._next_sweep = 0.0
        #: Called on a worker thread after each page is sent or failed: (incident id, page id).
        self.on_page_done = on_page_done

    def backlog(self) -> int:
        """Sends queued or under way in this process, plus pages held for a bundle."""
        with self._lock:
            held = sum(len(v) for v in self._held.values())
        return held + sum(1 for f in list(self._inflight) if not f.done())

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
        with self._lock:
            self._inflight.add(future)
        future.add_done_callback(self._forget)

    def _forget(self, future: Future[object]) -> None:
        with self._lock:
            self._inflight.discard(future)
        if not future.cancelled() and (exc := future.exception()) is not None:
            # A page left "sending" is re-driven by sweep(), from the scheduler's loop.
            log.error("a send failed unexpectedly: %r", exc, exc_info=exc)

    def redrive(self) -> int:
        """Send every page left queued or half-sent by an earlier run; return how many."""
        with self._sessions.begin() as s:
            half_sent = list(s.scalars(select(Page).where(Page.status == "sending")))
            ids = list(s.scalars(select(Page.id).where(Page.status == "pending")))
        for page in half_sent:
            if not self._went_out(page):
                ids.append(page.id)
        if ids:
            log.warning("sending %d page(s) queued before a restart", len(ids))
        self.dispatch(sorted(ids))
        return len(ids)

    def request_sweep(self) -> None:
        """From the scheduler's loop: run :meth:`sweep` on a worker when it is due (it may
        ask Twilio, which must not hold up due escalation steps)."""
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + 30.0
            self._submit(self.sweep, 90.0, True)

    def sweep(self, older_than: float = 90.0, due: bool = False) -> int:
        """Re-drive pages stuck "sending" (a worker died between claim and record):
        not ones this process is still sending or holding. At most every 30 s."""
        if not due and time.monotonic() < self._next_sweep:
            return 0
        self._next_sweep = max(self._next_sweep, time.monotonic() + 30.0)
        cutoff = self._clock() - timedelta(seconds=older_than)
        with self._sessions() as s:
            stuck = list(
                s.scalars(select(Page).where(Page.status == "sending", Page.created_at < cutoff))
            )
        return self._redrive_claimed(stuck, "stuck while sending")

    def _redrive_claimed(self, pages: list[Page], why: str) -> int:
        """Send again those of ``pages`` (claimed, not recorded) the provider does not
        have, leaving out what this process is still sending or holding."""
        with self._lock:
            pages = [p for p in pages if p.id not in self._active]
        again = [p.id for p in pages if not self._went_out(p)]
        if again:
            log.warning("re-sending %d page(s) %s", len(again), why)
            self.dispatch(again)
        return len(again)

    def _went_out(self, page: Page) -> bool:
        """A page the last run claimed but did not record: did the provider get it?"""
        rendered = self._render([page.id])
        found = None
        since = page.created_at - timedelta(seconds=5)
        try:
            if rendered is not None and page.channel == "sms":
                found = self._notifier.find_sms(rendered.member.phone, rendered.body, since)
            elif rendered is not None and not self._other_call_unrecorded(page):
                # Calls carry nothing of ours: a call to that number placed since the
                # page was made, and not recorded for another page, is this page's.
                # With another of this person's calls also unrecorded, a call found
                # could be that one's: the page is placed again (a second call is
                # better than a page marked sent that never rang).
                found = self._notifier.find_call(
                    rendered.member.phone, since, exclude=self._recorded_calls(page)
                )
        except NotifierError as exc:
            log.warning("could not ask the provider about page %d: %s", page.id, exc)
        with self._sessions.begin() as s:
            row = s.get_one(Page, page.id)
            if found is not None:
                row.status, row.provider_sid, row.sent_at = "sent", found, self._clock()
                audit(
                    s,
                    at=self._clock(),
                    type="page.sent",
                    incident_id=row.incident_id,
                    page=row.id,
                    provider_id=found,
                    recovered=True,
                )
                return True
            # Not found: sending again is better than a page that never arrives.
            row.status = "pending"
        return False

    def _other_call_unrecorded(self, page: Page) -> bool:
        """Another call page to this person claimed but not recorded ("sending")."""
        with self._sessions() as s:
            other = s.scalar(
                select(Page.id).where(
                    Page.staff_id == page.staff_id,
                    Page.channel == "call",
                    Page.id != page.id,
                    Page.status == "sending",
                )
            )
        return other is not None

    def _recorded_calls(self, page: Page) -> frozenset[str]:
        """Call ids already recorded for this person's other pages since this one."""
        with self._sessions() as s:
            return frozenset(
                sid
                for sid in s.scalars(
                    select(Page.provider_sid).where(
                        Page.staff_id == page.staff_id,
                        Page.channel == "call",
                        Page.id != page.id,
                        Page.provider_sid.is_not(None),
                        Page.created_at >= page.created_at - timedelta(hours=1),
                    )
                )
                if sid
            )

    # -- one page -------------------------------------------------------------------
    def _send_page(self, page_id: int) -> None:
        with self._sessions.begin() as s:
            claimed = s.execute(
                update(Page)
                .where(Page.id == page_id, Page.status == "pending")
                .values(status="sending")
            ).rowcount  # type: ignore[attr-defined]
        if not claimed:
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

    def _recover_later(self, page_ids: list[int]) -> None:
        """A send failed unexpectedly (a database write, say): the provider may or may not
        have the page. It stays "sending" (so a restart, too, asks the provider before
        sending it again) and is looked up and re-sent shortly, not after a restart."""
        timer = threading.Timer(RECOVER_AFTER, self._submit, (self._recover, page_ids))
        timer.daemon = True
        timer.start()

    def _recover(self, page_ids: list[int]) -> None:
        with self._sessions() as s:
            pages = [p for p in (s.get(Page, i) for i in page_ids) if p and p.status == "sending"]
        self._redrive_claimed(pages, "after a failed send")

    def _route(self, page_id: int) -> None:
        """Send a claimed page now, or hold it for a bundle with others to the same person."""
        with self._sessions() as s:
            page = s.get_one(Page, page_id)
            key = (page.staff_id, page.channel)
        with self._lock:
            last_at, last_incident = self._last_sent.get(key, (-1e9, 0))
            since = time.monotonic() - last_at
            window = self._bundle_window[page.channel]
            other_incident = last_incident != page.incident_id
            if (since < window and other_incident) or key in self._held:
                # Another page just went to this person: bundle this one with any
                # others arriving in the window, instead of a flood.
                first = key not in self._held
                self._held.setdefault(key, []).append(page_id)
                if first:
                    timer = threading.Timer(window - since, self._submit, (self._flush, key))
                    timer.daemon = True
                    timer.start()
                return
            self._last_sent[key] = (time.monotonic(), page.incident_id)
        self._send([page_id])

    def _flush(self, key: tuple[str, str]) -> None:
        with self._lock:
            ids = self._held.pop(key, [])
            self._last_sent[key] = (time.monotonic(), -1)
        if ids:
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
        page_ids = self._still_wanted(page_ids)
        if not page_ids:
            return
        try:
            rendered = self._render(page_ids, compact=self._compact_now(page_ids[0]))
        except LookupError as exc:  # the person or room was removed from the site file
            self._fail(page_ids, f"cannot render: {exc}")
            return
        if rendered is None:
            return
        sid, error = self._deliver(rendered)
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
                self._compact[key] = time.monotonic() + COMPACT_FOR
            compact = self._render(page_ids, compact=True)
            if compact is not None and compact.body != rendered.body:
                rendered = compact
                sid, error = self._deliver(rendered)
        now = self._clock()
        with self._sessions.begin() as s:
            for page_id in page_ids:
                page = s.get_one(Page, page_id)
                if sid is not None:
                    page.status, page.provider_sid, page.sent_at = "sent", sid, now
                    audit(
                        s,
                        at=now,
                        type="page.sent",
                        incident_id=page.incident_id,
                        page=page.id,
                        provider_id=sid,
                        bundled=len(page_ids),
                    )
                else:
                    page.status, page.error = "failed", (error.args[0] if error else "")[:200]
                    audit(
                        s,
                        at=now,
                        type="page.failed",
                        incident_id=page.incident_id,
                        page=page.id,
                        code=error.code if error else None,
                    )
        for page_id, incident_id in zip(page_ids, rendered.incident_ids, strict=True):
            self.on_page_done(incident_id, page_id)
        if sid is not None:
            self._deliver_more(rendered)  # after the record: the page went with the first

    def _compact_now(self, page_id: int) -> bool:
        with self._sessions() as s:
            page = s.get_one(Page, page_id)
            key = (page.staff_id, page.channel)
        with self._lock:
            return self._compact.get(key, 0.0) > time.monotonic()

    def _still_wanted(self, page_ids: list[int]) -> list[int]:
        """Drop pages whose incident moved on while they waited (a bundle held, a queue):
        nobody is paged about an alarm someone already took."""
        keep = []
        now = self._clock()
        with self._sessions.begin() as s:
            for page_id in page_ids:
                page = s.get_one(Page, page_id)
                state = s.get_one(Incident, page.incident_id).state
                # Steps page while the incident is open; follow-ups while it is taken.
                if state == ("acknowledged" if page.step < 0 else "open"):
                    keep.append(page_id)
                else:
                    page.status = "cancelled"
                    audit(
                        s,
                        at=now,
                        type="page.cancelled",
                        incident_id=page.incident_id,
                        page=page.id,
                        reason=state,
                    )
        return keep

    def _fail(self, page_ids: list[int], why: str) -> None:
        now = self._clock()
        with self._sessions.begin() as s:
            for page_id in page_ids:
                page = s.get_one(Page, page_id)
                page.status, page.error = "failed", why[:200]
                audit(
                    s,
                    at=now,
                    type="page.failed",
                    incident_id=page.incident_id,
                    page=page.id,
                    code=None,
                )
        log.error("pages %s failed: %s", page_ids, why)

    def _render(self, page_ids: list[int], *, compact: bool = False) -> Rendered | None:
        """The SMS or call for these pages (one person, one channel), within budget."""
        with self._sessions() as s:
            pages = [s.get_one(Page, i) for i in page_ids]
            incidents = [s.get_one(Incident, p.incident_id) for p in pages]
        first = pages[0]
        member = self._site.member(first.staff_id)
        limit = COMPACT_ROOM_CHARS if compact else messages.ROOM_CHARS
        rooms = [messages.room_label(self._site.room(i.room_id).label, limit) for i in incidents]
        room_ids = [i.room_id for i in incidents]  # what "+N more rooms" counts
        budget = (COMPACT_BUDGET if compact else BUDGET)[first.channel]
        if first.channel == "call":
            most = 1 if compact else CALL_ROOMS
            body = self._call(
                pages, rooms=rooms, room_ids=room_ids, member=member, budget=budget, most=most
            )
        else:
            lines = [
                self._sms(page, incident, room, member, link=len(pages) == 1, compact=compact)
                for page, incident, room in zip(pages, incidents, rooms, strict=True)
            ]
            # The list names the alarms of this bundle and older ones, never an alarm
            # opened after it was sent: the token carries the bundle's newest page.
            newest = max(p.id for p in pages)
            link = self._list_url(newest, first.created_at) if len(pages) > 1 else None
            texts = _split(
                lines,
                room_ids,
                budget,
                lambda more: messages.bundle_footer(member.language, more=more, link=link),
                most=1 if link else BUNDLE_TEXTS,
            )
            body, more_texts = texts[0], tuple(texts[1:])
        return Rendered(
            member=member,
            channel=first.channel,
            page_ids=page_ids,
            incident_ids=[i.id for i in incidents],
            body=body,
            step=first.step,
            more=more_texts if first.channel == "sms" else (),
        )

    def _call(
        self,
        pages: list[Page],
        *,
        rooms: list[str],
        room_ids: list[str],
        member: Staff,
        budget: int,
        most: int,
    ) -> str:
        """TwiML naming as many rooms as fit (at most ``most``), counting the others; key 1
        acknowledges the rooms it named. The compact form (``most`` 1) says it once."""
        lang = member.language
        for named in range(min(most, len(pages)), 0, -1):
            ids = ",".join(str(p.id) for p in pages[:named])
            gather = self._callback_url(f"/twilio/voice?pages={ids}") or ""
            more = len(set(room_ids[named:]) - set(room_ids[:named]))
            twiml = messages.call_twiml(
                lang,
                room=messages.rooms_spoken(lang, rooms[:named], more=more),
                gather_url=gather,
                follow=pages[0].step < 0,
                twice=most > 1,
            )
            if messages.units(twiml) <= budget:
                return twiml
        # Unreachable with the budgets above (one room is at most ROOM_CHARS long).
        raise LookupError(f"a call for page {pages[0].id} cannot fit {budget} characters")

    def _sms(
        self,
        page: Page,
        incident: Incident,
        room: str,
        member: Staff,
        *,
        link: bool,
        compact: bool = False,
    ) -> str:
        lang, tz = member.language, self._site.timezone
        if incident.kind == "unit_offline":
            return messages.unit_offline(
                lang, room=room, since=incident.pressed_at, timezone=tz, code=page.reply_code
            )
        if page.step < 0:
            acker = self._site.member(incident.acknowledged_by or member.id)
            return messages.follow_up(
                lang,
                room=room,
                name=acker.name,
                at=incident.acknowledged_at or incident.received_at,
                timezone=tz,
                code=page.reply_code,
            )
        opened = (incident.plan or {}).get("opened")  # a reopened incident's new start
        if compact and incident.kind == "panic":
            return messages.page_compact(
                lang,
                room=room,
                at=datetime.fromisoformat(opened) if opened else incident.received_at,
                timezone=tz,
                code=page.reply_code,
            )
        text = messages.page(
            lang,
            room=room,
            at=datetime.fromisoformat(opened) if opened else incident.received_at,
            timezone=tz,
            code=page.reply_code,
            test=incident.kind == "test",
        )
        url = (
            self._link_url(page.id, page.created_at) if link and incident.kind == "panic" else None
        )
        return f"{text} {url}" if url else text

    def _deliver_more(self, r: Rendered) -> None:
        """The further SMS of a bundle, after its first went: the page is sent once
        its first SMS is (that one carries the status callback)."""
        for body in r.more:
            part = Rendered(
                member=r.member, channel="sms", page_ids=[], incident_ids=[], body=body, step=0
            )
            if self._deliver(part)[0] is None:
                log.warning("a further SMS of a bundle to staff %s failed", r.member.id)

    def _deliver(self, r: Rendered) -> tuple[str | None, NotifierError | None]:
        ids = ",".join(map(str, r.page_ids[:CALLBACK_PAGES]))
        callback = self._callback_url(f"/twilio/status?pages={ids}") if r.page_ids else None
        error: NotifierError | None = None
        tries, waited = 0, 0.0
        while tries < RETRIES:
            try:
                if r.channel == "call":
                    return self._notifier.call(
                        r.member.phone, r.body, status_callback=callback
                    ), None
                return self._notifier.send_sms(
                    r.member.phone, r.body, status_callback=callback
                ), None
            except NotifierError as exc:
                error = exc
                if exc.retry_after is not None and waited < RATE_WAIT_MAX:
                    # Too many requests: Twilio did not process it and says when to come
                    # back. Waiting is not a failed try.
                    pause = min(max(exc.retry_after, 0.1), RATE_WAIT_MAX - waited)
                    log.info(
                        "%s to staff %s: Twilio asks to wait %.1f s", r.channel, r.member.id, pause
                    )
                    waited += pause
                    time.sleep(pause)
                    continue
                tries += 1
                log.warning(
                    "%s to staff %s failed (try %d): %s", r.channel, r.member.id, tries, exc
                )
                if not exc.retryable or tries >= RETRIES:
                    break
                time.sleep(RETRY_PAUSE * tries)
        return None, error

    # -- plain texts ------------------------------------------------------------------
    def send_text(
        self,
        member: Staff,
        body: str,
        *,
        incident_id: int | None,
        purpose: str,
        on_done: Callable[[bool], None] | None = None,
    ) -> None:
        """Send a plain text (confirmation, stand-down, news) in the background and log
        it; ``on_done(sent)`` is called on the worker once Twilio took it, or not. Texts
        wait behind every queued page, and re-press news behind every other text."""
        priority = NEWS if purpose == "repress" else TEXT
        self._submit(
            self._send_text, member, body, incident_id, purpose, on_done, priority=priority
        )

    def _send_text(
        self,
        member: Staff,
        body: str,
        incident_id: int | None,
        purpose: str,
        on_done: Callable[[bool], None] | None,
    ) -> None:
        body = messages.cut(body, BUDGET["sms"])  # a room label or a name of any length
        rendered = Rendered(
            member=member, channel="sms", page_ids=[], incident_ids=[], body=body, step=0
        )
        sid, error = self._deliver(rendered)
        with self._sessions.begin() as s:
            audit(
                s,
                at=self._clock(),
                type="message.sent" if sid else "message.failed",
                incident_id=incident_id,
                staff=member.id,
                purpose=purpose,
                code=error.code if error else None,
            )
        if on_done is not None:
            on_done(sid is not None)

    def close(self) -> None:
        self._pool.shutdown()


def _fit(
    lines: list[str],
    rooms: list[str],
    budget: int,
    footer: Callable[[int], str],
    *,
    bundle: bool | None = None,
    before: frozenset[str] = frozenset(),
) -> str:
    """As many of ``lines`` (one per page, about ``rooms``: room ids) as fit ``budget``
    UTF-16 units (as Twilio counts), a bundle's with ``footer(rooms not named)`` after
    them (rooms in ``before`` were named in an earlier text)."""
    bundle = len(lines) > 1 if bundle is None else bundle
    used = -1  # no newline before the first line
    best = ""
    for named in range(1, len(lines) + 1):
        used += 1 + messages.units(lines[named - 1])
        more = len(set(rooms[named:]) - set(rooms[:named]) - before)
        end = footer(more) if bundle else ""
        if used + (1 + messages.units(end) if end else 0) > budget:
            break
        best = "\n".join([*lines[:named], end] if end else lines[:named])
    if not best:
        # The first line and the footer do not fit (the compact budget, a long link):
        # cut the line, never the count or the link.
        end = footer(len(set(rooms[1:]) - {rooms[0]} - before)) if bundle else ""
        room_left = budget - (1 + messages.units(end) if end else 0)
        if end and room_left >= 40:
            best = f"{messages.cut(lines[0], room_left)}\n{end}"
        else:
            best = messages.cut(lines[0], budget)
    return best


def _split(
    lines: list[str],
    rooms: list[str],
    budget: int,
    footer: Callable[[int], str],
    *,
    most: int,
) -> list[str]:
    """``lines`` (one per page, about ``rooms``: room ids) over at most ``most`` texts
    of ``budget`` UTF-16 units each, in order; the last (or only) one is :func:`_fit`'s,
    its ``footer`` counting the rooms no text named."""
    texts: list[str] = []
    start = 0
    while len(texts) < most - 1 and start < len(lines):
        end, used = start + 1, messages.units(lines[start])
        while end < len(lines) and used + 1 + messages.units(lines[end]) <= budget:
            used += 1 + messages.units(lines[end])
            end += 1
        if end == len(lines):
            break  # the rest fits one text: _fit writes it (with its footer, if any)
        texts.append(messages.cut("\n".join(lines[start:end]), budget))
        start = end
    texts.append(
        _fit(
            lines[start:],
            rooms[start:],
            budget,
            footer,
            bundle=len(lines) > 1,
            before=frozenset(rooms[:start]),
        )
    )
    return texts
