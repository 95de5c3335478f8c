"""The standalone verifier on synthetic bundles in the real format (VERIFY.md).

Every log here is built the way the server builds it: canonical entries, each
``prev`` the leaf hash of the entry before (``spec.GENESIS`` for entry 0), a
``spec.Frontier`` for the tree, checkpoints signed by a ``checkpoints.Signer``, and a
bundle directory laid out as VERIFY.md section 8 says.
Tests go through ``verify.main`` (what an inspector sees: message and exit code)
or ``integrity.verify_full`` where a property needs the first bad entry's index.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import sys
import zipfile
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from panicbutton.log import (
    bundles,
    canonical,
    checkpoints,
    integrity,
    merkle,
    spec,
    verdict,
    verify,
)
from tests.bench.log import synthetic_log

START = datetime(2026, 11, 28, 21, 4, 5, 123000, tzinfo=UTC)
ORIGIN = "panicbutton.test/log"

SIGNER = checkpoints.Signer.generate(ORIGIN)
KEY = SIGNER.verifier
VERIFY_MD = Path(spec.__file__).with_name("VERIFY.md")
PLAN = {
    "duty_covered": True,
    "follow_up_after": 600,
    "repeat_every": 60,
    "steps": [
        {"after": 0, "channels": ["sms"], "to": ["s-0041", "s-0042"]},
        {"after": 120, "channels": ["sms", "call"], "to": ["s-0007"]},
    ],
}
SALT = bytes.fromhex("00112233445566778899aabbccddeeff")


# -- a synthetic log ---------------------------------------------------------------------
@dataclass(frozen=True)
class Event:
    type_: str
    incident: int | None
    data: dict[str, Any]
    at: str


@dataclass
class Log:
    """A log of real, chained entries, signed after every entry unless told otherwise."""

    signer: checkpoints.Signer = SIGNER
    sign_every: bool = True
    tree: spec.Frontier = field(default_factory=spec.Frontier)
    last: bytes = spec.GENESIS
    events: list[Event] = field(default_factory=list)
    entries: list[bytes] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    now: datetime = START
    seqs: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, type_: str, incident: int | None = None, *, after: float = 1, **data: Any) -> int:
        """Append an event ``after`` seconds after the previous one; returns its ``n``."""
        self.now += timedelta(seconds=after)
        return self.append(Event(type_, incident, data, spec.format_time(self.now)))

    def append(self, event: Event) -> int:
        n = len(self.entries)
        raw = spec.entry_bytes(
            n=n,
            at=event.at,
            type_=event.type_,
            incident=event.incident,
            data=event.data,
            prev=self.last,
        )
        self.last = spec.leaf_hash(raw)
        self.tree.append(self.last)
        self.events.append(event)
        self.entries.append(raw)
        if self.sign_every:
            self.sign()
        return n

    def sign(self) -> str:
        """Sign a checkpoint of the log as it is now; returns the note."""
        note = self.signer.sign_checkpoint(self.tree.size, self.tree.root()).note
        self.notes.append(note)
        return note

    def alert(
        self,
        incident: int,
        *,
        device: str = "unit-room-3",
        kind: str = "panic",
        seq: int | None = None,
        lag_ms: int = 40,
        paged: bool = True,
    ) -> int:
        """A press reaching the server: alert.raised, the frozen plan, the first step
        (``paged`` False: alert.raised alone, as when the server stopped before step 0)."""
        self.seqs[device] = self.seqs[device] + 1 if seq is None else seq
        n = self.add(
            "alert.raised",
            incident,
            alert_id=f"{incident:032x}",
            device=device,
            room=device.removeprefix("unit-"),
            seq=self.seqs[device],
            kind=kind,
            device_time=self.now.isoformat(),
        )
        if paged:
            self.add("escalation.plan_frozen", incident, after=0.01, plan=PLAN)
            self.step(incident, 0, lag_ms=lag_ms)
        return n

    def step(self, incident: int, step: int, *, lag_ms: int = 40) -> int:
        due = (self.now - timedelta(milliseconds=lag_ms)).isoformat()
        return self.add("escalation.step_started", incident, step=step, due=due, lag_ms=lag_ms)

    def acknowledge(self, incident: int, *, staff: str = "s-0041", after: float = 30) -> int:
        return self.add("incident.acknowledged", incident, after=after, staff=staff, via="sms")

    def heartbeat(self, *, after: float = 900) -> int:
        return self.add("log.heartbeat", after=after)


def replay(events: Sequence[Event], *, sign_every: bool = True) -> Log:
    """The log of ``events`` chained afresh: what a rewriter recomputing every prev gets."""
    log = Log(sign_every=sign_every)
    for event in events:
        log.append(event)
    return log


def signed_at(
    entries: Sequence[bytes], sizes: Sequence[int], signer: checkpoints.Signer
) -> list[str]:
    """Notes for checkpoints of ``entries`` at the chosen sizes."""
    leaves = [spec.leaf_hash(e) for e in entries]
    return [signer.sign_checkpoint(s, merkle.root(leaves[:s])).note for s in sizes]


def changed(value: Any) -> Any:
    """A different value of the same JSON type: what a forger would write instead."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str):
        return value + "0"
    if isinstance(value, list):
        return [*value, 0]
    if isinstance(value, dict):
        first = min(value)
        return {**value, first: changed(value[first])}
    return 0


def with_changed_field(raw: bytes, name: str) -> bytes:
    """``raw`` with ``data[name]`` changed, still canonical."""
    obj = json.loads(raw)
    obj["data"][name] = changed(obj["data"][name])
    return canonical.dumps(obj)


