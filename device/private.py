"""Files and folders the agent writes in its state folder, private to its user.

The outbox tells when and where someone called for help; the agent makes what
it writes mode 0600 (folders 0700) whatever the umask it was started with
(systemd's unit also sets ``UMask=0077``, for what other code writes). A folder
that already exists is left as it is: systemd makes the state folder itself
(``StateDirectoryMode=``).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

FILE_MODE = 0o600
FOLDER_MODE = 0o700


def make_folder(path: Path) -> None:
    """Make ``path`` and any missing parents, each private."""
    missing: list[Path] = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=FOLDER_MODE)
        except FileExistsError:  # made by someone else meanwhile: theirs to keep
            continue
        folder.chmod(FOLDER_MODE)  # the umask may have taken bits away; set exactly


def create(path: Path) -> None:
    """Make ``path`` an empty private file if it is missing; take the group's and
    others' access away from one that exists (made before the agent did this)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        tighten(path)
        return
    try:
        os.fchmod(fd, FILE_MODE)  # the umask may have taken bits away; set exactly
    finally:
        os.close(fd)


def tighten(path: Path) -> None:
    """Take the group's and others' access away from the existing ``path``, leaving its
    owner's as it is; a file that cannot be changed (not ours, a read-only disk) is
    said in the log and left."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            path.chmod(mode & 0o700)
    except FileNotFoundError:
        return
    except OSError as exc:
        log.warning("cannot make %s private: %s", path, exc.strerror)


def write_text(path: Path, text: str) -> None:
    """Replace the content of the private file ``path`` with ``text``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "w") as f:
        os.fchmod(fd, FILE_MODE)
        f.write(text)
