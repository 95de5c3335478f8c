"""The site file: rooms and their devices, staff, who is on duty, escalation.

Declarative TOML, read at start (``firmware_config/site.example.toml`` shows
every field). Staff names and phone numbers live only here and in the SMS sent
to them: the incident log refers to staff by their pseudonymous ``id``.

(Over 300 lines: each part of the file and the check that names its errors sit
together, so a setting and what is said when it is wrong are read in one place.)
"""

from __future__ import annotations

import itertools
import re
import tomllib
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, time
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from panicbutton.fields import read_field
from panicbutton.wire import DEVICE_ID_RE
from server.errors import SiteError

Language = Literal["fr", "nl", "en"]
LANGUAGES: tuple[Language, ...] = ("fr", "nl", "en")
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
#: A pseudonymous id (room, staff member, or anyone named in the log): the one rule.
ID = r"[a-z0-9][a-z0-9-]{0,62}"
ID_RE = re.compile(f"^{ID}$")


#: The longest name of a member of staff (as the people table keeps it).
NAME_MAX = 200

#: Room id prefix for incidents from units the site file does not list.
UNKNOWN_PREFIX = "unknown-"
#: The room id of an incident about the whole site (a duty gap), not one room: no
#: site id can take it (an id starts with a letter or digit).
WHOLE_SITE = "-site"
#: Device and room id prefix of an incident from a worker's phone (the mobile button):
#: ``-phone-<phone id>``. No unit or room id can take it (an id starts with a letter or
#: digit), and it is an id as the log's contract has them (letters, digits, ``-``).
PHONE_PREFIX = "-phone-"


@dataclass(frozen=True, slots=True)
class Room:
    id: str
    label: str  # what staff read in the SMS, e.g. "Room 3 (first floor)"
    device: str
    #: SHA-256 (hex) of the unit's token for the HTTPS path; None turns that path off.
    token_sha256: str | None = None


@dataclass(frozen=True, slots=True)
class Staff:
    id: str  # pseudonymous; the only staff reference in the incident log
    name: str
    phone: str  # E.164
    language: Language
    role: Literal["staff", "manager"] = "staff"


Who = Literal["on_duty", "all_staff", "managers"]
Channel = Literal["sms", "call"]
WHO: tuple[Who, ...] = ("on_duty", "all_staff", "managers")
CHANNELS: tuple[Channel, ...] = ("sms", "call")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class Step:
    """One escalation step: ``after`` seconds from the alert, page ``who`` on ``channels``."""

    after: int
    who: Who
    channels: tuple[Channel, ...] = ("sms", "call")


@dataclass(frozen=True, slots=True)
class Escalation:
    """The site's escalation: steps, then the last step again every ``repeat_every``
    seconds until someone acknowledges; ``follow_up_after`` seconds after an
    acknowledgement without resolution, the acknowledger is paged again, then
    everyone. ``offline_repeat`` paces technical alerts (a unit offline)."""

    steps: tuple[Step, ...]
    repeat_every: int = 60
    follow_up_after: int = 600
    offline_repeat: int = 300


@dataclass(frozen=True, slots=True)
class Shift:
    """A weekly shift in the site's time zone; ``end`` before ``start`` ends the next day."""

    staff: str
    days: frozenset[int]  # 0 = Monday
    start: time
    end: time

    def covers(self, local: datetime) -> bool:
        """Whether this shift covers ``local`` (a wall-clock time in the site's zone)."""
        t, day = local.time(), local.weekday()
        if self.start < self.end:
            return day in self.days and self.start <= t < self.end
        # Overnight (or 24 h when start == end): the part after midnight belongs
        # to the day the shift started.
        return (day in self.days and t >= self.start) or (
            (day - 1) % 7 in self.days and t < self.end
        )


#: The shortest and longest take-over, in hours (a quarter of an hour, a week): the
#: site's default and the API's ``hours``. A take-over shorter than the shortest would
#: end as it is confirmed ("on duty until" now).
TAKEOVER_HOURS_MIN = 0.25
TAKEOVER_HOURS_MAX = 168.0


