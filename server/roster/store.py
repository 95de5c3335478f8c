"""The site in force, read from the database: :class:`SiteBook`.

The newest ``site_versions`` row says rooms, duty and escalation (the site file
without names and numbers); ``people`` and their role grants say who the staff
are. Only a member whose phone is confirmed is paged: anyone else is left out
of the :class:`~server.site.Site`, and so are the shifts and lists that name
them (a shift of an unconfirmed member is a gap, which managers are warned of).

The built site is cached on what it is built from (the newest version and the
staff rows), read again on each call: a change made by another server on the
same database takes effect for the next alarm, with no restart and no call to
make after a change of people.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import event, func, select
from sqlalchemy.orm import Session, sessionmaker

from server.errors import SiteError
from server.mobile.tables import MobilePhone
from server.people.roles import Role
from server.people.tables import Person, RoleGrant, SiteVersion
from server.site import Language, Site, Staff, parse_site

log = logging.getLogger(__name__)

#: The roles that make someone staff of the site (paged, named in rosters).
STAFF_ROLES = (Role.MANAGER.value, Role.STAFF.value)


@dataclass(frozen=True, slots=True)
class Member:
    """A person with the staff or manager role, as the roster sees them."""

    id: str
    name: str
    phone: str | None
    language: str
    role: str  # "manager" or "staff"
    confirmed: bool

    @property
    def pageable(self) -> bool:
        return self.phone is not None and self.confirmed

    def staff(self) -> Staff:
        return Staff(
            id=self.id,
            name=self.name,
            phone=self.phone or "",
            language=cast(Language, self.language),
            role="manager" if self.role == "manager" else "staff",
        )


def members(session: Session, now: datetime) -> list[Member]:
    """Open accounts holding the staff or manager role at ``now`` (a manager is a manager
    even if they are staff as well), by id."""
    return _members(session, now)[1]


def _members(session: Session, now: datetime) -> tuple[int | None, list[Member]]:
    """(the newest version, or None when nobody is staff; the members): one SELECT."""
    newest_subquery = select(func.max(SiteVersion.version)).scalar_subquery()
    rows = session.execute(
        select(
            newest_subquery,
            Person.id,
            Person.name,
            Person.phone,
            Person.language,
            Person.phone_confirmed_at,
            RoleGrant.role,
        )
        .join(RoleGrant, RoleGrant.person_id == Person.id)
        .where(
            Person.closed_at.is_(None),
            RoleGrant.revoked_at.is_(None),
            RoleGrant.expires_at.is_(None) | (RoleGrant.expires_at > now),
            RoleGrant.role.in_(STAFF_ROLES),
        )
        .order_by(Person.id)
    ).all()
    found: dict[str, Member] = {}
    version: int | None = None
    for newest_version_, pid, name, phone, language, confirmed_at, role in rows:
        version = newest_version_ or 0
        if pid in found and found[pid].role == "manager":
            continue
        found[pid] = Member(pid, name, phone, language, role, confirmed_at is not None)
    return version, list(found.values())


def phone_names(session: Session) -> tuple[tuple[str, str], ...]:
    """(phone id, its worker's name) of every enrolled phone, revoked ones too (an open
    alarm of a phone revoked since still names its worker)."""
    rows = session.execute(
        select(MobilePhone.id, Person.name)
        .join(Person, Person.id == MobilePhone.person_id)
        .order_by(MobilePhone.id)
    ).all()
    return tuple((phone_id, name) for phone_id, name in rows)


def newest(session: Session) -> tuple[int, dict[str, Any] | None]:
    """(version, document) in force; (0, None) before the first version."""
    row = session.scalars(select(SiteVersion).order_by(SiteVersion.version.desc()).limit(1)).first()
    return (0, None) if row is None else (row.version, dict(row.document))


def newest_version(session: Session) -> int:
    return session.scalar(select(func.max(SiteVersion.version))) or 0


def _prune(document: dict[str, Any], keep: set[str]) -> dict[str, Any]:
    """The document with every reference to a staff id outside ``keep`` taken out."""
    doc = copy.deepcopy(document)
    duty = doc.get("duty")
    if isinstance(duty, dict):
        for key in ("on_duty", "default"):
            if isinstance(duty.get(key), list):
                duty[key] = [i for i in duty[key] if i in keep]
        if isinstance(duty.get("shifts"), list):
            duty["shifts"] = [
                sh for sh in duty["shifts"] if not isinstance(sh, dict) or sh.get("staff") in keep
            ]
    test = doc.get("test")
    if isinstance(test, dict) and isinstance(test.get("recipients"), list):
        test["recipients"] = [i for i in test["recipients"] if i in keep]
    return doc


def build_site(
    document: dict[str, Any] | None,
    people: list[Member],
    *,
    check: bool = False,
    source: str = "the site configuration",
    phones: tuple[tuple[str, str], ...] = (),
) -> Site:
    """The site from a version's ``document`` and its ``people``.

    ``check``: the whole configuration as edited (every member, confirmed or not) must
    be a valid site (:func:`server.site.parse_site`, strict): raises SiteError naming
    the problem. Otherwise the site in force: only pageable members, references to
    the others dropped, and an empty configuration allowed."""
    listed = [s.get("id") for s in (document or {}).get("staff", []) if isinstance(s, dict)]
    people = sorted(people, key=lambda m: listed.index(m.id) if m.id in listed else len(listed))
    if check:
        return parse_site(
            document or {}, source, staff=tuple(m.staff() for m in people), strict=True
        )
    paged = [m for m in people if m.pageable]
    doc = _prune(document or {}, {m.id for m in paged})
    site = parse_site(doc, source, staff=tuple(m.staff() for m in paged), strict=False)
    return dataclasses.replace(site, phones=phones) if phones else site


#: What a change of the site in force is made of: a commit touching these is seen at once.
_SITE_TABLES = (Person, RoleGrant, SiteVersion, MobilePhone)


_CHANGED = "panicbutton.site.changed"


def _note_site_change(session: Session, _context: object) -> None:
    """Mark a session whose flush touched the site's tables (read at its commit)."""
    touched = (*session.new, *session.dirty, *session.deleted)
    if any(isinstance(o, _SITE_TABLES) for o in touched):
        session.info[_CHANGED] = True


