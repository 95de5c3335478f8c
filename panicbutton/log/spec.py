"""The incident log's format: entries, leaves, personal-data commitments, checkpoints.

This module is the written contract between the server that appends to the
log and anyone who checks it later. It uses only the standard library and
``cryptography`` (Ed25519), and never imports server code, so that an
inspector can run the verifier with nothing else installed. ``VERIFY.md``
(beside this module, and in every bundle) describes the same algorithm in
prose for a third party to re-implement.

An entry is one canonical JSON object (RFC 8785, see ``panicbutton.canonical``)::

    {"at":"2026-11-28T21:04:05.123Z","data":{...},"incident":12,"n":41,
     "prev":"<hex leaf hash of entry 40>","type":"alert.raised","v":1}

``n`` counts from 0 without gaps and is the entry's index in an RFC 9162
Merkle tree whose leaf hash is SHA-256(0x00 || "panicbutton/log-entry/v1" LF
|| entry bytes). ``prev`` is the leaf hash of the entry before (32 zero bytes
for entry 0), so an entry changed in place is named by the very next one. Checkpoints are C2SP
tlog-checkpoint notes signed with Ed25519 (C2SP signed-note).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from panicbutton.log import canonical, merkle

VERSION = 1
#: Prefix of every leaf's input: the log's name and format version, so an entry
#: of this log can never be taken for an entry of another log or format.
LEAF_DOMAIN = b"panicbutton/log-entry/v1\n"
#: Prefix of every personal-data commitment's input.
COMMIT_DOMAIN = b"panicbutton/personal-data/v1\n"
SALT_BYTES = 16

_PAGE = ("page",)
#: The closed set of event types, version 1, and the data fields each may hold.
#: Fields hold ids, codes, counts and times: never a name, number or free text
#: (those go to personal data, and the entry holds its ref and commitment).
EVENT_TYPES: dict[str, frozenset[str]] = {
    name: frozenset(fields)
    for name, fields in {
        # the room unit and its alerts
        "alert.raised": ("alert_id", "device", "room", "seq", "kind", "device_time"),
        "alert.re_pressed": ("alert_id", "presses"),
        "alert.refused": ("alert_id", "device", "seq"),
        "incident.reopened": ("round", "presses"),
        "device.sequence_gap": ("device", "expected", "got"),
        "device.sequence_reset": ("device", "previous", "got"),
        "device.sequence_back": ("device", "previous", "got"),
        "device.online": ("device",),
        "device.offline": ("device", "reason"),
        "device.offline_alerted": ("device", "since"),
        # escalation
        "escalation.plan_frozen": ("plan",),
        "duty.uncovered": (),
        "escalation.step_started": ("step", "due", "lag_ms"),
        "escalation.repeats_skipped": ("skipped",),
        "escalation.follow_up": ("step", "due", "lag_ms"),
        "escalation.hurried": ("step", "reason"),
        "escalation.job_redriven": ("kind", "step"),
        # pages (SMS and calls) and other messages
        "page.queued": ("page", "staff", "channel", "step"),
        "page.sent": (*_PAGE, "provider_id", "bundled", "recovered"),
        "page.failed": (*_PAGE, "code"),
        "page.cancelled": (*_PAGE, "reason"),
        "page.status": (*_PAGE, "status", "code"),
        "message.sent": ("staff", "purpose", "code"),
        "message.failed": ("staff", "purpose", "code"),
        "test.completed": ("sent", "failed", "result"),
        # people
        "incident.acknowledged": ("staff", "via"),
        "incident.resolved": ("staff", "outcome"),
        "note.added": ("by", "ref", "commitment"),
        "staff.opt_out": ("staff",),
        "staff.opt_in": ("staff",),
        "duty.takeover": ("staff", "until"),
        "duty.takeover_ended": ("staff", "until"),
        "duty.gap_warned": ("start", "end"),
        "config.changed": ("site_sha256", "rooms", "staff", "duty", "escalation", "retention"),
        "config.staff": ("staff", "role", "language", "ref", "commitment"),
        # access, review and the log itself
        "record.viewed": ("by", "scope", "ref", "commitment"),
        "record.exported": ("by", "scope", "ref", "commitment", "size"),
        "record.redacted": ("ref", "kind", "reason"),
        "review.signed_off": ("by", "ref", "commitment"),
        "log.verified": ("size", "root", "result", "findings"),
        "log.failure_acknowledged": ("by", "ref", "commitment"),
        "log.heartbeat": (),
        "server.started": ("version",),
    }.items()
}
#: Data fields that name a person by pseudonymous id (for per-person exports).
PERSON_FIELDS = ("staff", "by")


#: ``prev`` of entry 0.
GENESIS = bytes(32)
_ENTRY_KEYS = frozenset({"v", "n", "at", "type", "incident", "data", "prev"})


class LogFormatError(ValueError):
    """An entry, key or checkpoint that does not follow this format."""


def format_time(at: datetime) -> str:
    """UTC, millisecond precision, with a Z: ``2026-11-28T21:04:05.123Z``."""
    if at.tzinfo is None:
        raise LogFormatError("log times must carry a time zone")
    utc = at.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


#: ASCII digits only (``\d`` would take any script's digits).
_TIME_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")


def parse_time(text: str) -> datetime:
    """A log time (``format_time``'s form exactly) as an aware UTC datetime."""
    if not _TIME_RE.fullmatch(text):
        raise LogFormatError(f"time {text!r} is not YYYY-MM-DDTHH:MM:SS.mmmZ")
    try:
        return datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)
    except ValueError:
        raise LogFormatError(f"time {text!r} is not a real date and time") from None


