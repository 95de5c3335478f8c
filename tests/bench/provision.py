"""Bulk provisioning: ``panicbutton provision --csv`` of N units, against its floor.

The command runs as a subprocess, as an installer runs it: a CSV of N rooms (labels
in Romanian, Bulgarian and Russian, some with commas), TLS and the server's address
(so each bundle has its password, token, CA certificate and installer), and
``--passwd`` into a password file holding the server's line. Floor: the same folders
and files, of the same sizes, written by plain Python (no secrets, no hashing, no
TOML), and the same password file written once. Beside them: the interpreter's start
and argument parsing (``provision --help``, which imports no server code), and PBKDF2
alone (N ``mosquitto_hash``), to say where the time goes. Both write in the bench's
temporary folder: file creation is the bulk of either, and the floor shows what the
file system there costs.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from server.units.broker import mosquitto_hash

TARGET_UNITS = 10_000
TARGET_SECONDS = 60.0
#: The file system's speed comes and goes with the machine's other writers (and the
#: discards of files deleted before): the best of two rounds of each.
ROUNDS = 2
LABELS = ("Sala {i}, etajul 2", "Стая {i} (приземен етаж)", 'Кабинет "{i}", 2-й этаж')
CA = "-----BEGIN CERTIFICATE-----\n" + "MIIB" * 300 + "\n-----END CERTIFICATE-----\n"


@dataclass(frozen=True)
class ProvisionRun:
    units: int
    rounds: tuple[float, ...]  # the command's seconds, each round
    floor_rounds: tuple[float, ...]
    start_seconds: float
    hash_seconds: float
    files: int

    @property
    def seconds(self) -> float:
        return min(self.rounds)

    @property
    def floor_seconds(self) -> float:
        return min(self.floor_rounds)

    @property
    def rate(self) -> float:
        return self.units / self.seconds

    @property
    def floor_rate(self) -> float:
        return self.units / self.floor_seconds

    def report(self) -> list[str]:
        at_target = TARGET_UNITS / self.rate
        each = "rounds: " + ", ".join(f"{s:.2f}" for s in self.rounds)
        floor_each = "rounds: " + ", ".join(f"{s:.2f}" for s in self.floor_rounds)
        rows = [
            ("panicbutton provision --csv (subprocess)", self.seconds, each),
            ("  python start, arguments (provision --help)", self.start_seconds, ""),
            (f"  PBKDF2 alone ({self.units:,} mosquitto_hash)", self.hash_seconds, ""),
            ("floor: same folders and files, plain writes", self.floor_seconds, floor_each),
        ]
        return [
            "",
            f"9. Bulk provisioning: {self.units:,} units from a CSV (TLS, server URL, --passwd",
            f"   into a password file), {self.files:,} files and folders. Floor: the same",
            "   folders and files of the same sizes written by plain Python, no secrets or",
            f"   hashing. Best of {len(self.rounds)} rounds of each, in turn; in seconds:",
            "",
            *(f"   {label:<46} {s:>7.2f}  {rate}" for label, s, rate in rows),
            "",
            (
                f"   {self.rate:,.0f} units/s against the floor's {self.floor_rate:,.0f}: "
                f"{self.seconds / self.floor_seconds:.1f}x the floor's time"
            ),
            (
                f"   {TARGET_UNITS:,} units at this rate: {at_target:.1f} s "
                f"(target: under {TARGET_SECONDS:.0f} s)"
            ),
        ]


def write_rooms(path: Path, units: int) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["device_id", "room_id", "label"])
        for i in range(units):
            writer.writerow([f"unit-{i}", f"room-{i}", LABELS[i % len(LABELS)].format(i=i)])


def measure_provision(folder: Path, units: int, rounds: int = ROUNDS) -> ProvisionRun:
    """The command and its floor, in turn, ``rounds`` times; the best time of each."""
    folder.mkdir(parents=True, exist_ok=True)
    rooms = folder / "rooms.csv"
    write_rooms(rooms, units)
    (folder / "ca.crt").write_text(CA)
    command = [sys.executable, "-m", "panicbutton.cli", "provision"]
    started = time.perf_counter()
    subprocess.run([*command, "--help"], capture_output=True, check=True)
    start_seconds = time.perf_counter() - started
    seconds, floor_seconds = [], []
    for n in range(rounds):
        passwd = folder / f"passwd-{n}"
        passwd.write_text(f"panicbutton-server:{mosquitto_hash('x')}\n")
        passwd.chmod(0o640)
        out = folder / f"out-{n}"
        os.sync()  # what earlier parts (or rounds) wrote is not this round's to flush
        started = time.perf_counter()
        done = subprocess.run(
            [
                *command,
                *("--csv", str(rooms), "--broker-host", "mqtt.bench.example"),
                *("--ca-file", str(folder / "ca.crt")),
                *("--server-url", "https://alarm.bench.example"),
                *("--out", str(out), "--passwd", str(passwd)),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        seconds.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise RuntimeError(f"panicbutton provision --csv failed: {done.stderr.strip()}")
        tree = [(p.relative_to(out), p.is_dir(), p.stat().st_size) for p in sorted(out.rglob("*"))]
        floor = folder / f"floor-{n}"
        floor.mkdir()
        os.sync()
        started = time.perf_counter()
        for path, is_dir, length in tree:
            if is_dir:
                (floor / path).mkdir(mode=0o700)
            else:
                _write(floor / path, length)
        # The command's password file is on disk when it ends: so is the floor's.
        _write(floor / "passwd", passwd.stat().st_size, sync=True)
        floor_seconds.append(time.perf_counter() - started)
    started = time.perf_counter()
    for _ in range(units):
        mosquitto_hash("x" * 32)
    hash_seconds = time.perf_counter() - started
    return ProvisionRun(
        units, tuple(seconds), tuple(floor_seconds), start_seconds, hash_seconds, len(tree)
    )


def _write(path: Path, length: int, *, sync: bool = False) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, b"x" * length)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
