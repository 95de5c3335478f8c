"""Twilio's size limits: how many rooms a text or a call can name.

Every request fits Twilio's limits by construction. A bundle names as many
rooms as fit a budget well under Twilio's (an SMS ``Body`` at most 1,600
characters, inline call TwiML at most 4,000), says how many more there are and
links to the person's full list; room labels are cut to a fixed length. Sizes
are in UTF-16 units, as Twilio counts them (an emoji is two).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from server.paging import messages

__all__ = [
    "BUDGET",
    "BUNDLE_TEXTS",
    "CALL_ROOMS",
    "COMPACT_BUDGET",
    "COMPACT_ROOM_CHARS",
    "fit",
    "segments",
    "split",
]

#: What a page may hold, in UTF-16 units as Twilio counts them (an emoji is two): an SMS
#: body (Twilio refuses over 1,600, 21617) and a call's TwiML after XML escaping (Twilio
#: refuses over 4,000, 32018). Well under Twilio's, and small enough for a person to read
#: or hear in a hurry.
BUDGET = {"sms": 1000, "call": 3000}
#: The compact form, used after Twilio refused a page for what it says.
COMPACT_BUDGET = {"sms": 320, "call": 1500}
COMPACT_ROOM_CHARS = 20
#: Rooms a call names (each is said twice); the others are counted.
CALL_ROOMS = 5
#: Most SMS one bundle is sent as when there is no full-list link (no
#: PANICBUTTON_LINK_SECRET): the rooms that do not fit the first go in further SMS,
#: each within budget, and the last counts what still did not fit. 200 rooms with
#: ordinary labels fit in 12.
BUNDLE_TEXTS = 12


#: GSM 03.38, the SMS default alphabet: its basic characters (one septet each) and
#: its extension (two each). Any other character sends the whole SMS as UCS-2.
GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENSION = frozenset("^{}\\[~]|€\f")


def segments(body: str) -> int:
    """The SMS segments ``body`` is sent as (what a sender's rate counts): 160 GSM-7
    septets in one, 153 each when split; 70 UTF-16 units in one, 67 each when split."""
    if all(c in GSM_BASIC or c in GSM_EXTENSION for c in body):
        septets = len(body) + sum(c in GSM_EXTENSION for c in body)
        return 1 if septets <= 160 else math.ceil(septets / 153)
    units = messages.units(body)
    return 1 if units <= 70 else math.ceil(units / 67)


def fit(
    lines: list[str],
    rooms: list[str],
    budget: int,
    footer: Callable[[int], str],
    *,
    bundle: bool | None = None,
    before: frozenset[str] = frozenset(),
) -> str:
    """As many of ``lines`` (one per page, about ``rooms``: room ids) as fit ``budget``
    UTF-16 units (as Twilio counts), a bundle's with ``footer(rooms not named)`` after
    them (rooms in ``before`` were named in an earlier text)."""
    bundle = len(lines) > 1 if bundle is None else bundle
    used = -1  # no newline before the first line
    best = ""
    for named in range(1, len(lines) + 1):
        used += 1 + messages.units(lines[named - 1])
        more = len(set(rooms[named:]) - set(rooms[:named]) - before)
        end = footer(more) if bundle else ""
        if used + (1 + messages.units(end) if end else 0) > budget:
            break
        best = "\n".join([*lines[:named], end] if end else lines[:named])
    if not best:
        # The first line and the footer do not fit (the compact budget, a long link):
        # cut the line, never the count or the link.
        end = footer(len(set(rooms[1:]) - {rooms[0]} - before)) if bundle else ""
        room_left = budget - (1 + messages.units(end) if end else 0)
        if end and room_left >= 40:
            best = f"{messages.cut(lines[0], room_left)}\n{end}"
        else:
            best = messages.cut(lines[0], budget)
    return best


def split(
    lines: list[str],
    rooms: list[str],
    budget: int,
    footer: Callable[[int], str],
    *,
    most: int,
) -> list[str]:
    """``lines`` (one per page, about ``rooms``: room ids) over at most ``most`` texts
    of ``budget`` UTF-16 units each, in order; the last (or only) one is :func:`fit`'s,
    its ``footer`` counting the rooms no text named."""
    texts: list[str] = []
    start = 0
    while len(texts) < most - 1 and start < len(lines):
        end, used = start + 1, messages.units(lines[start])
        while end < len(lines) and used + 1 + messages.units(lines[end]) <= budget:
            used += 1 + messages.units(lines[end])
            end += 1
        if end == len(lines):
            break  # the rest fits one text: fit() writes it (with its footer, if any)
        texts.append(messages.cut("\n".join(lines[start:end]), budget))
        start = end
    texts.append(
        fit(
            lines[start:],
            rooms[start:],
            budget,
            footer,
            bundle=len(lines) > 1,
            before=frozenset(rooms[:start]),
        )
    )
    return texts