def check_event(type_: str, data: Mapping[str, Any]) -> None:
    """Refuse an event type outside the closed set, or a field it may not hold."""
    allowed = EVENT_TYPES.get(type_)
    if allowed is None:
        raise LogFormatError(f"event type {type_!r} is not one of the log's version-1 types")
    extra = sorted(set(data) - allowed)
    if extra:
        raise LogFormatError(f"event {type_}: field(s) {', '.join(extra)} are not allowed")


def entry_bytes(
    *,
    n: int,
    at: datetime | str,
    type_: str,
    incident: int | None,
    data: Mapping[str, Any],
    prev: bytes,
) -> bytes:
    """The canonical bytes of entry ``n`` (what is stored, hashed and exported);
    ``prev`` is the leaf hash of entry n-1 (``GENESIS`` for entry 0)."""
    check_event(type_, data)
    return canonical.dumps(
        {
            "v": VERSION,
            "n": n,
            "at": at if isinstance(at, str) else format_time(at),
            "type": type_,
            "incident": incident,
            "data": dict(data),
            "prev": prev.hex(),
        }
    )


class Entry(NamedTuple):
    """One parsed entry (a tuple: the verifier makes one per entry, so cheaply)."""

    n: int
    at: str
    type: str
    incident: int | None
    data: dict[str, Any]
    prev: bytes
    raw: bytes


_HEX64_RE = re.compile(r"[0-9a-f]{64}")


def parse_entry(raw: bytes) -> Entry:
    """Parse stored entry bytes, insisting on canonical form and the version-1 shape."""
    # NOTE: type(x) is int, not isinstance: JSON's true is not the number 1.
    try:
        obj = canonical.loads(raw)
    except canonical.CanonicalError as exc:
        raise LogFormatError(str(exc)) from None
    if type(obj) is not dict or obj.keys() != _ENTRY_KEYS:
        raise LogFormatError(f"an entry is an object with exactly {', '.join(sorted(_ENTRY_KEYS))}")
    v, n, at, type_ = obj["v"], obj["n"], obj["at"], obj["type"]
    incident, data, prev = obj["incident"], obj["data"], obj["prev"]
    if type(v) is not int or v != VERSION:
        raise LogFormatError(f"entry format version {v!r} is not {VERSION}")
    if type(n) is not int or n < 0:
        raise LogFormatError("n must be a whole number")
    if incident is not None and type(incident) is not int:
        raise LogFormatError("incident must be a number or null")
    if type(data) is not dict or type(type_) is not str:
        raise LogFormatError("type must be a string and data an object")
    if type(at) is not str or not _TIME_RE.fullmatch(at):
        raise LogFormatError(f"at {at!r} is not a time as YYYY-MM-DDTHH:MM:SS.mmmZ")
    try:
        datetime.fromisoformat(at[:-1])
    except ValueError:
        raise LogFormatError(f"at {at!r} is not a real date and time") from None
    allowed = EVENT_TYPES.get(type_)
    if allowed is None or not allowed.issuperset(data):
        check_event(type_, data)
    if type(prev) is not str or not _HEX64_RE.fullmatch(prev):
        raise LogFormatError("prev must be 64 lowercase hex digits")
    return Entry(
        n=n, at=at, type=type_, incident=incident, data=data, prev=bytes.fromhex(prev), raw=raw
    )


def leaf_hash(raw: bytes) -> bytes:
    """The RFC 9162 leaf hash of entry bytes: SHA-256(0x00 || LEAF_DOMAIN || raw)."""
    return merkle.leaf_hash(LEAF_DOMAIN + raw)


