"""What the server writes to its logs: never a credential.

A link preview fetches ``/ack/<token>`` as soon as the SMS arrives, so without
care a live acknowledgement token lands in uvicorn's access log (the journal,
``docker logs``), and whoever reads logs could stop the paging with it. Rather
than trusting every call site, every handler the process has gets a formatter
that redacts the finished line (message, access-log request line and
traceback alike): paths under ``/ack/`` (and its near misses: ``/ack%252F``,
``/ack\\``, ``/ack;/``), anything shaped like a link token, secret-looking query parameters,
passwords in URLs, ``Bearer``/``Basic`` credentials, and the configured
secrets themselves wherever they appear. A JSON line
(:mod:`panicbutton.logformat`) is redacted field by field, before it is encoded.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from panicbutton.logformat import json_line

REDACTED = "[redacted]"
#: Configured secrets shorter than this are not searched for (too many false hits).
_MIN_KNOWN = 8

#: What may stand for the slash after ``ack``: a slash, backslash or semicolon, plain or
#: percent-encoded any number of times (``%2F``, ``%252F``, ...).
_SEPARATOR = r"/|\\|;|%(?:25)*(?:2F|5C|3B)"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Everything after /ack/ or /enrol/ (the token of an acknowledgement or a one-time
    # sign-in link, and any path or query after it), also URL-encoded
    # (once or twice) and with the near misses a client may send instead of the slash
    # (``\``, ``;``): the access log shows the path as it was asked for.
    (
        re.compile(rf"(?i)((?:{_SEPARATOR})(?:ack|enrol)(?:{_SEPARATOR})+)[^\s\"'<>]+"),
        rf"\1{REDACTED}",
    ),
    # Everything after /enrol/ (a one-time enrolment or recovery link), likewise.
    (
        re.compile(rf"(?i)((?:{_SEPARATOR})enrol(?:{_SEPARATOR})+)[^\s\"'<>]+"),
        rf"\1{REDACTED}",
    ),
    # Anything shaped like a personal API token (server/people/auth.py), wherever it shows.
    (re.compile(r"pbt_[a-z0-9]{12}_[A-Za-z0-9_-]{43}"), REDACTED),
    # Anything shaped like a link token (server/links.py: 16 bytes, a dot, 16 bytes, in
    # unpadded base64url), wherever it shows.
    (re.compile(r"[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{22}"), REDACTED),
    # Query or form parameters whose name says they carry a secret.
    (
        re.compile(
            r"(?i)([?&;][\w.-]*(?:token|signature|sig|secret|password|passwd|pwd|key|auth|"
            r"code|credential)[\w.-]*=)[^&\s\"'#<>]*"
        ),
        rf"\1{REDACTED}",
    ),
    # user:password@ in a URL (a database or broker URL).
    (re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@"), rf"\1{REDACTED}@"),
    # An Authorization header's value.
    (re.compile(r"(?i)\b(bearer|basic)(\s+)[\w.~+/=-]{8,}"), rf"\1\2{REDACTED}"),
)


def redact(text: str, known: Iterable[str] = ()) -> str:
    """``text`` with every credential it holds replaced by ``[redacted]``."""
    for secret in known:
        if len(secret) >= _MIN_KNOWN:
            text = text.replace(secret, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFormatter(logging.Formatter):
    """Formats with the handler's own formatter, then redacts the whole result; or, with
    ``json_lines``, writes one JSON object a line, each of its texts redacted."""

    def __init__(
        self,
        inner: logging.Formatter | None,
        known: tuple[str, ...] = (),
        *,
        json_lines: bool = False,
    ) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()
        self.known = known
        self.json_lines = json_lines

    def format(self, record: logging.LogRecord) -> str:
        if self.json_lines:
            return json_line(record, self.inner, lambda text: redact(text, self.known))
        return redact(self.inner.format(record), self.known)


def protect_handlers(known: Iterable[str] = (), *, json_lines: bool | None = None) -> None:
    """Make every handler attached now (to any logger, and Python's last-resort
    handler) redact what it writes. Call it again after anything that adds
    handlers (uvicorn configures its own); calling it twice wraps nothing twice.

    ``known`` are the configured secrets, redacted wherever they appear.
    ``json_lines``: every handler writes one JSON object a line (True) or its own
    format (False); None: as the handlers protected before do, so that handlers added
    since (uvicorn's) follow the format the process chose.
    """
    secrets = tuple(s for s in known if len(s) >= _MIN_KNOWN)
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    handlers = [h for lg in loggers for h in lg.handlers]
    if logging.lastResort is not None:
        handlers.append(logging.lastResort)
    if json_lines is None:
        json_lines = any(
            isinstance(h.formatter, RedactingFormatter) and h.formatter.json_lines for h in handlers
        )
    for handler in handlers:
        current = handler.formatter
        if isinstance(current, RedactingFormatter):
            current.known = tuple(dict.fromkeys(current.known + secrets))
            current.json_lines = json_lines
        else:
            handler.setFormatter(RedactingFormatter(current, secrets, json_lines=json_lines))