# -- a bundle on disk --------------------------------------------------------------------
def manifest(
    files: Mapping[str, bytes], *, scope: str, tree_size: int, entries: int, personal: bool = False
) -> bytes:
    return canonical.dumps(
        {
            "created": spec.format_time(START + timedelta(days=1)),
            "entries": entries,
            "files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
            "format": bundles.BUNDLE_FORMAT,
            "origin": ORIGIN,
            "personal": personal,
            "scope": scope,
            "tree_size": tree_size,
        }
    )


def write_bundle(
    path: Path,
    entries: Sequence[bytes],
    notes: Sequence[str],
    *,
    key: checkpoints.VerifierKey = KEY,
    scope: str = "full",
    tree_size: int | None = None,
    proofs: Sequence[bytes] | None = None,
    personal: Sequence[Mapping[str, Any]] = (),
    personal_lines: Sequence[bytes] = (),
    personal_flag: bool = False,
    signer: checkpoints.Signer = SIGNER,
) -> Path:
    """A bundle directory exactly as VERIFY.md section 8 lays it out, its manifest
    signed by ``signer`` (``personal_lines``: rows as given, not made canonical)."""
    files = {
        "log-key.pub": f"{key}\n".encode(),
        "entries.jsonl": b"".join(e + b"\n" for e in entries),
        "checkpoints.jsonl": b"".join(json.dumps(note).encode() + b"\n" for note in notes),
        "VERIFY.md": VERIFY_MD.read_bytes(),
    }
    if proofs is not None:
        files["proofs.jsonl"] = b"".join(p + b"\n" for p in proofs)
    if personal or personal_lines:
        rows = [canonical.dumps(dict(r)) for r in personal] + list(personal_lines)
        files["personal.jsonl"] = b"".join(r + b"\n" for r in rows)
    size = len(entries) if tree_size is None else tree_size
    files["manifest.json"] = manifest(
        files, scope=scope, tree_size=size, entries=len(entries), personal=personal_flag
    )
    files["manifest.sig"] = signer.sign_manifest(files["manifest.json"]).encode()
    path.mkdir(parents=True)
    for name, data in files.items():
        (path / name).write_bytes(data)
    return path


def retouch(bundle: Path, name: str, data: bytes) -> None:
    """Replace a file and its hash in the manifest, and sign the manifest again: what a
    forger holding the key could do. The checks below the manifest must still catch it."""
    (bundle / name).write_bytes(data)
    listed = canonical.loads((bundle / "manifest.json").read_bytes())
    listed["files"][name] = hashlib.sha256(data).hexdigest()
    (bundle / "manifest.json").write_bytes(canonical.dumps(listed))
    (bundle / "manifest.sig").write_text(SIGNER.sign_manifest(canonical.dumps(listed)))


def proof_lines(entries: Sequence[bytes], chosen: Sequence[int], size: int) -> list[bytes]:
    leaves = [spec.leaf_hash(e) for e in entries[:size]]
    return [
        canonical.dumps({"n": n, "path": [h.hex() for h in merkle.inclusion_proof(n, leaves)]})
        for n in chosen
    ]


def run(
    capsys: pytest.CaptureFixture[str],
    bundle: Path,
    *options: str,
    key: checkpoints.VerifierKey | None = KEY,
) -> tuple[int, str, str]:
    """``panicbutton audit verify BUNDLE [--key KEY] OPTIONS``: exit code, stdout, stderr."""
    argv = [str(bundle), *(["--key", str(key)] if key is not None else []), *options]
    code = verify.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def quiet_log() -> Log:
    """A night with one acknowledged panic alarm and one test press: nothing to report."""
    log = Log()
    log.add("server.started", version="0.1.0")
    log.heartbeat()
    log.alert(7)
    log.add("page.queued", 7, page=1, staff="s-0041", channel="sms", step=0)
    log.acknowledge(7)
    log.heartbeat()
    log.alert(8, kind="test")
    log.add("test.completed", 8, sent=2, failed=0, result="passed")
    log.heartbeat()
    return log


# -- a clean bundle ----------------------------------------------------------------------
def test_clean_bundle_verifies_with_exit_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = quiet_log()
    bundle = write_bundle(tmp_path / "b", log.entries, log.notes)

    code, out, err = run(capsys, bundle)

    assert (code, err) == (0, "")
    assert out.startswith(f"verified: {len(log.entries)} entries, root {log.tree.root().hex()}")
    assert f"{len(log.notes)} signed checkpoint(s)" in out
    assert "finding" not in out
    assert "open" not in out


def test_without_a_key_the_bundle_copy_is_used_and_said_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = quiet_log()
    bundle = write_bundle(tmp_path / "b", log.entries, log.notes)

    code, out, _ = run(capsys, bundle, key=None)

    assert code == 0
    assert "note: the key came from the bundle itself" in out


def test_key_can_be_given_as_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = quiet_log()
    bundle = write_bundle(tmp_path / "b", log.entries, log.notes)
    key_file = tmp_path / "site.pub"
    key_file.write_text(f"{KEY}\n")

    code, out, _ = run(capsys, bundle, "--key", str(key_file), key=None)

    assert code == 0
    assert out.startswith("verified:")


def test_a_zip_of_the_bundle_verifies_like_the_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = quiet_log()
    bundle = write_bundle(tmp_path / "b", log.entries, log.notes)
    zipped = tmp_path / "panicbutton-log.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        for p in sorted(bundle.iterdir()):
            zf.writestr(f"panicbutton-log/{p.name}", p.read_bytes())

    code, out, _ = run(capsys, zipped)

    assert code == 0
    assert out.startswith(f"verified: {len(log.entries)} entries")


