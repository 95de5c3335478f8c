"""The checkpoint file beside the database, and the log's signing key.

Every checkpoint the keeper signs is also appended to a file outside the
database (one JSON string, the signed note, per line; fsynced). The file
outlives a database restored from an older backup or rewritten: the keeper
compares the log with it before signing anything.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from panicbutton.log import checkpoints, spec, verdict

log = logging.getLogger(__name__)

#: Bytes read from the end of the checkpoint file at start (a few thousand checkpoints).
KEPT_TAIL = 1 << 20


def load_signer(path: Path) -> checkpoints.Signer:
    """The log's signing key from ``path``; ValueError says what is wrong and what to do."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(
            f"PANICBUTTON_LOG_KEY_FILE: cannot read {path} ({exc.strerror}); "
            "make one with `panicbutton audit keygen --out FILE`"
        ) from None
    if mode & 0o077:
        raise ValueError(
            f"PANICBUTTON_LOG_KEY_FILE: {path} is readable by other users; chmod 600 it"
        )
    try:
        return checkpoints.Signer.parse(text)
    except spec.LogFormatError as exc:
        raise ValueError(f"PANICBUTTON_LOG_KEY_FILE: {path}: {exc}") from None


class CheckpointFile:
    """The checkpoint file at ``path`` (None: no file, nothing read or written), read
    with ``key``: lines that are not checkpoints signed by it are ignored (and logged)."""

    def __init__(self, path: Path | None, key: checkpoints.VerifierKey) -> None:
        self.path = path
        self._key = key
        #: How far the file was read.
        self._read = 0

    def read(self, *, whole: bool) -> list[checkpoints.Checkpoint]:
        """Valid checkpoints of the file: its last KEPT_TAIL bytes (``whole``), or the
        lines appended since it was last read. VerificationError if the file shrank or
        went away since it was read."""
        if self.path is None:
            return []
        try:
            with self.path.open("rb") as f:
                end = f.seek(0, os.SEEK_END)
                if end < self._read:
                    raise verdict.VerificationError(
                        f"the checkpoint file {self.path} is shorter than when it was read: "
                        "it was cut or replaced"
                    )
                start = max(0, end - KEPT_TAIL) if whole else self._read
                f.seek(start)
                data = f.read(end - start)
        except FileNotFoundError:
            if self._read:
                message = f"the checkpoint file {self.path} is gone"
                raise verdict.VerificationError(message) from None
            return []
        except OSError as exc:
            log.error("cannot read %s (%s): the log is not compared with it", self.path, exc)
            return []
        whole_lines = data[: data.rfind(b"\n") + 1]
        self._read = start + len(whole_lines)
        lines = whole_lines.splitlines()[1 if whole and start else 0 :]  # the first may be cut
        kept: list[checkpoints.Checkpoint] = []
        bad = 0
        for line in filter(None, lines):
            try:
                kept.append(checkpoints.open_checkpoint(json.loads(line), self._key))
            except (ValueError, TypeError, spec.LogFormatError):
                bad += 1
        if bad:
            log.error("%s: %d line(s) are not checkpoints signed by this log's key", self.path, bad)
        return kept

    def append(self, cp: checkpoints.Checkpoint) -> None:
        """Append ``cp`` and fsync; a failure is logged (the database keeps its copy)."""
        if self.path is None:
            return
        line = json.dumps(cp.note).encode() + b"\n"
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                end = os.lseek(fd, 0, os.SEEK_END)
                if end and os.pread(fd, 1, end - 1) != b"\n":
                    line = b"\n" + line  # an earlier write was cut short: start afresh
                while line:
                    line = line[os.write(fd, line) :]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            log.error(
                "could not append checkpoint %d to %s (%s): the database copy is kept; "
                "free space or fix permissions",
                cp.size,
                self.path,
                exc.strerror,
            )
