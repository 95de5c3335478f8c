"""Appending to the incident log.

Every state change calls :func:`audit` in its own transaction; the entries are
numbered, hashed and written when that transaction commits, under the log
head's row lock, so that

* numbers are gapless: a rolled-back transaction takes no number (a gap
  could not be told from a deletion);
* the change and its entry commit together or not at all;
* the lock is held only for the last moments of the transaction.

Events hold ids and codes only, never names, numbers or free text: those go
to :mod:`server.log.personal`, and the entry holds a ref and a salted commitment.
"""

from __future__ import annotations

import sqlite3
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, event, insert, select, update
from sqlalchemy.orm import Session, SessionTransaction

from panicbutton.log import canonical, spec
from server.models import LogEntry, LogState

_PENDING = "panicbutton.log.pending"
_APPENDED = "panicbutton.log.appended"
_MARKS = "panicbutton.log.savepoints"
type_of = type  # the builtin, which audit()'s parameter named "type" hides
_HASH = 32


@dataclass(frozen=True)
class _Event:
    at: datetime
    type: str
    incident_id: int | None
    key: str | None
    data: dict[str, Any]


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return spec.format_time(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def audit(
    session: Session,
    *,
    at: datetime,
    type: str,
    incident_id: int | None = None,
    key: str | None = None,
    **data: Any,
) -> None:
    """Append one event to the incident log when ``session`` commits.

    ``key`` is an idempotency key (unique in the log). Raises
    :class:`~panicbutton.log.spec.LogFormatError` for a type outside the closed set
    or a field it may not hold, and ``CanonicalError`` for a value the log
    cannot hold, at the call rather than at commit.
    """
    if at.tzinfo is None:
        raise spec.LogFormatError(f"event {type}: its time must carry a time zone (UTC)")
    if incident_id is not None and type_of(incident_id) is not int:
        raise spec.LogFormatError(f"event {type}: incident_id must be a number or None")
    clean = {k: _plain(v) for k, v in data.items()}
    spec.check_event(type, clean)
    canonical.dumps(clean)
    if not session.in_transaction():
        # Tie the event to a transaction, so that closing the session without a commit
        # ends it, and the event with it.
        session.begin()
    session.info.setdefault(_PENDING, []).append(_Event(at, type, incident_id, key, clean))


def _hashes(blob: bytes) -> list[bytes]:
    """The stored frontier: 32-byte hashes, concatenated."""
    return [blob[i : i + _HASH] for i in range(0, len(blob), _HASH)]


def frontier(conn: Connection) -> spec.Frontier:
    """The log head as stored (size and right edge of the tree)."""
    size, blob, _ = conn.execute(_READ).one()
    return spec.Frontier(size, _hashes(blob))


# Built once: appending is on every state change's commit.
_CLAIM = (
    update(LogState)
    .where(LogState.id == 1)
    .values(size=LogState.size + bindparam("batch"))
    .returning(LogState.size, LogState.frontier, LogState.last_leaf)
)
# SQLite before 3.35 (Debian 11) has no RETURNING: the UPDATE then a SELECT, still
# in that order so that the lock is taken before the head is read.
_RETURNING = sqlite3.sqlite_version_info >= (3, 35)
_CLAIM_ONLY = (
    update(LogState).where(LogState.id == 1).values(size=LogState.size + bindparam("batch"))
)
_READ = select(LogState.size, LogState.frontier, LogState.last_leaf).where(LogState.id == 1)
_STORE = (
    update(LogState)
    .where(LogState.id == 1)
    .values(frontier=bindparam("new_frontier"), last_leaf=bindparam("new_last"))
)
_INSERT = insert(LogEntry)


def _append(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint released: its events go with the whole transaction
    pending: list[_Event] | None = session.info.pop(_PENDING, None)
    if not pending:
        return
    try:
        _write(session, pending)
    except BaseException:
        # Nothing was appended: the events stay with the change, which rolls back
        # or is committed again (and then numbered again) with them.
        session.info[_PENDING] = pending
        raise


def _write(session: Session, pending: list[_Event]) -> None:
    session.flush()
    conn = session.connection()
    # NOTE: one UPDATE ... RETURNING takes the head row's lock (PostgreSQL) or the
    # write lock (SQLite) and reads the head under it, so no other writer can take
    # the same numbers; its rollback gives them back.
    if _RETURNING:
        size, blob, last = conn.execute(_CLAIM, {"batch": len(pending)}).one()
    else:
        conn.execute(_CLAIM_ONLY, {"batch": len(pending)})
        size, blob, last = conn.execute(_READ).one()
    # The stored size already counts this batch; the stored hashes do not yet.
    tree = spec.Frontier(size - len(pending), _hashes(blob))
    rows = []
    for ev in pending:
        body = spec.entry_bytes(
            n=tree.size, at=ev.at, type_=ev.type, incident=ev.incident_id, data=ev.data, prev=last
        )
        rows.append(
            {
                "n": tree.size,
                "at": ev.at,
                "type": ev.type,
                "incident_id": ev.incident_id,
                "key": ev.key,
                "body": body,
            }
        )
        last = spec.leaf_hash(body)
        tree.append(last)
    conn.execute(_INSERT, rows)
    conn.execute(_STORE, {"new_frontier": b"".join(tree.hashes), "new_last": last})
    session.info[_APPENDED] = True


_listeners: weakref.WeakKeyDictionary[Engine, list[Callable[[], None]]] = (
    weakref.WeakKeyDictionary()
)
_listeners_lock = threading.Lock()


def on_append(engine: Engine, callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback`` (on the committing thread) after each commit that appended
    to ``engine``'s log; returns a function that removes it."""
    with _listeners_lock:
        _listeners.setdefault(engine, []).append(callback)

    def remove() -> None:
        with _listeners_lock:
            _listeners.get(engine, []).remove(callback)

    return remove


def _after_commit(session: Session) -> None:
    if not session.info.pop(_APPENDED, False):
        return
    bind = session.get_bind()
    engine = bind.engine if isinstance(bind, Connection) else bind
    with _listeners_lock:
        callbacks = list(_listeners.get(engine, []))
    for callback in callbacks:
        callback()


def _savepoint(session: Session, transaction: SessionTransaction) -> None:
    if transaction.nested:
        marks = session.info.setdefault(_MARKS, {})
        marks[id(transaction)] = len(session.info.get(_PENDING, []))


def _after_rollback(session: Session, transaction: SessionTransaction) -> None:
    # The change did not happen, so neither did its events: all of them, or those
    # made since the savepoint that was rolled back.
    # NOTE: a failed flush rolls back through an inner helper transaction that is not
    # itself nested: what was undone is its nearest savepoint, if it has one.
    undone: SessionTransaction | None = transaction
    while undone is not None and not undone.nested:
        undone = undone.parent
    if undone is not None:
        mark = session.info.get(_MARKS, {}).get(id(undone))
        if mark is not None:
            del session.info.get(_PENDING, [])[mark:]
        return
    session.info.pop(_PENDING, None)
    session.info.pop(_APPENDED, None)


def _ended(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        # Closed without a commit (or after one): nothing pending may outlive it.
        session.info.pop(_PENDING, None)
        session.info.pop(_MARKS, None)


# NOTE: on the Session class, so that every session (a service's, a test's, a
# migration script's) writes its events; none can drop them by being made elsewhere.
event.listen(Session, "before_commit", _append)
event.listen(Session, "after_commit", _after_commit)
event.listen(Session, "after_transaction_create", _savepoint)
event.listen(Session, "after_soft_rollback", _after_rollback)
event.listen(Session, "after_transaction_end", _ended)
