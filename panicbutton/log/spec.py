"""The incident log's entries: event types and their fields, times, entry bytes, leaf
hashes, the tree's right edge, and personal-data commitments.

This module and :mod:`panicbutton.log.checkpoints` (keys and signed notes) are the
written contract between the server that appends to the log and anyone who checks it
later. ``VERIFY.md`` (beside this module, and in every bundle) describes the same
format in prose for a third party to re-implement (sections 2, 4, 5 and 6 here).

An entry is one canonical JSON object (RFC 8785, see :mod:`panicbutton.log.canonical`)::

    {"at":"2026-11-28T21:04:05.123Z","data":{...},"incident":12,"n":41,
     "prev":"<hex leaf hash of entry 40>","type":"alert.raised","v":1}

``n`` counts from 0 without gaps and is the entry's index in an RFC 9162
Merkle tree whose leaf hash is SHA-256(0x00 || "panicbutton/log-entry/v1" LF
|| entry bytes). ``prev`` is the leaf hash of the entry before (32 zero bytes
for entry 0), so an entry changed in place is named by the very next one.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

from panicbutton.errors import PanicbuttonError
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
        "alert.raised": (
            "alert_id",
            "device",
            "room",
            "seq",
            "kind",
            "device_time",
            "present",
            "via",
        ),
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
        "test.started": ("device", "by"),
        # people
        "incident.acknowledged": ("staff", "via"),
        "incident.resolved": ("staff", "outcome"),
        "note.added": ("by", "ref", "commitment"),
        "staff.opt_out": ("staff",),
        "staff.opt_in": ("staff",),
        "duty.takeover": ("staff", "until"),
        "duty.takeover_ended": ("staff", "until"),
        "duty.gap_warned": ("start", "end"),
        "config.changed": (
            "site_sha256",
            "rooms",
            "staff",
            "duty",
            "escalation",
            "retention",
            "by",
            "version",
        ),
        "config.staff": ("staff", "role", "language", "ref", "commitment"),
        # accounts: people, roles, sign-in, tokens, phones
        "person.added": ("person", "by"),
        "person.changed": ("person", "by", "fields"),
        "person.closed": ("person", "by"),
        "role.granted": ("person", "role", "by", "until"),
        "role.revoked": ("person", "role", "by"),
        "signin.link_issued": ("person", "purpose", "by", "until"),
        "signin.method_added": ("person", "method"),
        "signin.method_removed": ("person", "method", "by"),
        "signin.sessions_ended": ("person", "by", "count"),
        "token.created": ("person", "token", "scopes", "until"),
        "token.revoked": ("person", "token", "by"),
        "phone.confirmed": ("staff",),
        "phone.problem": ("staff", "code"),
        # workers' phones (the mobile button), check-in sessions, shared positions
        "phone.enrolled": ("phone",),
        "phone.revoked": ("phone", "by"),
        "checkin.started": ("phone", "until"),
        "checkin.extended": ("phone", "until"),
        "checkin.reminded": ("phone", "minutes"),
        "checkin.closed": ("phone",),
        "position.shared": ("phone",),
        # presence, the reference person's continuity, the violence register
        "presence.changed": ("present", "by"),
        "duty.gap_started": ("present",),
        "duty.gap_ended": ("seconds", "by"),
        "violence.recorded": ("by", "ref", "commitment"),
        "violence.withdrawn": ("by",),
        "consent.given": ("ref", "commitment"),
        "consent.withdrawn": ("ref", "commitment"),
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
#: The ``kind`` of an ``alert.raised`` about a person in danger (the findings of
#: VERIFY.md section 11 check these): a button's press, a phone's duress PIN, a
#: check-in session not closed in time.
ALARM_KINDS = ("panic", "duress", "missed_checkout")
#: Data fields that name a person by pseudonymous id (for per-person exports).
PERSON_FIELDS = ("staff", "by", "person")


#: ``prev`` of entry 0.
GENESIS = bytes(32)
_ENTRY_KEYS = frozenset({"v", "n", "at", "type", "incident", "data", "prev"})


class LogFormatError(PanicbuttonError, ValueError):
    """An entry, key or checkpoint that does not follow this format."""


def format_time(at: datetime) -> str:
    """UTC, millisecond precision (truncated), with a Z: ``2026-11-28T21:04:05.123Z``.

    The one form of a time in the log and on the wire (:mod:`panicbutton.wire` uses
    this function)."""
    if at.tzinfo is None:
        raise LogFormatError("times in the log and on the wire must carry a time zone")
    # NOTE: the same bytes as strftime("%Y-%m-%dT%H:%M:%S.") + milliseconds + "Z" for
    # every year the format holds (1000-9999); below 1000, isoformat pads the year to
    # four digits, as parse_time requires, where strftime would not.
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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


#: A SHA-256 as the log writes it: 64 lowercase hex digits.
HEX64_RE = re.compile(r"[0-9a-f]{64}")


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
    if type(prev) is not str or not HEX64_RE.fullmatch(prev):
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
