"""What checking a log found: the :class:`Report`, and the two ways a check stops
(:class:`VerificationError`: the log is not what was signed; :class:`BundleError`: the
bundle cannot be read at all)."""

from __future__ import annotations

from dataclasses import dataclass, field

from panicbutton.errors import PanicbuttonError
from panicbutton.log import merkle, spec
from panicbutton.log.checkpoints import VerifierKey


# NOTE: no builtin fits a bundle that fails its checks (it is neither a bad argument nor an
# OS failure), and callers that catch ValueError around parsing must not swallow a verdict.
class VerificationError(PanicbuttonError):
    """The log is not what was signed; ``entry`` is the first bad entry, when known."""

    def __init__(self, message: str, entry: int | None = None) -> None:
        super().__init__(message)
        self.entry = entry


class BundleError(PanicbuttonError):
    """The bundle or an option cannot be read at all."""


@dataclass
class Report:
    """What a verification established (sizes, root, counts) and what a reviewer must see
    (open incidents, findings, notes)."""

    size: int = 0
    #: Entries disclosed and checked: all of them (``size``) in a full bundle.
    disclosed: int | None = None
    root: bytes = merkle.EMPTY_ROOT
    checkpoints: int = 0
    personal_checked: int = 0
    #: The tree's right edge and last leaf hash once checked (full logs only): where the
    #: server's log keeper goes on from.
    frontier: list[bytes] = field(default_factory=list)
    last_leaf: bytes = spec.GENESIS
    open_incidents: list[int] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: The key the bundle was checked with, when it came from the bundle's own log-key.pub.
    bundle_key: VerifierKey | None = None
