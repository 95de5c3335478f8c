"""SMS replies from staff: acknowledge or close by code, take over duty, opt-out words.

In the style of GoAlert: each page carries a reply code, the smallest number
free among that phone's unresolved incidents; "1" or "1a" acknowledges
incident code 1, a bare "a" the latest. "1g" closes it as handled (genuine),
"1f" as a false alarm. "DUTY" takes over duty now, "DUTY OFF" ends that.
STOP, STOPALL, UNSUBSCRIBE, CANCEL, END and QUIT are never commands: they opt
the number out at the carrier, and we record that. Unknown numbers get no reply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

OPT_OUT = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
OPT_IN = frozenset({"START", "YES", "UNSTOP"})
_ACK = re.compile(r"^(?:(?P<code>\d{1,3})\s*(?P<what>[agf])?|a|ack|ok)[.!]?$", re.IGNORECASE)


class Kind(StrEnum):
    ACK = "ack"
    RESOLVE = "resolve"
    DUTY_ON = "duty_on"
    DUTY_OFF = "duty_off"
    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"
    UNKNOWN = "unknown"


_WORDS = (
    (OPT_OUT, Kind.OPT_OUT),
    (OPT_IN, Kind.OPT_IN),
    (frozenset({"DUTY", "DUTY ON"}), Kind.DUTY_ON),
    (frozenset({"DUTY OFF"}), Kind.DUTY_OFF),
)


@dataclass(frozen=True, slots=True)
class Command:
    kind: Kind
    code: int | None = None  # None with ACK: the latest open incident
    outcome: str | None = None  # with RESOLVE: genuine or false_alarm


def parse(body: str) -> Command:
    """Read one SMS reply."""
    text = " ".join(body.split())
    word = text.upper()
    for words, kind in _WORDS:
        if word in words:
            return Command(kind)
    match = _ACK.fullmatch(text)
    if match is None:
        return Command(Kind.UNKNOWN)
    code = int(match.group("code")) if match.group("code") else None
    what = (match.group("what") or "a").lower()
    if what == "a":
        return Command(Kind.ACK, code)
    return Command(Kind.RESOLVE, code, "genuine" if what == "g" else "false_alarm")
