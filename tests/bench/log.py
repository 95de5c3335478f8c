"""The incident log: append throughput with durable commits, and verify throughput.

Append: N transactions through the server's own path (``server.log.append.audit``
in a session; the commit hook numbers, hashes and inserts under the head's
lock), one entry per commit and ten per commit, on a fresh database of the
kind the bench runs on (SQLite: WAL, synchronous=FULL). Floor: the same
number of commits, each inserting the same number of rows of the same size
into a plain table, with no numbering, hashing or lock.

Verify: ``panicbutton.verify.verify_full`` (what ``panicbutton audit verify``
runs) over a log of realistic entries with a signed checkpoint every 100
entries, from bytes in memory.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Column, Integer, LargeBinary, MetaData, String, Table, insert

from panicbutton.log import checkpoints, integrity, spec
from server.db import make_engine, migrate, sessions
from server.log.append import audit

STEP: dict[str, Any] = {"step": 1, "due": "2026-11-28T21:04:35.000Z", "lag_ms": 7}


@dataclass(frozen=True)
class AppendRun:
    per_commit: int
    entries: int
    seconds: float
    floor_seconds: float

    @property
    def rate(self) -> float:
        return self.entries / self.seconds

    @property
    def floor_rate(self) -> float:
        return self.entries / self.floor_seconds


def measure_append(url: str, *, entries: int, per_commit: int) -> AppendRun:
    engine = make_engine(url)
    try:
        migrate(engine)
        maker = sessions(engine)
        at = datetime.now(UTC)
        commits = entries // per_commit
        started = time.perf_counter()
        for i in range(commits):
            with maker.begin() as s:
                for _ in range(per_commit):
                    audit(s, at=at, type="escalation.step_started", incident_id=i, **STEP)
        seconds = time.perf_counter() - started
        sample = spec.entry_bytes(
            n=0, at=at, type_="escalation.step_started", incident=1, data=STEP, prev=b"\0" * 32
        )
        plain = Table(
            f"bench_floor_{per_commit}",
            MetaData(),
            Column("id", Integer, primary_key=True),
            Column("type", String(48)),
            Column("body", LargeBinary),
        )
        plain.create(engine)
        started = time.perf_counter()
        for _ in range(commits):
            with engine.begin() as conn:
                conn.execute(
                    insert(plain),
                    [{"type": "escalation.step_started", "body": sample}] * per_commit,
                )
        floor = time.perf_counter() - started
    finally:
        engine.dispose()
    return AppendRun(per_commit, commits * per_commit, seconds, floor)


@dataclass(frozen=True)
class VerifyRun:
    entries: int
    checkpoints: int
    seconds: float
    parallel_seconds: float
    workers: int

    @property
    def rate(self) -> float:
        return self.entries / self.seconds

    @property
    def parallel_rate(self) -> float:
        return self.entries / self.parallel_seconds


def synthetic_log(
    entries: int, every: int = 100
) -> tuple[list[bytes], list[str], checkpoints.Signer]:
    """A log of ``entries`` realistic entries, signed every ``every`` entries."""
    signer = checkpoints.Signer.generate("panicbutton.bench/log")
    tree, last = spec.Frontier(), spec.GENESIS
    bodies: list[bytes] = []
    notes: list[str] = []
    start = datetime(2026, 11, 28, 21, 0, tzinfo=UTC)
    kinds: list[tuple[str, dict[str, Any]]] = [
        ("alert.raised", {"alert_id": "a" * 32, "device": "unit-1", "room": "room-1", "seq": 1}),
        ("escalation.step_started", STEP),
        ("page.queued", {"page": 4, "staff": "reception", "channel": "sms", "step": 0}),
        ("page.sent", {"page": 4, "provider_id": "SM" + "0" * 32, "bundled": 1}),
        ("incident.acknowledged", {"staff": "reception", "via": "sms"}),
    ]
    for n in range(entries):
        type_, data = kinds[n % len(kinds)]
        if type_ == "alert.raised":
            data = {**data, "seq": n // len(kinds) + 1, "kind": "test"}
        body = spec.entry_bytes(
            n=n,
            at=start + timedelta(milliseconds=n),
            type_=type_,
            incident=n // len(kinds) + 1,
            data=data,
            prev=last,
        )
        bodies.append(body)
        last = spec.leaf_hash(body)
        tree.append(last)
        if tree.size % every == 0 or tree.size == entries:
            notes.append(signer.sign_checkpoint(tree.size, tree.root()).note)
    return bodies, notes, signer


def measure_verify(entries: int) -> VerifyRun:
    bodies, notes, signer = synthetic_log(entries)
    workers = len(os.sched_getaffinity(0))
    seconds = []
    for n in (1, workers):
        started = time.perf_counter()
        report, _ = integrity.verify_full(bodies, notes, signer.verifier, workers=n)
        seconds.append(time.perf_counter() - started)
        if report.size != entries:
            raise RuntimeError("the verify bench verified the wrong number of entries")
    return VerifyRun(entries, len(notes), seconds[0], seconds[1], workers)


def log_report(appends: list[AppendRun], check: VerifyRun, db: str) -> list[str]:
    lines = [
        "",
        f"5. Incident log (server on {db})",
        "   Append: commits through the server's own path (audit() + the commit hook that",
        "   numbers, hashes and inserts under the log head's lock). Durable commits: SQLite",
        "   synchronous=FULL, PostgreSQL synchronous_commit on (its default). Floor: the",
        "   same commits inserting plain rows of the same size, no numbering, hashing or lock.",
        "",
        "   entries per commit | entries | entries/s | floor entries/s | app / floor time",
    ]
    for a in appends:
        lines.append(
            f"   {a.per_commit:>18} | {a.entries:>7} | {a.rate:>9,.0f} | {a.floor_rate:>15,.0f} | "
            f"{a.seconds / a.floor_seconds:>15.1f}x"
        )
    lines += [
        "",
        "   Verify: panicbutton.verify.verify_full (what `panicbutton audit verify` runs) on",
        f"   {check.entries:,} entries in memory with {check.checkpoints:,} signed checkpoints",
        "   (target >= 100,000 entries/s):",
        f"     one process:  {check.seconds:.2f} s, {check.rate:,.0f} entries/s",
        (
            f"     {check.workers} processes (what the command uses on this machine): "
            f"{check.parallel_seconds:.2f} s, {check.parallel_rate:,.0f} entries/s"
        ),
    ]
    return lines
