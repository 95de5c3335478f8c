"""The ``panicbutton`` command: ``server``, ``device``, ``demo``, ``provision``, ``audit``,
``db``, ``site``, ``people``.

Its options and their help are here; what each subcommand does is in
:mod:`panicbutton.subcommands`, where each imports its side lazily, so a room unit
(which installs only the ``device`` extra) never imports server code.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from panicbutton import __version__, logformat, subcommands
from panicbutton.redact import protect_handlers


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="panicbutton",
        description="Panic-button alerts: room units, a central server, paging by SMS.",
    )
    p.add_argument("--version", action="version", version=f"panicbutton {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser(
        "server",
        help="run the central server (MQTT ingest, paging, HTTP API)",
        description="Run the central server. Settings come from PANICBUTTON_* "
        "environment variables (see docs/install/server.md); the site file "
        "(rooms, staff, duty) from PANICBUTTON_SITE_FILE.",
    )
    s.add_argument(
        "--host", help="HTTP listen address (default: PANICBUTTON_HTTP_HOST or 127.0.0.1)"
    )
    s.add_argument("--port", type=int, help="HTTP port (default: PANICBUTTON_HTTP_PORT or 8080)")
    s.set_defaults(func=subcommands.server)

    d = sub.add_parser(
        "device",
        help="run the room unit agent (button, light, outbox)",
        description="Run the room unit agent on a Raspberry Pi. With --simulate it "
        "runs on any computer: press Enter to press the button.",
    )
    d.add_argument(
        "--config",
        type=Path,
        default=Path("/etc/panicbutton/device.toml"),
        help="firmware config file (default: /etc/panicbutton/device.toml)",
    )
    d.add_argument(
        "action",
        nargs="?",
        choices=["run", "check", "upgrade"],
        default="run",
        help="run (default): the agent; check: test wiring, broker login, the server round "
        "trip (a test alert that pages only test recipients) and the HTTPS path; upgrade "
        "(as root): install the server's newer agent beside this one and switch over once "
        "it is armed (--rollback: back to the one before)",
    )
    d.add_argument(
        "--rollback", action="store_true", help="with upgrade: go back to the previous agent"
    )
    d.add_argument(
        "--arm-within",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="with upgrade: how long the new agent has to show armed before the old one "
        "is put back (default 60)",
    )
    d.add_argument(
        "--installed",
        action="store_true",
        help="with check: only what an upgrade checks before switching over, while the "
        "running agent holds the pins and the broker session (config, libraries, files)",
    )
    d.add_argument(
        "--wait-press",
        type=float,
        default=0,
        metavar="SECONDS",
        help="with check: also wait this long for a real press of the button",
    )
    d.add_argument(
        "--no-test-alert", action="store_true", help="with check: skip the server round trip"
    )
    d.add_argument(
        "--simulate", action="store_true", help="use gpiozero's mock pins; Enter presses the button"
    )
    d.set_defaults(func=subcommands.device)

    _provision_parser(sub)

    m = sub.add_parser(
        "demo",
        help="run the whole system locally: broker, server, three rooms",
        description="Run broker, server (SQLite) and simulated rooms in one "
        "process; SMS are printed instead of sent. Commands on standard input: "
        "a room number presses that room's button; 'reply PHONE TEXT' plays an "
        "SMS reply from a staff phone; 'help'; 'quit'.",
    )
    m.add_argument(
        "--broker",
        choices=["auto", "mosquitto", "embedded"],
        default="auto",
        help="auto: a local mosquitto if installed, else the embedded broker",
    )
    m.add_argument("--rooms", type=int, default=3, help="simulated rooms (default 3)")
    m.set_defaults(func=subcommands.demo)

    a = sub.add_parser(
        "audit",
        help="the incident log: make its key, export it, verify an export",
        description="keygen: make the log's Ed25519 signing key. export: write a "
        "verifiable bundle (needs the server's settings; the export is itself "
        "logged). verify: check a bundle (needs only this package and cryptography). "
        "acknowledge-failure: stop the hourly texts about a failed check of the log "
        "(recorded in the log; the server still signs nothing).",
    )
    a.add_argument("action", choices=["keygen", "export", "verify", "acknowledge-failure"])
    a.add_argument("bundle", nargs="?", type=Path, help="verify: the bundle (directory or .zip)")
    a.add_argument("--name", default="panicbutton.local/log", help="keygen: the log's name")
    a.add_argument("--out", type=Path, help="keygen: key file; export: bundle (.zip or directory)")
    a.add_argument("--scope", default="full", help="export: full, incident:<id> or person:<id>")
    a.add_argument("--by", help="export, acknowledge-failure: who asks (your pseudonymous id)")
    a.add_argument(
        "--reason", help="acknowledge-failure: what you know or did about the failed check"
    )
    a.add_argument("--justification", help="export: why (kept with the access record)")
    a.add_argument("--with-personal", action="store_true", help="export: include personal data")
    a.add_argument(
        "--report", choices=["csv", "pdf"], help="export: also write the manager's report beside it"
    )
    a.set_defaults(func=subcommands.audit)

    b = sub.add_parser(
        "db",
        help="database administration (PostgreSQL): migrate, grant the application role",
        description="migrate: bring the schema up to date (run as the owner role). "
        "grant ROLE: give the application role what it needs, and on the incident "
        "log only SELECT and INSERT. Uses PANICBUTTON_DATABASE_URL (the owner's).",
    )
    b.add_argument("action", choices=["migrate", "grant"])
    b.add_argument("role", nargs="?", help="grant: the application's database role")
    b.set_defaults(func=subcommands.db)
    _wheelhouse_parser(sub)
    _site_parser(sub)
    _people(sub)
    return p


def _provision_parser(sub: Any) -> None:
    v = sub.add_parser(
        "provision",
        help="make credentials and config for new room units (one, or many from a CSV)",
        description="Write a bundle (config, MQTT password, HTTPS token) for one "
        "new room unit and print the lines to add to the broker's password file "
        "and to the site file; or, with --csv, a bundle for every unit in the file and "
        "those lines in OUT/passwd-lines and OUT/site-rooms.toml. Copy a bundle to its Pi "
        "and run firmware_config/provision.sh there.",
    )
    v.add_argument(
        "device_id", nargs="?", help="the unit's id, e.g. unit-4 (also its MQTT user name)"
    )
    v.add_argument("--room", help="the room's id in the site file, e.g. room-4")
    v.add_argument("--label", help="what staff read in SMS, e.g. 'Room 4'")
    v.add_argument(
        "--csv",
        type=Path,
        help="many units: a UTF-8 CSV file with the header device_id,room_id,label "
        "(instead of DEVICE_ID, --room and --label)",
    )
    v.add_argument("--broker-host", required=True, help="the broker's host name, as the Pi sees it")
    v.add_argument(
        "--broker-port", type=int, help="the broker's port, if not 8883 (TLS) or 1883 (plain)"
    )
    v.add_argument("--server-url", help="the server's https:// base URL for the second path")
    v.add_argument(
        "--ca-file",
        type=Path,
        help="the broker's CA certificate (TLS, 8883); needed unless the broker is on the unit",
    )
    v.add_argument(
        "--wheelhouse",
        type=Path,
        help="copy this wheelhouse into the bundle (with --csv: once, into OUT/wheelhouse), "
        "for units that cannot reach the server",
    )
    v.add_argument("--out", type=Path, default=Path(), help="where to write the bundles")
    v.add_argument(
        "--passwd",
        type=Path,
        metavar="FILE",
        help="also put the units' lines into the broker's password file FILE, atomically, "
        "keeping its mode and owner; a user already in it is refused unless --replace",
    )
    v.add_argument(
        "--replace",
        action="store_true",
        help="with --passwd: give users already in the password file new passwords (a unit "
        "installed with the old one loses the broker until it gets its new bundle)",
    )
    v.add_argument(
        "--reload-broker",
        action="store_true",
        help="with --passwd: then have Mosquitto re-read it (SIGHUP, no restart): "
        "systemctl reload mosquitto, or the process in --broker-pid-file",
    )
    v.add_argument(
        "--broker-pid-file",
        type=Path,
        metavar="FILE",
        help="with --reload-broker: the broker's pid file (pid_file in mosquitto.conf), "
        "where systemd does not run it",
    )
    v.set_defaults(func=subcommands.provision)


def _wheelhouse_parser(sub: Any) -> None:
    w = sub.add_parser(
        "wheelhouse",
        help="build what room units install from the server (no internet in the room)",
        description="build: write the agent's wheel (no server code), its dependencies and "
        "lgpio for 64- and 32-bit Raspberry Pi OS and Debian, pinned by SHA-256, and the "
        "installer, into --out. Needs PyPI once; then set PANICBUTTON_WHEELHOUSE_DIR to "
        "serve it to units.",
    )
    w.add_argument("action", choices=["build"])
    w.add_argument("--out", type=Path, required=True, help="the folder (made or replaced)")
    w.add_argument(
        "--version", dest="stamp", help="stamp the agent with this version (tests of upgrades)"
    )
    w.set_defaults(func=subcommands.wheelhouse)


def _site_parser(sub: Any) -> None:
    t = sub.add_parser(
        "site",
        help="the site's configuration: import a site file, export the one in force",
        description="import FILE: show what the site file changes (rooms, staff, shifts, "
        "escalation), then apply it in one go after you confirm. export: write the "
        "configuration in force as a site file. Uses PANICBUTTON_DATABASE_URL.",
    )
    t.add_argument("action", choices=["import", "export"])
    t.add_argument("file", nargs="?", type=Path, help="import: the site file (TOML)")
    t.add_argument("--yes", action="store_true", help="import: apply without asking")
    t.add_argument(
        "--phones-confirmed",
        action="store_true",
        help="import: count the file's phone numbers as confirmed (they are in use)",
    )
    t.add_argument("--out", type=Path, help="export: write here (default: print it)")
    t.set_defaults(func=subcommands.site)


def _people(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pp = sub.add_parser(
        "people",
        help="accounts: invite someone (a one-time sign-in link), make a personal API token",
        description="invite: open the account if needed and print a one-time link to set "
        "up sign-in (this is how the first manager is made; there is no default account). "
        "token: print a personal API token once. Uses the server's PANICBUTTON_* settings.",
    )
    pp.add_argument("action", choices=["invite", "token"])
    pp.add_argument("--id", required=True, help="the person's pseudonymous id (like night-staff)")
    pp.add_argument("--name", default="", help="invite: what colleagues read (never logged)")
    pp.add_argument(
        "--role", action="append", default=[], help="invite: a role (repeat for several)"
    )
    pp.add_argument("--phone", help="invite: E.164 number, like +32470123456")
    pp.add_argument("--language", choices=["fr", "nl", "en"], default="en")
    pp.add_argument("--hours", type=int, default=72, help="invite: hours the link works (72)")
    pp.add_argument(
        "--scope", action="append", default=[], help="token: a right it carries (repeat)"
    )
    pp.add_argument("--days", type=int, default=90, help="token: days until it expires (90)")
    pp.add_argument("--label", default="", help="token: what it is for")
    pp.set_defaults(func=subcommands.people)


def _configure_logging(args: argparse.Namespace) -> None:
    """INFO by default (the demo: only warnings, it prints its own lines); -v: DEBUG.
    Text lines, or JSON ones (``PANICBUTTON_LOG_FORMAT``, :mod:`panicbutton.logformat`;
    ValueError for a format it does not know).

    Before any subcommand imports its libraries: some log on import (Alembic's
    plugin set-up). Every handler redacts link tokens and secrets.
    """
    json_lines = logformat.chosen() == "json"
    quiet = args.command == "demo"
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING if quiet else logging.INFO,
        format=logformat.TEXT,
    )
    if not args.verbose:
        # Alembic's INFO is its set-up chatter; the server says itself when the
        # schema was upgraded (server/db.py).
        logging.getLogger("alembic").setLevel(logging.WARNING)
    protect_handlers(json_lines=json_lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ["audit", "verify"]:
        # The verifier parses its own options (--key, --trusted).
        from panicbutton.log.verify import main as verify_main  # noqa: PLC0415

        return verify_main(argv[2:])
    args = parser().parse_args(argv)
    try:
        _configure_logging(args)
    except ValueError as exc:
        print(f"panicbutton: {exc}", file=sys.stderr)
        return 2
    try:
        code: int = args.func(args)
    except ModuleNotFoundError as exc:
        if args.command == "device" or exc.name is None:
            raise
        # A room unit installs the agent only (panicbutton-device), not the server.
        print(
            f"panicbutton {args.command}: {exc.name} is not installed here: this is a room "
            "unit's agent (panicbutton-device); run it where the server is installed",
            file=sys.stderr,
        )
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
