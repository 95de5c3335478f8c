"""RFC 8785 canonical JSON for the incident log, restricted to what the log holds.

Values are objects, arrays, strings, integers, booleans and null. Floats are
refused: their canonical form needs the ECMAScript number printer, and the log
has no use for them (durations are whole milliseconds). Integers must fit in
I-JSON's safe range (|n| < 2**53) so that every JSON reader gets them exactly.

The output is what RFC 8785 prescribes for these types: no whitespace, object
members sorted by the UTF-16 code units of their names, strings escaped as
ECMAScript's JSON.stringify does (``\\"``, ``\\\\``, ``\\b \\f \\n \\r \\t``, other
controls as lowercase ``\\u00xx``) and everything else written as UTF-8.

Standard library only: the standalone verifier uses this module.
"""

from __future__ import annotations

import json
from typing import Any

from panicbutton.errors import PanicbuttonError

MAX_SAFE = 2**53 - 1
#: 2**53 - 1 has 16 digits: a longer run of digits is refused before it is converted
#: (converting thousands of digits is slow, and Python refuses more than 4300).
MAX_DIGITS = 16

_SHORT = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


class CanonicalError(PanicbuttonError, ValueError):
    """A value the log cannot hold, or bytes that are not in canonical form."""


def _string(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch in _SHORT:
            out.append(_SHORT[ch])
        elif ch < " ":
            out.append(f"\\u{ord(ch):04x}")
        elif "\ud800" <= ch <= "\udfff":
            raise CanonicalError("a string holds a lone UTF-16 surrogate, which is not text")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _encode(value: Any, out: list[str], path: str) -> None:  # noqa: PLR0912 - a branch per type
    # NOTE: bool before int: True is an int in Python, but JSON's true.
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        if not -MAX_SAFE <= value <= MAX_SAFE:
            raise CanonicalError(f"{path}: integer {value} is outside ±(2**53 - 1)")
        out.append(str(int(value)))
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, out, f"{path}[{i}]")
        out.append("]")
    elif isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise CanonicalError(f"{path}: object key {key!r} is not a string")
        out.append("{")
        keys = sorted(value, key=lambda k: k.encode("utf-16-be", "surrogatepass"))
        for i, key in enumerate(keys):
            if i:
                out.append(",")
            out.append(_string(key))
            out.append(":")
            _encode(value[key], out, f"{path}.{key}")
        out.append("}")
    else:
        raise CanonicalError(
            f"{path}: {type(value).__name__} cannot go into the log "
            "(only strings, integers, booleans, null, lists and objects)"
        )


_FAST = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False, check_circular=False
)


def _plain(value: Any, path: str) -> bool:
    """Check that ``value`` can be encoded; True if its keys sort the same by code
    point as by UTF-16 code unit (then the C encoder's sort_keys is RFC 8785's)."""
    if value is None or value is True or value is False or isinstance(value, str):
        return True
    if isinstance(value, int):
        if not -MAX_SAFE <= value <= MAX_SAFE:
            raise CanonicalError(f"{path}: integer {value} is outside ±(2**53 - 1)")
        return True
    if isinstance(value, list | tuple):
        return all([_plain(v, f"{path}[{i}]") for i, v in enumerate(value)])  # noqa: C419 - check all
    if isinstance(value, dict):
        plain = True
        for key, item in value.items():
            if not isinstance(key, str):
                raise CanonicalError(f"{path}: object key {key!r} is not a string")
            plain = _plain(item, f"{path}.{key}") and plain and all(c < "\ue000" for c in key)
        return plain
    raise CanonicalError(
        f"{path}: {type(value).__name__} cannot go into the log "
        "(only strings, integers, booleans, null, lists and objects)"
    )


def dumps(value: Any) -> bytes:
    """The canonical UTF-8 bytes of ``value``; CanonicalError names what cannot be encoded."""
    if _plain(value, "$"):
        # NOTE: the C encoder escapes exactly as RFC 8785 asks (", \\, \b \f \n \r \t,
        # other controls as lowercase \u00xx) and sorts keys by code point, which is
        # UTF-16 order for keys below U+E000. A lone surrogate fails to encode.
        try:
            return _FAST.encode(value).encode("utf-8")
        except UnicodeEncodeError:
            raise CanonicalError(
                "a string holds a lone UTF-16 surrogate, which is not text"
            ) from None
    out: list[str] = []
    _encode(value, out, "$")
    return "".join(out).encode("utf-8")


def _no_floats(text: str) -> Any:
    raise CanonicalError(f"number {text} is not an integer")


def _no_constant(text: str) -> Any:
    raise CanonicalError(f"{text} is not JSON")


def _safe_int(text: str) -> int:
    if len(text.removeprefix("-")) > MAX_DIGITS:
        raise CanonicalError(
            f"integer {text[:20]}... has more than {MAX_DIGITS} digits: it is outside ±(2**53 - 1)"
        )
    value = int(text)
    if not -MAX_SAFE <= value <= MAX_SAFE:
        raise CanonicalError(f"integer {text} is outside ±(2**53 - 1)")
    return value


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise CanonicalError(f"object key {key!r} appears twice")
        obj[key] = value
    return obj


_STRICT = json.JSONDecoder(
    parse_float=_no_floats,
    parse_int=_safe_int,
    parse_constant=_no_constant,
    object_pairs_hook=_unique,
)
_QUICK = json.JSONDecoder(parse_float=_no_floats, parse_constant=_no_constant)
#: Digits to "9", everything else to " ": a 16-digit run is then a plain substring search.
_DIGITS = bytes(57 if 48 <= b <= 57 else 32 for b in range(256))


def _decode(decoder: json.JSONDecoder, data: bytes) -> Any:
    try:
        return decoder.decode(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise CanonicalError(f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise CanonicalError(f"not JSON ({exc.msg} at character {exc.pos})") from None
    except RecursionError:
        raise CanonicalError("JSON nested too deeply to be an entry") from None


def loads(data: bytes) -> Any:
    """Parse ``data`` and insist it is already canonical (re-encoding gives the same bytes)."""
    # NOTE: the quick decoder skips the per-key and per-number hooks: a repeated key
    # cannot survive the byte comparison below, and only a run of 16 digits can be an
    # integer beyond 2**53. The verifier reads every entry through here.
    long_number = b"9" * 16 in data.translate(_DIGITS)
    value = _decode(_STRICT if long_number else _QUICK, data)
    # Keys sort by code point as by UTF-16 unless a character from U+E000 up occurs.
    if data.isascii() or max(data) < 0xEE:
        again = _FAST.encode(value).encode("utf-8", "surrogatepass")
    else:
        again = dumps(value)
    if again != data:
        _decode(_STRICT, data)  # names a repeated key, if that is what differs
        raise CanonicalError("JSON, but not in RFC 8785 canonical form")
    return value