@dataclass(frozen=True, slots=True)
class Duty:
    """Who is on duty: ``always`` (no roster), weekly ``shifts``, and the ``default``
    group paged when nobody is; managers are warned ``gap_warning`` seconds ahead
    of a moment nobody covers. A take-over lasts ``takeover_hours``."""

    always: tuple[str, ...] = ()
    shifts: tuple[Shift, ...] = ()
    default: tuple[str, ...] = ()
    gap_warning: int = 3600
    takeover_hours: float = 8.0


@dataclass(frozen=True, slots=True)
class Site:
    name: str
    timezone: str
    rooms: tuple[Room, ...]
    staff: tuple[Staff, ...]
    duty: Duty
    escalation: Escalation
    #: Who a *test* alert pages (``[test] recipients``); managers when not set.
    test_recipients: tuple[str, ...] = ()
    #: Enrolled phones (mobile buttons): phone id -> what staff read for its worker
    #: (their name on the site: a worker's chosen code is enough).
    phones: tuple[tuple[str, str], ...] = ()

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def room_for_device(self, device_id: str) -> Room | None:
        return next((r for r in self.rooms if r.device == device_id), None)

    def room(self, room_id: str) -> Room:
        """The room with this id; an incident from an unknown unit gets a stand-in, one
        about the whole site (:data:`WHOLE_SITE`) the site's name, and one from a room no
        longer configured a stand-in named by the room's id."""
        if room_id == WHOLE_SITE:
            return Room(id=WHOLE_SITE, label=self.name, device="")
        if room_id.startswith(PHONE_PREFIX):
            return self.phone_room(room_id.removeprefix(PHONE_PREFIX))
        found = next((r for r in self.rooms if r.id == room_id), None)
        if found is None and room_id.startswith(UNKNOWN_PREFIX):
            return self.unknown_room(room_id.removeprefix(UNKNOWN_PREFIX))
        if found is None:
            # NOTE: a room removed or renamed while one of its alarms is open: its pages,
            # replies and follow-ups go on, naming the room by its id (an alarm must
            # never stop paging because the configuration changed under it).
            return Room(id=room_id, label=room_id, device="")
        return found

    @staticmethod
    def unknown_room(device_id: str) -> Room:
        """A stand-in for a unit with broker credentials that the site file does not list."""
        return Room(
            id=UNKNOWN_PREFIX + device_id, label=f"UNKNOWN UNIT {device_id}", device=device_id
        )

    def phone_room(self, phone_id: str) -> Room:
        """The "room" of a worker's phone: its alarms name the worker and say "mobile"
        (outside the premises); a phone no longer known is named by its id."""
        name = dict(self.phones).get(phone_id) or phone_id
        room_id = PHONE_PREFIX + phone_id
        return Room(id=room_id, label=f"{name} (mobile)", device=room_id)

    def managers(self) -> list[Staff]:
        """Who hears of technical faults: managers, or else the default group, or everyone."""
        return (
            [s for s in self.staff if s.role == "manager"]
            or [self.member(i) for i in self.duty.default or self.duty.always]
            or list(self.staff)
        )

    def member(self, staff_id: str) -> Staff:
        """The staff member with this id; LookupError if the site file no longer has them."""
        found = next((s for s in self.staff if s.id == staff_id), None)
        if found is None:
            raise LookupError(f"staff {staff_id!r} is not in the site file")
        return found

    def known(self, staff_id: str) -> Staff | None:
        """The member of staff with this id, or None if they can no longer be paged."""
        return next((s for s in self.staff if s.id == staff_id), None)

    def name_of(self, staff_id: str) -> str:
        """What colleagues read for this person: their name, or their id once they can no
        longer be paged (closed, demoted or an unconfirmed phone since)."""
        found = self.known(staff_id)
        return found.name if found else staff_id

    def by_phone(self, phone: str) -> Staff | None:
        return next((s for s in self.staff if s.phone == phone), None)

    def test_group(self) -> list[Staff]:
        return [self.member(i) for i in self.test_recipients] or self.managers()


