"""The broker's password file, changed in place by ``panicbutton provision --passwd``,
and Mosquitto told to read it again (``--reload-broker``).

The file is replaced whole, atomically: a new file beside it (same mode and owner),
written and flushed to disk, then renamed over the old one, so the broker never reads
half a file and a crash leaves the old one or the new one. Mosquitto 2 re-reads its
``password_file`` and ``acl_file`` on SIGHUP, without a restart: connected clients stay
connected, and new units can log in at once.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from server.errors import ServerError

SYSTEMD_UNIT = "mosquitto"


@dataclass(frozen=True, slots=True)
class Merge:
    """What :func:`merge_passwd` did to the file."""

    path: Path
    added: tuple[str, ...]
    replaced: tuple[str, ...]


def check_passwd(path: Path) -> None:
    """Raise ServerError saying what to do unless ``path`` is a password file this
    process can read and replace."""
    _read(path.resolve())
    if not os.access(path.resolve().parent, os.W_OK):
        raise ServerError(
            f"cannot write in {path.resolve().parent} (to replace {path.name} whole): run as "
            "root (sudo)"
        )


def _read(path: Path) -> tuple[os.stat_result, str]:
    try:
        return path.stat(), path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ServerError(
            f"{path} does not exist: give the broker's password file (password_file in "
            "mosquitto.conf), or make it first with `mosquitto_passwd -c`"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ServerError(f"cannot read {path}: {exc} (run as root or as its owner)") from None


def merge_passwd(path: Path, lines: Sequence[str], *, replace: bool = False) -> Merge:
    """Put ``lines`` (``user:hash``) into the password file at ``path``: the new users'
    lines are appended; with ``replace``, a user already there gets the new line where
    the old one stood (new credentials). Without it, ServerError names such users and the
    file is unchanged: a CSV row that repeats an installed unit's id would otherwise cut
    that room's button off the broker at its next reconnect. The file keeps its mode and
    owner (ServerError if that cannot be done). One change at a time (a lock file beside
    it), so two runs cannot lose each other's lines."""
    path = path.resolve()  # a link to the file stays a link: its target is replaced
    lock = path.parent / f".{path.name}.lock"
    try:
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ServerError(f"cannot lock {path} ({exc}): run as root (sudo)") from None
    with os.fdopen(fd, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        return _merge(path, lines, replace=replace)


def _merge(path: Path, lines: Sequence[str], *, replace: bool) -> Merge:
    st, old = _read(path)
    present = {line.split(":", 1)[0] for line in old.splitlines() if ":" in line}
    clash = sorted(present & {line.split(":", 1)[0] for line in lines})
    if clash and not replace:
        some = ", ".join(clash[:10]) + (" ..." if len(clash) > 10 else "")
        raise ServerError(
            f"{path} already has {len(clash)} of these users ({some}): a unit installed "
            "with its old password would lose the broker. If they are new units, give them "
            "other ids; to issue new credentials to them, run again with --replace. "
            f"{path} is unchanged"
        )
    new = {line.split(":", 1)[0]: line for line in lines}
    out, replaced = [], []
    for line in old.splitlines():
        user = line.split(":", 1)[0]
        if user in new and not line.lstrip().startswith("#"):
            if user not in replaced:
                out.append(new[user])
                replaced.append(user)
            continue  # a second line of the same user would be a second password
        out.append(line)
    added = [user for user in new if user not in replaced]
    out += [new[user] for user in added]
    _replace(path, ("\n".join(out) + "\n").encode(), st)
    return Merge(path=path, added=tuple(added), replaced=tuple(replaced))


def _replace(path: Path, data: bytes, st: os.stat_result) -> None:
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    new = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(fd, st.st_mode & 0o7777)
            if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
                try:
                    os.fchown(fd, st.st_uid, st.st_gid)
                except PermissionError:
                    raise ServerError(
                        f"cannot give the new {path} its owner and group "
                        f"({st.st_uid}:{st.st_gid}): run as root (sudo); the file is unchanged"
                    ) from None
            f.write(data)
            f.flush()
            os.fsync(fd)
        new.replace(path)
    except BaseException:
        new.unlink(missing_ok=True)
        raise
    # The rename itself is on disk only once the folder is.
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def reload_broker(pid_file: Path | None = None) -> str:
    """Send Mosquitto SIGHUP, so it reads its password file and ACL again: to the pid in
    ``pid_file`` (mosquitto.conf's ``pid_file``), else by ``systemctl reload mosquitto``
    where systemd runs. Return what was done; ServerError says what to do if neither can."""
    if pid_file is not None:
        return _signal(pid_file)
    if Path("/run/systemd/system").is_dir() and shutil.which("systemctl"):
        done = subprocess.run(  # noqa: S603 -- a fixed command, no shell
            ["systemctl", "reload", SYSTEMD_UNIT],  # noqa: S607 -- systemctl from PATH
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise ServerError(
                f"`systemctl reload {SYSTEMD_UNIT}` failed: {done.stderr.strip()}; "
                "run it as root, or give --broker-pid-file"
            )
        return f"reloaded the broker (systemctl reload {SYSTEMD_UNIT})"
    raise ServerError(
        "systemd does not run the broker here: give --broker-pid-file (the pid_file in "
        "mosquitto.conf), or send it SIGHUP yourself (docker compose kill -s HUP mosquitto)"
    )


def _signal(pid_file: Path) -> str:
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError) as exc:
        raise ServerError(f"cannot read a process id from {pid_file}: {exc}") from None
    if pid <= 1:
        # kill(-1) signals every process, kill(0) our own group, 1 is init.
        raise ServerError(f"{pid_file} holds {pid}, which is not the broker's process id")
    # A stale pid file may name another program now, which SIGHUP could end.
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        raise ServerError(f"no process {pid} (from {pid_file}): is the broker running?") from None
    if name != "mosquitto":
        raise ServerError(
            f"process {pid} (from {pid_file}) is {name!r}, not mosquitto: is the pid file stale?"
        )
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise ServerError(f"no process {pid} (from {pid_file}): is the broker running?") from None
    except PermissionError:
        raise ServerError(
            f"not allowed to signal process {pid}: run as root or as the broker's user"
        ) from None
    return f"sent SIGHUP to the broker (process {pid}, from {pid_file})"
