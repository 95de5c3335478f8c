"""Personal data checked against the log: each row of ``personal.jsonl`` matches the
commitment every entry naming it holds, and in a full bundle no row is missing unless
the log says it was purged (``VERIFY.md`` sections 6 and 9)."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from panicbutton.log import canonical, spec
from panicbutton.log.verdict import Report, VerificationError


def commitments(value: Any) -> Iterable[tuple[str, str]]:
    """Every (ref, commitment) pair in an entry's data (a note's, or each roster member's
    inside ``config.changed``)."""
    if isinstance(value, dict):
        if isinstance(value.get("ref"), str) and isinstance(value.get("commitment"), str):
            yield value["ref"], value["commitment"]
        for item in value.values():
            yield from commitments(item)
    elif isinstance(value, list):
        for item in value:
            yield from commitments(item)


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


def check_personal(
    entries: Sequence[spec.Entry], rows: Sequence[dict[str, Any]], report: Report
) -> None:
    # NOTE: every entry committing to a ref must match its row, not just one of them.
    committed: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for e in entries:
        for ref, c in commitments(e.data):
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


def check_kept(
    entries: Sequence[spec.Entry], rows: Sequence[dict[str, Any]], report: Report
) -> None:
    """In a full bundle that carries personal data, every row a log entry commits to is
    there, unless a ``record.redacted`` entry says it was purged."""
    present = {str(row.get("ref")) for row in rows}
    redacted = {e.data.get("ref") for e in entries if e.type == "record.redacted"}
    for e in entries:
        for ref, _ in commitments(e.data):
            if ref not in present and ref not in redacted:
                report.findings.append(
                    f"entry {e.n}: personal data {ref} is gone, but no record.redacted "
                    "entry says it was purged"
                )
