"""The whole log checked from entry 0: every entry's canonical form, shape, number and
``prev``, the leaf hashes into the tree, and the tree against every signed checkpoint
(``VERIFY.md`` section 9, steps 3 to 7), on several cores for a long log."""

from __future__ import annotations

import gc
import itertools
import multiprocessing
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from panicbutton.log import checkpoints, merkle, spec
from panicbutton.log.commitments import check_personal
from panicbutton.log.verdict import Report, VerificationError


def open_checkpoints(
    notes: Sequence[object], key: checkpoints.VerifierKey
) -> list[checkpoints.Checkpoint]:
    """The checkpoints of ``checkpoints.jsonl``, each signed by ``key``, in order of size
    and never two different roots for one size (a fork)."""
    cps = []
    for i, note in enumerate(notes):
        if type(note) is not str:
            raise VerificationError(
                f"checkpoint {i + 1} in checkpoints.jsonl is not a JSON string (a signed note)"
            )
        try:
            cps.append(checkpoints.open_checkpoint(note, key))
        except spec.LogFormatError as exc:
            raise VerificationError(f"checkpoint {i + 1} in checkpoints.jsonl: {exc}") from None
    for a, b in itertools.pairwise(cps):
        if b.size < a.size:
            raise VerificationError(
                f"checkpoints out of order: size {b.size} comes after size {a.size}"
            )
        if a.size == b.size and a.root != b.root:
            raise VerificationError(
                f"two signed checkpoints of size {a.size} disagree: the log was forked"
            )
    return cps


#: Event types the meaning and personal-data checks read. Other entries are checked,
#: hashed and then dropped, so that a long log need not stay in memory.
KEPT = frozenset(
    {
        "alert.raised",
        "alert.refused",
        "device.sequence_gap",
        "device.sequence_back",
        "escalation.plan_frozen",
        "escalation.step_started",
        "escalation.follow_up",
        "incident.acknowledged",
        "incident.reopened",
        "log.heartbeat",
        "log.verified",
        "note.added",
        "config.changed",
        "config.staff",
        "record.viewed",
        "record.exported",
        "record.redacted",
        "review.signed_off",
    }
    # Every entry that names personal data (a ref and its commitment): the personal-data
    # checks match each row of personal.jsonl to the entry that names it.
    | {name for name, fields in spec.EVENT_TYPES.items() if "commitment" in fields}
)
#: Entries per worker task when verifying on several cores.
CHUNK = 25_000


@dataclass
class Scan:
    """What checking a run of entries found: their leaf hashes (32 bytes each, up to
    the first fault), the entries the later checks read, and the first fault."""

    leaves: bytes
    kept: list[spec.Entry]
    fault: tuple[str, int, str] | None = None


def scan_entries(rows: Iterable[bytes], start: int, last: bytes) -> Scan:
    """Canonical form, shape, numbering and the prev chain of entries ``start``.. (``last``
    is the leaf hash before them)."""
    leaves: list[bytes] = []
    kept: list[spec.Entry] = []
    parse, leaf_hash, keep = spec.parse_entry, spec.leaf_hash, KEPT
    entry = None
    for i, raw in enumerate(rows, start):
        try:
            entry = parse(raw)
        except spec.LogFormatError as exc:
            return Scan(b"".join(leaves), kept, ("format", i, f"entry {i}: {exc}"))
        if entry.n != i:
            message = (
                f"entry {i}: it says it is entry {entry.n}: an entry before it was "
                "removed, or entries were inserted or reordered"
            )
            return Scan(b"".join(leaves), kept, ("number", i, message))
        if entry.prev != last:
            return Scan(b"".join(leaves), kept, ("prev", i, ""))
        last = leaf_hash(raw)
        leaves.append(last)
        if entry.type in keep:
            kept.append(entry._replace(raw=b"", prev=b""))
    if entry is not None and (not kept or kept[-1].n != entry.n):
        kept.append(entry._replace(raw=b"", prev=b""))  # the last entry: where the log ends
    return Scan(b"".join(leaves), kept, None)


_SHARED: Sequence[bytes] = ()


def _scan_span(span: tuple[int, int]) -> Scan:
    a, b = span
    return scan_entries(_SHARED[a:b], a, spec.GENESIS if a == 0 else spec.leaf_hash(_SHARED[a - 1]))


def _scans(entries: Iterable[bytes], workers: int) -> Iterator[Scan]:
    """Scan results in log order: in this process, or on ``workers`` forked processes
    (each reads its share of the entries from memory it inherited, not a pipe)."""
    global _SHARED  # noqa: PLW0603 - how forked workers see the entries without a copy
    rows = entries if isinstance(entries, Sequence) else None
    if workers < 2 or rows is None or len(rows) < 2 * CHUNK or not _can_fork():
        yield scan_entries(entries, 0, spec.GENESIS)
        return
    spans = [(a, min(a + CHUNK, len(rows))) for a in range(0, len(rows), CHUNK)]
    _SHARED = rows
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            yield from pool.imap(_scan_span, spans)
    finally:
        _SHARED = ()


