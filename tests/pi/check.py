"""``make pi-check``: a room unit installed as a venue would, on an emulated Raspberry Pi.

A Debian bookworm root for arm64 (or armhf: ``--arch armhf``) is built once with
debootstrap and cached (``/var/cache/panicbutton/pi``); each run works on a copy of it
(an overlay), with qemu user-mode emulation running its binaries. Against a real server
on loopback (its own process, SQLite, the fake Twilio), a real Mosquitto with passwords,
an ACL and a TLS listener, and wheelhouses built by ``panicbutton wheelhouse build``:

1. the first-boot script is staged as Raspberry Pi OS would run it from cmdline.txt,
   then its one-shot step runs: the enrolment code buys the unit's bundle, the
   wheelhouse comes from the server, the real ``provision.sh`` installs from it with
   no index, checks the unit (mock pins: there are none) and reports to the server;
2. the agent starts in simulation (as the service would, as user panicbutton), is
   pressed, and the server records the alarm while the unit shows "received";
3. ``panicbutton device upgrade`` installs a newer wheelhouse and switches over once it
   is armed; ``--rollback`` goes back.

It prints the install time, the venv's size and the agent's resident memory, all
under emulation (an emulated CPU is several times slower than a Pi's, and qemu's own
memory is in the figure), and writes them as JSON with ``--json FILE``. Needs root
(chroot, mounts); installs qemu-user-static, binfmt-support and debootstrap with apt
when they are missing. Exit status 0 when every step passed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import traceback
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from demo.broker import MosquittoProcess, free_port
from panicbutton.clock import SystemClock
from server.models import DeviceRecord, Incident, IncidentKind
from server.units import enrolment
from server.units.broker import SERVER_USER, BrokerFiles, TlsListener
from server.units.provision import Secrets, bundle_files
from server.units.tables import UnitInstall
from server.units.wheelhouse import build as build_wheelhouse
from server.units.wheelhouse import build_device_wheel
from tests.fakes.twilio import FakeTwilio
from tests.harness import Broker
from tests.processes import ServerProcess, server_env
from tests.tls import certificates

CACHE = Path(os.environ.get("PANICBUTTON_PI_CACHE", "/var/cache/panicbutton/pi"))
MIRROR = os.environ.get("PANICBUTTON_DEBIAN_MIRROR", "http://deb.debian.org/debian")
#: What a Raspberry Pi OS Lite image has that a minimal Debian root lacks (and sudo-less
#: tools provision.sh uses); python3-lgpio is not among them: plain Debian has none.
PACKAGES = "python3,python3-venv,systemd,udev"
QEMU = {"arm64": "aarch64", "armhf": "arm"}
DEVICE = "unit-1"
STAFF = "+32470000001"

SITE = """\
[site]
name = "Emulated house"
timezone = "Europe/Brussels"

[[rooms]]
id = "room-1"
label = "Room 1"
device = "unit-1"
device_token_sha256 = "{token_sha256}"

[[staff]]
id = "reception"
name = "Reception"
phone = "{staff}"
language = "en"

