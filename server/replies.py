"""SMS replies from staff: acknowledge by code, opt-out words, and nothing else.

In the style of GoAlert: each page carries a reply code, the smallest number
free among that phone's unresolved incidents; "1" or "1a" acknowledges
incident code 1, a bare "a" the latest. STOP, STOPALL, UNSUBSCRIBE, CANCEL,
END and QUIT are never commands: they opt the number out at the carrier, and
we record that. Unknown numbers get no reply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

OPT_OUT = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
OPT_IN = frozenset({"START", "YES", "UNSTOP"})
_ACK = re.compile(r"^(?:(?P<code>\d{1,3})\s*a?|a|ack|ok)[.!]?$", re.IGNORECASE)


class Kind(StrEnum):
    ACK = "ack"
    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Command:
    kind: Kind
    code: int | None = None  # None with ACK: the latest open incident


def parse(body: str) -> Command:
    """Read one SMS reply."""
    text = " ".join(body.split())
    word = text.upper()
    if word in OPT_OUT:
        return Command(Kind.OPT_OUT)
    if word in OPT_IN:
        return Command(Kind.OPT_IN)
    match = _ACK.fullmatch(text)
    if match is None:
        return Command(Kind.UNKNOWN)
    code = match.group("code")
    return Command(Kind.ACK, int(code) if code else None)
