"""SMS replies from staff: acknowledge or close by code, take over duty, opt-out words.

Each page carries a reply code: random digits (3 to 5, longer as a person has
more open alarms), unique among that person's unresolved incidents. The code is
what authenticates a reply (a sender number can be spoofed): "482", "482a", "a 482" or "ok 482"
acknowledges the incident with code 482; a bare "a", "ok" or "ack" does
nothing but ask for the code. "482g" closes it as handled (genuine), "482f" as
a false alarm, once it is acknowledged (never an open alarm: see server.replies.sms).
"DUTY" takes over duty now, "DUTY OFF" ends that.
STOP, STOPALL, UNSUBSCRIBE, CANCEL, END and QUIT are never commands: they opt
the number out at the carrier, and we record that. Unknown numbers get no reply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

OPT_OUT = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
OPT_IN = frozenset({"START", "YES", "UNSTOP"})
_YES = r"(?:a|ack|ok)"
#: Codes are three digits; up to six are read (a wrong code counts as a guess).
_CODE = re.compile(
    rf"^(?:{_YES}\s*)?(?P<code>\d{{1,6}})(?:\s*(?P<what>{_YES}|g|f))?[.!]?$", re.IGNORECASE
)
_CODELESS = re.compile(rf"^{_YES}[.!]?$", re.IGNORECASE)


class Kind(StrEnum):
    ACK = "ack"
    RESOLVE = "resolve"
    DUTY_ON = "duty_on"
    DUTY_OFF = "duty_off"
    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"
    #: "a", "ok" or "ack" without a code: never acted on.
    NO_CODE = "no_code"
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
    code: int | None = None  # with ACK and RESOLVE
    outcome: str | None = None  # with RESOLVE: genuine or false_alarm


def parse(body: str) -> Command:
    """Read one SMS reply."""
    text = " ".join(body.split())
    word = text.upper()
    for words, kind in _WORDS:
        if word in words:
            return Command(kind)
    if _CODELESS.fullmatch(text):
        return Command(Kind.NO_CODE)
    match = _CODE.fullmatch(text)
    if match is None:
        return Command(Kind.UNKNOWN)
    code, what = int(match.group("code")), (match.group("what") or "a").lower()
    # "a 482 g" mixes both: not understood rather than guessed at.
    if what in ("g", "f") and text[0].isalpha():
        return Command(Kind.UNKNOWN)
    if what in ("g", "f"):
        return Command(Kind.RESOLVE, code, "genuine" if what == "g" else "false_alarm")
    return Command(Kind.ACK, code)