#: Where a service reads the site in force (:class:`server.roster.store.SiteBook`):
#: called once per use, so a change of the configuration holds for the next alarm.
SiteSource = Callable[[], Site]


class LiveSite:
    """A service that reads the site in force at each use, through ``self._site``."""

    _sites: SiteSource

    @property
    def _site(self) -> Site:
        return self._sites()


def printable(text: str, what: str) -> str:
    """``text`` if it holds no control character: a name or label is spoken in calls (XML,
    where most control characters are not allowed) and printed in texts and PDFs."""
    bad = next((c for c in text if unicodedata.category(c) in ("Cc", "Cs")), None)
    if bad is not None:
        raise SiteError(
            f"{what} holds the control character U+{ord(bad):04X}; use plain text "
            "(letters of any script, digits, spaces, punctuation)"
        )
    return text


def _need(table: dict[str, Any], key: str, where: str, kind: type = str) -> Any:
    return read_field(table, key, kind, lambda problem: SiteError(f"{where}: `{key}` {problem}"))


def _parse_rooms(data: dict[str, Any], where: str) -> tuple[Room, ...]:
    rooms: list[Room] = []
    for i, r in enumerate(data.get("rooms", [])):
        w = f"{where}: rooms[{i}]"
        token = r.get("device_token_sha256")
        if token is not None and not SHA256_HEX.fullmatch(str(token)):
            raise SiteError(
                f"{w}: device_token_sha256 must be 64 hex digits (from "
                "`panicbutton provision`), not the token itself"
            )
        room = Room(
            id=_need(r, "id", w),
            label=printable(str(_need(r, "label", w)), f"{w}: label"),
            device=_need(r, "device", w),
            token_sha256=token,
        )
        if not ID_RE.fullmatch(room.id):
            raise SiteError(f"{w}: id {room.id!r} must be lowercase letters, digits and '-'")
        if not DEVICE_ID_RE.fullmatch(room.device):
            raise SiteError(f"{w}: device {room.device!r} must be lowercase letters, digits, '-'")
        rooms.append(room)
    if not rooms:
        raise SiteError(f"{where}: no [[rooms]]: add one per room with a button")
    for attr in ("id", "device"):
        # Counted once (not list.count per room: 14 s for 10,000 rooms).
        dup = {x for x, n in Counter(getattr(r, attr) for r in rooms).items() if n > 1}
        if dup:
            raise SiteError(f"{where}: room {attr} {sorted(dup)[0]!r} is used twice")
    return tuple(rooms)


def _parse_member(s: dict[str, Any], w: str) -> Staff:
    phone = str(_need(s, "phone", w)).replace(" ", "")
    if not E164.fullmatch(phone):
        raise SiteError(f"{w}: phone must be in international form like +32470123456")
    lang = s.get("language", "en")
    if lang not in LANGUAGES:
        raise SiteError(f"{w}: language must be one of {', '.join(LANGUAGES)}, got {lang!r}")
    role = s.get("role", "staff")
    if role not in ("staff", "manager"):
        raise SiteError(f"{w}: role must be staff or manager, got {role!r}")
    member = Staff(
        id=_need(s, "id", w),
        name=printable(str(_need(s, "name", w)), f"{w}: name"),
        phone=phone,
        language=lang,
        role=role,
    )
    if not ID_RE.fullmatch(member.id):
        raise SiteError(f"{w}: id {member.id!r} must be lowercase letters, digits and '-'")
    if not member.name.strip() or len(member.name) > NAME_MAX:
        raise SiteError(f"{w}: name must be 1 to {NAME_MAX} characters")
    return member