# -- tampering: the first bad entry is named -------------------------------------------------
ACTIONS = ("heartbeat", "alert", "plan", "step", "page", "ack")


@st.composite
def logs(draw: st.DrawFn, *, sign_every: bool = True) -> Log:
    """5 to 40 realistic entries, starting with server.started."""
    actions = draw(st.lists(st.sampled_from(ACTIONS), min_size=4, max_size=39))
    log = Log(sign_every=sign_every)
    log.add("server.started", version="0.1.0")
    incident = 0
    for action in actions:
        if action == "heartbeat":
            log.heartbeat()
        elif action == "alert":
            incident += 1
            log.add(
                "alert.raised",
                incident,
                alert_id=f"{incident:032x}",
                device=f"unit-room-{incident % 3}",
                room=f"room-{incident % 3}",
                seq=incident,
                kind="panic",
            )
        elif action == "plan":
            log.add("escalation.plan_frozen", incident or None, plan=PLAN)
        elif action == "step":
            log.step(incident, incident % 2, lag_ms=40 + incident)
        elif action == "page":
            log.add("page.queued", incident or None, page=incident, staff="s-0041", channel="sms")
        else:
            log.acknowledge(incident, staff=f"s-{incident:04d}")
    return log


def tamper(kind: str, log: Log, data: st.DataObject) -> tuple[list[bytes], int]:
    """One tampering of ``log.entries`` and the position of the first changed line."""
    entries = list(log.entries)
    last = len(entries) - 1
    if kind == "change":
        k = data.draw(st.sampled_from([i for i, e in enumerate(log.events) if e.data]))
        name = data.draw(st.sampled_from(sorted(log.events[k].data)))
        entries[k] = with_changed_field(entries[k], name)
        return entries, k
    if kind == "delete":
        k = data.draw(st.integers(0, last))
        del entries[k]
        return entries, k
    if kind == "swap":
        i = data.draw(st.integers(0, last - 1))
        j = data.draw(st.integers(i + 1, last))
        entries[i], entries[j] = entries[j], entries[i]
        return entries, i
    # a forged acknowledgement, with the n and prev it would have at that place
    i = data.draw(st.integers(0, last))
    forged = spec.entry_bytes(
        n=i,
        at=log.events[i].at,
        type_="incident.acknowledged",
        incident=1,
        data={"staff": "s-0666", "via": "sms"},
        prev=spec.leaf_hash(entries[i - 1]) if i else spec.GENESIS,
    )
    entries.insert(i, forged)
    return entries, i


@pytest.mark.parametrize("kind", ["change", "delete", "swap", "insert"])
@settings(max_examples=60, deadline=None)
@given(log=logs(), data=st.data())
def test_any_single_tampering_names_the_first_changed_entry(
    kind: str, log: Log, data: st.DataObject
) -> None:
    entries, first = tamper(kind, log, data)

    with pytest.raises(verdict.VerificationError) as caught:
        integrity.verify_full(entries, log.notes, KEY)

    assert caught.value.entry == first
    assert re.search(rf"\bentr(?:y|ies) {first}\b", str(caught.value))


def test_an_edited_entries_file_is_caught_by_the_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = quiet_log()
    bundle = write_bundle(tmp_path / "b", log.entries, log.notes)
    entries = list(log.entries)
    entries[6] = with_changed_field(entries[6], "staff")
    (bundle / "entries.jsonl").write_bytes(b"".join(e + b"\n" for e in entries))

    code, out, err = run(capsys, bundle)

    assert (code, out) == (1, "")
    assert err == "FAILED: entries.jsonl does not match its SHA-256 in the manifest\n"


def test_a_deleted_entry_is_named_even_with_the_manifest_recomputed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = quiet_log()
    bundle = write_bundle(tmp_path / "b", log.entries, log.notes)
    kept = log.entries[:3] + log.entries[4:]
    retouch(bundle, "entries.jsonl", b"".join(e + b"\n" for e in kept))

    code, _, err = run(capsys, bundle)

    assert code == 1
    assert err.startswith("FAILED: entry 3: it says it is entry 4: an entry before it was removed")


def test_in_the_live_log_an_entry_after_the_last_checkpoint_is_reported_unsigned() -> None:
    # The server's own check: it signs a moment after each change. (In a bundle, which
    # the export signs whole, such an entry is tampering: test_verify_trust.py.)
    log = quiet_log()
    notes = list(log.notes)
    log.sign_every = False
    n = log.acknowledge(8, staff="s-0666")

    report, _ = integrity.verify_full(log.entries, notes, KEY)

    assert report.findings == [
        (
            f"entries {n}..{n} came after the last signed checkpoint: "
            "nothing proves they were not changed"
        )
    ]


@pytest.mark.parametrize("k", [0, 5])
def test_an_entry_with_an_edited_prev_is_named_itself(k: int) -> None:
    log = quiet_log()
    entries = list(log.entries)
    obj = json.loads(entries[k])
    obj["prev"] = hashlib.sha256(b"forged").hexdigest()
    entries[k] = canonical.dumps(obj)

    with pytest.raises(verdict.VerificationError) as caught:
        integrity.verify_full(entries, log.notes, KEY)

    assert caught.value.entry == k
    assert str(caught.value).startswith(f"entry {k}:")


