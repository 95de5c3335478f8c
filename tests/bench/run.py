"""``python -m tests.bench``: the report (see the package docstring and each module)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import shlex
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator, Sequence
from importlib.metadata import version
from pathlib import Path

from sqlalchemy import create_engine, text

from tests.bench.blackbox import blackbox_report, measure_blackbox
from tests.bench.board import BoardRun, chromium, measure_board_app, measure_board_floor
from tests.bench.escalation import escalation_report, measure_escalation
from tests.bench.failover import failover_report
from tests.bench.figures import draw, pair, value
from tests.bench.fleet import measure_fleet
from tests.bench.floor import FloorRun, measure_floor
from tests.bench.footprint import Footprint, measure_footprint
from tests.bench.latency import STAGES, AppRun, measure_app
from tests.bench.log import log_report, measure_append, measure_verify
from tests.bench.pacing import measure_pacing
from tests.bench.phone import PhoneRun, measure_phone_app, measure_phone_floor
from tests.bench.provision import TARGET_UNITS, measure_provision
from tests.bench.stats import SUMMARY_HEADERS, Summary, ms, ratio_table, table
from tests.bench.storm import measure_storm
from tests.fakes.twilio import FakeTwilio
from tests.harness import (
    PG_ADMIN_URL,
    System,
    find_mosquitto,
    postgres_database,
    postgres_reachable,
    start_mosquitto,
)

AGENT_PRESSES = 20
ESCALATION_INCIDENTS = 30
STORM_ROOMS = 1000
LOG_ENTRIES = 4000
BLACKBOX_PRESSES = 200
#: The target's size (issue 15); the part takes 5 to 9 minutes at that size.
FLEET_UNITS = 10_000


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench",
        description="Press -> SMS request latency against the no-logic floor, the room "
        "unit agent's footprint, and escalation step timing (due -> job run -> SMS "
        "request), on loopback with a real Mosquitto.",
    )
    parser.add_argument(
        "--presses",
        type=int,
        default=100,
        metavar="N",
        help="measured presses, and floor iterations (default 100)",
    )
    parser.add_argument(
        "--postgres",
        action="store_true",
        help=f"run the server on a temporary PostgreSQL database "
        f"({PG_ADMIN_URL.rsplit('@', 1)[1].rsplit('/', 1)[0]}) "
        "instead of SQLite",
    )
    parser.add_argument(
        "--agent-presses",
        type=int,
        default=AGENT_PRESSES,
        metavar="N",
        help=f"presses for the agent's press -> publish figure "
        f"(default {AGENT_PRESSES}; 0 skips the footprint)",
    )
    parser.add_argument(
        "--log-entries",
        type=int,
        default=LOG_ENTRIES,
        metavar="N",
        help=f"entries appended for the incident log's append throughput, and 50x that many "
        f"verified (default {LOG_ENTRIES}; 0 skips it)",
    )
    parser.add_argument(
        "--escalation-incidents",
        type=int,
        default=ESCALATION_INCIDENTS,
        metavar="N",
        help=f"incidents for the escalation step timing (default {ESCALATION_INCIDENTS}; "
        "0 skips it)",
    )
    parser.add_argument(
        "--storm-rooms",
        type=int,
        default=STORM_ROOMS,
        metavar="N",
        help=f"rooms pressed within one second for the storm figure, against a fake Twilio "
        f"enforcing Twilio's limits (default {STORM_ROOMS}; 0 skips it; on --postgres too)",
    )
    parser.add_argument(
        "--paced-rooms",
        type=int,
        default=STORM_ROOMS,
        metavar="N",
        help=f"rooms pressed at once against a sender of 1 SMS a second and 1 call a "
        f"second, the server set the same (default {STORM_ROOMS}; 0 skips it; SQLite)",
    )
    parser.add_argument(
        "--board-presses",
        type=int,
        default=100,
        metavar="N",
        help="presses timed to the console's live board in headless Chromium, and as many "
        "floor messages (default 100; 0 skips it)",
    )
    parser.add_argument(
        "--phone-presses",
        type=int,
        default=100,
        metavar="N",
        help="alarms from a worker's phone (signed HTTPS POST) timed to the first SMS "
        "request, and as many floor requests (default 100; 0 skips it)",
    )
    parser.add_argument(
        "--blackbox-presses",
        type=int,
        default=BLACKBOX_PRESSES,
        metavar="N",
        help=f"alerts timed black box, the server as its own process, and as many floor "
        f"alerts interleaved (default {BLACKBOX_PRESSES}; 0 skips it)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        metavar="FILE",
        help="also write every part's figures to FILE as JSON (milliseconds, seconds, "
        "with the floor's)",
    )
    parser.add_argument(
        "--svg",
        type=Path,
        metavar="FILE",
        help="also draw the figures to FILE as SVG (matplotlib), as docs/develop/bench.svg is",
    )
    parser.add_argument(
        "--provision-units",
        type=int,
        default=TARGET_UNITS,
        metavar="N",
        help=f"units made by `panicbutton provision --csv` for the bulk provisioning figure "
        f"(default {TARGET_UNITS}; 0 skips it)",
    )
    parser.add_argument(
        "--failover-units",
        type=int,
        default=100,
        metavar="N",
        help="units pressed within a second with two server instances on PostgreSQL, one "
        "SIGKILLed half-way: the takeover time and the floor (default 100; 0 skips it)",
    )
    parser.add_argument(
        "--fleet-units",
        type=int,
        default=FLEET_UNITS,
        metavar="N",
        help=f"connected room units heartbeating against the server for the fleet figure "
        f"(default {FLEET_UNITS}; 0 skips it)",
    )
    args = parser.parse_args(argv)
    if args.fleet_units < 0:
        parser.error("--fleet-units must be 0 or more")
    if args.failover_units < 0:
        parser.error("--failover-units must be 0 or more")
    if args.provision_units < 0:
        parser.error("--provision-units must be 0 or more")
    if args.blackbox_presses < 0:
        parser.error("--blackbox-presses must be 0 or more")
    for option, path in (("--json", args.json), ("--svg", args.svg)):
        if path is not None and not path.parent.is_dir():
            parser.error(f"{option} {path}: folder {path.parent} does not exist")
    if args.phone_presses < 0:
        parser.error("--phone-presses must be 0 or more")
    if args.board_presses < 0:
        parser.error("--board-presses must be 0 or more")
    if args.storm_rooms < 0:
        parser.error("--storm-rooms must be 0 or more")
    if args.paced_rooms < 0:
        parser.error("--paced-rooms must be 0 or more")
    if args.presses < 1:
        parser.error("--presses must be at least 1")
    if args.agent_presses < 0:
        parser.error("--agent-presses must be 0 or more")
    if args.escalation_incidents < 0:
        parser.error("--escalation-incidents must be 0 or more")
    return args


def say(text_: str = "") -> None:
    print(text_, flush=True)


def progress(text_: str) -> None:
    print(f"  ... {text_}", file=sys.stderr, flush=True)


def command_line() -> str:
    exe = (
        os.path.relpath(sys.executable)
        if sys.executable.startswith(str(Path.cwd()))
        else sys.executable
    )
    return shlex.join([exe, "-m", "tests.bench", *sys.argv[1:]])


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def mosquitto_version(binary: str) -> str:
    try:
        out = subprocess.run(
            [binary, "-h"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "mosquitto (version unknown)"
    return out.splitlines()[0].strip() if out else "mosquitto (version unknown)"


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (1 min), {five:.2f} (5 min)"


def header(mosquitto: str, db: str) -> None:
    nproc = len(os.sched_getaffinity(0))
    libs = ", ".join(
        f"{name} {version(name)}"
        for name in ("paho-mqtt", "twilio", "gpiozero", "SQLAlchemy", "uvicorn")
    )
    say("panicbutton bench")
    say(f"command:   {command_line()}")
    say(f"machine:   nproc {nproc}, {cpu_model()}, {platform.system()} {platform.release()}")
    say(f"python:    {platform.python_implementation()} {platform.python_version()}")
    say(f"software:  {mosquitto_version(mosquitto)}; {libs}")
    say(f"database:  {db}")
    say(f"load avg:  {load()} at start")
    say("NOTE:      numbers are from a shared, noisy 2-core machine (everything - broker, server,")
    say("           room units, fake Twilio, the bench - shares those cores); compare figures")
    say("           within one run (the app/floor ratio), not absolute values across runs.")


@contextlib.contextmanager
def database(postgres: bool, folder: Path) -> Iterator[tuple[str, str]]:
    """(SQLAlchemy URL, description) of a fresh database, dropped afterwards."""
    if not postgres:
        import sqlite3  # noqa: PLC0415 -- only for its version string

        path = folder / "bench.sqlite3"
        yield (
            f"sqlite:///{path}",
            (
                f"SQLite {sqlite3.sqlite_version}, file {path.name} in a temp "
                "dir (WAL, synchronous=FULL as the server sets it)"
            ),
        )
        return
    with postgres_database(f"pb_bench_{secrets.token_hex(4)}") as url:
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                server_version = conn.execute(text("SHOW server_version")).scalar()
        finally:
            engine.dispose()
        yield url, f"PostgreSQL {server_version} on 127.0.0.1:5432, temporary database"


def summary_rows(
    label: str, totals: list[float], stages: dict[str, list[float]]
) -> list[list[str]]:
    rows = [Summary.of(totals).row(label)]
    rows += [Summary.of(v).row("  " + k) for k, v in stages.items() if v]
    return rows


def report_app(app: AppRun, db: str) -> None:
    say()
    say(f"1. Press -> SMS request, whole system (server on {db})")
    say("   From time.monotonic() just before the room unit's mock button pin is driven low, to")
    say("   the fake Twilio's receipt of the first of the incident's two Messages.json requests")
    say("   (one per person on duty). Real Mosquitto with passwords + ACL, real paho, server")
    say("   with uvicorn, real twilio library. Rooms unit-1..3 pressed in turn (held 50 ms);")
    say("   each press makes a new incident; the bench waits for both SMS, the light RECEIVED")
    say("   and an idle pager, then resolves the incident (light back to ARMED) and pauses")
    say(f"   50 ms before the next press. {app.warmup} warm-up presses not counted. In ms:")
    say()
    say(table(SUMMARY_HEADERS, summary_rows("press -> first SMS request", app.totals, app.stages)))
    say()
    say("   Indented rows: stages of the same presses, from marks taken by wrapping methods of")
    say("   the live agent, ingest, pager and notifier in the bench process (no app change).")
    say("   Stage percentiles are per stage and do not add up to the total's. The room units")
    say("   run in the bench process, beside the server (one GIL): their work on the feedback")
    say("   (light, outbox) overlaps the pager's, as it would not on a real Raspberry Pi.")
    if app.missing_probes:
        say(f"   Probes not installed (code changed?): {', '.join(app.missing_probes)}")
    missing = [label for label, _, _ in STAGES if not app.stages.get(label)]
    if missing and not app.missing_probes:
        say(f"   Stages without data: {', '.join(missing)}")


def say_ratio(a: Summary, f: Summary) -> None:
    """The app's figures against the floor's: their ratio and difference."""
    say()
    say(ratio_table(a, f))


def report_floor(floor: FloorRun, app: AppRun) -> None:
    say()
    say("2. Floor: the same hops with no application logic, same run, same broker and fake")
    say("   Twilio. paho publish (QoS 1) -> Mosquitto -> paho subscriber (QoS 1, another client")
    say("   in this process) -> POST with twilio.http.http_client.TwilioHttpClient from its")
    say("   on_message -> fake Twilio receipt. Measured from just before publish() to receipt.")
    say(f"   Server stopped during this part. {floor.warmup} warm-up messages not counted. In ms:")
    say()
    say(table(SUMMARY_HEADERS, summary_rows("publish -> SMS request", floor.totals, floor.stages)))
    say_ratio(Summary.of(app.totals), Summary.of(floor.totals))


def kb(value: int) -> str:
    return f"{value / 1024:.1f} MiB"


def report_footprint(fp: Footprint | None, presses: int) -> None:
    say()
    say("3. Room unit agent footprint (a subprocess: python -m tests.bench.agent_child, which")
    say("   imports device.agent + gpiozero's MockFactory and runs one Agent against the same")
    say("   broker as unit-1; the server is running, confirms its alerts and the bench")
    say("   resolves each incident before the next press)")
    if fp is None:
        say("   skipped (--agent-presses 0)")
        return
    say()
    say(
        table(
            ("", "value"),
            [
                ["resident memory (VmRSS) at interpreter start", kb(fp.rss_base_kb)],
                ["  after importing gpiozero + device.agent", kb(fp.rss_imported_kb)],
                ["  light ARMED (connected)", kb(fp.rss_armed_kb)],
                [f"  after {presses} presses", kb(fp.rss_end_kb)],
                ["  peak (VmHWM)", kb(fp.hwm_kb)],
                ["process spawn -> light ARMED", f"{ms(fp.spawn_to_armed)} ms"],
                ["  spawn -> child's first statement", f"{ms(fp.spawn_to_main)} ms"],
                ["  imports (gpiozero, device.agent)", f"{ms(fp.imports)} ms"],
                ["  Agent() + start() -> MQTT connected -> ARMED", f"{ms(fp.start_to_armed)} ms"],
            ],
        )
    )
    say()
    say("   Press -> publish: the child's time.monotonic() just before drive_low() to receipt of")
    say("   that alert by a paho subscriber in the bench process (server credentials,")
    say("   pb/v1/dev/+/alert): agent thread hand-off + outbox commit (SQLite, synchronous=FULL)")
    say("   + paho publish + one broker hop. time.monotonic() is one clock for all processes.")
    say("   In ms:")
    say()
    say(
        table(
            SUMMARY_HEADERS, [Summary.of(fp.press_to_publish).row("press -> alert at a subscriber")]
        )
    )


def report_board(board: BoardRun) -> None:
    say()
    say("7. Press -> the console's live board (headless Chromium, signed in as the manager)")
    say("   App: time.time() just before the room unit's mock button is pressed, to Date.now()")
    say("   noted by a MutationObserver when the board first shows the room as 'received'")
    say("   (server-sent event -> DOM). Floor: paho publish -> Mosquitto -> paho subscriber ->")
    say("   a bare sse-starlette app -> the same Chromium's DOM. Each incident resolved before")
    say(f"   the next press; {board.warmup} warm-up presses not counted. In ms:")
    say()
    say(
        table(
            SUMMARY_HEADERS,
            [
                Summary.of(board.app).row("press -> board shows it"),
                Summary.of(board.floor).row("floor: publish -> page shows it"),
            ],
        )
    )
    say_ratio(Summary.of(board.app), Summary.of(board.floor))


def report_phone(phone: PhoneRun) -> None:
    say()
    say("8. Phone button: alarm -> first SMS request (a worker's phone, outside the premises)")
    say("   App: time.monotonic() just before the phone signs its alarm (ECDSA P-256) and POSTs")
    say("   it over HTTP on loopback to the server (uvicorn), to the fake Twilio's receipt of the")
    say("   incident's first SMS request. Floor: the same POST to a bare Starlette app whose")
    say("   handler sends one SMS request with the twilio library's HTTP client. Each incident")
    say(f"   resolved before the next alarm; {phone.warmup} warm-up alarms not counted. In ms:")
    say()
    say(
        table(
            SUMMARY_HEADERS,
            [
                Summary.of(phone.app).row("phone alarm -> first SMS request"),
                Summary.of(phone.floor).row("floor: POST -> bare handler -> SMS request"),
            ],
        )
    )
    say_ratio(Summary.of(phone.app), Summary.of(phone.floor))


def write_figures(args: argparse.Namespace, db: str, parts: dict[str, object]) -> None:
    """The figures of every part that ran, as JSON and drawn as SVG, where asked."""
    nproc = len(os.sched_getaffinity(0))
    report = {
        "command": command_line(),
        "machine": f"nproc {nproc}, {cpu_model()}",
        "database": db,
        "load": load(),
        "parts": parts,
    }
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    if args.svg is not None and parts:
        draw(report, args.svg)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    mosquitto = find_mosquitto()
    if mosquitto is None:
        print("bench: mosquitto is not installed (apt install mosquitto)", file=sys.stderr)
        return 2
    if args.postgres and not postgres_reachable():
        print(f"bench: PostgreSQL is not reachable at {PG_ADMIN_URL}", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        return bench(args, mosquitto, started)
    except (TimeoutError, RuntimeError) as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1


def bench(args: argparse.Namespace, mosquitto: str, started: float) -> int:
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pb-bench-")))
        broker = stack.enter_context(start_mosquitto(folder / "mosquitto"))
        port, users = broker.port, broker.users
        url, db = stack.enter_context(database(args.postgres, folder))
        header(mosquitto, db)
        system = stack.enter_context(
            # Bundling off: presses follow each other within seconds, and bundling
            # would (by design) hold the next incident's pages to the same people.
            System(
                mqtt_port=port,
                users=users,
                database_url=url,
                folder=folder,
                settings={
                    "sms_bundle_window": 0.0,
                    "call_bundle_window": 0.0,
                    # The board's browser signs in over plain HTTP on loopback.
                    "cookies_secure": False,
                    # Our hops, not Twilio's pace (the fake's rate is off below).
                    **FakeTwilio(account_sid="", auth_token="", sender_rate=0).pace(),
                },
            )
        )
        # The latency section measures our hops, press after press: Twilio queues a
        # sender's excess instead of refusing it, so the fake's stricter per-sender
        # 429 (which the storm section keeps) is off here.
        system.twilio.sender_rate = 0.0
        figures: dict[str, object] = {}
        app = measure_app(system, args.presses, progress=progress)
        report_app(app, "PostgreSQL" if args.postgres else "SQLite")
        board = BoardRun(warmup=3)
        browser = stack.enter_context(chromium()) if args.board_presses else None
        if browser is not None:
            progress("board")
            measure_board_app(system, browser, args.board_presses, board, progress=progress)
        phone = PhoneRun()
        if args.phone_presses:
            progress("phone")
            measure_phone_app(system, args.phone_presses, phone, progress=progress)
        footprint = None
        if args.agent_presses:
            progress("agent footprint")
            footprint = measure_footprint(system, args.agent_presses, folder)
        system.stop_server()
        progress("floor")
        floor = measure_floor(system, args.presses, progress=progress)
        report_floor(floor, app)
        figures["press"] = {
            "title": "1-2. Press -> SMS request, whole system, against the floor",
            "pairs": {"press -> first SMS request": pair(app.totals, floor.totals)},
        }
        report_footprint(footprint, args.agent_presses)
        if footprint is not None:
            figures["footprint"] = {
                "title": "3. Room unit agent",
                "values": {
                    "resident memory after presses": value(footprint.rss_end_kb / 1024, "MiB"),
                    "process start -> light armed": value(footprint.spawn_to_armed, "s"),
                },
                "pairs": {},
            }
        if browser is not None:
            progress("board floor")
            measure_board_floor(system, browser, args.board_presses, board)
            report_board(board)
            figures["board"] = {
                "title": "7. Press -> the console's live board (Chromium)",
                "pairs": {"press -> board shows it": pair(board.app, board.floor)},
            }
        if args.phone_presses:
            progress("phone floor")
            measure_phone_floor(system, args.phone_presses, phone)
            report_phone(phone)
            figures["phone"] = {
                "title": "8. Phone button -> first SMS request",
                "pairs": {"phone alarm -> first SMS request": pair(phone.app, phone.floor)},
            }
        if args.escalation_incidents:
            progress("escalation")
            (folder / "escalation").mkdir()
            esc_url, _ = stack.enter_context(database(args.postgres, folder / "escalation"))
            escalation = measure_escalation(
                mqtt_port=port,
                users=users,
                database_url=esc_url,
                folder=folder / "escalation",
                incidents=args.escalation_incidents,
                progress=progress,
            )
            for line in escalation_report(escalation, "PostgreSQL" if args.postgres else "SQLite"):
                say(line)
            if escalation.sends:
                median = Summary.of(escalation.sends).median
                figures["escalation"] = {
                    "title": "4. Escalation step: due -> SMS request",
                    "values": {"due -> step-1 SMS request, median": value(median * 1000, "ms")},
                }
        if args.log_entries:
            progress("incident log")
            appends = []
            for per_commit in (1, 10):
                (folder / f"log{per_commit}").mkdir()
                log_url, _ = stack.enter_context(
                    database(args.postgres, folder / f"log{per_commit}")
                )
                appends.append(
                    measure_append(log_url, entries=args.log_entries, per_commit=per_commit)
                )
            check = measure_verify(args.log_entries * 50)
            for line in log_report(appends, check, "PostgreSQL" if args.postgres else "SQLite"):
                say(line)
            figures["log"] = {
                "title": "5. Incident log: seconds per 1,000 entries (floor: plain inserts)",
                "values": {
                    f"append, {a.per_commit} per commit": value(
                        1000 / a.rate, "s", 1000 / a.floor_rate
                    )
                    for a in appends
                }
                | {"verify, one process": value(1000 / check.rate, "s")},
            }
        if args.storm_rooms:
            progress("storm")
            (folder / "storm").mkdir()
            storm_url, _ = stack.enter_context(database(args.postgres, folder / "storm"))
            storm = measure_storm(folder / "storm", args.storm_rooms, database_url=storm_url)
            say()
            say(f"6. Storm, black box: {args.storm_rooms} room units (plain paho clients, one")
            say("   broker user each) publish one alert each within a second to the server as")
            say("   its own process; the fake Twilio enforces Twilio's limits (Body 1,600, a")
            say("   per-sender rate answered 429); default bundle windows. Floor: as many units")
            say("   on a second Mosquitto, answered at once by a responder with no logic.")
            for line in storm.lines("PostgreSQL" if args.postgres else "SQLite"):
                say("   " + line)
            drain, floor_drain = storm.app.drain(), storm.floor.drain() if storm.floor else None
            storm_values = {}
            if drain is not None:
                storm_values["last press -> every unit heard 'received'"] = value(
                    drain, "s", floor_drain
                )
            if (reached := storm.reached()) is not None:
                storm_values["last press -> every phone's SMS covers every room"] = value(
                    reached, "s", storm.floor_sms
                )
            figures["storm"] = {
                "title": f"6. Storm: {args.storm_rooms} units press within a second",
                "values": storm_values,
            }
        if args.paced_rooms:
            progress("paced")
            (folder / "paced").mkdir()
            paced = measure_pacing(folder / "paced", args.paced_rooms)
            say()
            say("6b. Twilio's pace: the same storm against a fake Twilio taking 1 SMS and 1")
            say("   call a second per sender (429 beyond), the server configured the same:")
            say(textwrap.fill(paced.line(), 88, initial_indent="   ", subsequent_indent="   "))
            paced_reached = {"sms": paced.reached(paced.sms), "call": paced.reached(paced.calls)}
            figures["paced"] = {
                "title": f"6b. Storm at Twilio's pace: {args.paced_rooms} rooms, 1 SMS/s, 1 call/s",
                "values": {
                    f"last press -> every phone's {c} covers every room": value(t, "s")
                    for c, t in paced_reached.items()
                    if t is not None
                },
            }
        if args.blackbox_presses:
            progress("blackbox")
            (folder / "blackbox").mkdir()
            bb_url, _ = stack.enter_context(database(args.postgres, folder / "blackbox"))
            blackbox = measure_blackbox(
                folder / "blackbox", bb_url, args.blackbox_presses, progress=progress
            )
            for line in blackbox_report(blackbox, "PostgreSQL" if args.postgres else "SQLite"):
                say(line)
            figures["blackbox"] = blackbox.figures()
        if args.failover_units:
            progress("failover")
            for line in failover_report(folder / "failover", args.failover_units):
                say(line)
        if args.provision_units:
            progress("bulk provisioning")
            provision = measure_provision(folder / "provision", args.provision_units)
            for line in provision.report():
                say(line)
            figures["provision"] = {
                "title": f"10. Bulk provisioning of {args.provision_units:,} units",
                "values": {
                    "panicbutton provision --csv": value(
                        provision.seconds, "s", provision.floor_seconds
                    )
                },
            }
        if args.fleet_units:
            progress("fleet")
            (folder / "fleet").mkdir()
            fleet_url, _ = stack.enter_context(database(args.postgres, folder / "fleet"))
            fleet = measure_fleet(folder / "fleet", fleet_url, args.fleet_units, progress=progress)
            for line in fleet.report():
                say(line)
            figures["fleet"] = fleet.figures()
        write_figures(args, db, figures)
    say()
    say(f"load avg:  {load()} at end; bench took {time.monotonic() - started:.0f} s")
    return 0