class Frontier:
    """The right edge of the tree (one hash per perfect subtree): appends and the
    root in O(log n), without reading earlier entries."""

    def __init__(self, size: int = 0, hashes: Iterable[bytes] = ()) -> None:
        self.size = size
        self.hashes = list(hashes)
        if len(self.hashes) != size.bit_count():
            raise LogFormatError(f"a tree of {size} needs {size.bit_count()} frontier hashes")

    def append(self, leaf: bytes) -> None:
        self.hashes.append(leaf)
        m = self.size
        while m & 1:
            right = self.hashes.pop()
            self.hashes[-1] = merkle.node_hash(self.hashes[-1], right)
            m >>= 1
        self.size += 1

    def root(self) -> bytes:
        if not self.hashes:
            return merkle.EMPTY_ROOT
        acc = self.hashes[-1]
        for left in reversed(self.hashes[:-1]):
            acc = merkle.node_hash(left, acc)
        return acc


def commitment(*, ref: str, salt: bytes, value: Any) -> str:
    """Hex SHA-256 binding a personal-data row (ref, salt, value) to its log entry.

    The salt keeps a short value (a name, a number) from being guessed by hashing
    candidates; with the row purged, the commitment reveals nothing.
    """
    body = canonical.dumps({"ref": ref, "value": value})
    return hashlib.sha256(COMMIT_DOMAIN + salt + body).hexdigest()


def new_salt() -> bytes:
    return secrets.token_bytes(SALT_BYTES)


# -- signed notes and checkpoints (C2SP signed-note, tlog-checkpoint) -------------------
ED25519 = 0x01


def key_id(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([ED25519]) + public).digest()[:4]


def _check_name(name: str) -> None:
    if not name or any(c.isspace() or c == "+" for c in name):
        raise LogFormatError(f"key name {name!r} must be non-empty, without spaces or '+'")


@dataclass(frozen=True)
class VerifierKey:
    """A public key as C2SP notes write it: ``<name>+<key id hex>+<base64(0x01 || key)>``."""

    name: str
    public: bytes

    @property
    def id(self) -> bytes:
        return key_id(self.name, self.public)

    def __str__(self) -> str:
        blob = base64.b64encode(bytes([ED25519]) + self.public).decode()
        return f"{self.name}+{self.id.hex()}+{blob}"

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        # NOTE: at most 2 splits: the base64 key itself may hold '+'.
        parts = text.strip().split("+", 2)
        if len(parts) != 3:
            raise LogFormatError("a verifier key is <name>+<8 hex digits>+<base64 key>")
        name, hexid, blob = parts
        _check_name(name)
        try:
            raw = base64.b64decode(blob, validate=True)
            wanted = bytes.fromhex(hexid)
        except ValueError:
            raise LogFormatError("a verifier key's id or key is not hex / base64") from None
        if len(raw) != 33 or raw[0] != ED25519:
            raise LogFormatError("a verifier key must be an Ed25519 key (type 0x01, 32 bytes)")
        key = cls(name, raw[1:])
        if key.id != wanted:
            raise LogFormatError("the verifier key's id does not match its name and key")
        return key


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    note: str  # the whole signed note, as stored and exported

    def text(self) -> str:
        return checkpoint_text(self.origin, self.size, self.root)


def checkpoint_text(origin: str, size: int, root: bytes) -> str:
    _check_name(origin)
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"


_SIZE_RE = re.compile(rf"0|[1-9][0-9]{{0,{canonical.MAX_DIGITS - 1}}}")


def parse_checkpoint_text(text: str) -> tuple[str, int, bytes]:
    lines = text.split("\n")
    if len(lines) != 4 or lines[3] != "":
        raise LogFormatError("a checkpoint is three lines: origin, tree size, root hash")
    origin, size_s, root_s = lines[:3]
    if not _SIZE_RE.fullmatch(size_s):
        raise LogFormatError(
            f"checkpoint tree size {size_s[:20]!r} is not a decimal number of ASCII digits "
            f"(at most {canonical.MAX_DIGITS}, no leading zero)"
        )
    try:
        root = base64.b64decode(root_s, validate=True)
    except ValueError:
        raise LogFormatError("checkpoint root hash is not base64") from None
    if len(root) != 32:
        raise LogFormatError("checkpoint root hash is not 32 bytes")
    return origin, int(size_s), root


def split_note(note: str) -> tuple[str, list[tuple[str, bytes]]]:
    """A signed note's text and its (key name, base64-decoded signature) lines."""
    head, sep, tail = note.partition("\n\n")
    if not sep or not tail.endswith("\n"):
        raise LogFormatError("a signed note is text, a blank line, then signature lines")
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        raise LogFormatError("a signed note may not hold control characters")
    sigs = []
    for line in tail[:-1].split("\n"):
        if not line.startswith("\u2014 "):
            raise LogFormatError(f"signature line {line[:40]!r} does not start with an em dash")
        name, _, blob = line[2:].rpartition(" ")
        try:
            sigs.append((name, base64.b64decode(blob, validate=True)))
        except ValueError:
            raise LogFormatError("a signature is not base64") from None
    return head + "\n", sigs