# -- a rewrite with every prev recomputed --------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(log=logs(sign_every=False), data=st.data())
def test_a_consistent_rewrite_is_caught_from_the_last_matching_checkpoint(
    log: Log, data: st.DataObject
) -> None:
    count = len(log.entries)
    sizes = sorted(set(data.draw(st.lists(st.integers(1, count), min_size=1, max_size=6))))
    notes = signed_at(log.entries, sizes, SIGNER)
    k = data.draw(
        st.sampled_from([i for i, e in enumerate(log.events) if e.data and i < sizes[-1]])
    )
    name = data.draw(st.sampled_from(sorted(log.events[k].data)))
    events = list(log.events)
    old = events[k]
    events[k] = Event(old.type_, old.incident, {**old.data, name: changed(old.data[name])}, old.at)
    rewritten = replay(events, sign_every=False).entries

    with pytest.raises(verdict.VerificationError) as caught:
        integrity.verify_full(rewritten, notes, KEY)

    matching = max((s for s in sizes if s <= k), default=0)
    assert caught.value.entry == matching
    assert f"the log was rewritten from entry {matching} on" in str(caught.value)


def test_a_rewrite_is_reported_by_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = quiet_log()
    notes = [log.notes[3], log.notes[7]]  # sizes 4 and 8
    events = list(log.events)
    events[5] = Event("incident.acknowledged", 7, {"staff": "s-0666", "via": "sms"}, events[5].at)
    bundle = write_bundle(tmp_path / "b", replay(events, sign_every=False).entries, notes)

    code, _, err = run(capsys, bundle)

    assert code == 1
    assert err == (
        "FAILED: entries 4..7 are not what the signed checkpoint of size 8 covers: the log was "
        "rewritten from entry 4 on (or an older backup restored)\n"
    )


# -- --trusted ---------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["note", "jsonl line"])
def test_an_older_backup_is_refused_against_a_trusted_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], form: str
) -> None:
    log = quiet_log()
    kept = tmp_path / "kept-at-last-visit.txt"
    kept.write_text(log.notes[-1] if form == "note" else json.dumps(log.notes[-1]) + "\n")
    bundle = write_bundle(tmp_path / "b", log.entries[:7], log.notes[:7])
    assert run(capsys, bundle)[0] == 0  # on its own, the backup is a fine, shorter log

    code, out, err = run(capsys, bundle, "--trusted", str(kept))

    assert (code, out) == (1, "")
    assert f"the trusted checkpoint covers {len(log.entries)} entries but the log has only 7" in err
    assert "older copy of the log (a restored backup?)" in err


def rewritten_and_resigned(log: Log, k: int) -> Log:
    """``log`` with entry k changed, rechained and re-signed with the same key."""
    events = list(log.events)
    old = events[k]
    events[k] = Event(old.type_, old.incident, {**old.data, "staff": "s-0666"}, old.at)
    return replay(events)


def test_a_resigned_rewrite_of_the_same_size_is_refused_against_a_trusted_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = quiet_log()
    kept = tmp_path / "kept.txt"
    kept.write_text(log.notes[-1])
    forged = rewritten_and_resigned(log, 6)
    bundle = write_bundle(tmp_path / "b", forged.entries, forged.notes)
    assert run(capsys, bundle)[0] == 0  # the key's holder can sign any history

    code, out, err = run(capsys, bundle, "--trusted", str(kept))

    assert (code, out) == (1, "")
    assert "are not what the trusted checkpoint covers: the log was rewritten" in err


def test_a_trusted_mismatch_names_no_entry_after_the_change() -> None:
    log = quiet_log()
    trusted = checkpoints.open_checkpoint(log.notes[-1], KEY)
    forged = rewritten_and_resigned(log, 6)

    with pytest.raises(verdict.VerificationError) as caught:
        integrity.verify_full(forged.entries, forged.notes, KEY, trusted=trusted)

    assert caught.value.entry is not None
    assert caught.value.entry <= 6


def test_a_trusted_checkpoint_by_another_key_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = quiet_log()
    impostor = checkpoints.Signer.generate(ORIGIN)
    kept = tmp_path / "kept.txt"
    kept.write_text(impostor.sign_checkpoint(log.tree.size, log.tree.root()).note)
    bundle = write_bundle(tmp_path / "b", log.entries, log.notes)

    code, _, err = run(capsys, bundle, "--trusted", str(kept))

    assert code == 1
    assert (
        err == f"FAILED: the trusted checkpoint: the checkpoint carries no signature by {ORIGIN}\n"
    )


def test_an_unreadable_trusted_line_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = quiet_log()
    kept = tmp_path / "kept.txt"
    kept.write_text(json.dumps(log.notes[-1])[:-5] + "\n")  # cut short
    bundle = write_bundle(tmp_path / "b", log.entries, log.notes)

    code, _, err = run(capsys, bundle, "--trusted", str(kept))

    assert code == 2
    assert err.startswith("cannot verify:")


# -- truncation --------------------------------------------------------------------------
def test_entries_cut_off_the_end_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = quiet_log()
    count = len(log.entries)
    bundle = write_bundle(tmp_path / "b", log.entries[:7], log.notes)

    code, out, err = run(capsys, bundle)

    assert (code, out) == (1, "")
    assert err == (
        f"FAILED: a signed checkpoint covers {count} entries but the log has 7: "
        f"entries 7..{count - 1} were cut off\n"
    )


def test_an_entries_file_cut_mid_line_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = quiet_log()
    bundle = write_bundle(tmp_path / "b", log.entries, log.notes)
    retouch(bundle, "entries.jsonl", (bundle / "entries.jsonl").read_bytes()[:-20])

    code, _, err = run(capsys, bundle)

    assert code == 1
    assert err == "FAILED: entries.jsonl does not end with a newline: it was cut short\n"


