"""Typed values out of parsed JSON or TOML: one reading of "a whole number", "a string"
for the wire contract, a room unit's config (``device/config.py``) and the server's site
file (``server/site.py``).

Standard library only; it imports nothing of ours, so both sides can use it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

#: ``default`` of :func:`read_field` for a key that must be there.
REQUIRED: Final[Any] = ...


def read_field(
    table: Mapping[str, Any],
    key: str,
    kind: type,
    fail: Callable[[str], Exception],
    *,
    default: Any = REQUIRED,
    kind_name: str | None = None,
) -> Any:
    """``table[key]`` if it is a ``kind`` as JSON and TOML mean it (``true`` is no number;
    a whole number is also a ``float``), or ``default`` if the key is absent.

    Otherwise raises ``fail(problem)``, where ``problem`` is ``"is missing"`` or
    ``"must be <kind_name>, got <value>"`` (``kind_name`` defaults to the type's name,
    ``int``); ``fail`` makes the caller's own error, naming the field its own way.
    """
    if key not in table:
        if default is REQUIRED:
            raise fail("is missing")
        return default
    value = table[key]
    if kind is float and type(value) is int:
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise fail(f"must be {kind_name or kind.__name__}, got {value!r}")
    return value