def open_note(note: str, key: VerifierKey, *, what: str = "checkpoint") -> str:
    """The text of ``note`` once its signature by ``key`` verifies; LogFormatError if not."""
    text, sigs = split_note(note)
    public = Ed25519PublicKey.from_public_bytes(key.public)
    ours = [s for name, s in sigs if name == key.name and s[:4] == key.id]
    if not ours:
        raise LogFormatError(f"the {what} carries no signature by {key.name}")
    for sig in ours:
        try:
            public.verify(sig[4:], text.encode())
        except InvalidSignature:
            raise LogFormatError(f"the {what}'s signature does not verify") from None
    return text


def open_checkpoint(note: str, key: VerifierKey) -> Checkpoint:
    """Verify ``note``'s signature by ``key`` and parse its checkpoint; LogFormatError if not."""
    text = open_note(note, key)
    origin, size, root = parse_checkpoint_text(text)
    if origin != key.name:
        raise LogFormatError(f"checkpoint origin {origin!r} is not the key's name {key.name!r}")
    return Checkpoint(origin=origin, size=size, root=root, note=note)


#: The second line of a signed manifest. Never a decimal number, so a signed manifest
#: is never a checkpoint (whose second line is its size), nor a checkpoint a manifest.
MANIFEST_LINE = "panicbutton-log-bundle/v1 manifest"


def manifest_text(origin: str, manifest: bytes) -> str:
    """What signs a bundle's manifest: origin, ``MANIFEST_LINE``, SHA-256 hex of the
    manifest's bytes, each line ending in LF."""
    _check_name(origin)
    return f"{origin}\n{MANIFEST_LINE}\n{hashlib.sha256(manifest).hexdigest()}\n"


def open_manifest(note: str, key: VerifierKey) -> str:
    """The SHA-256 hex of the manifest that ``note`` (a signed manifest) signs, once its
    signature by ``key`` verifies; LogFormatError if not."""
    text = open_note(note, key, what="signed manifest")
    lines = text.split("\n")
    if len(lines) != 4 or lines[3] != "" or lines[1] != MANIFEST_LINE:
        raise LogFormatError(
            f"a signed manifest is three lines: origin, {MANIFEST_LINE!r}, and the "
            "SHA-256 of manifest.json"
        )
    if lines[0] != key.name:
        raise LogFormatError(f"its origin {lines[0]!r} is not the key's name {key.name!r}")
    if not _HEX64_RE.fullmatch(lines[2]):
        raise LogFormatError("the manifest's SHA-256 is not 64 lowercase hex digits")
    return lines[2]


class Signer:
    """An Ed25519 note signer. The key file holds
    ``PRIVATE+KEY+<name>+<key id hex>+<base64(0x01 || 32-byte seed)>``."""

    def __init__(self, name: str, seed: bytes) -> None:
        _check_name(name)
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        public = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.verifier = VerifierKey(name, public)
        self._seed = seed

    @property
    def name(self) -> str:
        return self.verifier.name

    @classmethod
    def generate(cls, name: str) -> Signer:
        return cls(name, secrets.token_bytes(32))

    @classmethod
    def parse(cls, text: str) -> Signer:
        parts = text.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise LogFormatError(
                "a log signing key is PRIVATE+KEY+<name>+<id>+<key>; "
                "make one with `panicbutton audit keygen`"
            )
        try:
            raw = base64.b64decode(parts[4], validate=True)
        except ValueError:
            raise LogFormatError("the log signing key is not base64") from None
        if len(raw) != 33 or raw[0] != ED25519:
            raise LogFormatError("the log signing key is not an Ed25519 key")
        signer = cls(parts[2], raw[1:])
        if signer.verifier.id.hex() != parts[3]:
            raise LogFormatError("the log signing key's id does not match the key")
        return signer

    def derive(self, label: bytes) -> bytes:
        """A secret for ``label``, derived from the signing key (HMAC-SHA256)."""
        return hmac.new(self._seed, label, hashlib.sha256).digest()

    def private_text(self) -> str:
        blob = base64.b64encode(bytes([ED25519]) + self._seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.verifier.id.hex()}+{blob}\n"

    def _note(self, text: str) -> str:
        sig = self.verifier.id + self._key.sign(text.encode())
        return f"{text}\n\u2014 {self.name} {base64.b64encode(sig).decode()}\n"

    def sign_checkpoint(self, size: int, root: bytes) -> Checkpoint:
        note = self._note(checkpoint_text(self.name, size, root))
        return Checkpoint(origin=self.name, size=size, root=root, note=note)

    def sign_manifest(self, manifest: bytes) -> str:
        """The signed note that binds a bundle's manifest (``manifest.sig``)."""
        return self._note(manifest_text(self.name, manifest))