class SiteBook:
    """The site in force, built from the database and cached on what it is built from.

    Reading it checks the database (one SELECT) at most every ``fresh_for`` seconds:
    a change committed through this server is seen at once (the commit clears the
    cache), one made through another server on the same database within
    ``fresh_for`` seconds, as is a role that ends by itself. (Checking at every read
    cost about 3 ms each, several times per press.)"""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        clock: Callable[[], datetime],
        fresh_for: float = 1.0,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._fresh_for = fresh_for
        self._lock = threading.Lock()
        self._key: tuple[Any, ...] | None = None
        self._site: Site | None = None
        self._version = 0
        self._checked = -math.inf
        event.listen(sessions, "after_flush", _note_site_change)
        event.listen(sessions, "after_commit", self._after_commit)

    def _after_commit(self, session: Session) -> None:
        if session.info.pop(_CHANGED, False):
            self.forget()

    def forget(self) -> None:
        """Check the database at the next read (a change was committed here)."""
        with self._lock:
            self._checked = -math.inf

    def current(self) -> Site:
        """The site in force now: rooms, pageable staff, duty and escalation."""
        with self._lock:
            if self._site is not None and time.monotonic() - self._checked < self._fresh_for:
                return self._site
        checked = time.monotonic()
        with self._sessions() as s:
            version_or_none, people = _members(s, self._clock())
            version = newest_version(s) if version_or_none is None else version_or_none
            phones = phone_names(s)
            key = (version, tuple(people), phones)
            with self._lock:
                if key == self._key and self._site is not None:
                    self._checked = max(self._checked, checked)
                    return self._site
            document = newest(s)[1] if version else None
        try:
            site = build_site(document, people, phones=phones)
        except SiteError as exc:
            # Never reached by a version saved through server.roster.edit (each is checked);
            # a hand-edited row: keep what was in force rather than page nobody.
            log.error("site configuration version %d cannot be used: %s", version, exc)
            if self._site is not None:
                return self._site
            site = build_site(None, people, phones=phones)
        with self._lock:
            if self._key != key:
                if version != self._version:
                    log.info("site configuration version %d is in force", version)
                self._key, self._site, self._version = key, site, version
            self._checked = max(self._checked, checked)
        return site

    def version(self) -> int:
        """The number of the version in force (0: none yet)."""
        with self._sessions() as s:
            return newest_version(s)

    def __call__(self) -> Site:
        return self.current()
