"""What each subcommand of ``panicbutton`` does, once :mod:`panicbutton.cli` has parsed
its options: ``server``, ``device``, ``demo``, ``provision``, ``audit`` (but ``verify``,
which :mod:`panicbutton.log.verify` parses itself) and ``db``.

Each imports its side (``server``, ``device``, ``demo``) inside its body, so a room unit
(which installs only the ``device`` extra) and an inspector never import server code.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from panicbutton.redact import protect_handlers


def server(args: argparse.Namespace) -> int:
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


def device(args: argparse.Namespace) -> int:
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


def demo(args: argparse.Namespace) -> int:
    from demo.run import run_demo  # noqa: PLC0415

    return run_demo(broker=args.broker, rooms=args.rooms)


def provision(args: argparse.Namespace) -> int:
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


def audit(args: argparse.Namespace) -> int:
    if args.action == "keygen":
        return _keygen(args)
    if args.action == "acknowledge-failure":
        return _acknowledge(args)
    return _export(args)


def _acknowledge(args: argparse.Namespace) -> int:
    """Stop the texts about a failed check of the log; recorded, with who and why."""
    from pydantic import ValidationError  # noqa: PLC0415

    from panicbutton.clock import SystemClock  # noqa: PLC0415
    from server.db import make_engine, sessions  # noqa: PLC0415
    from server.log.failure import acknowledge_failure  # noqa: PLC0415
    from server.settings import Settings  # noqa: PLC0415
    from server.site import ID_RE  # noqa: PLC0415

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
    from panicbutton.log import checkpoints, spec  # noqa: PLC0415

    out: Path | None = args.out
    if out is None:
        print("panicbutton audit keygen: say where with --out FILE", file=sys.stderr)
        return 2
    try:
        signer = checkpoints.Signer.generate(args.name)
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


def db(args: argparse.Namespace) -> int:
    from server.commands import db_command  # noqa: PLC0415
    from server.errors import ServerError  # noqa: PLC0415

    try:
        print(db_command(args.action, args.role))
    except (ServerError, ValueError) as exc:
        print(f"panicbutton db: {exc}", file=sys.stderr)
        return 2
    return 0


def site(args: argparse.Namespace) -> int:
    from server.errors import ServerError  # noqa: PLC0415
    from server.roster.commands import export_site, import_site  # noqa: PLC0415

    try:
        if args.action == "export":
            print(export_site(args.out), end="")
            return 0
        if args.file is None:
            raise ValueError("import needs the site file: panicbutton site import FILE")

        def confirm(lines: list[str]) -> bool:
            print("\n".join(lines) if lines else "nothing changes")
            if args.yes or not lines:
                return bool(lines)
            return input("apply these changes? [y/N] ").strip().lower() in ("y", "yes")

        print(import_site(args.file, confirm=confirm, phones_confirmed=args.phones_confirmed))
    except (ServerError, ValueError) as exc:
        print(f"panicbutton site: {exc}", file=sys.stderr)
        return 2
    return 0


def people(args: argparse.Namespace) -> int:
    from pydantic import ValidationError  # noqa: PLC0415

    from server.errors import ServerError  # noqa: PLC0415
    from server.people import commands  # noqa: PLC0415
    from server.settings import Settings  # noqa: PLC0415

    try:
        settings = Settings()
        if args.action == "invite":
            link = commands.invite(
                settings,
                person_id=args.id,
                name=args.name,
                roles=args.role,
                phone=args.phone,
                language=args.language,
                hours=args.hours,
            )
            print(f"one-time sign-in link for {args.id} (works once, for {args.hours} hours):")
            print(f"\n   {link}\n")
            print("Give it to them by a channel only they read; they open it to set up a passkey")
            print("or a password.")
            return 0
        token = commands.token(
            settings, person_id=args.id, scopes=args.scope, days=args.days, label=args.label
        )
    except (ValidationError, ServerError) as exc:
        print(f"panicbutton people {args.action}: {_pydantic_message(exc)}", file=sys.stderr)
        return 2
    print(f"personal API token for {args.id} (shown this once; keep it in a secret store):")
    print(f"\n   {token}\n")
    print("Send it as: Authorization: Bearer <token>")
    return 0
