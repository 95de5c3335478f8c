"""How log lines look: plain text (the default), or one JSON object a line for a log
collector (``PANICBUTTON_LOG_FORMAT=json``), for every ``panicbutton`` command.

A JSON line holds ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message`` and, when
there is one, ``exception`` (the traceback's text). Every line is redacted either way
(:mod:`panicbutton.redact`, which writes the lines through :func:`json_line`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Final

#: The environment variable that chooses the format, and the formats it may name.
VARIABLE: Final = "PANICBUTTON_LOG_FORMAT"
FORMATS: Final = ("text", "json")
#: A text line: ``2026-11-28 12:00:00,123 INFO server.app: ...``.
TEXT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def chosen(environ: Mapping[str, str] = os.environ) -> str:
    """The format ``PANICBUTTON_LOG_FORMAT`` names (``text`` when unset); ValueError
    saying what it may be for anything else."""
    value = environ.get(VARIABLE, "").strip().lower() or "text"
    if value not in FORMATS:
        raise ValueError(
            f"{VARIABLE} must be text or json, got {environ[VARIABLE]!r}: "
            "json writes one JSON object a line, text (the default) plain lines"
        )
    return value


def json_line(
    record: logging.LogRecord, formatter: logging.Formatter, clean: Callable[[str], str]
) -> str:
    """``record`` as one line of JSON; ``clean`` is applied to each text before it is
    encoded (so JSON's escaping can neither hide a secret from it nor be broken by it).
    ``formatter`` writes the traceback, as the handler's own would."""
    line = {
        "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname,
        "logger": record.name,
        "message": clean(record.getMessage()),
    }
    if record.exc_info:
        line["exception"] = clean(formatter.formatException(record.exc_info))
    elif record.exc_text:
        line["exception"] = clean(record.exc_text)
    if record.stack_info:
        line["stack"] = clean(formatter.formatStack(record.stack_info))
    return json.dumps(line, ensure_ascii=False)
