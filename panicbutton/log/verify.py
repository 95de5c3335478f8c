"""The standalone verifier: ``panicbutton audit verify BUNDLE [--key K] [--trusted CP]``.

Uses the standard library and ``cryptography`` only, and never imports server
code, so an inspector can check an export with nothing of ours but this
package (``pip install 'panicbutton[audit]'``); ``VERIFY.md`` in every bundle
describes the same algorithm for anyone who would rather write their own.

Exit status: 0 verified and no findings; 1 verification failed (the message
names the first bad entry or file); 2 the bundle or an option could not be
read; 3 verified, with findings (open alerts, late steps, lost alerts, silent
periods) listed; 4 the verifier itself failed (a bug: no verdict on the bundle).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import itertools
import json
import multiprocessing
import os
import re
import sys
import zipfile
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from panicbutton.log import canonical, merkle, spec

BUNDLE_FORMAT = "panicbutton-log-bundle/v1"
#: The files a manifest cannot list: itself, and the signature over it.
UNLISTED = frozenset({"manifest.json", "manifest.sig"})
#: An escalation step that started later than this after its due time is late.
LATE_MS = 15_000
#: Heartbeats are every 15 minutes; a longer silence than this is reported.
SILENCE = timedelta(minutes=20)
#: A plan's repeat beyond this (seconds) is no plan the server makes; it is not checked.
MAX_REPEAT = 10**7
#: Slack after the plan's repeat before an open alarm counts as no longer paged.
PAGING_SLACK = timedelta(seconds=60)

OK, FAILED, UNREADABLE, FINDINGS, VERIFIER_ERROR = 0, 1, 2, 3, 4


class VerificationError(Exception):
    """The log is not what was signed; ``entry`` is the first bad entry, when known."""

    def __init__(self, message: str, entry: int | None = None) -> None:
        super().__init__(message)
        self.entry = entry


class BundleError(Exception):
    """The bundle or an option cannot be read at all."""


@dataclass
class Report:
    size: int = 0
    #: Entries disclosed and checked: all of them (``size``) in a full bundle.
    disclosed: int | None = None
    root: bytes = merkle.EMPTY_ROOT
    checkpoints: int = 0
    personal_checked: int = 0
    #: The tree's right edge and last leaf hash once checked (full logs only): where the
    #: server's log keeper goes on from.
    frontier: list[bytes] = field(default_factory=list)
    last_leaf: bytes = spec.GENESIS
    open_incidents: list[int] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: The key the bundle was checked with, when it came from the bundle's own log-key.pub.
    bundle_key: spec.VerifierKey | None = None


# -- integrity --------------------------------------------------------------------------
def _checkpoints(notes: Sequence[object], key: spec.VerifierKey) -> list[spec.Checkpoint]:
    cps = []
    for i, note in enumerate(notes):
        if type(note) is not str:
            raise VerificationError(
                f"checkpoint {i + 1} in checkpoints.jsonl is not a JSON string (a signed note)"
            )
        try:
            cps.append(spec.open_checkpoint(note, key))
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
    key: spec.VerifierKey,
    *,
    trusted: spec.Checkpoint | None = None,
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
    key: spec.VerifierKey,
    *,
    trusted: spec.Checkpoint | None,
    personal: Sequence[dict[str, Any]],
    workers: int,
    sealed: bool,
) -> tuple[Report, list[spec.Entry]]:
    cps = _checkpoints(notes, key)
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
    _check_personal(parsed, personal, report)
    return report, parsed


def verify_partial(
    entries: Sequence[bytes],
    notes: Sequence[str],
    key: spec.VerifierKey,
    proofs: Sequence[dict[str, Any]],
    personal: Sequence[dict[str, Any]] = (),
    *,
    scope: str = "",
) -> tuple[Report, list[spec.Entry]]:
    """Check a few entries against one signed checkpoint with inclusion proofs.

    Each entry is proven to be in the signed log, in order and once; that no entry of
    the scope was left out cannot be proven from a part of the log (the report says so).
    """
    cps = _checkpoints(notes, key)
    if len(cps) != 1:
        raise VerificationError("a partial bundle carries exactly one checkpoint")
    cp = cps[0]
    if len(proofs) != len(entries):
        raise VerificationError("proofs.jsonl must hold one proof per entry")
    parsed: list[spec.Entry] = []
    person = scope.partition(":")[2] if scope.startswith("person:") else None
    held = {str(row.get("ref")) for row in personal}
    for line, (raw, proof) in enumerate(zip(entries, proofs, strict=True)):
        try:
            entry = spec.parse_entry(raw)
        except spec.LogFormatError as exc:
            raise VerificationError(f"entries.jsonl line {line + 1}: {exc}") from None
        if type(proof) is not dict or proof.keys() != {"n", "path"}:
            raise VerificationError(
                f"proofs.jsonl line {line + 1}: a proof is an object with exactly n and path"
            )
        if proof.get("n") != entry.n:
            raise VerificationError(f"entry {entry.n}: its proof is for entry {proof.get('n')}")
        if parsed and entry.n <= parsed[-1].n:
            raise VerificationError(
                f"entries.jsonl line {line + 1}: entry {entry.n} comes after entry "
                f"{parsed[-1].n}: entries were reordered or repeated",
                entry.n,
            )
        if scope.startswith("incident:") and str(entry.incident) != scope.partition(":")[2]:
            raise VerificationError(
                f"entry {entry.n} belongs to incident {entry.incident}, not to this bundle's "
                f"{scope}",
                entry.n,
            )
        hashes = proof["path"]
        if type(hashes) is not list or not all(
            type(h) is str and _HEX64_RE.fullmatch(h) for h in hashes
        ):
            raise VerificationError(
                f"entry {entry.n}: its proof's path is not a list of hashes as 64 lowercase "
                "hex digits",
                entry.n,
            )
        if person is not None and not _names_person(entry, person, held):
            raise VerificationError(
                f"entry {entry.n} does not name {person} (as staff or by, or through personal "
                f"data in this bundle): it is no part of this bundle's {scope}",
                entry.n,
            )
        try:
            path = [bytes.fromhex(h) for h in hashes]
            merkle.verify_inclusion(entry.n, cp.size, spec.leaf_hash(raw), path, cp.root)
        except (KeyError, TypeError, ValueError) as exc:
            raise VerificationError(
                f"entry {entry.n}: not in the signed log of {cp.size} entries ({exc})", entry.n
            ) from None
        parsed.append(entry)
    report = Report(size=cp.size, root=cp.root, checkpoints=1, disclosed=len(parsed))
    report.notes.append(
        "a partial bundle proves each entry it holds is in the signed log; it cannot prove "
        "that none of its scope was left out (a full bundle can)"
    )
    _check_personal(parsed, personal, report)
    return report, parsed


_HEX64_RE = re.compile(r"[0-9a-f]{64}")


def _names_person(entry: spec.Entry, person: str, refs: set[str]) -> bool:
    """A person's bundle holds the entries naming them as ``staff`` or ``by``, and those
    whose ``ref`` is personal data about them (carried in the bundle's personal.jsonl)."""
    data = entry.data
    return any(data.get(f) == person for f in spec.PERSON_FIELDS) or data.get("ref") in refs


def _commitments(value: Any) -> Iterable[tuple[str, str]]:
    """Every (ref, commitment) pair in an entry's data (a note's, or each roster member's
    inside ``config.changed``)."""
    if isinstance(value, dict):
        if isinstance(value.get("ref"), str) and isinstance(value.get("commitment"), str):
            yield value["ref"], value["commitment"]
        for item in value.values():
            yield from _commitments(item)
    elif isinstance(value, list):
        for item in value:
            yield from _commitments(item)


_ROW_KEYS = frozenset({"ref", "salt", "value"})


def personal_rows(lines: Sequence[bytes]) -> list[dict[str, Any]]:
    """The rows of ``personal.jsonl``: each canonical, exactly ref, salt and value, each
    ref once."""
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, line in enumerate(lines, 1):
        where = f"personal.jsonl line {i}"
        try:
            row = canonical.loads(line)
        except canonical.CanonicalError as exc:
            raise VerificationError(f"{where}: not canonical JSON ({exc})") from None
        if type(row) is not dict or row.keys() != _ROW_KEYS:
            raise VerificationError(f"{where}: a row is an object with exactly ref, salt, value")
        if type(row["ref"]) is not str:
            raise VerificationError(f"{where}: ref must be a string")
        if type(row["salt"]) is not str or not _SALT_RE.fullmatch(row["salt"]):
            raise VerificationError(f"{where}: salt must be 32 lowercase hex digits")
        if row["ref"] in seen:
            raise VerificationError(f"{where}: personal data {row['ref']} is given twice")
        seen.add(row["ref"])
        rows.append(row)
    return rows


_SALT_RE = re.compile(r"[0-9a-f]{32}")


def _check_personal(
    entries: Sequence[spec.Entry], rows: Sequence[dict[str, Any]], report: Report
) -> None:
    # NOTE: every entry committing to a ref must match its row, not just one of them.
    committed: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for e in entries:
        for ref, c in _commitments(e.data):
            committed[ref].append((e.n, c))
    for row in rows:
        ref = str(row.get("ref"))
        if ref not in committed:
            raise VerificationError(f"personal data {ref!r} is named by no entry in the bundle")
        try:
            got = spec.commitment(ref=ref, salt=bytes.fromhex(row["salt"]), value=row["value"])
        except (KeyError, TypeError, ValueError, canonical.CanonicalError):
            got = ""
        for n, want in committed[ref]:
            if got != want:
                raise VerificationError(
                    f"personal data {ref} does not match its commitment in entry {n}: "
                    "it was altered after it was recorded",
                    n,
                )
        report.personal_checked += 1


# -- meaning ----------------------------------------------------------------------------
def check_meaning(  # noqa: PLR0912 - one branch per kind of finding
    entries: Sequence[spec.Entry], report: Report, *, full: bool
) -> None:
    """Findings a reviewer must see: alarms never acknowledged, late or stopped paging,
    alerts lost between unit and server, silent periods of the server."""
    if not entries:
        return
    end = spec.parse_time(entries[-1].at)
    by_incident: dict[int, list[spec.Entry]] = defaultdict(list)
    seqs: dict[str, list[tuple[int, int]]] = defaultdict(list)
    last_beat: datetime | None = None
    for e in entries:
        if e.incident is not None:
            by_incident[e.incident].append(e)
        if e.type == "alert.raised":
            seqs[str(e.data.get("device"))].append((number(e.data.get("seq")), e.n))
        elif e.type == "device.sequence_gap":
            report.findings.append(
                f"entry {e.n}: unit {e.data.get('device')} skipped alert numbers "
                f"{e.data.get('expected')}..{number(e.data.get('got')) - 1}: alerts never received"
            )
        elif e.type == "device.sequence_back":
            report.findings.append(
                f"entry {e.n}: unit {e.data.get('device')} sent alert number "
                f"{e.data.get('got')} after {e.data.get('previous')}: an old outbox put back, "
                "or a unit replaying numbers"
            )
        elif e.type == "alert.refused":
            report.findings.append(
                f"entry {e.n}: unit {e.data.get('device')} sent an alert id that another unit's "
                "incident holds (a cloned unit, or a unit's credentials misused): refused"
            )
        elif e.type in ("escalation.step_started", "escalation.follow_up"):
            lag = number(e.data.get("lag_ms"))
            if lag > LATE_MS:
                report.findings.append(
                    f"entry {e.n}: incident {e.incident} step {e.data.get('step')} started "
                    f"{lag / 1000:.1f} s after it was due"
                )
        elif e.type == "log.verified" and e.data.get("result") == "failed":
            report.findings.append(
                f"entry {e.n}: the server's own check of the log failed: the stored log did "
                "not match its signed checkpoints then (see the server's log of that time)"
            )
        elif e.type == "log.heartbeat" and full:
            at = spec.parse_time(e.at)
            if last_beat and at - last_beat > SILENCE:
                report.findings.append(
                    f"entry {e.n}: no heartbeat from {spec.format_time(last_beat)} to {e.at}: "
                    "the server was not running or not writing its log"
                )
            last_beat = at
    if full and last_beat is not None and end - last_beat > SILENCE:
        report.findings.append(
            f"entry {entries[-1].n}: no heartbeat from {spec.format_time(last_beat)} to the "
            f"log's last entry at {entries[-1].at}: the server was not running or not "
            "writing its log"
        )
    for device, numbers in seqs.items():
        # In log order: a number lower than the one before is a reset (a new outbox),
        # not a gap.
        for (a, _), (b, n) in itertools.pairwise(numbers):
            if b > a + 1 and not any(
                f"unit {device} skipped alert numbers {a + 1}.." in f for f in report.findings
            ):
                report.findings.append(
                    f"entry {n}: unit {device} alert numbers {a + 1}..{b - 1} never reached the log"
                )
    for incident, evs in sorted(by_incident.items()):
        _check_incident(incident, evs, end, report)


def number(value: object) -> int:
    """A count or a duration from an entry; 0 when it is not a number (the format checks
    names, not values: a meaning check must not crash on an odd value)."""
    return value if type(value) is int else 0


def _check_incident(
    incident: int, evs: Sequence[spec.Entry], end: datetime, report: Report
) -> None:
    raised = next((e for e in evs if e.type == "alert.raised"), None)
    if raised is None or raised.data.get("kind") != "panic":
        return
    acked = False
    last_page = spec.parse_time(raised.at)
    repeat: int | None = None
    for e in evs:
        if e.type == "incident.acknowledged":
            acked = True
        elif e.type == "incident.reopened":
            acked = False
            last_page = spec.parse_time(e.at)
        elif e.type == "escalation.plan_frozen":
            plan = e.data.get("plan") or {}
            repeat = number(plan.get("repeat_every")) if isinstance(plan, dict) else None
        elif e.type == "escalation.step_started":
            last_page = spec.parse_time(e.at)
    if acked:
        return
    report.open_incidents.append(incident)
    if (
        repeat
        and 0 < repeat <= MAX_REPEAT
        and end - last_page > timedelta(seconds=repeat) + PAGING_SLACK
    ):
        report.findings.append(
            f"incident {incident}: open and unacknowledged, but no one was paged after "
            f"{spec.format_time(last_page)} (log ends {spec.format_time(end)})"
        )


# -- bundles ----------------------------------------------------------------------------
class Bundle:
    """The files of a bundle, from a directory or a .zip, checked against its manifest."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.files: dict[str, bytes] = {}
        try:
            if path.is_dir():
                for p in sorted(path.rglob("*")):
                    if p.is_dir():
                        continue
                    name = p.relative_to(path).as_posix()
                    # NOTE: a file in a subfolder is never a bundle file: kept by its path
                    # (unread), so that check_files refuses it as unlisted, as in a zip.
                    self.files[name] = p.read_bytes() if p.parent == path else b""
            else:
                with zipfile.ZipFile(path) as zf:
                    for info in zf.infolist():
                        if info.is_dir():
                            continue
                        name = Path(info.filename).name
                        if name in self.files:
                            # Which copy would an unzipped bundle show? Refuse to guess.
                            raise BundleError(f"{path} holds two files named {name}")
                        self.files[name] = zf.read(info)
        except (OSError, zipfile.BadZipFile) as exc:
            raise BundleError(f"cannot read {path}: {exc}") from None
        if "manifest.json" not in self.files:
            raise BundleError(f"{path} has no manifest.json: is it a panicbutton log bundle?")
        try:
            manifest = canonical.loads(self.files["manifest.json"])
        except canonical.CanonicalError as exc:
            raise BundleError(f"manifest.json: {exc}") from None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
            raise BundleError("manifest.json is not an object with a files object")
        self.manifest: dict[str, Any] = manifest
        if self.manifest.get("format") != BUNDLE_FORMAT:
            raise BundleError(f"manifest.json: format is not {BUNDLE_FORMAT}")

    def check_signature(self, key: spec.VerifierKey) -> None:
        """``manifest.sig`` signs ``manifest.json`` (and so every file it lists, and its
        ``personal`` flag) with ``key``."""
        sig = self.files.get("manifest.sig")
        if sig is None:
            raise VerificationError("manifest.sig is missing: nothing signs this bundle's manifest")
        try:
            signed = spec.open_manifest(sig.decode("utf-8"), key)
        except (UnicodeDecodeError, spec.LogFormatError) as exc:
            raise VerificationError(f"manifest.sig: {exc}") from None
        if signed != hashlib.sha256(self.files["manifest.json"]).hexdigest():
            raise VerificationError(
                "manifest.json is not the manifest the log's key signed (manifest.sig): "
                "a file was added, removed or changed after the export"
            )

    def check_files(self) -> None:
        listed: dict[str, str] = self.manifest.get("files", {})
        for name, want in sorted(listed.items()):
            data = self.files.get(name)
            if data is None:
                raise VerificationError(f"{name} is listed in the manifest but missing")
            if hashlib.sha256(data).hexdigest() != want:
                raise VerificationError(f"{name} does not match its SHA-256 in the manifest")
        for name in ("entries.jsonl", "checkpoints.jsonl"):
            if name not in listed:
                raise VerificationError(f"the manifest does not list {name}")
        unlisted = sorted(set(self.files) - set(listed) - UNLISTED)
        if unlisted:
            raise VerificationError(
                f"{', '.join(unlisted)}: in the bundle but not in its manifest (added later?)"
            )

    def lines(self, name: str) -> list[bytes]:
        data = self.files.get(name, b"")
        if data and not data.endswith(b"\n"):
            raise VerificationError(f"{name} does not end with a newline: it was cut short")
        return data.split(b"\n")[:-1] if data else []

    def json_lines(self, name: str) -> list[Any]:
        out = []
        for i, line in enumerate(self.lines(name)):
            try:
                out.append(json.loads(line))
            except (ValueError, RecursionError):
                raise VerificationError(f"{name} line {i + 1} is not JSON") from None
        return out

    def canonical_lines(self, name: str) -> list[Any]:
        """The lines of ``name``, each canonical JSON (section 3 of VERIFY.md)."""
        out = []
        for i, line in enumerate(self.lines(name)):
            try:
                out.append(canonical.loads(line))
            except canonical.CanonicalError as exc:
                raise VerificationError(f"{name} line {i + 1}: {exc}") from None
        return out


def verify_bundle(
    path: Path,
    *,
    key: spec.VerifierKey | None = None,
    trusted_note: str | None = None,
    workers: int = 1,
) -> Report:
    bundle = Bundle(path)
    own_key = key is None
    if key is None:
        if "log-key.pub" not in bundle.files:
            raise BundleError(
                "no --key was given and the bundle has no log-key.pub: give the site's "
                "published verifier key with --key"
            )
        try:
            key = spec.VerifierKey.parse(bundle.files["log-key.pub"].decode())
        except (UnicodeDecodeError, spec.LogFormatError) as exc:
            raise VerificationError(f"log-key.pub: {exc}") from None
    bundle.check_signature(key)
    bundle.check_files()
    trusted = None
    if trusted_note is not None:
        try:
            trusted = spec.open_checkpoint(trusted_note, key)
        except spec.LogFormatError as exc:
            raise VerificationError(f"the trusted checkpoint: {exc}") from None
    notes = bundle.json_lines("checkpoints.jsonl")
    personal = personal_rows(bundle.lines("personal.jsonl"))
    scope = str(bundle.manifest.get("scope", ""))
    if scope == "full":
        report, parsed = verify_full(
            bundle.lines("entries.jsonl"),
            notes,
            key,
            trusted=trusted,
            personal=personal,
            workers=workers,
            sealed=True,
        )
    else:
        if trusted is not None:
            raise BundleError("--trusted needs a full bundle: a partial one holds no history")
        report, parsed = verify_partial(
            bundle.lines("entries.jsonl"),
            notes,
            key,
            bundle.canonical_lines("proofs.jsonl"),
            personal,
            scope=scope,
        )
    said = bundle.manifest.get("tree_size"), bundle.manifest.get("entries")
    held = report.size, report.size if report.disclosed is None else report.disclosed
    if said != held:
        raise VerificationError(
            f"manifest.json says tree_size {said[0]!r} and entries {said[1]!r}, but the bundle's "
            f"last checkpoint is of size {held[0]} and it holds {held[1]} entries"
        )
    if scope == "full" and bundle.manifest.get("personal") is True:
        _check_kept(parsed, personal, report)
    check_meaning(parsed, report, full=scope == "full")
    if own_key:
        report.bundle_key = key
    return report


def _check_kept(
    entries: Sequence[spec.Entry], rows: Sequence[dict[str, Any]], report: Report
) -> None:
    """In a full bundle that carries personal data, every row a log entry commits to is
    there, unless a ``record.redacted`` entry says it was purged."""
    present = {str(row.get("ref")) for row in rows}
    redacted = {e.data.get("ref") for e in entries if e.type == "record.redacted"}
    for e in entries:
        for ref, _ in _commitments(e.data):
            if ref not in present and ref not in redacted:
                report.findings.append(
                    f"entry {e.n}: personal data {ref} is gone, but no record.redacted "
                    "entry says it was purged"
                )


def _trusted_note(value: str) -> str:
    """A kept checkpoint: the note itself, or a line of a checkpoint file (a JSON string);
    from a file of several lines, the last."""
    p = Path(value)
    if not p.is_file() and "\n" not in value:
        raise BundleError(f"--trusted: no such file: {value}")
    text = _read_option(value)
    if not text.strip():
        raise BundleError(f"--trusted: {value} is empty: it holds no checkpoint")
    if "\r" in text:
        raise BundleError(
            "--trusted: the file has CR LF line ends (saved by an editor?): a signed note's "
            "lines end in LF only; use the file as it was exported"
        )
    if not text.lstrip().startswith('"'):
        return text
    last = text.strip().split("\n")[-1].strip()
    try:
        # NOTE: a JSON string nests nothing: anything else is refused before parsing,
        # so no nesting depth can stop the parser.
        if not last.startswith('"'):
            raise ValueError(last[:20])
        note = json.loads(last)
    except (ValueError, RecursionError):
        raise BundleError("--trusted: the last line is not a whole JSON string") from None
    if not isinstance(note, str):
        raise BundleError("--trusted: the last line is not a checkpoint note")
    return note


def _read_option(value: str) -> str:
    p = Path(value)
    try:
        # NOTE: bytes, decoded as they are: read_text would turn CR LF into LF unseen.
        return p.read_bytes().decode("utf-8") if p.is_file() else value
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"cannot read {value}: {exc}") from None


def cores() -> int:
    """The CPUs this process may use (all of them where the OS cannot say)."""
    affinity = getattr(os, "sched_getaffinity", None)  # Linux only, not macOS or Windows
    if affinity is not None:
        return len(affinity(0))
    return os.cpu_count() or 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="panicbutton audit verify",
        description="Verify an exported panicbutton incident log bundle (directory or .zip).",
    )
    parser.add_argument("bundle", type=Path)
    parser.add_argument(
        "--key",
        help="the log's verifier key (text or a file holding it), from a source you trust; "
        "default: the bundle's own log-key.pub",
    )
    parser.add_argument(
        "--trusted",
        help="a checkpoint you kept earlier (a file): the log must still contain it",
    )
    args = parser.parse_args(argv)
    try:
        key = spec.VerifierKey.parse(_read_option(args.key)) if args.key else None
        trusted = _trusted_note(args.trusted) if args.trusted else None
        report = verify_bundle(args.bundle, key=key, trusted_note=trusted, workers=cores())
    except (BundleError, spec.LogFormatError) as exc:
        print(f"cannot verify: {exc}", file=sys.stderr)
        return UNREADABLE
    except VerificationError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return FAILED
    except Exception as exc:  # noqa: BLE001 - whatever it is, it is no verdict on the bundle
        # NOTE: every way a bundle can be malformed is checked and named above; anything
        # else is a fault of this program, and must never read as tampering (exit 1).
        print(
            f"VERIFIER ERROR: a bug in the verifier stopped it ({exc!r}); this is not a "
            "verdict on the bundle. Please report it, with the command you ran.",
            file=sys.stderr,
        )
        return VERIFIER_ERROR
    count = (
        f"{report.size} entries"
        if report.disclosed is None
        else f"{report.disclosed} of {report.size} entries"
    )
    print(
        f"verified: {count}, root {report.root.hex()}, "
        f"{report.checkpoints} signed checkpoint(s), "
        f"{report.personal_checked} personal data row(s) matched"
    )
    if report.bundle_key is not None:
        k = report.bundle_key
        print(
            f"note: the key came from the bundle itself: {k} (name {k.name}, key id "
            f"{k.id.hex()}); compare it with the key the site publishes"
        )
    for note in report.notes:
        print(f"note: {note}")
    if report.open_incidents:
        print("open (never acknowledged): " + ", ".join(map(str, report.open_incidents)))
    for finding in report.findings:
        print(f"finding: {finding}")
    return FINDINGS if report.findings or report.open_incidents else OK


if __name__ == "__main__":
    sys.exit(main())