def _parse_staff(data: dict[str, Any], where: str) -> tuple[Staff, ...]:
    staff = [_parse_member(s, f"{where}: staff[{i}]") for i, s in enumerate(data.get("staff", []))]
    if not staff:
        raise SiteError(f"{where}: no [[staff]]: at least one person must be reachable")
    for attr in ("id", "phone"):
        seen = [getattr(s, attr) for s in staff]
        if len(set(seen)) != len(seen):
            raise SiteError(f"{where}: two staff entries share the same {attr}")
    return tuple(staff)


def _ids(value: object, w: str, known: set[str]) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SiteError(f"{w} must be a list of staff ids")
    for sid in value:
        if sid not in known:
            raise SiteError(f"{w} names {sid!r}, which is not a staff id")
    return tuple(value)


def _clock_time(value: object, w: str) -> time:
    try:
        return time.fromisoformat(str(value))
    except ValueError:
        raise SiteError(f'{w} must be a time like "08:00", got {value!r}') from None


def _parse_shift(sh: dict[str, Any], sw: str, known: set[str]) -> Shift:
    member = _need(sh, "staff", sw)
    if member not in known:
        raise SiteError(f"{sw}: staff {member!r} is not a staff id")
    days = sh.get("days", list(DAYS))
    if not isinstance(days, list) or any(d not in DAYS for d in days):
        raise SiteError(f"{sw}: days must be a list of {', '.join(DAYS)}")
    return Shift(
        staff=member,
        days=frozenset(DAYS.index(d) for d in days),
        start=_clock_time(_need(sh, "start", sw), f"{sw}: start"),
        end=_clock_time(_need(sh, "end", sw), f"{sw}: end"),
    )


def _takeover_hours(value: object, w: str) -> float:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not TAKEOVER_HOURS_MIN <= value <= TAKEOVER_HOURS_MAX
    ):
        raise SiteError(
            f"{w} takeover_hours must be a number of hours from {TAKEOVER_HOURS_MIN:g} (a "
            f"quarter of an hour) to {TAKEOVER_HOURS_MAX:g} (a week), got {value!r}"
        )
    return float(value)


def _parse_duty(
    data: dict[str, Any], where: str, staff: tuple[Staff, ...], *, strict: bool = True
) -> Duty:
    table = data.get("duty", {})
    known = {s.id for s in staff}
    w = f"{where}: [duty]"
    duty = Duty(
        always=_ids(table.get("on_duty", []), f"{w} on_duty", known),
        shifts=tuple(
            _parse_shift(sh, f"{where}: duty.shifts[{i}]", known)
            for i, sh in enumerate(table.get("shifts", []))
        ),
        default=_ids(table.get("default", []), f"{w} default", known),
        gap_warning=int(table.get("gap_warning_minutes", 60)) * 60,
        takeover_hours=_takeover_hours(table.get("takeover_hours", 8), w),
    )
    if strict and not (duty.always or duty.shifts or duty.default):
        raise SiteError(
            f"{where}: [duty] names nobody: set on_duty (always on duty), "
            "[[duty.shifts]], or default (paged when no shift covers)"
        )
    return duty


def _parse_escalation(data: dict[str, Any], where: str) -> Escalation:
    table = data.get("escalation", {})
    steps = []
    default = [{"after": 0, "who": "on_duty"}, {"after": 30, "who": "all_staff"}]
    for i, st in enumerate(table.get("steps", default)):
        w = f"{where}: escalation.steps[{i}]"
        after = _need(st, "after", w, int)
        who = st.get("who", "on_duty")
        channels = st.get("channels", ["sms", "call"])
        if who not in WHO or after < 0:
            raise SiteError(f"{w}: needs after >= 0 seconds and who = {' or '.join(WHO)}")
        if not channels or any(c not in CHANNELS for c in channels):
            raise SiteError(f"{w}: channels must be a non-empty list of sms and call")
        steps.append(Step(after=after, who=who, channels=tuple(channels)))
    if not steps or steps[0].after != 0:
        raise SiteError(f"{where}: escalation.steps[0] must have after = 0 (page at once)")
    if any(b.after <= a.after for a, b in itertools.pairwise(steps)):
        raise SiteError(f"{where}: escalation.steps must be in increasing order of `after`")
    numbers = {
        k: table.get(k, d)
        for k, d in (("repeat_every", 60), ("follow_up_after", 600), ("offline_repeat", 300))
    }
    for key, value in numbers.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 10:
            raise SiteError(
                f"{where}: escalation.{key} must be whole seconds >= 10, got {value!r}: "
                "paging never stops, so it needs a pace"
            )
    return Escalation(steps=tuple(steps), **numbers)


