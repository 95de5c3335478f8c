"""The stored log read back and checked: its entries and checkpoints, the whole check
(as an inspector's verifier makes it) and the check of what was appended since.

Both checks use the standalone verifier's code (``panicbutton.log.verify``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from panicbutton.log import checkpoints, integrity, meaning, merkle, spec, verdict
from server.log import append
from server.models import LogCheckpoint, LogEntry


def latest_checkpoint(session: Session) -> LogCheckpoint | None:
    """The database's newest checkpoint (the largest), or None before the first."""
    return session.scalars(
        select(LogCheckpoint).order_by(LogCheckpoint.size.desc(), LogCheckpoint.id.desc())
    ).first()


def stored_entries(
    session: Session, batch: int = 5000, *, start: int = 0, stop: int = -1
) -> Iterator[bytes]:
    """The stored entries' bytes from ``start`` (up to ``stop``, if given), in order,
    read in batches."""
    while start != stop:
        query = select(LogEntry.body).where(LogEntry.n >= start)
        if stop >= 0:
            query = query.where(LogEntry.n < stop)
        rows = session.scalars(query.order_by(LogEntry.n).limit(batch)).all()
        yield from rows
        if len(rows) < batch:
            return
        start += batch


def stored_notes(session: Session, *, upto: int | None = None) -> list[str]:
    """The checkpoints in the database, by size; those up to checkpoint id ``upto``
    (and no larger than it), if given."""
    query = select(LogCheckpoint.note).order_by(LogCheckpoint.size, LogCheckpoint.id)
    if upto is not None:
        cap = select(LogCheckpoint.size).where(LogCheckpoint.id == upto).scalar_subquery()
        query = query.where(LogCheckpoint.id <= upto, LogCheckpoint.size <= cap)
    return list(session.scalars(query).all())


def verify_stored(
    session: Session,
    key: checkpoints.VerifierKey,
    trusted: checkpoints.Checkpoint | None = None,
    kept: list[checkpoints.Checkpoint] | None = None,
) -> verdict.Report:
    """Verify the stored log as an inspector's verifier would, against the database's
    checkpoints and ``kept`` ones (the file's); raises VerificationError."""
    notes = {note: _size(note) for note in stored_notes(session)}
    notes.update({cp.note: cp.size for cp in kept or ()})
    if not notes:
        # A log never signed yet: its chain, and where it stands.
        scan = integrity.scan_entries(stored_entries(session), 0, spec.GENESIS)
        if scan.fault is not None:
            _, i, message = scan.fault
            raise verdict.VerificationError(
                message or f"entry {i}: its prev is not the entry before it", i
            )
        tree = spec.Frontier()
        for j in range(0, len(scan.leaves), 32):
            tree.append(scan.leaves[j : j + 32])
        return verdict.Report(
            size=tree.size,
            root=tree.root(),
            frontier=list(tree.hashes),
            last_leaf=scan.leaves[-32:] if tree.size else spec.GENESIS,
        )
    report, parsed = integrity.verify_full(
        stored_entries(session), sorted(notes, key=notes.__getitem__), key, trusted=trusted
    )
    meaning.check_meaning(parsed, report, full=True)
    return report


def _size(note: str) -> int:
    """A checkpoint's size, to put it in order (its signature is checked later)."""
    try:
        return checkpoints.parse_checkpoint_text(checkpoints.split_note(note)[0])[1]
    except spec.LogFormatError:
        return -1


@dataclass(frozen=True)
class Proven:
    """A stored log checked up to ``tree``; ``last_leaf`` is its last entry's leaf hash."""

    tree: spec.Frontier
    last_leaf: bytes = spec.GENESIS

    @classmethod
    def of(cls, report: verdict.Report) -> Proven:
        """Where a whole check (``verify_stored``) left the log."""
        return cls(spec.Frontier(report.size, report.frontier), report.last_leaf)


