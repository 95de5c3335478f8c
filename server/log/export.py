"""Exports of the incident log: bundles an outsider can verify (``panicbutton.log.verify``).

* ``full``: every entry up to the latest checkpoint (which the export signs first, so
  that it covers the export's own record), every checkpoint, the verifier key, a
  manifest and ``VERIFY.md``. Personal data only when asked for (``with_personal``).
* ``incident:<id>``: that incident's entries, each with an inclusion proof in
  the latest signed checkpoint: nothing else of the log is disclosed.
* ``person:<id>``: the entries that name that pseudonymous id (as the staff
  member paged or acknowledging, as the author of a note or sign-off), plus
  notes recorded about them, with proofs and their own personal data: what a
  person's access request (GDPR art. 15) gets.

Every export is itself logged (``record.exported``), with who asked and why. The
manifest (the SHA-256 of every other file, and the ``personal`` flag) is signed with
the log's key as ``manifest.sig``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import zipfile
from collections.abc import Sequence
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from panicbutton.log import bundles, canonical, checkpoints, merkle, report, spec
from server.errors import ServerError
from server.log.personal import reveal
from server.log.stored import latest_checkpoint, stored_entries, stored_notes
from server.models import LogEntry, PersonalData
from server.site import ID

if TYPE_CHECKING:
    from server.log.keeper import LogKeeper


class ExportError(ServerError, ValueError):
    """An export that cannot be made; the message says why."""


#: A pseudonymous id: a staff id, a worker's id, ``inspector-1``.
_SCOPE_RE = re.compile(r"full|incident:[1-9][0-9]{0,9}|person:" + ID)


def check_scope(scope: str) -> str:
    """``scope`` if it is ``full``, ``incident:<id>`` or ``person:<id>``. Checked before the
    export is logged: whatever is typed here must never reach the log as free text."""
    if not _SCOPE_RE.fullmatch(scope):
        raise ExportError(
            "scope must be full, incident:<number> or person:<id> (lowercase letters, "
            "digits and '-')"
        )
    return scope


def _levels(leaves: list[bytes]) -> list[list[bytes]]:
    """The tree's levels, bottom up; an odd last node moves up unchanged (RFC 9162's
    tree, built iteratively so that many proofs cost one pass)."""
    levels = [leaves]
    while len(levels[-1]) > 1:
        below = levels[-1]
        above = [merkle.node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
        if len(below) % 2:
            above.append(below[-1])
        levels.append(above)
    return levels


def inclusion_paths(indices: Sequence[int], leaves: list[bytes]) -> dict[int, list[bytes]]:
    """RFC 9162 audit paths for several leaves at once."""
    levels = _levels(leaves)
    paths = {}
    for index in indices:
        path, i = [], index
        for level in levels[:-1]:
            sibling = i ^ 1
            if sibling < len(level):
                path.append(level[sibling])
            i >>= 1
        paths[index] = path
    return paths


def _person_refs(session: Session, person: str) -> set[str]:
    refs = set()
    for ref, subjects in session.execute(select(PersonalData.ref, PersonalData.subjects)):
        if person in (subjects or []):
            refs.add(ref)
    return refs


#: Entries that tie a worker to an incident in the violence register: in a person's
#: bundle only when that person asks for it (their consent governs who else sees it).
SELF_ONLY = frozenset({"violence.recorded", "consent.given", "consent.withdrawn"})


def make_bundle(
    keeper: LogKeeper,
    *,
    scope: str,
    now: datetime,
    with_personal: bool = False,
    for_self: bool = False,
) -> dict[str, bytes]:
    """Sign the log's head (the keeper proves it consistent with every checkpoint first:
    ``LogFailedError`` if it is not), then the bundle for ``scope``, its manifest signed.
    ``for_self``: a person's bundle asked for by that person."""
    keeper.sign()
    with keeper.sessions() as s:
        return bundle_files(
            s,
            scope=scope,
            signer=keeper.signer,
            now=now,
            with_personal=with_personal,
            for_self=for_self,
        )


