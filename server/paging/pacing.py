"""Pacing: each sender's requests queued here and let go at the rate Twilio takes them.

A Twilio long code sends about one SMS a second and an account places about one call
a second. Asked faster, Twilio queues the excess in the order it came (where a first
page can wait behind re-press news, and expire) or answers 429. So the pager keeps
the queue itself, one per sender (the SMS sender, the caller), and hands a request
to its workers only when the sender's next slot comes: no worker waits for a slot,
and an urgent request queued late still goes next.

Order in a sender's queue (:data:`FIRST` ... :data:`NEWS`): first pages of new
alarms, then later steps and follow-ups, then plain texts, then re-press news; the
oldest first within each. Pages to one person on one channel meet in the queue and
go as one (a bundle): a page queued for someone who already has one waiting joins it.

Each sender is a token bucket: its rate, and at most a burst of requests at once
after a quiet while (1 by default: every request spaced by the rate). A sender's
next request is let go once the one before is settled (:meth:`Pacer.settle`): its
size known, just before it goes to Twilio, or dropped. An SMS sent as several
segments takes a slot for each, as Twilio counts; a request not sent (its alarm
was taken meanwhile) gives its slot back. A 429 pauses
the sender's whole queue for its ``Retry-After`` (:meth:`Pacer.pause`); the request
that got it goes back in its place. Waits are on the pager's clock.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from panicbutton.clock import Clock

__all__ = ["FIRST", "LATER", "NEWS", "TEXT", "Pacer", "Send"]

log = logging.getLogger(__name__)

#: Ranks, most urgent first: the first step of an alarm; later steps and follow-ups;
#: plain texts (confirmations, stand-downs); re-press news.
FIRST, LATER, TEXT, NEWS = 0, 1, 2, 3
#: Seconds the pacer's thread sleeps at most with nothing due (a new request wakes it).
IDLE = 60.0


@dataclass(eq=False)
class Send:
    """One request waiting for its sender's slot.

    ``lane`` is the sender's channel ("sms" or "call": the server has one of each);
    ``run(send)`` is called on a worker when the slot comes. Pages carry ``key``
    (staff id, channel) and ``page_ids``: a later send with the same key joins a
    waiting one. ``paused``: seconds of 429 pauses this request has sat out.
    """

    lane: str
    rank: int
    run: Callable[[Send], None]
    key: tuple[str, str] | None = None
    page_ids: list[int] = field(default_factory=list)
    order: int = -1  # first come, first served within a rank; set when first queued
    paused: float = 0.0


@dataclass
class _Lane:
    """One sender's queue and its token bucket (``rate`` a second, at most ``burst``)."""

    rate: float
    burst: int
    tokens: float
    last: float  # monotonic time the tokens were counted at
    waiting: list[Send] = field(default_factory=list)
    pages: dict[tuple[str, str], Send] = field(default_factory=dict)  # waiting, by key
    paused_until: float = float("-inf")
    unsettled: Send | None = None  # let go, its size not yet known

    def until_token(self, now: float) -> float:
        """Seconds until a request may go (0: now); counts the tokens up to ``now``."""
        if math.isinf(self.rate):  # not paced (no 0 * inf in the count)
            self.tokens, self.last = float(self.burst), max(now, self.last)
        elif now > self.last:
            self.tokens = min(float(self.burst), self.tokens + (now - self.last) * self.rate)
            self.last = now
        if now < self.paused_until:
            return self.paused_until - now
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate


class Pacer:
    """Per-sender queues let go at ``rates`` (requests a second, by channel; ``math.inf``:
    not paced) on ``clock``, ``burst`` at once at most after a quiet while (1: evenly
    spaced).

    ``grant(send)`` is called on the pacer's own thread as each request's slot comes (it
    hands the request to the workers, most urgent first).
    """

    def __init__(
        self,
        *,
        clock: Clock,
        rates: dict[str, float],
        burst: int = 1,
        grant: Callable[[Send], None],
    ) -> None:
        if any(rate <= 0 for rate in rates.values()) or burst < 1:
            raise ValueError(f"rates must be above 0 and the burst at least 1: {rates}, {burst}")
        self._clock = clock
        self._grant = grant
        now = clock.monotonic()
        self._lanes = {
            channel: _Lane(rate=rate, burst=burst, tokens=float(burst), last=now)
            for channel, rate in rates.items()
        }
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._moved = threading.Event()  # a request came, a pause changed, or closing
        self._closed = False
        self._granting = 0  # taken from a queue, not yet handed to the workers
        self._thread = threading.Thread(target=self._run, name="pager_pacer", daemon=True)
        self._thread.start()

    def put(self, send: Send) -> bool:
        """Queue ``send`` (again, after a 429: it keeps its place); pages to a person who
        has pages waiting on that channel join them. False once closed."""
        with self._lock:
            if self._closed:
                return False
            lane = self._lanes[send.lane]
            if send.order < 0:
                send.order = next(self._order)
            waiting = lane.pages.get(send.key) if send.key is not None else None
            if waiting is not None:
                joining = [i for i in send.page_ids if i not in waiting.page_ids]
                # The more urgent pages lead: a call is said as its first page is.
                if send.rank < waiting.rank:
                    waiting.page_ids = joining + waiting.page_ids
                else:
                    waiting.page_ids += joining
                waiting.rank = min(waiting.rank, send.rank)
                waiting.order = min(waiting.order, send.order)
                waiting.paused = max(waiting.paused, send.paused)
            else:
                lane.waiting.append(send)
                if send.key is not None:
                    lane.pages[send.key] = send
            # Its slot may have come already: let it go from here, without a hop through
            # the pacer's thread (the most urgent waiting goes, as that thread would pick).
            due = self._take(lane, self._clock.monotonic()) if waiting is None else None
            if due is None:
                self._moved.set()
                return True
            self._granting += 1
        self._hand(due)
        return True

    def pause(self, lane: str, seconds: float) -> None:
        """Twilio answered 429 for this sender: nothing more goes for ``seconds``."""
        with self._lock:
            until = self._clock.monotonic() + seconds
            held = self._lanes[lane]
            if until > held.paused_until:
                log.info("%s sender paused %.1f s: Twilio asks to wait (429)", lane, seconds)
                # Then one request, and the rate from there: Twilio's count is not ours.
                held.paused_until, held.tokens, held.last = until, 1.0, until
        self._moved.set()

    def settle(self, send: Send, extra: float) -> None:
        """The request let go is about to reach Twilio and takes ``extra`` slots more
        than its own (an SMS of several segments), or is not sent at all (``extra``
        -1: its slot is given back); the sender's next request may go. Once per grant:
        later calls change nothing."""
        with self._lock:
            held = self._lanes[send.lane]
            if held.unsettled is not send:
                return
            held.unsettled = None
            held.until_token(self._clock.monotonic())
            held.tokens = min(float(held.burst), held.tokens - extra)
        self._moved.set()

    def waiting(self) -> dict[str, int]:
        """Requests queued, by channel (a bundle counts once)."""
        with self._lock:
            return {channel: len(lane.waiting) for channel, lane in self._lanes.items()}

    def backlog(self) -> int:
        """Requests queued or being handed to the workers."""
        with self._lock:
            return sum(len(lane.waiting) for lane in self._lanes.values()) + self._granting

    def close(self) -> list[Send]:
        """Stop letting requests go; return those still queued."""
        with self._lock:
            self._closed = True
            left = [send for lane in self._lanes.values() for send in lane.waiting]
            for lane in self._lanes.values():
                lane.waiting.clear()
                lane.pages.clear()
        self._moved.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        return left

    def _run(self) -> None:
        while True:
            self._moved.clear()
            with self._lock:
                if self._closed:
                    return
                due, wait = self._take_due()
                self._granting += len(due)
            for send in due:
                self._hand(send)
            if not due:
                self._clock.wait(self._moved, None, wait)

    def _hand(self, send: Send) -> None:
        """Hand a request whose slot came to the workers (counted in ``_granting``)."""
        try:
            self._grant(send)
        except Exception:  # the queues must keep going for the other requests
            log.exception("a %s request could not be handed to the workers", send.lane)
            self.settle(send, -1)
        finally:
            with self._lock:
                self._granting -= 1

    def _take_due(self) -> tuple[list[Send], float]:
        """The most urgent request of each sender whose slot has come, and the seconds
        until the next slot of a sender with requests waiting (under the lock)."""
        now = self._clock.monotonic()
        due, wait = [], IDLE
        for lane in self._lanes.values():
            if (send := self._take(lane, now)) is not None:
                due.append(send)
            elif lane.waiting and lane.unsettled is None:
                wait = min(wait, lane.until_token(now))
        return due, wait

    @staticmethod
    def _take(lane: _Lane, now: float) -> Send | None:
        """The most urgent request of ``lane``, taken from its queue with a slot, if its
        slot has come and the request before it is settled (under the lock)."""
        if not lane.waiting or lane.unsettled is not None or lane.until_token(now) > 0:
            return None
        send = min(lane.waiting, key=lambda s: (s.rank, s.order))
        lane.waiting.remove(send)
        if send.key is not None:
            del lane.pages[send.key]
        lane.tokens -= 1.0
        lane.unsettled = send
        return send