# -- checkpoints and keys --------------------------------------------------------------------
def flip_signature(note: str) -> str:
    head, _, tail = note.partition("\n\n")
    name, blob = tail.rstrip("\n").removeprefix("\u2014 ").rsplit(" ", 1)
    sig = bytearray(base64.b64decode(blob))
    sig[10] ^= 0x01  # inside the Ed25519 signature, after the 4-byte key id
    return f"{head}\n\n\u2014 {name} {base64.b64encode(bytes(sig)).decode()}\n"


def test_a_checkpoint_with_a_flipped_signature_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = quiet_log()
    notes = [*log.notes[:-1], flip_signature(log.notes[-1])]
    bundle = write_bundle(tmp_path / "b", log.entries, notes)

    code, _, err = run(capsys, bundle)

    assert code == 1
    assert err == (
        f"FAILED: checkpoint {len(notes)} in checkpoints.jsonl: "
        "the checkpoint's signature does not verify\n"
    )


def test_checkpoints_by_an_unknown_key_only_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = checkpoints.Signer.generate(ORIGIN)
    log = Log(signer=other)
    log.add("server.started", version="0.1.0")
    log.heartbeat()
    bundle = write_bundle(tmp_path / "b", log.entries, log.notes, key=other.verifier)

    code, _, err = run(capsys, bundle)  # with the site's published key

    assert code == 1
    assert err == (
        "FAILED: checkpoint 1 in checkpoints.jsonl: "
        f"the checkpoint carries no signature by {ORIGIN}\n"
    )


def test_a_signature_line_by_another_key_is_ignored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = quiet_log()
    witness = base64.b64encode(hashlib.sha512(b"witness").digest() + b"\x00" * 4).decode()
    notes = [note + f"\u2014 witness.test/w {witness}\n" for note in log.notes]
    bundle = write_bundle(tmp_path / "b", log.entries, notes)

    code, _, _ = run(capsys, bundle)

    assert code == 0


def test_a_bundle_without_checkpoints_proves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = quiet_log()
    bundle = write_bundle(tmp_path / "b", log.entries, [])

    code, _, err = run(capsys, bundle)

    assert code == 1
    assert "holds no signed checkpoint" in err


def test_a_verifier_key_with_plus_in_its_base64_parses_back() -> None:
    keys = (checkpoints.Signer.generate(ORIGIN).verifier for _ in range(1000))
    key = next(k for k in keys if "+" in str(k).split("+", 2)[2])

    assert checkpoints.VerifierKey.parse(str(key)) == key
    assert checkpoints.VerifierKey.parse(f"  {key}\n") == key


# -- partial bundles -----------------------------------------------------------------------
def incident_log() -> tuple[Log, list[int], dict[str, Any]]:
    """A log with incident 7 (and a note about it) among other events; the numbers of
    incident 7's entries and the note's personal-data row."""
    value = "Client asked to leave; left calmly."
    row = {"ref": "p-0001", "salt": SALT.hex(), "value": value}
    log = Log()
    log.add("server.started", version="0.1.0")
    log.heartbeat()
    log.alert(6, device="unit-room-1")
    log.acknowledge(6, staff="s-0042")
    first = log.alert(7)
    log.add("page.queued", 7, page=3, staff="s-0041", channel="sms", step=0)
    log.acknowledge(7)
    commitment = spec.commitment(ref="p-0001", salt=SALT, value=value)
    log.add("note.added", 7, by="s-0041", ref="p-0001", commitment=commitment)
    log.heartbeat()
    log.add("incident.resolved", 7, staff="s-0041", outcome="genuine")
    log.heartbeat()
    chosen = [first, *(n for n, e in enumerate(log.events) if e.incident == 7 and n > first)]
    return log, chosen, row


def write_partial(
    path: Path,
    log: Log,
    chosen: Sequence[int],
    *,
    personal: Sequence[Mapping[str, Any]] = (),
    proofs: Sequence[bytes] | None = None,
) -> Path:
    size = len(log.entries)
    return write_bundle(
        path,
        [log.entries[n] for n in chosen],
        [log.notes[-1]],
        scope="incident:7",
        tree_size=size,
        proofs=proof_lines(log.entries, chosen, size) if proofs is None else proofs,
        personal=personal,
    )


def test_a_partial_bundle_with_inclusion_proofs_verifies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log, chosen, row = incident_log()
    bundle = write_partial(tmp_path / "b", log, chosen, personal=[row])

    code, out, err = run(capsys, bundle)

    assert (code, err) == (0, "")
    assert out.startswith(f"verified: {len(chosen)} of {len(log.entries)} entries")
    assert "1 signed checkpoint(s), 1 personal data row(s) matched" in out


def test_a_partial_bundle_with_a_wrong_proof_names_the_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log, chosen, _ = incident_log()
    proofs = proof_lines(log.entries, chosen, len(log.entries))
    bad = json.loads(proofs[2])
    bad["path"][0] = hashlib.sha256(b"forged").hexdigest()
    proofs[2] = canonical.dumps(bad)
    bundle = write_partial(tmp_path / "b", log, chosen, proofs=proofs)

    code, _, err = run(capsys, bundle)

    assert code == 1
    assert err.startswith(
        f"FAILED: entry {chosen[2]}: not in the signed log of {len(log.entries)} entries"
    )