def _can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


def verify_full(
    entries: Iterable[bytes],
    notes: Sequence[str],
    key: checkpoints.VerifierKey,
    *,
    trusted: checkpoints.Checkpoint | None = None,
    personal: Sequence[dict[str, Any]] = (),
    workers: int = 1,
    sealed: bool = False,
) -> tuple[Report, list[spec.Entry]]:
    """Check a whole log from entry 0; raise VerificationError at the first bad entry.

    Returns the report and the entries the meaning checks read (``KEPT`` types and the
    last entry, without their bytes and prev). ``workers`` > 1 checks entries on that many
    processes (a list of entries is needed, and a platform that can fork). ``sealed``: the
    last checkpoint must cover every entry (an export's does); otherwise entries after
    it are a finding (a live log, signed a moment after each change).
    """
    # NOTE: the kept entries hold no cycles; the cyclic collector would only walk
    # them over and over (a sixth of the time).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _verify_full(
            entries, notes, key, trusted=trusted, personal=personal, workers=workers, sealed=sealed
        )
    finally:
        if collecting:
            gc.enable()


def _verify_full(  # noqa: PLR0912 - one branch per check
    entries: Iterable[bytes],
    notes: Sequence[str],
    key: checkpoints.VerifierKey,
    *,
    trusted: checkpoints.Checkpoint | None,
    personal: Sequence[dict[str, Any]],
    workers: int,
    sealed: bool,
) -> tuple[Report, list[spec.Entry]]:
    cps = open_checkpoints(notes, key)
    if not cps:
        raise VerificationError("the bundle holds no signed checkpoint: nothing in it is signed")
    # NOTE: the trusted checkpoint is checked on its own: a bundle re-signed at the same
    # size (a rewritten log) must not hide it behind its own checkpoint of that size.
    want: dict[int, list[tuple[str, bytes]]] = defaultdict(list)
    for cp in cps:
        want[cp.size].append((f"the signed checkpoint of size {cp.size}", cp.root))
    if trusted is not None:
        want[trusted.size].insert(0, ("the trusted checkpoint", trusted.root))
    if any(root != merkle.EMPTY_ROOT for _, root in want.get(0, [])):
        raise VerificationError("a checkpoint of size 0 has a root other than the empty tree's")
    tree = spec.Frontier()
    last_good_cp = 0
    parsed: list[spec.Entry] = []
    for scan in _scans(entries, workers):
        leaves = scan.leaves
        for j in range(0, len(leaves), 32):
            tree.append(leaves[j : j + 32])
            for who, signed in want.get(tree.size, ()):
                if signed != tree.root():
                    # NOTE: the bundle's own checkpoints vouch for nothing the trusted
                    # one contradicts: against it, the change may be anywhere from 0.
                    first = 0 if who == "the trusted checkpoint" else last_good_cp
                    raise VerificationError(
                        f"entries {first}..{tree.size - 1} are not what {who} covers: the "
                        f"log was rewritten from entry {first} on (or an older backup "
                        "restored)",
                        first,
                    )
                last_good_cp = tree.size
        parsed.extend(scan.kept)
        if scan.fault is not None:
            kind, i, message = scan.fault
            if kind != "prev":
                raise VerificationError(message, i)
            if i in (0, last_good_cp):
                # Entries 0..i-1 are proven (a signed checkpoint of size i matched): the
                # fault is entry i's own prev.
                raise VerificationError(f"entry {i}: its prev is not the entry before it", i)
            raise VerificationError(
                f"entry {i - 1}: it is not the entry {i} was appended after "
                f"(entry {i - 1} was changed, or entry {i}'s prev was)",
                i - 1,
            )
    report = Report(
        size=tree.size,
        root=tree.root(),
        checkpoints=len(cps),
        frontier=list(tree.hashes),
        last_leaf=leaves[-32:] if tree.size else spec.GENESIS,
    )
    beyond = [cp.size for cp in cps if cp.size > tree.size]
    if beyond:
        raise VerificationError(
            f"a signed checkpoint covers {max(beyond)} entries but the log has {tree.size}: "
            f"entries {tree.size}..{max(beyond) - 1} were cut off",
            tree.size,
        )
    if trusted is not None and trusted.size > tree.size:
        raise VerificationError(
            f"the trusted checkpoint covers {trusted.size} entries but the log has only "
            f"{tree.size}: this is an older copy of the log (a restored backup?), or it "
            "was cut short",
            tree.size,
        )
    if cps[-1].size < tree.size and sealed:
        raise VerificationError(
            f"entries {cps[-1].size}..{tree.size - 1} come after the bundle's last signed "
            f"checkpoint (size {cps[-1].size}): an export signs every entry it holds, so "
            "they were added or changed after the export",
            cps[-1].size,
        )
    if cps[-1].size < tree.size:
        report.findings.append(
            f"entries {cps[-1].size}..{tree.size - 1} came after the last signed checkpoint: "
            "nothing proves they were not changed"
        )
    check_personal(parsed, personal, report)
    return report, parsed
