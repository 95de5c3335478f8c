"""``panicbutton device upgrade``: a newer agent from the server, switched to only once it
is armed, and ``--rollback`` to the one before.

Each agent lives in its own venv, ``/opt/panicbutton/venvs/<version>``;
``/opt/panicbutton/current`` points at the one the service runs (the unit's
``ExecStart``) and ``/opt/panicbutton/previous`` at the one before. An upgrade:

1. fetches the server's wheelhouse with the unit's token (``[server]`` in the config);
2. installs it into a new venv with pip's hash-checking mode and no index;
3. runs the new agent's ``device check --installed`` (config, libraries, files: what
   can be checked while the running agent holds the pins and the broker session);
4. points ``current`` at it and restarts the service, the old agent running until
   then; then waits for the new agent to show "armed" (:mod:`device.statefile`);
5. if it does not within ``--arm-within`` seconds (60), points ``current`` back and restarts the
   old agent; either way it reports to the server, which shows it on the units page.

The pins and the unit's broker login can be held by one process at a time, so the
switch itself is a restart: the room is without an agent for as long as one start
takes (about a second on a Pi 4), and never for a new agent that has not been checked.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from device import statefile
from device.config import DeviceConfig, load_config
from device.errors import DeviceError
from device.https import describe, trust
from device.indicator import Light
from device.pins import FACTORIES, PinFactory
from panicbutton import __version__

#: Where the venvs and the ``current`` and ``previous`` links are (``PANICBUTTON_OPT``
#: moves it, for an emulated unit or a test).
OPT = Path(os.environ.get("PANICBUTTON_OPT", "/opt/panicbutton"))
SERVICE = "panicbutton-device"
#: What a wheelhouse's VERSION may be (PEP 440 with a local label): it names a folder.
VERSION_RE = re.compile(r"[0-9][0-9A-Za-z.+!_-]{0,63}")
#: The service's user: the new agent is checked as it will run.
USER = "panicbutton"
#: Lights that say the agent runs and its link is up.
UP = frozenset({Light.ARMED, Light.RECEIVED, Light.HELP_COMING})


def say(text: str) -> None:
    print(f"upgrade: {text}", flush=True)


def check_installed(config: DeviceConfig) -> bool:
    """What an upgrade checks of a new venv while the old agent runs: the config loads
    (done by the caller), the pin library and paho import, the files it names are
    readable and its state folder writable. Prints a line per check."""
    ok = True

    def line(passed: bool, what: str, detail: str) -> None:
        nonlocal ok
        ok &= passed
        print(f"{'ok  ' if passed else 'FAIL'} {what}: {detail}", flush=True)

    line(True, "config", f"{config.device_id} loads with agent {__version__}")
    factories = (
        [PinFactory.LGPIO, PinFactory.RPIGPIO, PinFactory.NATIVE]
        if config.pin_factory is PinFactory.AUTO
        else [config.pin_factory]
    )
    loaded = []
    for name in factories:
        try:
            __import__(FACTORIES[name][0])
            loaded.append(str(name))
        except ImportError:
            continue
    line(bool(loaded), "pin library", ", ".join(loaded) or "none imports")
    if config.mqtt.ca_file is not None:
        line(os.access(config.mqtt.ca_file, os.R_OK), "CA certificate", str(config.mqtt.ca_file))
    line(os.access(config.state_dir, os.W_OK), "state folder", str(config.state_dir))
    return ok


def _fetch(config: DeviceConfig, dest: Path) -> str:
    """Unpack the server's wheelhouse into ``dest``; return its version."""
    if config.https is None:
        raise DeviceError(
            "an upgrade comes from the server: the config needs [server] url and token_file"
        )
    context = trust(config.https.ca_file)
    request = urllib.request.Request(  # noqa: S310 -- the configured https:// (or loopback) URL
        f"{config.https.url}/api/v1/devices/{config.device_id}/wheelhouse",
        headers={"Authorization": f"Bearer {config.https.token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60, context=context) as resp:  # noqa: S310
            body = resp.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        raise DeviceError(f"the server refused the wheelhouse: {exc.code} {detail}") from None
    except OSError as exc:
        raise DeviceError(f"cannot fetch the wheelhouse: {describe(exc)}") from None
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        # Plain files with plain names only: bookworm's Python 3.11.2 predates tarfile's
        # extraction filters.
        for member in tar.getmembers():
            if not member.isfile() or "/" in member.name or member.name.startswith("."):
                raise DeviceError(f"the server's wheelhouse holds {member.name!r}: refusing it")
            source = tar.extractfile(member)
            if source is not None:
                (dest / member.name).write_bytes(source.read())
    version = (dest / "VERSION").read_text().strip()
    if not VERSION_RE.fullmatch(version):
        # It names a folder that is replaced as root: nothing but a version will do.
        raise DeviceError(f"the wheelhouse's VERSION {version[:40]!r} is not a version")
    return version


def _run(*command: str | Path) -> None:
    result = subprocess.run(  # noqa: S603 -- our own venv's programs
        [str(c) for c in command], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-8:])
        raise DeviceError(f"{Path(str(command[0])).name} failed:\n{tail}")


def install(house: Path, venv: Path) -> None:
    """A venv at ``venv`` with the wheelhouse's agent, hash-checked, from no index; lgpio
    from the wheelhouse only when the OS has none the venv can see."""
    _run(sys.executable, "-m", "venv", "--system-site-packages", venv)
    pip = (venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-index")
    _run(*pip, "--find-links", house, "--require-hashes", "-r", house / "requirements.txt")
    has_lgpio = subprocess.run(  # noqa: S603
        [str(venv / "bin" / "python"), "-c", "import lgpio"], capture_output=True, check=False
    )
    if has_lgpio.returncode != 0 and (house / "lgpio.txt").is_file():
        _run(*pip, "--find-links", house, "--require-hashes", "-r", house / "lgpio.txt")


def _link(name: str, target: Path) -> None:
    """Point ``OPT/name`` at ``target`` in one step (a new link renamed over the old),
    relative (``venvs/<version>``, as provision.sh makes it), so a copy of the folder
    or a look from outside a chroot still finds it."""
    tmp = OPT / f".{name}.new"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(target.relative_to(OPT.resolve()))
    tmp.replace(OPT / name)


def _restart(config: DeviceConfig) -> None:
    """Restart the service; with no systemd (an emulated unit, a container), stop the
    running agent and let what supervises it start the one ``current`` points at."""
    if Path("/run/systemd/system").is_dir():
        _run("systemctl", "restart", SERVICE)
        return
    running = statefile.read(config.state_dir)
    if running is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(running.pid, signal.SIGTERM)


def _armed(config: DeviceConfig, version: str, stale: set[int], within: float) -> bool:
    """Whether an agent at ``version`` shows it is up within ``within`` seconds; what
    processes in ``stale`` wrote (before the restart) does not count."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        state = statefile.read(config.state_dir)
        if (
            state is not None
            and state.pid not in stale
            and state.version == version
            and state.light in UP
        ):
            return True
        time.sleep(0.5)
    return False


def _pids(config: DeviceConfig) -> set[int]:
    state = statefile.read(config.state_dir)
    return {state.pid} if state is not None else set()


def _report(
    config: DeviceConfig, action: str, version: str, passed: bool, lines: list[str]
) -> None:
    if config.https is None:
        return
    context = trust(config.https.ca_file)
    body = json.dumps(
        {"action": action, "version": version, "passed": passed, "lines": lines[-40:]}
    ).encode()
    request = urllib.request.Request(  # noqa: S310
        f"{config.https.url}/api/v1/devices/{config.device_id}/install",
        data=body,
        headers={
            "Authorization": f"Bearer {config.https.token}",
            "Content-Type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=15, context=context):  # noqa: S310
            pass
    except OSError as exc:
        say(f"could not tell the server ({describe(exc)}); the units page shows the version")


def _switch(config: DeviceConfig, to: Path, version: str, within: float) -> bool:
    """Point ``current`` at ``to`` and ``previous`` at what it was, restart, wait for
    armed; if the restart fails or the new agent does not arm, put both links back and
    restart the old one. True if ``to`` is armed.

    ``previous`` moves first, so an upgrade killed in the middle leaves ``--rollback``
    pointing at the agent that ran before it."""
    before = (OPT / "current").resolve()
    had_previous = (OPT / "previous").resolve() if (OPT / "previous").exists() else None
    stale = _pids(config)
    if before != to:
        _link("previous", before)
    _link("current", to)
    try:
        _restart(config)
        if _armed(config, version, stale, within):
            return True
        say(f"{version} did not show armed within {within:.0f} s: going back to {before.name}")
    except DeviceError as exc:
        say(f"{version} did not start ({exc}): going back to {before.name}")
    _link("current", before)
    if had_previous is not None and had_previous != before:
        _link("previous", had_previous)
    stale |= _pids(config)
    try:
        _restart(config)
    except DeviceError as exc:
        say(f"{before.name} did not start either ({exc}): see journalctl -u {SERVICE}")
        return False
    if _armed(config, before.name, stale, within):
        say(f"{before.name} is armed again")
    else:
        say(f"{before.name} did not show armed either: see journalctl -u {SERVICE}")
    return False


def upgrade(*, config_path: Path, rollback: bool, arm_within: float = 60.0) -> int:
    config = load_config(config_path)
    # A dropped SSH session must not stop an upgrade between its two links.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if rollback:
        previous = OPT / "previous"
        if not previous.exists():
            raise DeviceError(f"there is no previous agent to go back to ({previous} is missing)")
        target = previous.resolve()
        version = _venv_version(target)
        say(f"going back to {version} ({target})")
        passed = _switch(config, target, version, arm_within)
        _report(config, "rollback", version, passed, [f"rolled back to {version}"])
        say("armed" if passed else "failed: the agent before it runs again")
        return 0 if passed else 1
    (OPT / "venvs").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=OPT, prefix=".incoming-") as tmp:
        house = Path(tmp)
        version = _fetch(config, house)
        current = (OPT / "current").resolve()
        if version == _venv_version(current):
            say(f"already at {version}: nothing to do")
            return 0
        venv = OPT / "venvs" / version
        if venv.exists() and venv != current:
            shutil.rmtree(venv)
        say(f"installing {version} into {venv}")
        install(house, venv)
    check = subprocess.run(  # noqa: S603 -- the new venv's own command
        [
            str(venv / "bin" / "panicbutton"),
            "device",
            "check",
            "--installed",
            "--config",
            config_path,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = check.stdout.splitlines() + check.stderr.splitlines()
    print(check.stdout + check.stderr, end="", flush=True)
    if check.returncode != 0:
        say(f"{version} failed its check: the running agent was not touched")
        _report(config, "upgrade", version, False, lines)
        if venv != previous:
            shutil.rmtree(venv, ignore_errors=True)
        return 1
    passed = _switch(config, venv, version, arm_within)
    _report(config, "upgrade", version, passed, [*lines, "armed" if passed else "not armed"])
    if passed:
        _prune()
    say(f"{version} is armed" if passed else "failed: the agent before it runs again")
    return 0 if passed else 1


def _as_service_user() -> list[str]:
    """``runuser`` to the service's user when run as root and the user exists, so that
    the check sees the files as the agent will (as root, everything is readable)."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(USER)
    except KeyError:
        return []
    return ["runuser", "-u", USER, "--"]


def _venv_version(venv: Path) -> str:
    """The agent version a venv holds (its folder name, as this module names them)."""
    return venv.name


def _prune() -> None:
    """Keep only the venvs ``current`` and ``previous`` point at."""
    keep = {(OPT / n).resolve() for n in ("current", "previous") if (OPT / n).exists()}
    for venv in (OPT / "venvs").iterdir():
        if venv.resolve() not in keep:
            shutil.rmtree(venv, ignore_errors=True)
