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
from typing import Any

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
                installed=args.installed,
            )
        if args.action == "upgrade":
            from device.upgrade import upgrade  # noqa: PLC0415

            return upgrade(
                config_path=args.config, rollback=args.rollback, arm_within=args.arm_within
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
    from server.units.passwd import check_passwd  # noqa: PLC0415
    from server.units.provision import Link  # noqa: PLC0415

    if (problem := _provision_usage(args)) is not None:
        print(f"panicbutton provision: {problem}", file=sys.stderr)
        return 2
    try:
        if args.passwd is not None:
            # Before any bundle is written: a wrong path is the likely mistake.
            check_passwd(args.passwd)
        link = Link.checked(
            broker_host=args.broker_host,
            server_url=args.server_url,
            ca_file=args.ca_file,
            broker_port=args.broker_port,
        )
        lines, by_hand, rest = (_provision_one if args.csv is None else _provision_csv)(args, link)
    except ServerError as exc:
        print(f"panicbutton provision: {exc}", file=sys.stderr)
        return 2
    status = 0
    if args.passwd is None:
        print(f"1. {by_hand}")
    else:
        try:
            step, ok = _broker(args, lines)
            print(f"1. The broker: {step}")
            status = 0 if ok else 1
        except ServerError as exc:
            # The bundles are written: say what is left to do by hand, and exit 1.
            print(f"panicbutton provision: {exc}", file=sys.stderr)
            print(f"1. Not done ({exc}). {by_hand}")
            status = 1
    print("\n" + "\n".join(rest))
    return status


def _broker(args: argparse.Namespace, lines: list[str]) -> tuple[str, bool]:
    """Put ``lines`` into the broker's password file and, if asked, reload the broker:
    (what was done, whether all of it was)."""
    from server.errors import ServerError  # noqa: PLC0415
    from server.units.passwd import merge_passwd, reload_broker  # noqa: PLC0415

    merge = merge_passwd(args.passwd, lines, replace=args.replace)
    done = f"{merge.path}: {len(merge.added)} added"
    if merge.replaced:
        some = ", ".join(merge.replaced[:10]) + (" ..." if len(merge.replaced) > 10 else "")
        done += f", {len(merge.replaced)} replaced (new passwords for {some})"
    if not args.reload_broker:
        return f"{done}; now {RELOAD}", True
    try:
        return f"{done}; {reload_broker(args.broker_pid_file)}", True
    except ServerError as exc:
        print(f"panicbutton provision: {exc}", file=sys.stderr)
        return f"{done}; not reloaded ({exc}): {RELOAD}", False


def _provision_usage(args: argparse.Namespace) -> str | None:
    if args.csv is not None and (args.device_id or args.room or args.label):
        return "--csv makes every unit in the file: give no DEVICE_ID, --room or --label with it"
    if args.csv is None and not (args.device_id and args.room and args.label):
        return "give DEVICE_ID with --room and --label for one unit, or --csv FILE for many"
    if args.reload_broker and args.passwd is None:
        return "--reload-broker reloads the password file that --passwd changes: give --passwd"
    if args.broker_pid_file is not None and not args.reload_broker:
        return "--broker-pid-file goes with --reload-broker"
    if args.replace and args.passwd is None:
        return "--replace goes with --passwd"
    return None


RELOAD = "reload Mosquitto (sudo systemctl reload mosquitto)"
#: What making bundles gives the command: the password lines, the broker's step to do
#: by hand, and the report's other steps.
_Made = tuple[list[str], str, list[str]]


def _provision_one(args: argparse.Namespace, link: Any) -> _Made:
    from server.units.provision import Unit, provision  # noqa: PLC0415

    unit = Unit(device_id=args.device_id, room_id=args.room, label=args.label)
    bundle = provision(unit=unit, out=args.out, link=link, wheelhouse=args.wheelhouse)
    name = bundle.folder.name
    print(f"bundle for {name}: {bundle.folder} (copy it to the Pi; it holds secrets)\n")
    return (
        [bundle.passwd_line],
        f"Append to the broker's password file, then {RELOAD}:\n\n   {bundle.passwd_line}",
        [
            "2. Add to the site file (PANICBUTTON_SITE_FILE), then restart the server:\n",
            "   " + bundle.site_entry.replace("\n", "\n   ") + "\n",
            f"3. On the Pi: sudo {name}/provision.sh {name}/",
        ],
    )


def _provision_csv(args: argparse.Namespace, link: Any) -> _Made:
    from server.units.bulk import provision_many, read_units  # noqa: PLC0415

    batch = provision_many(
        units=read_units(args.csv), out=args.out, link=link, wheelhouse=args.wheelhouse
    )
    first = batch.units[0].device_id
    beside = f", with {batch.folder / 'wheelhouse'} beside it" if batch.wheelhouse else ""
    print(
        f"{len(batch.units)} bundles in {batch.folder}, one folder per unit (they hold "
        f"secrets: copy each to its Pi{beside})\n"
    )
    return (
        list(batch.passwd_lines),
        (
            f"Append {batch.passwd_file} ({len(batch.units)} lines) to the broker's "
            f"password file, then {RELOAD}"
        ),
        [
            f"2. Add the rooms in {batch.site_file} to the site file, then restart the server",
            f"3. On each Pi: sudo {first}/provision.sh {first}/ (with that unit's folder)",
        ],
    )


def wheelhouse(args: argparse.Namespace) -> int:
    from server.errors import ServerError  # noqa: PLC0415
    from server.units.wheelhouse import build  # noqa: PLC0415

    try:
        out = build(args.out, version=args.stamp)
    except ServerError as exc:
        print(f"panicbutton wheelhouse: {exc}", file=sys.stderr)
        return 2
    version = (out / "VERSION").read_text().strip()
    print(f"wheelhouse for agent {version} written to {out}")
    print(f"serve it to units: PANICBUTTON_WHEELHOUSE_DIR={out.resolve()} (then restart)")
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
