"""Roles and the rights they carry: the one table every route is checked against.

A person holds one or more roles (``role_grants``); an inspector's grant ends by
itself. A right is what a route needs; an API token carries a subset of its
owner's rights (its scopes), and loses any right its owner loses.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """What a person is to the site."""

    #: Runs the site: people, rosters, units, reports, the violence register.
    MANAGER = "manager"
    #: Reference persons and colleagues who respond to alarms.
    STAFF = "staff"
    #: Pseudonymous (a code, no legal name needed): their own alarms, presence, records.
    WORKER = "worker"
    #: Read-only, for a limited time granted by a manager; every view is logged.
    INSPECTOR = "inspector"
    #: Room units only.
    INSTALLER = "installer"
    #: A screen at reception (a device account): the kiosk board only, and acknowledging
    #: as a person who chooses their name there and types their kiosk PIN.
    KIOSK = "kiosk"
    #: A monitoring system (an account for Prometheus): the server's figures and
    #: readiness, which hold no personal data, and nothing else.
    MONITORING = "monitoring"


class Right(StrEnum):
    """What a route needs. ``SELF`` is every signed-in person's own account."""

    #: The live board: open incidents, who is on duty, who is present (counts).
    BOARD = "board"
    #: Acknowledge and resolve incidents, as oneself only.
    RESPOND = "respond"
    #: Read incident records and timelines (every read is itself logged).
    RECORDS = "records"
    #: Add notes to an incident.
    NOTES = "notes"
    #: Export the log, bundles and reports.
    EXPORT = "export"
    #: Review incidents and keep the violence register.
    REVIEW = "review"
    #: People, roles, enrolment links, inspector grants.
    PEOPLE = "people"
    #: Rosters, shifts, take-overs for others, escalation, rooms.
    ROSTER = "roster"
    #: Room units: provisioning, health.
    UNITS = "units"
    #: Check others in and out; see who is present by name.
    PRESENCE = "presence"
    #: One's own account: sign-in methods, tokens, own presence, own records, consent.
    SELF = "self"
    #: The reception screen: its board, its events, and acknowledging as a person who
    #: proves it with their kiosk PIN (never as the screen's own account).
    KIOSK = "kiosk"
    #: The server's figures and readiness (``/metrics``, ``/readyz``): counts and times,
    #: no personal data.
    MONITORING = "monitoring"


RIGHTS: dict[Role, frozenset[Right]] = {
    # A manager does all but stand in for a reception screen: a person's own session
    # acknowledges as themselves, never as whoever types a PIN.
    Role.MANAGER: frozenset(Right) - {Right.KIOSK},
    Role.STAFF: frozenset(
        {Right.BOARD, Right.RESPOND, Right.RECORDS, Right.NOTES, Right.PRESENCE, Right.SELF}
    ),
    Role.WORKER: frozenset({Right.SELF}),
    Role.INSPECTOR: frozenset({Right.RECORDS, Right.EXPORT, Right.SELF}),
    Role.INSTALLER: frozenset({Right.UNITS, Right.SELF}),
    # No SELF: the screen's account has no tokens, sign-in methods or records of its own
    # to manage from the screen; a manager sets it up.
    Role.KIOSK: frozenset({Right.KIOSK}),
    # No SELF either: a scraper's token is made on the server (`panicbutton people token`)
    # and reads figures, nothing of anyone.
    Role.MONITORING: frozenset({Right.MONITORING}),
}


def rights_of(roles: frozenset[Role] | set[Role]) -> frozenset[Right]:
    """Every right the union of these roles carries."""
    out: set[Right] = set()
    for role in roles:
        out |= RIGHTS[role]
    return frozenset(out)