[duty]
on_duty = ["reception"]
"""


def step(text: str) -> None:
    print(f"pi-check: {text}", flush=True)


def sh(*command: str | Path, timeout: float = 900, env: dict[str, str] | None = None) -> str:
    """Run a command; its output, or SystemExit with it when it fails."""
    result = subprocess.run(
        [str(c) for c in command],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )
    if result.returncode != 0:
        raise SystemExit(
            f"pi-check: {' '.join(map(str, command))} failed ({result.returncode}):\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result.stdout


# -- the emulated Pi -----------------------------------------------------------------


def emulation(arch: str) -> None:
    """qemu user-mode emulation of ``arch`` binaries, through binfmt_misc."""
    missing = [
        pkg
        for pkg, tool in (
            ("qemu-user-static", f"qemu-{QEMU[arch]}-static"),
            ("binfmt-support", "update-binfmts"),
            ("debootstrap", "debootstrap"),
        )
        if shutil.which(tool) is None
    ]
    if missing:
        step(f"installing {' '.join(missing)}")
        sh("apt-get", "update", "-qq")
        sh(
            "apt-get",
            "install",
            "-y",
            "-qq",
            *missing,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    binfmt = Path("/proc/sys/fs/binfmt_misc")
    if not (binfmt / "status").exists():
        sh("mount", "-t", "binfmt_misc", "binfmt_misc", binfmt)
    entry = binfmt / f"qemu-{QEMU[arch]}"
    if not entry.exists() or "enabled" not in entry.read_text():
        sh("update-binfmts", "--enable", f"qemu-{QEMU[arch]}")
    if "enabled" not in entry.read_text():
        raise SystemExit(f"pi-check: binfmt_misc does not run {arch} binaries ({entry})")


def base_root(arch: str) -> Path:
    """The cached Debian bookworm root for ``arch``, built on first use (about 4 min)."""
    root = CACHE / f"bookworm-{arch}"
    if (root / ".complete").is_file():
        return root
    step(f"building a Debian bookworm {arch} root with debootstrap (once; cached in {CACHE})")
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = CACHE / f".building-{arch}"
    shutil.rmtree(tmp, ignore_errors=True)
    began = time.monotonic()
    sh(
        "debootstrap",
        f"--arch={arch}",
        "--variant=minbase",
        f"--include={PACKAGES}",
        "bookworm",
        tmp,
        MIRROR,
        timeout=1800,
    )
    (tmp / ".complete").write_text(f"{datetime.datetime.now(datetime.UTC).isoformat()}\n")
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    step(f"root built in {time.monotonic() - began:.0f} s")
    return root


@contextlib.contextmanager
def running_root(base: Path, work: Path) -> Iterator[Path]:
    """A writable copy of ``base`` (an overlay) with /proc, /sys and /dev mounted."""
    upper, scratch, root = work / "upper", work / "overlay-work", work / "root"
    for d in (upper, scratch, root):
        d.mkdir(parents=True)
    sh(
        "mount",
        "-t",
        "overlay",
        "overlay",
        "-o",
        f"lowerdir={base},upperdir={upper},workdir={scratch}",
        root,
    )
    mounts = [root]
    try:
        for what, where, how in (
            ("proc", "proc", ["-t", "proc"]),
            ("sysfs", "sys", ["-t", "sysfs"]),
            ("/dev", "dev", ["--rbind"]),
        ):
            sh("mount", *how, what, root / where)
            mounts.append(root / where)
            if how == ["--rbind"]:
                sh("mount", "--make-rslave", root / where)
        # As on Raspberry Pi OS (debootstrap leaves no hosts file).
        (root / "etc/hosts").write_text(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n127.0.1.1\traspberrypi\n"
        )
        yield root
    finally:
        for m in reversed(mounts):
            subprocess.run(["umount", "-R", "-l", str(m)], check=False)


def chroot(
    root: Path, *command: str, timeout: float = 1200, env: dict[str, str] | None = None
) -> str:
    base = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}
    return sh(
        "chroot",
        root,
        "env",
        "-i",
        *(f"{k}={v}" for k, v in {**base, **(env or {})}.items()),
        *command,
        timeout=timeout,
    )


# -- the site: TLS, broker, server ---------------------------------------------------


@dataclass
class Site:
    """The server side of the run, and what the checks read back from it."""

    folder: Path
    secret: Secrets = field(default_factory=Secrets.new)
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def db(self) -> Path:
        return self.folder / "server.sqlite3"

    def session(self) -> Session:
        return Session(create_engine(f"sqlite:///{self.db}"))

    def read(self, query: Callable[[Session], Any]) -> Any:
        with self.session() as s:
            return query(s)


def wait(what: str, predicate: Callable[[], object], timeout: float) -> float:
    """Seconds until ``predicate`` holds; SystemExit naming ``what`` after ``timeout``."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if predicate():
            return time.monotonic() - began
        time.sleep(0.2)
    raise SystemExit(f"pi-check: {what}: not within {timeout:.0f} s")