def bundle_files(
    session: Session,
    *,
    scope: str,
    signer: checkpoints.Signer,
    now: datetime,
    with_personal: bool = False,
    for_self: bool = False,
) -> dict[str, bytes]:
    """The files of a bundle for ``scope`` (``full``, ``incident:<id>``, ``person:<id>``):
    the entries up to the latest checkpoint, and the manifest signed by ``signer``. A
    person's bundle made for someone else leaves out the violence register's entries
    (:data:`SELF_ONLY`)."""
    key = signer.verifier
    files: dict[str, bytes] = {"log-key.pub": f"{key}\n".encode()}
    cp = latest_checkpoint(session)
    if cp is None:
        raise ExportError("no checkpoint has been signed yet; try again in a second")
    size = cp.size
    if scope == "full":
        # NOTE: up to the checkpoint only: an export signs every entry it holds, and the
        # verifier takes an unsigned tail in a full bundle for tampering.
        notes = stored_notes(session, upto=cp.id)
        entries = list(stored_entries(session, stop=size))
        personal: list[dict[str, Any]] = []
        if with_personal:
            personal = [reveal(r) for r in session.scalars(select(PersonalData))]
    else:
        kind, _, which = scope.partition(":")
        notes = [cp.note]
        bodies = list(stored_entries(session, stop=size))
        leaves = [spec.leaf_hash(b) for b in bodies]
        if kind == "incident" and which.isdigit():
            chosen = list(
                session.scalars(
                    select(LogEntry.n)
                    .where(LogEntry.incident_id == int(which), LogEntry.n < size)
                    .order_by(LogEntry.n)
                )
            )
        elif kind == "person" and which:
            refs = _person_refs(session, which)
            chosen = [
                n
                for n, body in enumerate(bodies)
                if _names((entry := json.loads(body))["data"], which, refs)
                and (for_self or entry["type"] not in SELF_ONLY)
            ]
        else:
            raise ExportError(f"scope {scope!r} is not full, incident:<id> or person:<id>")
        if not chosen:
            raise ExportError(f"the signed log holds no entry for {scope}")
        entries = [bodies[n] for n in chosen]
        paths = inclusion_paths(chosen, leaves)
        files["proofs.jsonl"] = b"".join(
            canonical.dumps({"n": n, "path": [h.hex() for h in paths[n]]}) + b"\n" for n in chosen
        )
        refs_in = {json.loads(b)["data"].get("ref") for b in entries} - {None}
        personal = []
        if kind == "person" or with_personal:
            wanted = refs_in if kind != "person" else refs_in & _person_refs(session, which)
            personal = [
                reveal(r)
                for r in session.scalars(select(PersonalData).where(PersonalData.ref.in_(wanted)))
            ]
    files["entries.jsonl"] = b"".join(e + b"\n" for e in entries)
    files["checkpoints.jsonl"] = b"".join(json.dumps(n).encode() + b"\n" for n in notes)
    if personal:
        files["personal.jsonl"] = b"".join(canonical.dumps(p) + b"\n" for p in personal)
    files["VERIFY.md"] = resources.files("panicbutton.log").joinpath("VERIFY.md").read_bytes()
    files["manifest.json"] = canonical.dumps(
        {
            "format": bundles.BUNDLE_FORMAT,
            "scope": scope,
            "created": spec.format_time(now),
            "origin": key.name,
            "tree_size": size,
            "entries": len(entries),
            # A full bundle with personal data carries every row still kept: the
            # verifier then reports any that vanished without a record.redacted entry.
            "personal": bool(with_personal and scope == "full"),
            "files": {
                name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())
            },
        }
    )
    files["manifest.sig"] = signer.sign_manifest(files["manifest.json"]).encode()
    return files


def _names(data: dict[str, Any], person: str, refs: set[str]) -> bool:
    return any(data.get(f) == person for f in spec.PERSON_FIELDS) or data.get("ref") in refs


def bundle_sha256(files: dict[str, bytes]) -> str:
    """What a report names as its source: the SHA-256 of the bundle's manifest (which
    holds the SHA-256 of every other file)."""
    return hashlib.sha256(files["manifest.json"]).hexdigest()


def render_report(files: dict[str, bytes], *, fmt: str, now: datetime) -> tuple[bytes, str]:
    """The manager's report from a bundle's files (``csv`` or ``pdf``), and its media
    type; it names the bundle's SHA-256 and last checkpoint."""
    entries = [spec.parse_entry(line) for line in files["entries.jsonl"].splitlines()]
    rows = report.incident_rows(entries)
    digest = bundle_sha256(files)
    notes = files["checkpoints.jsonl"].splitlines()
    checkpoint = checkpoints.split_note(json.loads(notes[-1]))[0] if notes else ""
    if fmt == "csv":
        return report.to_csv(rows, bundle_sha256=digest, checkpoint=checkpoint), "text/csv"
    return (
        report.to_pdf(
            rows,
            title="panicbutton incident report",
            bundle_sha256=digest,
            checkpoint=checkpoint,
            generated_at=spec.format_time(now),
        ),
        "application/pdf",
    )


def zip_bytes(files: dict[str, bytes], folder: str = "panicbutton-log") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in sorted(files.items()):
            info = zipfile.ZipInfo(f"{folder}/{name}", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return buf.getvalue()


def write_bundle(files: dict[str, bytes], out: Path) -> Path:
    """Write ``files`` as ``out`` (a .zip) or into the new directory ``out``, readable by
    this user only (a bundle is a record about people). Never over an existing one."""
    if out.exists():
        raise ExportError(f"{out} exists: give a new name (an export never overwrites)")
    if out.suffix == ".zip":
        write_private(out, zip_bytes(files, out.stem))
        return out
    out.mkdir(mode=0o700, parents=True)
    for name, data in files.items():
        write_private(out / name, data)
    return out


def write_private(path: Path, data: bytes) -> None:
    """Write a new file readable by this user only (never over an existing one)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
