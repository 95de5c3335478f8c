"""``agent.json`` in the unit's state folder: what the running agent shows, for the
tools beside it (``panicbutton device upgrade`` waits on it; an installer reads it).

Written whole on each change of the light (a new file renamed over the old one, so a
reader never sees half of it), private to the service user like the outbox.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from panicbutton import __version__

NAME = "agent.json"


@dataclass(frozen=True, slots=True)
class AgentState:
    light: str
    version: str
    pid: int


def write(state_dir: Path, light: str) -> None:
    """Say that this process, at this version, shows ``light`` (quietly skipped when the
    folder cannot be written: the light itself is what matters)."""
    path = state_dir / NAME
    tmp = path.with_suffix(".tmp")
    body = json.dumps({"light": light, "version": __version__, "pid": os.getpid()})
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(body + "\n")
        tmp.replace(path)
    except OSError:
        return


def read(state_dir: Path) -> AgentState | None:
    """What the running agent last wrote, or None."""
    try:
        data = json.loads((state_dir / NAME).read_text())
        return AgentState(
            light=str(data["light"]), version=str(data["version"]), pid=int(data["pid"])
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
