"""Reading staff replies: codes acknowledge; opt-out words are never commands."""

from __future__ import annotations

import pytest

from server.replies import Command, Kind, parse


@pytest.mark.parametrize(
    ("body", "command"),
    [
        ("1", Command(Kind.ACK, 1)),
        (" 1a ", Command(Kind.ACK, 1)),
        ("12A", Command(Kind.ACK, 12)),
        ("a", Command(Kind.ACK, None)),
        ("OK", Command(Kind.ACK, None)),
        ("STOP", Command(Kind.OPT_OUT)),
        ("cancel", Command(Kind.OPT_OUT)),
        ("Quit", Command(Kind.OPT_OUT)),
        ("END", Command(Kind.OPT_OUT)),
        ("start", Command(Kind.OPT_IN)),
        ("on my way", Command(Kind.UNKNOWN)),
        ("1 2", Command(Kind.UNKNOWN)),
        ("", Command(Kind.UNKNOWN)),
    ],
)
def test_reply_is_read(body: str, command: Command) -> None:
    assert parse(body) == command
