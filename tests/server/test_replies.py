"""Reading staff replies: codes acknowledge; opt-out words are never commands."""

from __future__ import annotations

import pytest

from server.replies.words import Command, Kind, parse


@pytest.mark.parametrize(
    ("body", "command"),
    [
        ("482", Command(Kind.ACK, 482)),
        (" 482a ", Command(Kind.ACK, 482)),
        ("482A", Command(Kind.ACK, 482)),
        ("a 482", Command(Kind.ACK, 482)),
        ("OK 482", Command(Kind.ACK, 482)),
        ("ack 482.", Command(Kind.ACK, 482)),
        ("482 ok", Command(Kind.ACK, 482)),
        ("482g", Command(Kind.RESOLVE, 482, "genuine")),
        ("482 F", Command(Kind.RESOLVE, 482, "false_alarm")),
        # A bare "a" or "ok" could come from anyone who knows a staff number: it needs the code.
        ("a", Command(Kind.NO_CODE)),
        ("OK", Command(Kind.NO_CODE)),
        ("ack!", Command(Kind.NO_CODE)),
        ("STOP", Command(Kind.OPT_OUT)),
        ("cancel", Command(Kind.OPT_OUT)),
        ("Quit", Command(Kind.OPT_OUT)),
        ("END", Command(Kind.OPT_OUT)),
        ("start", Command(Kind.OPT_IN)),
        ("on my way", Command(Kind.UNKNOWN)),
        ("1 2", Command(Kind.UNKNOWN)),
        ("a 482 g", Command(Kind.UNKNOWN)),
        ("1234567", Command(Kind.UNKNOWN)),
        ("", Command(Kind.UNKNOWN)),
    ],
)
def test_reply_is_read(body: str, command: Command) -> None:
    assert parse(body) == command
