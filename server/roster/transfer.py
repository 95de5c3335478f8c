"""The site file in and out: ``panicbutton site import`` and ``panicbutton site export``.

An import reads a site file (:func:`server.site.load_site`, every check of the
format), says what it changes against the configuration in force (rooms, staff,
shifts, duty, escalation, test recipients; phone numbers masked) and applies it in
one transaction: people through :mod:`server.people.directory` (opened, changed,
roles granted or taken away) and the rest as a new configuration version. Any
problem refuses the whole file: nothing is applied. An export writes the
configuration in force as a site file that imports back to the same.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from server.errors import PeopleError
from server.log.personal import Retention
from server.people import directory
from server.people.roles import Role
from server.people.tables import Person
from server.roster.edit import document_of, save
from server.roster.store import Member, build_site, members, newest
from server.site import DAYS, Shift, Site, Staff

SYSTEM = directory.SYSTEM


def mask(phone: str) -> str:
    """A phone number as it may be shown: the country code and the last two digits."""
    if len(phone) <= 6:
        return "*" * len(phone)
    return phone[:4] + "*" * (len(phone) - 6) + phone[-2:]


def _shift_text(sh: Shift) -> str:
    days = ",".join(DAYS[d] for d in sorted(sh.days))
    return f"{sh.staff} {days} {sh.start:%H:%M}-{sh.end:%H:%M}"


def _member_text(s: Staff) -> str:
    return f"{s.id} ({s.role}, {s.language}, {mask(s.phone) if s.phone else 'no phone'})"


def _everyone(m: Member) -> Member:
    """``m`` as if paged (for a diff or an export: the whole configuration)."""
    return replace(m, confirmed=True, phone=m.phone or "")


def _configured(session: Session, now: datetime) -> Site:
    """The whole configuration in force, every member kept (confirmed or not)."""
    return build_site(newest(session)[1], [_everyone(m) for m in members(session, now)])


def diff(old: Site | None, new: Site) -> list[str]:
    """What changes from ``old`` to ``new``, one line each (phone numbers masked)."""
    lines: list[str] = []
    before_rooms = {r.id: r for r in old.rooms} if old else {}
    after_rooms = {r.id: r for r in new.rooms}
    for rid, r in after_rooms.items():
        was = before_rooms.get(rid)
        if was is None:
            lines.append(f"+ room {rid}: {r.label!r} unit {r.device}")
        elif was != r:
            lines.append(
                f"~ room {rid}: {was.label!r} unit {was.device} -> {r.label!r} unit {r.device}"
            )
    lines += [f"- room {rid}" for rid in before_rooms if rid not in after_rooms]
    before_staff = {s.id: s for s in old.staff} if old else {}
    after_staff = {s.id: s for s in new.staff}
    for sid, s in after_staff.items():
        was_s = before_staff.get(sid)
        if was_s is None:
            lines.append(f"+ staff {_member_text(s)}")
        elif was_s != s:
            what = [
                f"{f} {getattr(was_s, f)!r} -> {getattr(s, f)!r}"
                for f in ("name", "language", "role")
                if getattr(was_s, f) != getattr(s, f)
            ]
            if was_s.phone != s.phone:
                what.append(f"phone {mask(was_s.phone)} -> {mask(s.phone)}")
            lines.append(f"~ staff {sid}: {'; '.join(what)}")
    lines += [f"- staff {sid} (role taken away)" for sid in before_staff if sid not in after_staff]
    was_shifts = [_shift_text(sh) for sh in old.duty.shifts] if old else []
    new_shifts = [_shift_text(sh) for sh in new.duty.shifts]
    lines += [f"+ shift {t}" for t in new_shifts if t not in was_shifts]
    lines += [f"- shift {t}" for t in was_shifts if t not in new_shifts]
    for label, a, b in (
        ("on duty always", old.duty.always if old else (), new.duty.always),
        ("default group", old.duty.default if old else (), new.duty.default),
        ("test recipients", old.test_recipients if old else (), new.test_recipients),
    ):
        if list(a) != list(b):
            lines.append(f"~ {label}: {', '.join(a) or '(none)'} -> {', '.join(b) or '(none)'}")
    esc_old = document_of(old)["escalation"] if old else None
    esc_new = document_of(new)["escalation"]
    if esc_old != esc_new:
        lines.append(f"~ escalation: {json.dumps(esc_old)} -> {json.dumps(esc_new)}")
    if old is None or (old.name, old.timezone) != (new.name, new.timezone):
        lines.append(f"~ site: name {new.name!r}, time zone {new.timezone}")
    return lines


@dataclass(frozen=True, slots=True)
class Plan:
    """What an import would change, and the version it was read against."""

    lines: list[str]
    version: int


def plan(session: Session, site: Site, now: datetime) -> Plan:
    """What importing ``site`` would change (nothing is written)."""
    version, doc = newest(session)
    people = members(session, now)
    old = _configured(session, now) if doc is not None or people else None
    managers = {m.id for m in people if m.role == "manager"}
    lines = [
        f"! manager {line.split()[2]} is not in the file: keeps the manager role (take it "
        "away with the people API)"
        if line.startswith("- staff ") and line.split()[2] in managers
        else line
        for line in diff(old, site)
    ]
    return Plan(lines=lines, version=version)


def apply(
    session: Session,
    site: Site,
    *,
    by: str,
    now: datetime,
    expected: int | None,
    phones_confirmed: bool,
    retention: Retention,
    digest_key: bytes,
) -> int:
    """Make the configuration ``site`` (people and version), in the caller's transaction;
    the version in force after. PeopleError, SiteError, StaleVersionError: the caller
    rolls back and nothing is applied."""
    listed = {s.id for s in site.staff}
    # The staff role is first taken from those who leave (their phone numbers may go to
    # someone listed). A manager keeps their role: an import never locks managers out.
    for m in members(session, now):
        if m.id not in listed and m.role == "staff":
            directory.revoke(session, person_id=m.id, role=Role.STAFF, by=by, now=now)
    for s in site.staff:
        person = session.get(Person, s.id)
        if person is not None and person.closed_at is not None:
            raise PeopleError(
                f"staff id {s.id!r} belonged to an account that was closed: give this "
                "person another id"
            )
        if person is None:
            directory.add_person(
                session,
                person_id=s.id,
                name=s.name,
                by=by,
                now=now,
                roles=[Role(s.role)],
                phone=s.phone,
                language=str(s.language),
                phone_confirmed=phones_confirmed,
            )
            continue
        directory.change(
            session,
            person_id=s.id,
            by=by,
            now=now,
            name=s.name,
            phone=s.phone,
            language=str(s.language),
        )
        if phones_confirmed and person.phone_confirmed_at is None:
            person.phone_confirmed_at = now
        directory.grant(session, person_id=s.id, role=Role(s.role), by=by, now=now)
        if s.role == "staff":
            directory.revoke(session, person_id=s.id, role=Role.MANAGER, by=by, now=now)
    session.flush()
    if not any(m.pageable for m in members(session, now)):
        # NOTE: a configuration that pages nobody must never be applied quietly: every
        # alarm would open, escalate and reach no one.
        raise PeopleError(
            "after this import nobody could be paged: no member of staff has a confirmed "
            "phone. If these numbers are in use already, import with --phones-confirmed; "
            "otherwise have each person confirm their number first. Nothing was applied."
        )
    document = document_of(site)
    # The file's staff in its order, then the managers it leaves out (who stay).
    document["staff"] += [
        {"id": m.id, "role": m.role} for m in members(session, now) if m.id not in listed
    ]
    return save(
        session,
        document=document,
        by=by,
        now=now,
        expected=expected,
        retention=retention,
        digest_key=digest_key,
        summary="site file imported",
    )


def export(session: Session, now: datetime) -> tuple[str, list[str]]:
    """The configuration in force as a site file (TOML), and warnings (members left out)."""
    people = members(session, now)
    version, doc = newest(session)
    warnings = [
        f"{m.id} has no phone number: left out (a site file needs one for each member)"
        for m in people
        if not m.phone
    ]
    site = build_site(doc, [_everyone(m) for m in people if m.phone])
    head = (
        f"# panicbutton site configuration, version {version}, exported {now:%Y-%m-%d %H:%M} UTC.\n"
        "# Import it with `panicbutton site import FILE` (see firmware_config/site.example.toml).\n"
        "# It holds names and phone numbers: keep it private.\n"
    )
    return head + to_toml(document_of(site, private=True)), warnings


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def to_toml(doc: dict[str, Any]) -> str:
    """The site file's TOML for a document of :func:`document_of` (its shapes only)."""
    out: list[str] = []

    def table(name: str, values: dict[str, Any], *, array: bool = False) -> None:
        out.append(f"\n[[{name}]]" if array else f"\n[{name}]")
        for key, value in values.items():
            if key == "steps":
                out.append("steps = [")
                out.extend(f"    {_value(x)}," for x in value)
                out.append("]")
            elif key == "shifts":
                continue  # written as [[duty.shifts]] below
            else:
                out.append(f"{key} = {_value(value)}")

    table("site", doc["site"])
    for room in doc["rooms"]:
        table("rooms", room, array=True)
    for member in doc["staff"]:
        table("staff", member, array=True)
    table("duty", doc["duty"])
    for shift in doc["duty"]["shifts"]:
        table("duty.shifts", shift, array=True)
    table("escalation", doc["escalation"])
    table("test", doc["test"])
    return "\n".join(out).lstrip("\n") + "\n"
