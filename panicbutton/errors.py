"""The one base of every error panicbutton raises on purpose.

Each error subclasses :class:`PanicbuttonError` and the builtin that fits it
(``ValueError`` for bad input, ``LookupError`` for an unknown id, ...), so a
caller can catch ours, or the kind, or both. Its message says what is wrong
and what to do. Standard library only: the room unit and the verifier import it.
"""

from __future__ import annotations


class PanicbuttonError(Exception):
    """Base class for panicbutton's errors."""