def agent_state(root: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((root / "var/lib/panicbutton/agent.json").read_text())
    except (OSError, ValueError):
        return {}
    return data


@contextlib.contextmanager
def supervised_agent(root: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The agent as its service would run it (user panicbutton, its state folder),
    restarted whenever it stops, like ``Restart=always``; presses come by SIGUSR1."""
    loop = (
        "cd /var/lib/panicbutton; while :; do "
        "/opt/panicbutton/current/bin/panicbutton device --simulate "
        "--config /etc/panicbutton/device.toml </dev/null; sleep 1; done"
    )
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                *("chroot", str(root), "env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"),
                *("LANG=C.UTF-8", "runuser", "-u", "panicbutton", "--", "sh", "-c", loop),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def du_mib(path: Path) -> float:
    return int(sh("du", "-sk", "--apparent-size", path).split()[0]) / 1024


def run(arch: str, work: Path) -> dict[str, Any]:
    emulation(arch)
    base = base_root(arch)
    site = Site(work / "site")
    site.folder.mkdir(parents=True)
    tls = certificates(work / "tls", ip="127.0.0.1")
    ca, cert, key = tls.ca, tls.cert, tls.key

    step("building two wheelhouses (the agent as it is, and a newer one to upgrade to)")
    from panicbutton import __version__  # noqa: PLC0415

    newer = f"{__version__}+pi.2"
    house_1 = build_wheelhouse(work / "house-1")
    house_2 = work / "house-2"
    shutil.copytree(house_1, house_2)
    for old in house_2.glob("panicbutton_device-*.whl"):
        old.unlink()
    build_wheelhouse(work / "house-2-build", version=newer)
    shutil.copy2(next((work / "house-2-build").glob("panicbutton_device-*.whl")), house_2)
    # (the rest of house-2 is house-1's: same dependencies; requirements are rewritten)
    (house_2 / "requirements.txt").write_text(
        (work / "house-2-build" / "requirements.txt").read_text()
    )
    (house_2 / "VERSION").write_text(newer + "\n")
    broken = f"{__version__}+pi.3"
    house_3 = broken_wheelhouse(work, house_2, broken)
    served = work / "wheelhouse"
    served.symlink_to(house_1)

    plain, tls_port = free_port(), free_port()
    users = {SERVER_USER: secrets.token_urlsafe(12), DEVICE: site.secret.password}
    files = BrokerFiles(
        work / "broker",
        plain,
        users,
        persistence=True,
        tls=TlsListener(tls_port, cafile=ca, certfile=cert, keyfile=key),
    )
    broker = MosquittoProcess(files)
    twilio = FakeTwilio(account_sid="AC" + secrets.token_hex(16), auth_token=secrets.token_hex(16))
    twilio.start()
    site_file = site.folder / "site.toml"
    site_file.write_text(SITE.format(token_sha256=site.secret.token_sha256, staff=STAFF))
    env = server_env(
        broker=Broker(plain, users, broker),
        twilio=twilio,
        database_url=f"sqlite:///{site.db}",
        site_file=site_file,
    )
    env["PANICBUTTON_WHEELHOUSE_DIR"] = str(served)
    server = ServerProcess(env, free_port(), site.folder)
    with contextlib.ExitStack() as stack:
        broker.start()
        stack.callback(broker.stop)
        stack.callback(twilio.stop)
        server.start()
        stack.callback(server.stop)
        root = stack.enter_context(running_root(base, work / "pi"))
        try:
            figures = on_the_pi(
                root, site, server, twilio, tls_port, ca, served, (house_2, newer), house_3
            )
        except SystemExit:
            print(f"--- server log ---\n{server.log()}", file=sys.stderr)
            raise
    return figures


def broken_wheelhouse(work: Path, like: Path, version: str) -> Path:
    """``like`` with an agent at ``version`` that passes ``device check --installed`` but
    exits as soon as it runs: an upgrade to it must put the running one back."""
    house = work / "house-3"
    shutil.copytree(like, house)
    for old in house.glob("panicbutton_device-*.whl"):
        old.unlink()
    built = build_device_wheel(work / "house-3-build", version=version)
    wheel = house / built.name
    with zipfile.ZipFile(built) as src, zipfile.ZipFile(wheel, "w") as out:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "device/run.py":
                head = b"def run(*, config_path: Path, simulate: bool) -> int:\n"
                assert head in data, "device/run.py changed: update pi-check's broken agent"
                data = data.replace(head, head + b'    raise SystemExit("broken on purpose")\n')
            out.writestr(item, data)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    lines = [
        line
        for line in (like / "requirements.txt").read_text().splitlines()
        if not line.startswith("panicbutton-device==")
    ]
    lines.append(f"panicbutton-device=={version} --hash=sha256:{digest}")
    (house / "requirements.txt").write_text("\n".join(lines) + "\n")
    (house / "VERSION").write_text(version + "\n")
    return house


def on_the_pi(
    root: Path,
    site: Site,
    server: ServerProcess,
    twilio: FakeTwilio,
    tls_port: int,
    ca: Path,
    served: Path,
    upgrade_to: tuple[Path, str],
    house_3: Path,
) -> dict[str, Any]:
    house_2, newer = upgrade_to
    broken = (house_3 / "VERSION").read_text().strip()
    from panicbutton import __version__  # noqa: PLC0415

    figures: dict[str, Any] = {"emulated": True}
    url = f"http://127.0.0.1:{server.port}"
    with site.session() as s, s.begin():
        code = enrolment.create(
            s,
            device_id=DEVICE,
            files=bundle_files(
                device_id=DEVICE,
                label="Room 1",
                broker_host="localhost",
                broker_port=tls_port,
                server_url=url,
                ca_pem=ca.read_text(),
                secret=site.secret,
                by="pi-check",
            ),
            by="pi-check",
            now=SystemClock().now(),
        )

    step("first boot: the card's boot partition, as the installer leaves it")
    firmware = Path(__file__).resolve().parents[2] / "firmware_config"
    boot = root / "boot/firmware"
    (boot / "panicbutton").mkdir(parents=True)
    for name in ("firstboot.sh", "unit_fetch.py"):
        shutil.copy2(firmware / name, boot / "panicbutton" / name)
    (boot / "panicbutton/enrol.txt").write_text(f"server={url}\ncode={code}\n")
    hook = (
        "systemd.run=/boot/firmware/panicbutton/firstboot.sh "
        "systemd.run_success_action=reboot systemd.unit=kernel-command-line.target"
    )
    (boot / "cmdline.txt").write_text(f"console=tty1 root=PARTUUID=0 rootwait {hook}\n")
    chroot(root, "/boot/firmware/panicbutton/firstboot.sh")
    assert not (boot / "panicbutton/enrol.txt").exists(), "the code stayed on the boot partition"
    assert "systemd.run" not in (boot / "cmdline.txt").read_text(), "cmdline.txt kept the hook"
    wants = root / "etc/systemd/system/multi-user.target.wants/panicbutton-enrol.service"
    assert wants.is_symlink(), "the one-shot enrolment service was not enabled"

    step("second boot: enrol, fetch the wheelhouse, provision.sh, check, report (emulated)")
    began = time.monotonic()
    out = chroot(
        root,
        "/var/lib/panicbutton-enrol/firstboot.sh",
        "--enrol",
        env={"PANICBUTTON_SIMULATE": "1"},
    )
    figures["install_s"] = round(time.monotonic() - began, 1)
    print(out[-1500:])
    assert not (root / "var/lib/panicbutton-enrol").exists(), "the enrolment files stayed"
    current = (root / "opt/panicbutton/current").resolve()
    figures["venv_mib"] = round(du_mib(current), 1)
    report = site.read(lambda s: s.scalars(select(UnitInstall)).all())
    assert [(r.action, r.result) for r in report] == [("install", "passed")], report
    config = tomllib.loads((root / "etc/panicbutton/device.toml").read_text())
    assert config["mqtt"]["port"] == tls_port, config["mqtt"]
    assert config["mqtt"]["ca_file"] == "/etc/panicbutton/ca.crt", config["mqtt"]
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in (root / "etc/panicbutton").iterdir()}
    assert modes["mqtt-password"] == modes["device-token"] == "0o640", modes
    assert "lgpio" in sh("ls", current / "lib/python3.11/site-packages"), "no lgpio in the venv"

    log = site.folder / "agent.log"
    with supervised_agent(root, log):
        step("the agent starts as its service would (simulated pins), over TLS")
        figures["start_to_armed_s"] = round(
            wait("armed", lambda: agent_state(root).get("light") == "armed", 180), 1
        )
        pid = int(agent_state(root)["pid"])
        time.sleep(2)  # let the agent settle before the resident memory is read
        figures["agent_rss_mib"] = round(rss_kib(pid) / 1024, 1)
        step("press")
        pressed = time.monotonic()
        os.kill(pid, signal.SIGUSR1)
        wait(
            "the unit showing received",
            lambda: agent_state(root).get("light") in ("received", "help_coming"),
            60,
        )
        figures["press_to_received_s"] = round(time.monotonic() - pressed, 2)
        incidents = site.read(
            lambda s: [(i.device_id, i.kind) for i in s.scalars(select(Incident))]
        )
        assert (DEVICE, IncidentKind.PANIC) in incidents, incidents
        assert twilio.wait_for(lambda sent: any(m.to == STAFF for m in sent), 30), "no SMS"
        assert any("Room 1" in m.body for m in twilio.sent), [m.body for m in twilio.sent]

        step(f"upgrade to {newer} from the server")
        served.unlink()
        served.symlink_to(house_2)
        began = time.monotonic()
        out = chroot(
            root,
            "/opt/panicbutton/current/bin/panicbutton",
            "device",
            "upgrade",
            "--config",
            "/etc/panicbutton/device.toml",
        )
        figures["upgrade_s"] = round(time.monotonic() - began, 1)
        print(out[-1200:])
        state = agent_state(root)
        assert state.get("version") == newer, state
        assert state.get("light") in ("armed", "received"), state
        assert (root / "opt/panicbutton/previous").resolve() == current
        wait(
            "the server seeing the new version",
            lambda: site.read(lambda s: s.scalar(select(DeviceRecord.version))) == newer,
            60,
        )

        step("rollback")
        out = chroot(
            root,
            "/opt/panicbutton/current/bin/panicbutton",
            "device",
            "upgrade",
            "--rollback",
            "--config",
            "/etc/panicbutton/device.toml",
        )
        print(out[-600:])
        state = agent_state(root)
        assert state.get("version") == __version__, state
        assert state.get("light") in ("armed", "received"), state
        assert (root / "opt/panicbutton/current").resolve() == current
        actions = site.read(
            lambda s: [
                (r.action, r.result)
                for r in s.scalars(select(UnitInstall).order_by(UnitInstall.id))
            ]
        )
        assert actions == [("install", "passed"), ("upgrade", "passed"), ("rollback", "passed")], (
            actions
        )

        step("an upgrade to an agent that never arms: the running one comes back by itself")
        served.unlink()
        served.symlink_to(house_3)
        failed = subprocess.run(
            [
                *("chroot", str(root), "/opt/panicbutton/current/bin/panicbutton", "device"),
                *("upgrade", "--arm-within", "20", "--config", "/etc/panicbutton/device.toml"),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=900,
        )
        print(failed.stdout[-800:])
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert "did not show armed within 20 s" in failed.stdout, failed.stdout
        assert f"{__version__} is armed again" in failed.stdout, failed.stdout
        state = agent_state(root)
        assert state.get("version") == __version__, state
        assert (root / "opt/panicbutton/current").resolve() == current
        last = site.read(
            lambda s: s.scalars(select(UnitInstall).order_by(UnitInstall.id.desc())).first()
        )
        assert (last.action, last.version, last.result) == ("upgrade", broken, "failed")

        step("provision.sh again with a wrong password: the install before is put back")
        etc = root / "etc/panicbutton"
        bundle = root / "root/bad-bundle"
        shutil.copytree(etc, bundle)
        shutil.copytree(served.parent / "house-1", bundle / "wheelhouse")
        (bundle / "mqtt-password").write_text("not-the-password\n")
        before = {p.name: p.read_bytes() for p in etc.iterdir()}
        again = subprocess.run(
            [
                *("chroot", str(root), "bash", "/root/bad-bundle/wheelhouse/provision.sh"),
                "/root/bad-bundle",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=900,
            env={
                "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                "LANG": "C.UTF-8",
                "PANICBUTTON_SIMULATE": "1",
            },
        )
        print((again.stdout + again.stderr)[-700:])
        assert again.returncode == 1, again.stdout + again.stderr
        assert "refused the login of unit-1" in again.stdout, again.stdout
        assert "putting back what was installed before" in again.stderr, again.stderr
        assert {p.name: p.read_bytes() for p in etc.iterdir()} == before
        assert (root / "opt/panicbutton/current").resolve() == current
        assert agent_state(root).get("light") in ("armed", "received"), agent_state(root)
    return figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tests.pi.check", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--arch", choices=sorted(QEMU), default="arm64")
    p.add_argument("--json", type=Path, help="write the figures here as JSON")
    p.add_argument("--keep", action="store_true", help="keep the run's folder (its logs)")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("pi-check: run as root (it uses chroot and mounts)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="panicbutton-pi-"))
    began = time.monotonic()
    try:
        figures = run(args.arch, work)
    except AssertionError:
        traceback.print_exc()
        print(f"pi-check: FAILED (logs in {work})", file=sys.stderr)
        args.keep = True
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    figures |= {"arch": args.arch, "total_s": round(time.monotonic() - began, 1)}
    print(f"\npi-check passed ({args.arch}, emulated by qemu: not a Pi's speed):")
    for k, v in figures.items():
        print(f"  {k:20} {v}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
