"""``panicbutton provision --csv``: many units' bundles at once, the broker's password
file changed in place, and Mosquitto reloading it with no restart."""

from __future__ import annotations

import base64
import csv
import hashlib
import operator
import os
import stat
import subprocess
import sys
import threading
import tomllib
from functools import partial
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from device.config import load_config
from panicbutton.wire import PREFIX, alert_topic
from server.site import parse_site
from tests.harness import MONITOR, Broker, wait_until
from tests.test_provision import REPO, fake_wheelhouse

LABELS = (
    "Sala de consiliere 1, etajul 2",  # a comma: quoted in the CSV
    "Стая 3 (приземен етаж)",
    'Кабинет "Б", 2-й этаж',
    "Țară și școală",
)
CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def provision(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "panicbutton.cli", "provision", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )


def write_csv(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["device_id", "room_id", "label"])
        writer.writerows(rows)
    return path


def units(n: int, first: int = 0) -> list[tuple[str, str, str]]:
    return [(f"unit-{i}", f"room-{i}", LABELS[i % len(LABELS)]) for i in range(first, first + n)]


def test_bulk_provision_names_every_bad_row_and_writes_nothing(tmp_path: Path) -> None:
    rooms = tmp_path / "rooms.csv"
    rooms.write_text(
        "device_id,room_id,label\n"
        'unit-1,room-1,"Стая 1, етаж 2"\n'  # line 2: good
        "Unit_2,room-2,Room 2\n"  # line 3: a device id with capitals
        "unit-3,room-3,\n"  # line 4: no label
        "unit-1,room-4,Room 4\n"  # line 5: the device of line 2
        "unit-5,room-1,Room 5\n"  # line 6: the room of line 2
        "unit-6,room-6,Room 6, first floor\n"  # line 7: a comma outside quotes
        "unit-7,room-7\n"  # line 8: no label field
        "\n"  # a blank line is skipped
        "unit-9,Room 9,Room 9\n"  # line 10: a room id with a space
        "panicbutton-server-2,room-11,Room 11\n",  # line 11: a server instance's user
        encoding="utf-8",
    )
    result = provision("--csv", rooms, "--broker-host", "127.0.0.1", "--out", tmp_path / "out")
    assert result.returncode == 2
    assert f"{rooms}: 8 problems, nothing written:" in result.stderr
    for expected in (
        "line 3: device id 'Unit_2' must be 1-23 characters of a-z, 0-9, '-'",
        "line 4: the label is empty",
        "line 5: device id 'unit-1' is also on line 2",
        "line 6: room id 'room-1' is also on line 2",
        "line 7: 4 fields, expected 3 (device_id,room_id,label): put a label holding commas",
        "line 8: 2 fields, expected 3",
        "line 10: room id 'Room 9' must be 1-63 characters",
        "line 11: device id 'panicbutton-server-2' is kept for the server's own broker users",
    ):
        assert expected in result.stderr
    assert "line 2" not in result.stderr.replace("also on line 2", "")
    assert not (tmp_path / "out").exists()


def test_bulk_provision_explains_a_wrong_header_and_encoding(tmp_path: Path) -> None:
    rooms = tmp_path / "rooms.csv"
    rooms.write_text("device,room,label\nunit-1,room-1,Room 1\n")
    result = provision("--csv", rooms, "--broker-host", "127.0.0.1", "--out", tmp_path / "out")
    assert result.returncode == 2
    assert "the first line must be the header device_id,room_id,label" in result.stderr
    # Saved by a spreadsheet in a Cyrillic code page rather than UTF-8.
    rooms.write_bytes("device_id,room_id,label\nunit-1,room-1,Стая 1\n".encode("cp1251"))
    result = provision("--csv", rooms, "--broker-host", "127.0.0.1", "--out", tmp_path / "out")
    assert result.returncode == 2
    assert "line 2 is not UTF-8: save the file as 'CSV UTF-8'" in result.stderr
    assert not (tmp_path / "out").exists()


