"""A partial bundle (one incident, or one person's entries) checked against its one
signed checkpoint with inclusion proofs (``VERIFY.md`` section 10)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from panicbutton.log import checkpoints, merkle, spec
from panicbutton.log.commitments import check_personal
from panicbutton.log.integrity import open_checkpoints
from panicbutton.log.verdict import Report, VerificationError


def verify_partial(
    entries: Sequence[bytes],
    notes: Sequence[str],
    key: checkpoints.VerifierKey,
    proofs: Sequence[dict[str, Any]],
    personal: Sequence[dict[str, Any]] = (),
    *,
    scope: str = "",
) -> tuple[Report, list[spec.Entry]]:
    """Check a few entries against one signed checkpoint with inclusion proofs.

    Each entry is proven to be in the signed log, in order and once; that no entry of
    the scope was left out cannot be proven from a part of the log (the report says so).
    """
    cps = open_checkpoints(notes, key)
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
            type(h) is str and spec.HEX64_RE.fullmatch(h) for h in hashes
        ):
            raise VerificationError(
                f"entry {entry.n}: its proof's path is not a list of hashes as 64 lowercase "
                "hex digits",
                entry.n,
            )
        if person is not None and not _names_person(entry, person, held):
            raise VerificationError(
                f"entry {entry.n} does not name {person} (as staff, by or person, or through "
                f"personal data in this bundle): it is no part of this bundle's {scope}",
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
    check_personal(parsed, personal, report)
    return report, parsed


def _names_person(entry: spec.Entry, person: str, refs: set[str]) -> bool:
    """A person's bundle holds the entries naming them as ``staff`` or ``by``, and those
    whose ``ref`` is personal data about them (carried in the bundle's personal.jsonl)."""
    data = entry.data
    return any(data.get(f) == person for f in spec.PERSON_FIELDS) or data.get("ref") in refs
