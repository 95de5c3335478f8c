"""The ``panicbutton`` command: ``server``, ``device``, ``demo``, ``provision``, ``audit``, ``db``.

Heavy imports happen inside each subcommand, so a room unit (which installs
only the ``device`` extra) never imports server code.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path

from panicbutton import __version__
from panicbutton.redact import protect_handlers


def _server(args: argparse.Namespace) -> int:
    from pydantic import ValidationError  # noqa: PLC0415

    from server.errors import ServerError  # noqa: PLC0415
    from server.settings import Settings  # noqa: PLC0415

    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"panicbutton server: {_pydantic_message(exc)}", file=sys.stderr)
        return 2
    from server.app import build, web_server  # noqa: PLC0415

    protect_handlers(settings.secret_values())
    try:
        server = build(settings)
    except ServerError as exc:
        print(f"panicbutton server: {exc}", file=sys.stderr)
        return 2
    web = web_server(
        server,
        host=args.host or settings.http_host,
        port=args.port or settings.http_port,
        log_level="debug" if args.verbose else "info",
    )
    # Ctrl-C: uvicorn shuts down cleanly, then raises KeyboardInterrupt again.
    with contextlib.suppress(KeyboardInterrupt):
        web.run()
    return 0 if web.started else 3  # 3: could not start (e.g. the port is taken)


def _pydantic_message(exc: Exception) -> str:
    errors: list[dict[str, object]] = getattr(exc, "errors", list)()
    return "; ".join(str(e.get("msg", e)).removeprefix("Value error, ") for e in errors) or str(exc)


def _device(args: argparse.Namespace) -> int:
    from device.errors import DeviceError  # noqa: PLC0415
    from device.run import run, run_check  # noqa: PLC0415

    try:
        if args.action == "check":
            return run_check(
                config_path=args.config,
                wait_press=args.wait_press,
                test_alert=not args.no_test_alert,
                simulate=args.simulate,
            )
        return run(config_path=args.config, simulate=args.simulate)
    except DeviceError as exc:
        print(f"panicbutton device: {exc}", file=sys.stderr)
        return 2


def _demo(args: argparse.Namespace) -> int:
    from demo.run import run_demo  # noqa: PLC0415

    return run_demo(broker=args.broker, rooms=args.rooms)


def _provision(args: argparse.Namespace) -> int:
    from server.errors import ServerError  # noqa: PLC0415
    from server.units.provision import provision  # noqa: PLC0415

    try:
        bundle = provision(
            device_id=args.device_id,
            room_id=args.room,
            label=args.label,
            out=args.out,
            broker_host=args.broker_host,
            server_url=args.server_url,
            ca_file=args.ca_file,
        )
    except ServerError as exc:
        print(f"panicbutton provision: {exc}", file=sys.stderr)
        return 2
    print(f"bundle for {args.device_id}: {bundle.folder} (copy it to the Pi; it holds secrets)\n")
    print("1. Append to the broker's password file, then reload Mosquitto:\n")
    print(f"   {bundle.passwd_line}\n")
    print("2. Add to the site file (PANICBUTTON_SITE_FILE), then restart the server:\n")
    print("   " + bundle.site_entry.replace("\n", "\n   ") + "\n")
    print(f"3. On the Pi: sudo firmware_config/provision.sh {bundle.folder.name}/")
    return 0


def _audit(args: argparse.Namespace) -> int:
    if args.action == "keygen":
        return _keygen(args)
    if args.action == "acknowledge-failure":
        return _acknowledge(args)
    return _export(args)


def _acknowledge(args: argparse.Namespace) -> int:
    """Stop the texts about a failed check of the log; recorded, with who and why."""
    from pydantic import ValidationError  # noqa: PLC0415

    from server.clock import SystemClock  # noqa: PLC0415
    from server.db import make_engine, sessions  # noqa: PLC0415
    from server.log.export import ID_RE  # noqa: PLC0415
    from server.log.failure import acknowledge_failure  # noqa: PLC0415
    from server.settings import Settings  # noqa: PLC0415

    reason = (args.reason or "").strip()
    if not args.by or not ID_RE.fullmatch(args.by) or len(reason) < 8:
        print(
            "panicbutton audit acknowledge-failure: give --by (your pseudonymous id: lowercase "
            "letters, digits, '-') and --reason (what was done, at least 8 characters)",
            file=sys.stderr,
        )
        return 2
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"panicbutton audit acknowledge-failure: {_pydantic_message(exc)}", file=sys.stderr)
        return 2
    engine = make_engine(settings.database_url)
    try:
        with sessions(engine).begin() as s:
            acknowledge_failure(
                s,
                by=args.by,
                reason=reason,
                now=SystemClock().now(),
                retention=settings.retention(),
            )
    except LookupError as exc:
        print(f"panicbutton audit acknowledge-failure: {exc}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    print(
        "acknowledged: the managers are no longer texted about this failure. The server "
        "still signs nothing: keep the checkpoint file, and see README "
        "'When the log fails its check'."
    )
    return 0


def _keygen(args: argparse.Namespace) -> int:
    from panicbutton.log import spec  # noqa: PLC0415

    out: Path | None = args.out
    if out is None:
        print("panicbutton audit keygen: say where with --out FILE", file=sys.stderr)
        return 2
    try:
        signer = spec.Signer.generate(args.name)
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except spec.LogFormatError as exc:
        print(f"panicbutton audit keygen: {exc}", file=sys.stderr)
        return 2
    except FileExistsError:
        print(
            f"panicbutton audit keygen: {out} exists; a log keeps its key for life "
            "(a new key cannot extend old checkpoints). Remove it yourself if you mean it.",
            file=sys.stderr,
        )
        return 2
    with os.fdopen(fd, "w") as f:
        f.write(signer.private_text())
    print(f"signing key written to {out} (mode 600): set PANICBUTTON_LOG_KEY_FILE={out}")
    print("Keep a copy offline. Publish the verifier key (inspectors pass it to --key):\n")
    print(f"   {signer.verifier}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from pydantic import ValidationError  # noqa: PLC0415

    from server.commands import export_to  # noqa: PLC0415
    from server.errors import ServerError  # noqa: PLC0415
    from server.settings import Settings  # noqa: PLC0415

    try:
        path, entries = export_to(
            Settings(),
            out=args.out,
            scope=args.scope,
            by=args.by,
            justification=args.justification,
            with_personal=args.with_personal,
            report=args.report,
        )
    except (ValidationError, ServerError, ValueError) as exc:
        print(f"panicbutton audit export: {_pydantic_message(exc)}", file=sys.stderr)
        return 2
    print(f"{entries} entries written to {path}")
    print(f"verify it with: panicbutton audit verify {path} --key <the published verifier key>")
    return 0


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
        "environment variables (see README: 'Running the server'); the site file "
        "(rooms, staff, duty) from PANICBUTTON_SITE_FILE.",
    )
    s.add_argument(
        "--host", help="HTTP listen address (default: PANICBUTTON_HTTP_HOST or 127.0.0.1)"
    )
    s.add_argument("--port", type=int, help="HTTP port (default: PANICBUTTON_HTTP_PORT or 8080)")
    s.set_defaults(func=_server)

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
        choices=["run", "check"],
        default="run",
        help="run (default): the agent; check: test wiring, broker login, the server round "
        "trip (a test alert that pages only test recipients) and the HTTPS path",
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
    d.set_defaults(func=_device)

    v = sub.add_parser(
        "provision",
        help="make credentials and config for a new room unit",
        description="Write a bundle (config, MQTT password, HTTPS token) for one "
        "new room unit and print the lines to add to the broker's password file "
        "and to the site file. Copy the bundle to the Pi and run "
        "firmware_config/provision.sh there.",
    )
    v.add_argument("device_id", help="the unit's id, e.g. unit-4 (also its MQTT user name)")
    v.add_argument("--room", required=True, help="the room's id in the site file, e.g. room-4")
    v.add_argument("--label", required=True, help="what staff read in SMS, e.g. 'Room 4'")
    v.add_argument("--broker-host", required=True, help="the broker's host name, as the Pi sees it")
    v.add_argument("--server-url", help="the server's https:// base URL for the second path")
    v.add_argument("--ca-file", type=Path, help="CA certificate of the broker (turns on TLS, 8883)")
    v.add_argument("--out", type=Path, default=Path(), help="where to write the bundle")
    v.set_defaults(func=_provision)

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
    m.set_defaults(func=_demo)

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
    a.set_defaults(func=_audit)

    b = sub.add_parser(
        "db",
        help="database administration (PostgreSQL): migrate, grant the application role",
        description="migrate: bring the schema up to date (run as the owner role). "
        "grant ROLE: give the application role what it needs, and on the incident "
        "log only SELECT and INSERT. Uses PANICBUTTON_DATABASE_URL (the owner's).",
    )
    b.add_argument("action", choices=["migrate", "grant"])
    b.add_argument("role", nargs="?", help="grant: the application's database role")
    b.set_defaults(func=_db)
    return p


def _db(args: argparse.Namespace) -> int:
    from server.commands import db_command  # noqa: PLC0415
    from server.errors import ServerError  # noqa: PLC0415

    try:
        print(db_command(args.action, args.role))
    except (ServerError, ValueError) as exc:
        print(f"panicbutton db: {exc}", file=sys.stderr)
        return 2
    return 0


def _configure_logging(args: argparse.Namespace) -> None:
    """INFO by default (the demo: only warnings, it prints its own lines); -v: DEBUG.

    Before any subcommand imports its libraries: some log on import (Alembic's
    plugin set-up). Every handler redacts link tokens and secrets.
    """

    quiet = args.command == "demo"
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # Alembic's INFO is its set-up chatter; the server says itself when the
        # schema was upgraded (server/db.py).
        logging.getLogger("alembic").setLevel(logging.WARNING)
    protect_handlers()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ["audit", "verify"]:
        # The verifier parses its own options (--key, --trusted).
        from panicbutton.log.verify import main as verify_main  # noqa: PLC0415

        return verify_main(argv[2:])
    args = parser().parse_args(argv)
    _configure_logging(args)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