def test_a_partial_bundle_with_a_changed_entry_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log, chosen, _ = incident_log()
    bundle = write_partial(tmp_path / "b", log, chosen)
    entries = [log.entries[n] for n in chosen]
    entries[-1] = with_changed_field(entries[-1], "outcome")
    retouch(bundle, "entries.jsonl", b"".join(e + b"\n" for e in entries))

    code, _, err = run(capsys, bundle)

    assert code == 1
    assert err.startswith(f"FAILED: entry {chosen[-1]}: not in the signed log")


def test_a_partial_bundle_with_two_checkpoints_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log, chosen, _ = incident_log()
    bundle = write_partial(tmp_path / "b", log, chosen)
    retouch(
        bundle,
        "checkpoints.jsonl",
        b"".join(json.dumps(n).encode() + b"\n" for n in log.notes[-2:]),
    )

    code, _, err = run(capsys, bundle)

    assert code == 1
    assert "a partial bundle carries exactly one checkpoint" in err


@pytest.mark.parametrize("scope", ["full", "incident:7"])
def test_altered_personal_data_does_not_match_its_commitment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], scope: str
) -> None:
    log, chosen, row = incident_log()
    altered = {**row, "value": "Client left calmly."}
    if scope == "full":
        bundle = write_bundle(tmp_path / "b", log.entries, log.notes, personal=[altered])
    else:
        bundle = write_partial(tmp_path / "b", log, chosen, personal=[altered])
    note_n = next(n for n, e in enumerate(log.events) if e.type_ == "note.added")

    code, _, err = run(capsys, bundle)

    assert code == 1
    assert err == (
        f"FAILED: personal data p-0001 does not match its commitment in entry {note_n}: "
        "it was altered after it was recorded\n"
    )


def test_personal_data_in_a_full_bundle_is_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log, _, row = incident_log()
    bundle = write_bundle(tmp_path / "b", log.entries, log.notes, personal=[row])

    code, out, _ = run(capsys, bundle)

    assert code == 0
    assert "1 personal data row(s) matched" in out


def test_personal_data_named_by_no_entry_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log, _, row = incident_log()
    stray = {**row, "ref": "p-0999"}
    bundle = write_bundle(tmp_path / "b", log.entries, log.notes, personal=[row, stray])

    code, _, err = run(capsys, bundle)

    assert code == 1
    assert err == "FAILED: personal data 'p-0999' is named by no entry in the bundle\n"


# -- findings (meaning, not tampering) ------------------------------------------------------
def findings(tmp_path: Path, capsys: pytest.CaptureFixture[str], log: Log) -> tuple[int, list[str]]:
    bundle = write_bundle(tmp_path / "b", log.entries, log.notes)
    code, out, err = run(capsys, bundle)
    assert err == ""
    assert out.startswith(f"verified: {len(log.entries)} entries")
    return code, out.splitlines()[1:]


