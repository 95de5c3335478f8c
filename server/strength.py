"""How strong a secret is: what the server refuses at start outside demo mode.

Placeholders, short values, repeats, runs of neighbouring characters and common
words are refused with a message that says what is weak and how to make a good
one. Standard library only.
"""

from __future__ import annotations

import collections
import itertools
import math
from collections.abc import Callable

PLACEHOLDERS = {
    "",
    "changeme",
    "change-me",
    "change_me",
    "secret",
    "password",
    "admin",
    "token",
    "test",
    "xxx",
    "default",
}


#: The command the messages suggest for a new secret (43 characters, 256 random bits).
MAKE_ONE = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"


#: Words a guesser tries first (and a person reaches for), lower case. A generated
#: secret hardly holds one: a token_urlsafe(12) at most a quarter of it in 20,000 tries.
_COMMON_WORDS = sorted(
    {
        "admin", "alarm", "api", "autumn", "broker", "button", "change", "company",
        "database", "default", "demo", "dragon", "football", "hello", "iloveyou", "key",
        "letmein", "login", "love", "master", "monkey", "motdepasse", "mqtt", "panic",
        "pass", "password", "passwort", "qwerty", "azerty", "root", "secret", "server",
        "shadow", "spring", "summer", "sunshine", "super", "test", "the", "token",
        "twilio", "user", "wachtwoord", "welcome", "winter", "word",
    },
    key=len,
    reverse=True,
)  # fmt: skip
#: Repeats shorter than this are left to chance (a 32-digit hex secret often has one).
_SHORTEST_REPEAT = 4


def _repeated_share(value: str) -> int:
    """How many characters of ``value`` the most covering repeated part takes up: a
    part of at least 4 characters, counted each time it occurs (no overlaps)."""
    best = 0
    for length in range(_SHORTEST_REPEAT, len(value) // 2 + 1):
        for start in range(len(value) - length + 1):
            times = value.count(value[start : start + length])
            if times >= 2:
                best = max(best, times * length)
    return best


def _words_share(value: str) -> int:
    """How many characters of ``value`` are common words (any case), read left to right."""
    lower, at, share = value.lower(), 0, 0
    while at < len(lower):
        word = next((w for w in _COMMON_WORDS if lower.startswith(w, at)), "")
        share += len(word)
        at += len(word) or 1
    return share


def weakness(value: str, shortest: int) -> str | None:
    """Why ``value`` is no good as a secret of at least ``shortest`` characters, or None.

    Besides placeholders and short values, refuses what a guesser tries first: a
    repeated pattern (``aaaa``, ``abab``, ``Summer1!Summer1!``), a long part that
    repeats with a little between (``Password1Password2``), a value made mostly of
    common words (``MyCompanyPanicButtonApiToken2024``), a run of
    neighbouring characters (``abcd``, ``1234``), and values whose characters
    carry less than 2.25 bits each by their own frequencies (a generated hex or
    base64 secret carries about 3.6 and 5). This is a floor against mistakes, not
    a measure of strength: generate secrets, never choose them.
    """
    if value.strip().lower() in PLACEHOLDERS or value.lower().startswith("change"):
        return "empty or a placeholder"
    if len(value) < shortest:
        return f"too short: at least {shortest} characters are needed, it has {len(value)}"
    counts = collections.Counter(value).values()
    bits = -sum(n * math.log2(n / len(value)) for n in counts)
    steps = sum(abs(ord(a) - ord(b)) <= 1 for a, b in itertools.pairwise(value))
    # In order: the first that holds is the reason given.
    weak: tuple[tuple[Callable[[], bool], str], ...] = (
        (
            lambda: any(value[k:] == value[:-k] for k in range(1, len(value) // 2 + 1)),
            "a repeated pattern",
        ),
        (
            lambda: _repeated_share(value) * 2 >= len(value),
            "a long part of it repeats (like Password1Password2)",
        ),
        (
            lambda: _words_share(value) * 2 >= len(value),
            "mostly common words (like password, company, token)",
        ),
        (
            lambda: steps >= 0.6 * (len(value) - 1),
            "runs of neighbouring characters (like abcd or 1234)",
        ),
        (lambda: bits < 2.25 * shortest, "too few different characters"),
    )
    return next((f"too weak: {why}" for holds, why in weak if holds()), None)