def _parse_test(data: dict[str, Any], where: str, staff: tuple[Staff, ...]) -> tuple[str, ...]:
    recipients = tuple(data.get("test", {}).get("recipients", []))
    known = {s.id for s in staff}
    for sid in recipients:
        if sid not in known:
            raise SiteError(f"{where}: [test] recipients names {sid!r}, which is not a staff id")
    return recipients


def parse_site(
    data: dict[str, Any],
    source: str = "<memory>",
    *,
    staff: tuple[Staff, ...] | None = None,
    strict: bool = True,
) -> Site:
    """Check a parsed site file; raise :class:`SiteError` naming the first problem.

    ``staff`` given (the live configuration, :mod:`server.roster`): the people come
    from it, not from the file's ``[[staff]]``. ``strict=False`` lets a site have no
    room, no staff and nobody named on duty (a new server, not yet configured)."""
    try:
        return _parse_site(data, source, staff, strict)
    except SiteError:
        raise
    except (AttributeError, TypeError, ValueError) as exc:
        # A table where a list belongs, a word where a number does: never a traceback.
        raise SiteError(
            f"site file {source}: a table or value is not of the kind expected ({exc}); "
            "compare it with firmware_config/site.example.toml"
        ) from None


def _parse_site(
    data: dict[str, Any], source: str, people: tuple[Staff, ...] | None, strict: bool
) -> Site:
    where = f"site file {source}"
    site = data.get("site", {})
    timezone = str(site.get("timezone", "Europe/Brussels"))
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise SiteError(
            f"{where}: [site] timezone {timezone!r} is not an IANA time zone "
            "such as Europe/Brussels"
        ) from None
    staff = _parse_staff(data, where) if people is None else people
    if strict and not staff:
        raise SiteError(f"{where}: no staff: at least one person must be reachable")
    return Site(
        name=printable(str(site.get("name", "site")), f"{where}: [site] name"),
        timezone=timezone,
        rooms=_parse_rooms(data, where) if strict or data.get("rooms") else (),
        staff=staff,
        duty=_parse_duty(data, where, staff, strict=strict),
        escalation=_parse_escalation(data, where),
        test_recipients=_parse_test(data, where, staff),
    )


def load_site(path: Path) -> Site:
    try:
        # utf-8-sig: Notepad's "UTF-8" puts a byte-order mark in front; it is no TOML.
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise SiteError(
            f"site file {path} not found; copy firmware_config/site.example.toml "
            "and set PANICBUTTON_SITE_FILE"
        ) from None
    except UnicodeDecodeError as exc:
        raise SiteError(
            f"site file {path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at "
            f"offset {exc.start}): save it as UTF-8 (a text editor's 'UTF-8' encoding) "
            "and start again"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise SiteError(f"site file {path}: not valid TOML: {exc}") from None
    except RecursionError:  # Python's TOML reader recurses once per level
        raise SiteError(
            f"site file {path}: arrays or tables are nested too deeply to read; a site "
            "file needs only a few levels (see firmware_config/site.example.toml)"
        ) from None
    except OSError as exc:  # a folder where the file should be, no permission, ...
        raise SiteError(
            f"site file {path} cannot be read: {exc.strerror}; it must be a "
            "readable TOML file (see firmware_config/site.example.toml)"
        ) from None
    return parse_site(data, str(path))