def test_a_panic_alarm_never_acknowledged_is_listed_open(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = Log()
    log.add("server.started", version="0.1.0")
    log.alert(7)
    paged = log.step(7, 1)
    log.heartbeat(after=600)
    paged_at = log.events[paged].at

    code, lines = findings(tmp_path, capsys, log)

    assert code == 3
    assert "open (never acknowledged): 7" in lines
    assert (
        f"finding: incident 7: open and unacknowledged, but no one was paged after {paged_at} "
        f"(log ends {log.events[-1].at})"
    ) in lines


def test_an_alarm_whose_plan_never_came_is_found_never_paged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The server recorded the alarm (its first commit) and never ran step 0 (its second):
    acknowledged later by someone who heard it otherwise, it was still never paged."""
    log = Log()
    log.add("server.started", version="0.1.0")
    raised = log.alert(4, paged=False)
    log.acknowledge(4, after=45)
    log.alert(5)  # planned and paged within the second: no finding
    log.heartbeat(after=30)

    code, lines = findings(tmp_path, capsys, log)

    assert code == 3
    assert (
        f"finding: incident 4: raised at {log.events[raised].at}, but no escalation plan was "
        f"frozen by {log.events[-1].at}: no one was paged for it"
    ) in lines
    assert not any("incident 5" in line and "plan" in line for line in lines)


def test_a_plan_frozen_late_in_a_storm_is_no_finding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = Log()
    log.add("server.started", version="0.1.0")
    log.alert(4, paged=False)
    log.add("escalation.plan_frozen", 4, after=20, plan=PLAN)
    log.step(4, 0)
    log.acknowledge(4)
    log.heartbeat(after=600)

    code, lines = findings(tmp_path, capsys, log)

    assert (code, lines) == (0, [])


def test_a_reopened_incident_needs_a_new_acknowledgement(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = Log()
    log.alert(7)
    log.acknowledge(7)
    log.add("incident.resolved", 7, staff="s-0041", outcome="false_alarm")
    log.add("incident.reopened", 7, after=300, round=1, presses=2)

    code, lines = findings(tmp_path, capsys, log)

    assert code == 3
    assert lines == ["open (never acknowledged): 7"]


def test_a_late_escalation_step_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = Log()
    log.alert(7)
    late = log.step(7, 1, lag_ms=20_000)
    log.step(7, 2, lag_ms=15_000)  # on the line: not late
    log.acknowledge(7)

    code, lines = findings(tmp_path, capsys, log)

    assert code == 3
    assert lines == [f"finding: entry {late}: incident 7 step 1 started 20.0 s after it was due"]


def test_alerts_missing_from_a_units_sequence_are_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = Log()
    log.alert(7, seq=1)
    log.acknowledge(7)
    later = log.alert(8, seq=4)
    log.acknowledge(8)

    code, lines = findings(tmp_path, capsys, log)

    assert code == 3
    assert lines == [
        f"finding: entry {later}: unit unit-room-3 alert numbers 2..3 never reached the log"
    ]


def test_a_logged_sequence_gap_is_reported_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = Log()
    log.alert(7, seq=1)
    log.acknowledge(7)
    gap = log.add("device.sequence_gap", device="unit-room-3", expected=2, got=4)
    log.alert(8, seq=4)
    log.acknowledge(8)

    code, lines = findings(tmp_path, capsys, log)

    assert code == 3
    assert lines == [
        f"finding: entry {gap}: unit unit-room-3 skipped alert numbers 2..3: alerts never received"
    ]


def test_heartbeats_forty_minutes_apart_report_a_silence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = Log()
    log.add("server.started", version="0.1.0")
    before = log.heartbeat()
    after = log.heartbeat(after=40 * 60)
    log.heartbeat()

    code, lines = findings(tmp_path, capsys, log)

    assert code == 3
    silence = (
        f"finding: entry {after}: no heartbeat from {log.events[before].at} to "
        f"{log.events[after].at}: the server was not running or not writing its log"
    )
    assert lines == [silence]


# -- canonical form of entries ---------------------------------------------------------------
def spaced(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()


def unsorted(obj: dict[str, Any]) -> bytes:
    return json.dumps(dict(reversed(obj.items())), separators=(",", ":")).encode()


@pytest.mark.parametrize(
    ("rewrite", "reason"),
    [
        pytest.param(lambda raw: spaced(json.loads(raw)), "not in RFC 8785", id="whitespace"),
        pytest.param(lambda raw: unsorted(json.loads(raw)), "not in RFC 8785", id="unsorted"),
        pytest.param(
            lambda raw: raw.replace(b'"lag_ms":40,', b'"lag_ms":40.0,'),
            "number 40.0 is not an integer",
            id="float",
        ),
        pytest.param(
            lambda raw: raw.replace(b'"v":1}', b'"v":true}'), "format version", id="v-true"
        ),
    ],
)
def test_an_entry_not_in_canonical_form_is_refused(rewrite: Any, reason: str) -> None:
    log = Log()
    log.add("server.started", version="0.1.0")
    k = log.alert(7) + 2  # the step_started entry, with lag_ms 40
    log.acknowledge(7)
    entries = list(log.entries)
    entries[k] = rewrite(entries[k])
    assert entries[k] != log.entries[k]

    with pytest.raises(verdict.VerificationError) as caught:
        integrity.verify_full(entries, log.notes, KEY)

    assert caught.value.entry == k
    assert str(caught.value).startswith(f"entry {k}: ")
    assert reason in str(caught.value)


def test_a_non_canonical_entry_fails_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = quiet_log()
    bundle = write_bundle(tmp_path / "b", log.entries, log.notes)
    entries = list(log.entries)
    entries[2] = spaced(json.loads(entries[2]))
    retouch(bundle, "entries.jsonl", b"".join(e + b"\n" for e in entries))

    code, _, err = run(capsys, bundle)

    assert code == 1
    assert err == "FAILED: entry 2: JSON, but not in RFC 8785 canonical form\n"


# -- the manifest ------------------------------------------------------------------------
def test_a_file_not_in_the_manifest_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = quiet_log()
    bundle = write_bundle(tmp_path / "b", log.entries, log.notes)
    (bundle / "notes.txt").write_text("nothing happened\n")

    code, _, err = run(capsys, bundle)

    assert code == 1
    assert err == "FAILED: notes.txt: in the bundle but not in its manifest (added later?)\n"


def test_a_zip_with_two_files_of_the_same_name_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = quiet_log()
    bundle = write_bundle(tmp_path / "b", log.entries, log.notes)
    tampered = list(log.entries)
    tampered[6] = with_changed_field(tampered[6], "staff")
    zipped = tmp_path / "panicbutton-log.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("entries.jsonl", b"".join(e + b"\n" for e in tampered))
        for p in sorted(bundle.iterdir()):
            zf.writestr(f"panicbutton-log/{p.name}", p.read_bytes())

    code, _, _ = run(capsys, zipped)

    assert code in (1, 2)


# -- RFC 8785 and the format spec's known answers ------------------------------------------------
def test_canonical_json_matches_known_answers() -> None:
    assert (
        canonical.dumps({"b": 1, "a": [True, None, "\u00e9\n\u0001"]})
        == b'{"a":[true,null,"\xc3\xa9\\n\\u0001"],"b":1}'
    )
    assert (
        canonical.dumps({"s": '"\\\b\f\r\t/\x7f\x1f'}) == b'{"s":"\\"\\\\\\b\\f\\r\\t/\x7f\\u001f"}'
    )
    # by UTF-16 code units: U+1F600 is D83D DE00, before U+E000 (a code-point sort puts it after)
    assert canonical.dumps({"\ue000": 1, "\U0001f600": 2}) == (
        '{"\U0001f600":2,"\ue000":1}'.encode()
    )
    assert (
        canonical.dumps([2**53 - 1, -(2**53 - 1), 0]) == b"[9007199254740991,-9007199254740991,0]"
    )


@pytest.mark.parametrize(
    "value",
    [2**53, -(2**53), "\ud800", {"k": "a\udfffb"}, 1.0, float("nan"), b"bytes"],
    ids=["2**53", "-2**53", "lone-high-surrogate", "lone-low-surrogate", "float", "nan", "bytes"],
)
def test_canonical_json_refuses_what_the_log_cannot_hold(value: Any) -> None:
    with pytest.raises(canonical.CanonicalError):
        canonical.dumps(value)


@pytest.mark.parametrize(
    "data",
    [
        b'{"a":1,"a":2}',
        b'{"a":1.0}',
        b'{"a":1e3}',
        b"[NaN]",
        b'{"a":-0}',
        b'{"a":01}',
        b'"\\ud800"',
    ],
)
def test_canonical_loads_refuses_what_is_not_canonical(data: bytes) -> None:
    with pytest.raises(canonical.CanonicalError):
        canonical.loads(data)


def test_duplicate_keys_are_named() -> None:
    with pytest.raises(canonical.CanonicalError, match="'a' appears twice"):
        canonical.loads(b'{"a":1,"a":1}')


def test_the_worked_example_of_verify_md_is_reproduced() -> None:
    example = VERIFY_MD.read_text(encoding="utf-8").partition("## 13.")[2]
    entries = [line.encode() for line in example.splitlines() if line.startswith('{"at":')]
    tree = spec.Frontier()
    for raw in entries:
        assert spec.parse_entry(raw).raw == raw  # canonical and well formed
        tree.append(spec.leaf_hash(raw))
        assert spec.leaf_hash(raw).hex() in example
    signer = checkpoints.Signer("clinic.example/panicbutton", bytes(range(32)))
    commitment = spec.commitment(
        ref="p-0001", salt=SALT, value="Client asked to leave; left calmly."
    )

    assert len(entries) == 3
    assert len(entries[0]) == 168
    assert tree.root().hex() in example
    assert f"\n{signer.verifier}\n" in example
    assert checkpoints.VerifierKey.parse(str(signer.verifier)) == signer.verifier
    note = signer.sign_checkpoint(3, tree.root()).note
    assert note in example
    assert f"Commitment = `{commitment}`" in example
    # The signed manifest of a bundle of these entries.
    files = {
        "checkpoints.jsonl": json.dumps(note).encode() + b"\n",
        "entries.jsonl": b"".join(e + b"\n" for e in entries),
        "log-key.pub": f"{signer.verifier}\n".encode(),
    }
    manifest = canonical.dumps(
        {
            "created": "2026-11-29T08:00:00.000Z",
            "entries": 3,
            "files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
            "format": bundles.BUNDLE_FORMAT,
            "origin": signer.name,
            "personal": False,
            "scope": "full",
            "tree_size": 3,
        }
    )
    assert f"\n{manifest.decode()}\n" in example
    assert f"({len(manifest)} bytes, no trailing LF)" in example
    assert signer.sign_manifest(manifest) in example
    assert checkpoints.open_manifest(signer.sign_manifest(manifest), signer.verifier) == (
        hashlib.sha256(manifest).hexdigest()
    )


def test_the_value_types_of_verify_md_name_every_field_of_every_event() -> None:
    section = VERIFY_MD.read_text().partition("### 4.1")[2].partition("\n## ")[0]
    rows = re.findall(r"^\| ([a-z_.]+) \| (.*) \|$", section, re.MULTILINE)
    table = {
        name: frozenset()
        if types == "—"
        else frozenset(part.split(":")[0] for part in types.split("; "))
        for name, types in rows
        if name != "type"  # the header
    }

    assert table == spec.EVENT_TYPES


def test_the_event_table_of_verify_md_is_the_specs() -> None:
    rows = re.findall(r"^\| `([a-z_.]+)` \| (.*?) \| ", VERIFY_MD.read_text(), re.MULTILINE)
    table = {
        name: frozenset() if fields == "—" else frozenset(fields.split(", "))
        for name, fields in rows
    }

    assert table == spec.EVENT_TYPES


# -- several processes ---------------------------------------------------------------------
@pytest.mark.parametrize("changed_at", [None, 37_123])
def test_a_long_log_is_checked_on_every_core_with_the_same_verdict(
    tmp_path: Path, changed_at: int | None
) -> None:
    """Above two chunks the command checks entries on several processes; the first bad
    entry it names is the one a single process names. (A fresh process: forking a
    test runner's threads is not what an inspector's shell does.)"""
    bodies, notes, signer = synthetic_log(2 * integrity.CHUNK + 10_000)
    if changed_at is not None:
        bodies[changed_at] = bodies[changed_at].replace(b'"at":"2026', b'"at":"2025')
    bundle = write_bundle(tmp_path / "b", bodies, notes, key=signer.verifier, signer=signer)

    done = subprocess.run(
        [sys.executable, "-m", "panicbutton.cli", "audit", "verify", str(bundle)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    if changed_at is None:
        assert done.returncode in (0, 3), done.stderr
        assert done.stdout.startswith(f"verified: {len(bodies)} entries")
    else:
        assert done.returncode == 1
        assert done.stderr.startswith(f"FAILED: entry {changed_at}: it is not the entry")
        with pytest.raises(verdict.VerificationError) as alone:
            integrity.verify_full(bodies, notes, signer.verifier, workers=1)
        assert alone.value.entry == changed_at


def test_a_partial_bundle_with_lines_reordered_or_of_another_incident_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log, chosen, _ = incident_log()
    swapped = [chosen[0], chosen[2], chosen[1], *chosen[3:]]
    code, _, err = run(capsys, write_partial(tmp_path / "swapped", log, swapped))
    assert code == 1
    assert f"entry {chosen[1]} comes after entry {chosen[2]}: entries were reordered" in err

    other = next(n for n in range(len(log.entries)) if n not in chosen and n > chosen[-1])
    code, _, err = run(capsys, write_partial(tmp_path / "other", log, [*chosen, other]))
    assert code == 1
    assert f"entry {other} belongs to incident" in err
