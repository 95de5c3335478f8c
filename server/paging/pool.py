"""Worker threads that take the most urgent queued work first.

The pager's workers: many alerts at once never queue behind one another, and an
alarm page never waits behind a plain text or re-press news.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future

__all__ = ["PriorityPool"]

_Work = tuple[int, int, Future[object] | None, Callable[..., object], tuple[object, ...]]


class PriorityPool:
    """Worker threads taking the most urgent queued work first (lowest priority number,
    then first come); like a ThreadPoolExecutor, submit gives a Future and raises
    RuntimeError once closed, and shutdown runs what is queued."""

    def __init__(self, workers: int, name: str) -> None:
        self._queue: queue.PriorityQueue[_Work] = queue.PriorityQueue()
        self._order = itertools.count()
        self._closed = False
        self._pending = 0  # submitted and not finished
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
            self._pending += 1
        return future

    def pending(self) -> int:
        """Work submitted and not finished (queued or running)."""
        with self._lock:
            return self._pending

    def _work(self) -> None:
        while True:
            _, _, future, fn, args = self._queue.get()
            if future is None:  # shutdown: everything queued before it has run
                return
            try:
                if future.set_running_or_notify_cancel():
                    self._run(future, fn, args)
            finally:
                with self._lock:
                    self._pending -= 1

    @staticmethod
    def _run(future: Future[object], fn: Callable[..., object], args: tuple[object, ...]) -> None:
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
