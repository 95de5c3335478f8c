"""A new version of the site's configuration: checked, stored, logged.

Each change (the whole document, or one edit a manager makes: a shift, the
default group, escalation steps, a room, the test recipients) is one new
``site_versions`` row in the caller's transaction, checked with
:func:`server.site.parse_site` first (a :class:`~server.errors.SiteError` names
the problem and nothing is stored), refused as stale when the configuration
changed since the caller read it, and logged as ``config.changed`` naming who
made it and the new version.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.errors import ServerError, SiteError
from server.log.config import record_config
from server.log.personal import Retention
from server.people.tables import SiteVersion
from server.roster.store import Member, build_site, members, newest
from server.site import DAYS, Site


class StaleVersionError(ServerError):
    """The configuration changed since the caller read it."""

    def __init__(self, expected: int, current: int) -> None:
        super().__init__(
            f"the configuration is at version {current}, not {expected}: someone changed it "
            "since you read it; read it again, redo your change and send it with the new version"
        )
        self.current = current


def document_of(site: Site, *, private: bool = False) -> dict[str, Any]:
    """The site file's form of ``site`` (what :func:`server.site.parse_site` reads back).
    Staff carry id, role and language; ``private`` adds their names and numbers."""
    duty = site.duty
    esc = site.escalation
    hours = duty.takeover_hours
    doc: dict[str, Any] = {
        "site": {"name": site.name, "timezone": site.timezone},
        "rooms": [
            {"id": r.id, "label": r.label, "device": r.device}
            | ({"device_token_sha256": r.token_sha256} if r.token_sha256 else {})
            for r in site.rooms
        ],
        "staff": [
            ({"id": s.id, "name": s.name, "phone": s.phone} if private else {"id": s.id})
            | {"language": str(s.language), "role": str(s.role)}
            for s in site.staff
        ],
        "duty": {
            "on_duty": list(duty.always),
            "default": list(duty.default),
            "gap_warning_minutes": duty.gap_warning // 60,
            "takeover_hours": int(hours) if hours == int(hours) else hours,
            "shifts": [
                {
                    "staff": sh.staff,
                    "days": [DAYS[d] for d in sorted(sh.days)],
                    "start": sh.start.strftime("%H:%M"),
                    "end": sh.end.strftime("%H:%M"),
                }
                for sh in duty.shifts
            ],
        },
        "escalation": {
            "steps": [
                {"after": st.after, "who": str(st.who), "channels": list(st.channels)}
                for st in esc.steps
            ],
            "repeat_every": esc.repeat_every,
            "follow_up_after": esc.follow_up_after,
            "offline_repeat": esc.offline_repeat,
        },
        "test": {"recipients": list(site.test_recipients)},
    }
    return doc


def _check_staff(document: dict[str, Any], people: list[Member]) -> None:
    """A document may list the staff (as GET gives them) but not change them here."""
    given = document.get("staff")
    if given is None:
        return
    if not isinstance(given, list) or not all(isinstance(s, dict) for s in given):
        raise SiteError("staff must be a list of {id, role, language} (or left out)")
    now = {m.id: m.role for m in people}
    listed = {str(s.get("id")): s.get("role", "staff") for s in given}
    if listed != now:
        raise SiteError(
            "staff differ from the people who hold the staff or manager role: people, their "
            "roles and phones are changed with /api/v1/people or `panicbutton site import`, "
            "not in the roster; leave `staff` out or send it as GET gave it"
        )


def save(
    session: Session,
    *,
    document: dict[str, Any],
    by: str,
    now: datetime,
    expected: int | None,
    retention: Retention,
    digest_key: bytes,
    summary: str = "",
) -> int:
    """Store ``document`` as the next version if it differs from the one in force; the
    version in force afterwards. SiteError: not a valid site (nothing stored);
    StaleVersionError: ``expected`` is not the version in force."""
    current, old = newest(session)
    if expected is not None and expected != current:
        raise StaleVersionError(expected, current)
    people = members(session, now)
    _check_staff(document, people)
    full = build_site(document, people, check=True)
    doc = document_of(full)
    if old is not None and old == doc:
        return current
    version = current + 1
    session.add(
        SiteVersion(
            version=version, document=doc, changed_by=by, changed_at=now, summary=summary[:500]
        )
    )
    try:
        session.flush()
    except IntegrityError:  # another server saved this version number first
        raise StaleVersionError(current, current + 1) from None
    record_config(
        session,
        site=build_site(doc, people),
        retention=retention,
        now=now,
        digest_key=digest_key,
        by=by,
        version=version,
    )
    return version


def current_document(session: Session, now: datetime) -> tuple[int, dict[str, Any]]:
    """(version, document) in force, its staff the people who hold the role now."""
    version, doc = newest(session)
    out = copy.deepcopy(doc) if doc is not None else {}
    out["staff"] = [
        {"id": m.id, "language": m.language, "role": m.role} for m in members(session, now)
    ]
    return version, out


# The edits a manager makes, each on a copy of the document in force.


def _duty(doc: dict[str, Any]) -> dict[str, Any]:
    duty: dict[str, Any] = doc.setdefault("duty", {})
    return duty


def add_shift(doc: dict[str, Any], shift: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    _duty(out).setdefault("shifts", []).append(shift)
    return out


def _shift_index(doc: dict[str, Any], index: int) -> list[dict[str, Any]]:
    shifts: list[dict[str, Any]] = _duty(doc).setdefault("shifts", [])
    if not 0 <= index < len(shifts):
        raise LookupError(
            f"there is no shift {index}: the roster has {len(shifts)} (numbered from 0)"
        )
    return shifts


def replace_shift(doc: dict[str, Any], index: int, shift: dict[str, Any] | None) -> dict[str, Any]:
    """Replace shift ``index`` (from 0), or remove it when ``shift`` is None."""
    out = copy.deepcopy(doc)
    shifts = _shift_index(out, index)
    if shift is None:
        del shifts[index]
    else:
        shifts[index] = shift
    return out


def set_duty(
    doc: dict[str, Any], *, on_duty: list[str] | None, default: list[str] | None
) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    if on_duty is not None:
        _duty(out)["on_duty"] = on_duty
    if default is not None:
        _duty(out)["default"] = default
    return out


def set_escalation(doc: dict[str, Any], escalation: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    out.setdefault("escalation", {}).update(escalation)
    return out


def put_room(doc: dict[str, Any], room: dict[str, Any]) -> dict[str, Any]:
    """Add a room, or change the label, unit or token of the room with its id."""
    out = copy.deepcopy(doc)
    rooms: list[dict[str, Any]] = out.setdefault("rooms", [])
    for i, r in enumerate(rooms):
        if r.get("id") == room.get("id"):
            rooms[i] = {**r, **room}
            return out
    rooms.append(room)
    return out


def set_test(doc: dict[str, Any], recipients: list[str]) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    out["test"] = {"recipients": recipients}
    return out
