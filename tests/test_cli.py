"""The `panicbutton` command as an installer meets it: help, clear errors, simulation."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from device.indicator import Light
from tests.harness import System, wait_until

CLI = [sys.executable, "-m", "panicbutton.cli"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PANICBUTTON_")}
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
        check=False,
    )


def test_an_unknown_log_format_is_refused_saying_what_it_may_be() -> None:
    result = run("server", env={"PANICBUTTON_LOG_FORMAT": "xml"})
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "panicbutton: PANICBUTTON_LOG_FORMAT must be text or json, got 'xml': json writes "
        "one JSON object a line, text (the default) plain lines"
    )


def test_every_subcommand_has_help() -> None:
    for sub, words in (
        ("server", "PANICBUTTON_"),
        ("device", "--simulate"),
        ("demo", "reply PHONE TEXT"),
    ):
        result = run(sub, "--help")
        assert result.returncode == 0
        assert words in " ".join(result.stdout.split())


def test_server_without_settings_says_what_is_missing(tmp_path: Path) -> None:
    result = run("server", env={"PANICBUTTON_SITE_FILE": str(tmp_path / "site.toml")})
    assert result.returncode == 2
    assert "PANICBUTTON_MQTT_PASSWORD is empty or a placeholder" in result.stderr
    assert "API_TOKEN" not in result.stderr  # retired: people sign in
    assert "PANICBUTTON_TWILIO_ACCOUNT_SID is not set" in result.stderr
    assert "Traceback" not in result.stderr


def test_device_with_missing_config_says_where_to_get_one(tmp_path: Path) -> None:
    result = run("device", "--config", str(tmp_path / "device.toml"))
    assert result.returncode == 2
    assert "file not found; copy firmware_config/device.example.toml" in result.stderr


def confirmed_on_disk(state_dir: Path) -> int:
    """Alerts the unit's outbox holds as confirmed by the server."""
    path = state_dir / "outbox.sqlite3"
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(path)) as db:
        try:
            return int(db.execute("SELECT count(*) FROM alerts WHERE confirmed = 1").fetchone()[0])
        except sqlite3.OperationalError:  # the unit has not created its table yet
            return 0


def test_simulated_unit_alerts_on_enter(system: System, tmp_path: Path) -> None:
    config = tmp_path / "device.toml"
    config.write_text(f"""
[device]
id = "unit-3"
state_dir = "{tmp_path / "state"}"
[mqtt]
host = "127.0.0.1"
port = {system.mqtt_port}
password = "{system.users["unit-3"]}"
""")
    proc = subprocess.Popen(
        [*CLI, "device", "--simulate", "--config", str(config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdin is not None
        proc.stdin.write("\n")  # read once the unit has started
        proc.stdin.flush()
        assert system.twilio.wait_for(lambda sent: len(sent) == 2)
        # The unit has the server's answer (and shows it) before stdin closes.
        assert wait_until(lambda: confirmed_on_disk(tmp_path / "state") == 1)
        out, _ = proc.communicate(timeout=15)  # closes stdin: the simulation ends
    finally:
        proc.kill()
    assert "press Enter (or send SIGUSR1) to press the button" in out
    assert f"light: {Light.RECEIVED}" in out
    assert all("Room 3" in sent.body for sent in system.twilio.sent)


def test_migrating_says_so_in_one_line_without_alembic_chatter(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'pb.sqlite3'}"

    first = run("db", "migrate", env={"PANICBUTTON_DATABASE_URL": url})
    again = run("db", "migrate", env={"PANICBUTTON_DATABASE_URL": url})

    assert first.returncode == again.returncode == 0, first.stderr
    assert "database schema upgraded from empty to " in first.stderr
    assert "alembic" not in (first.stdout + first.stderr).lower()
    assert again.stderr == ""  # nothing to upgrade, nothing said
    assert "the database schema is up to date" in again.stdout