def verify_appended(
    session: Session,
    proven: Proven,
    key: checkpoints.VerifierKey,
    kept: list[checkpoints.Checkpoint],
) -> tuple[Proven, spec.Frontier]:
    """The stored head, once proven by an RFC 9162 consistency proof to extend the log
    ``proven`` so far, over the entries appended since, and agreeing with every newer
    checkpoint known (``kept``, the file's new ones, and the database's latest); returns
    the log proven up to the head, and the head. Raises VerificationError if not."""
    tree = proven.tree
    known = _known(session, key, kept)  # NOTE: before the head: a newer head covers them
    try:
        head = append.frontier(session.connection())
    except spec.LogFormatError as exc:
        raise verdict.VerificationError(f"the stored log head is damaged: {exc}") from None
    if head.size < tree.size:
        raise verdict.VerificationError(
            f"the log head says {head.size} entries, but {tree.size} were checked "
            "already: entries were removed (or an older backup restored)"
        )
    want = _unchecked(known, tree, head.size)
    scan = integrity.scan_entries(
        stored_entries(session, start=tree.size, stop=head.size), tree.size, proven.last_leaf
    )
    new = [scan.leaves[j : j + 32] for j in range(0, len(scan.leaves), 32)]
    grown = spec.Frontier(tree.size, tree.hashes)
    for leaf in new:
        grown.append(leaf)
        if want.get(grown.size, set()) - {grown.root()}:
            raise verdict.VerificationError(
                f"the signed checkpoint of size {grown.size} is not the log checked: "
                "the log was rewritten (or forked)"
            )
    if scan.fault is not None:
        kind, n, message = scan.fault
        if kind == "format":
            raise verdict.VerificationError(message, n)
        raise verdict.VerificationError(
            f"entry {n}: it is not the entry appended after the log checked "
            f"(entries before {n} were rewritten, or it was)",
            n,
        )
    if len(new) != head.size - tree.size:
        raise verdict.VerificationError(
            f"the log head says {head.size} entries, but only {tree.size + len(new)} are stored"
        )
    try:
        if tree.size:
            proof = merkle.consistency_proof_from(tree.size, tree.hashes, new)
            merkle.verify_consistency(tree.size, head.size, tree.root(), head.root(), proof)
        elif head.root() != grown.root():
            raise merkle.ProofError("the head's root is not the entries' root")
    except merkle.ProofError as exc:
        raise verdict.VerificationError(
            f"the stored log head ({head.size} entries) is not consistent with the log "
            f"checked up to {tree.size} entries ({exc}): the log was rewritten"
        ) from None
    return Proven(grown, new[-1] if new else proven.last_leaf), head


def _known(
    session: Session, key: checkpoints.VerifierKey, kept: list[checkpoints.Checkpoint]
) -> list[checkpoints.Checkpoint]:
    """The file's new checkpoints and the database's latest."""
    latest = latest_checkpoint(session)
    if latest is None:
        return kept
    try:
        return [*kept, checkpoints.open_checkpoint(latest.note, key)]
    except spec.LogFormatError as exc:
        raise verdict.VerificationError(f"the database's latest checkpoint: {exc}") from None


def _unchecked(
    known: list[checkpoints.Checkpoint], tree: spec.Frontier, head: int
) -> dict[int, set[bytes]]:
    """The roots of the checkpoints newer than ``tree``, by size; one of ``tree``'s
    own size must have its root. (An older one not seen before is left to the next
    whole check.)"""
    for cp in known:
        if cp.size > head:
            raise verdict.VerificationError(
                f"a signed checkpoint covers {cp.size} entries but the log head says "
                f"{head}: entries were cut off (or an older backup restored)"
            )
        if cp.size == tree.size and cp.root != tree.root():
            raise verdict.VerificationError(
                f"the signed checkpoint of size {cp.size} is not the log checked: "
                "the log was rewritten (or forked)"
            )
    want: dict[int, set[bytes]] = {}
    for cp in known:
        if cp.size > tree.size:
            want.setdefault(cp.size, set()).add(cp.root)
    return want