def test_bulk_provision_writes_fifty_units_that_load(tmp_path: Path) -> None:
    rooms = write_csv(tmp_path / "rooms.csv", units(50))
    (tmp_path / "ca.crt").write_text(CA)
    house = fake_wheelhouse(tmp_path / "house")
    for name in ("provision.sh", "unit_fetch.py", "firstboot.sh"):
        (house / name).write_text("#\n")
    broker_file = tmp_path / "passwd"
    old_unit_3 = "unit-3:$7$101$b2xk$b2xk"
    broker_file.write_text(f"panicbutton-server:$7$101$c2Vy$c2Vy\n{old_unit_3}\n")
    broker_file.chmod(0o640)
    out = tmp_path / "out"
    result = provision(
        *("--csv", rooms, "--broker-host", "mqtt.house.example", "--ca-file", tmp_path / "ca.crt"),
        *("--server-url", "https://alarm.example.test", "--wheelhouse", house),
        *("--out", out, "--passwd", broker_file, "--replace"),
    )
    assert result.returncode == 0, result.stderr
    assert f"50 bundles in {out}" in result.stdout
    assert f"{broker_file}: 49 added, 1 replaced (new passwords for unit-3)" in result.stdout

    lines = (out / "passwd-lines").read_text().splitlines()
    assert len(lines) == 50
    site = parse_site(
        {
            **tomllib.loads((out / "site-rooms.toml").read_text(encoding="utf-8")),
            "staff": [{"id": "desk", "name": "Desk", "phone": "+32470000009"}],
            "duty": {"on_duty": ["desk"]},
        }
    )
    assert [(r.device, r.id, r.label) for r in site.rooms] == units(50)
    for i, (room, line) in enumerate(zip(site.rooms, lines, strict=True)):
        bundle = out / room.device
        assert stat.S_IMODE(bundle.stat().st_mode) == 0o700
        assert stat.S_IMODE((bundle / "mqtt-password").stat().st_mode) == 0o600
        # The password-file line is Mosquitto's PBKDF2-SHA512 of this bundle's password.
        user, _, _, iterations, salt, digest = line.replace(":", "$", 1).split("$")
        assert user == room.device
        password = (bundle / "mqtt-password").read_text().strip()
        assert hashlib.pbkdf2_hmac(
            "sha512", password.encode(), base64.b64decode(salt), int(iterations), 64
        ) == base64.b64decode(digest)
        token = (bundle / "device-token").read_text().strip()
        assert room.token_sha256 == hashlib.sha256(token.encode()).hexdigest()
        # The config loads once its /etc paths point into the bundle, and names its room.
        text = (bundle / "device.toml").read_text(encoding="utf-8")
        assert text.splitlines()[0].startswith(f"# panicbutton room unit unit-{i} ({room.label})")
        (bundle / "device.toml").write_text(text.replace("/etc/panicbutton", str(bundle)))
        config = load_config(bundle / "device.toml")
        assert (config.device_id, config.mqtt.port, config.mqtt.password) == (
            room.device,
            8883,
            password,
        )
        assert (bundle / "provision.sh").read_bytes() == (
            REPO / "firmware_config" / "provision.sh"
        ).read_bytes()
        assert (bundle / "wheelhouse").resolve() == (out / "wheelhouse").resolve()

    # One wheelhouse for all, found through the bundle's link by the installer itself.
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith("unit-")) == [
        "passwd-lines",
        "site-rooms.toml",
        "wheelhouse",
    ]
    bundle = out / "unit-7"
    env = {k: v for k, v in os.environ.items() if k != "WHEELHOUSE"}
    dry = subprocess.run(
        ["bash", str(bundle / "provision.sh"), str(bundle)],
        env={**env, "ROOT": str(tmp_path / "root"), "PANICBUTTON_PROVISION_DRY": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert dry.returncode == 0, dry.stderr
    assert f"agent 0.1.0 from {bundle}/wheelhouse" in dry.stdout

    # The broker's file: unit-3's line replaced where it stood, the server's kept.
    kept = broker_file.read_text().splitlines()
    assert kept[0] == "panicbutton-server:$7$101$c2Vy$c2Vy"
    assert kept[1] == next(x for x in lines if x.startswith("unit-3:"))
    assert kept[1] != old_unit_3
    assert kept[2:] == [x for x in lines if not x.startswith("unit-3:")]
    assert stat.S_IMODE(broker_file.stat().st_mode) == 0o640
    # No temporary file is left (the lock file, empty, stays beside the password file).
    assert not [
        p for p in tmp_path.iterdir() if p.name.startswith(".passwd") and p.name != ".passwd.lock"
    ]

    # Each unit is provisioned once: a second run names what is there, and writes nothing.
    again = provision("--csv", rooms, "--broker-host", "127.0.0.1", "--out", out)
    assert again.returncode == 2
    assert f"{out} already holds unit-0, unit-1," in again.stderr
    assert "and 32 more" in again.stderr  # 50 bundles and 2 files, 20 named


class Client:
    """A paho client that records whether it is connected (and every disconnection)."""

    def __init__(self, port: int, user: str, password: str) -> None:
        self.connected = threading.Event()
        self.refused: list[str] = []
        self.disconnects: list[str] = []
        self.received: list[str] = []
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=user, protocol=MQTTProtocolVersion.MQTTv311
        )
        self.client.username_pw_set(user, password)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = lambda c, u, msg: self.received.append(msg.topic)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_connect(self, c: Any, u: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self.refused.append(str(reason))
            self.client.disconnect()  # no retry: the test asks again after the reload
        else:
            self.connected.set()

    def _on_disconnect(self, c: Any, u: Any, flags: Any, reason: Any, props: Any) -> None:
        self.disconnects.append(str(reason))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.mosquitto
def test_broker_reloads_new_units_without_dropping_clients(tmp_path: Path, broker: Broker) -> None:
    assert broker.process.pid is not None
    pid_file = tmp_path / "mosquitto.pid"
    pid_file.write_text(f"{broker.process.pid}\n")
    passwd = broker.process.files.folder / "passwd"
    watcher = Client(broker.port, MONITOR, broker.users[MONITOR])
    try:
        assert watcher.connected.wait(5)
        watcher.client.subscribe(f"{PREFIX}/+/alert", qos=1)

        # Written into the file but not reloaded: the broker does not know them yet.
        first = write_csv(tmp_path / "first.csv", [("unit-21", "room-21", "Стая 21")])
        common = ("--broker-host", "127.0.0.1", "--passwd", passwd)
        done = provision("--csv", first, "--out", tmp_path / "first", *common)
        assert done.returncode == 0, done.stderr
        assert "now reload Mosquitto" in done.stdout
        early = Client(broker.port, "unit-21", _password(tmp_path / "first" / "unit-21"))
        assert wait_until(lambda: early.refused)
        early.close()

        second = write_csv(tmp_path / "second.csv", [("unit-22", "room-22", "Стая 22")])
        done = provision(
            *("--csv", second, "--out", tmp_path / "second", *common),
            *("--reload-broker", "--broker-pid-file", pid_file),
        )
        assert done.returncode == 0, done.stderr
        assert f"sent SIGHUP to the broker (process {broker.process.pid}" in done.stdout
        for folder in (tmp_path / "first" / "unit-21", tmp_path / "second" / "unit-22"):
            unit = Client(broker.port, folder.name, _password(folder))
            try:
                assert unit.connected.wait(5), unit.refused
                # The ACL's pattern already covers it: its alert reaches the server's side.
                topic = alert_topic(folder.name)
                unit.client.publish(topic, b"{}", qos=1).wait_for_publish(5)
                assert wait_until(partial(operator.contains, watcher.received, topic))
            finally:
                unit.close()
        # The client connected before the reload was never dropped.
        assert watcher.disconnects == []
        assert watcher.client.is_connected()
    finally:
        watcher.close()


def test_reload_refuses_a_pid_file_naming_another_program(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text("")
    pid_file = tmp_path / "stale.pid"
    pid_file.write_text(f"{os.getpid()}\n")  # this test's own Python, not a broker
    result = provision(
        *("unit-8", "--room", "room-8", "--label", "Room 8", "--broker-host", "127.0.0.1"),
        *("--out", tmp_path / "out", "--passwd", passwd, "--reload-broker"),
        *("--broker-pid-file", pid_file),
    )
    assert result.returncode == 1
    assert "not mosquitto: is the pid file stale?" in result.stderr
    # The bundle and the password line are written; only the reload is left to do.
    assert passwd.read_text().startswith("unit-8:$7$")
    assert f"{passwd}: 1 added; not reloaded (" in result.stdout


def _password(bundle: Path) -> str:
    return (bundle / "mqtt-password").read_text().strip()


def test_a_unit_already_in_the_password_file_keeps_its_line_without_replace(
    tmp_path: Path,
) -> None:
    """A CSV row that repeats an installed unit's id must not cut its button off."""
    rooms = write_csv(tmp_path / "rooms.csv", units(3))
    broker_file = tmp_path / "passwd"
    before = "panicbutton-server:$7$101$c2Vy$c2Vy\nunit-2:$7$101$b2xk$b2xk\n"
    broker_file.write_text(before)
    result = provision(
        *("--csv", rooms, "--broker-host", "127.0.0.1", "--out", tmp_path / "out"),
        *("--passwd", broker_file),
    )
    assert result.returncode == 1
    assert "already has 1 of these users (unit-2)" in result.stderr
    assert "run again with --replace" in result.stderr
    assert broker_file.read_text() == before
