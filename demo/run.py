"""``panicbutton demo``: the whole path on one machine, nothing to set up.

A broker (a local Mosquitto, or the embedded one), the server on SQLite, three
simulated room units on gpiozero's mock pins, and SMS printed here instead of
sent. Staff replies are played through the real, signed Twilio webhook. The
demo's people (a manager, two staff, two workers) get passwords made up at
start and printed, so the sign-in pages can be tried at ``http://localhost``
(where browsers also allow passkeys).
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import httpx
from gpiozero.pins.mock import MockFactory
from pydantic import SecretStr
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from demo.broker import EmbeddedBroker, MosquittoProcess, find_mosquitto, free_port
from device.agent import Agent
from device.config import parse_config
from device.indicator import Light
from server.app import Server, build, web_server
from server.mobile import phones
from server.models import Incident, Page
from server.paging.notifier import ConsoleNotifier
from server.people import directory
from server.people.auth import active_roles
from server.people.roles import Role
from server.people.signin import set_password
from server.settings import Settings
from server.site import Site, parse_site
from server.units.broker import SERVER_USER, BrokerFiles

BUTTON_PIN = 17
LIGHT_WORDS = {
    Light.ARMED: "armed (ready)",
    Light.NO_LINK: "NO LINK (button not working)",
    Light.SENT: "alarm sent",
    Light.RECEIVED: "alarm received by the server",
    Light.HELP_COMING: "HELP IS COMING",
    Light.FAULT: "FAULT",
}
STAFF = (
    ("reception", "Reception", "+32470000001", "en", "staff"),
    ("floor", "Floor staff", "+32470000002", "fr", "staff"),
    ("manager", "Demo manager", "+32470000003", "en", "manager"),
)
#: Workers sign in with a code, not a name.
WORKERS = ("w-1", "w-2")

HELP = """commands:
  1, 2, 3 ...            press that room's button
  reply PHONE TEXT       an SMS from a staff phone; `code` in TEXT stands for the reply
                         code of that phone's newest alarm, e.g. `reply +32470000001 code`
  status                 show each room's light
  phone                  a new enrolment link for worker w-1's mobile button
  quit                   stop"""


def demo_site(rooms: int) -> Site:
    return parse_site(
        {
            "site": {"name": "Demo house", "timezone": "Europe/Brussels"},
            "rooms": [
                {"id": f"room-{i}", "label": f"Room {i}", "device": f"unit-{i}"}
                for i in range(1, rooms + 1)
            ],
            "staff": [
                {"id": i, "name": n, "phone": p, "language": lang, "role": role}
                for i, n, p, lang, role in STAFF
            ],
            "duty": {"on_duty": [s[0] for s in STAFF if s[4] == "staff"]},
        },
        "demo",
    )


class Demo:
    def __init__(self, out: TextIO, broker: str, rooms: int, folder: Path) -> None:
        self.out = out
        self.folder = folder
        self.rooms = rooms
        self.broker_kind = broker
        self.port = free_port()
        self.http_port = free_port()
        self.users = {SERVER_USER: secrets.token_urlsafe(16)}
        self.users |= {f"unit-{i}": secrets.token_urlsafe(16) for i in range(1, rooms + 1)}
        self.twilio_token = secrets.token_hex(16)
        self.public_url = f"http://localhost:{self.http_port}"
        self.lights: dict[int, Light] = {}
        self.changed = threading.Condition()
        self.factories: dict[int, MockFactory] = {}
        self.agents: dict[int, Agent] = {}
        self.server: Server | None = None
        self._print_lock = threading.Lock()

    def say(self, text: str) -> None:
        with self._print_lock:  # rooms, the pager and the input loop all print
            print(text, file=self.out, flush=True)

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            self._start_broker(stack)
            self._start_server(stack)
            for i in range(1, self.rooms + 1):
                self._start_room(stack, i)
            self.wait_for(
                lambda: all(self.lights.get(i) is Light.ARMED for i in range(1, self.rooms + 1)), 15
            )
            self.say(f"ready: {self.rooms} rooms armed. Type `help` for commands.")
            yield

    def _start_broker(self, stack: contextlib.ExitStack) -> None:
        kind = self.broker_kind
        if kind == "auto":
            kind = "mosquitto" if find_mosquitto() else "embedded"
        if kind == "mosquitto":
            stack.enter_context(
                MosquittoProcess(BrokerFiles(self.folder / "mosquitto", self.port, self.users))
            )
            self.say(f"broker: local mosquitto on 127.0.0.1:{self.port} (passwords + ACL)")
        else:
            stack.enter_context(EmbeddedBroker(self.port, self.users))
            self.say(f"broker: embedded (amqtt) on 127.0.0.1:{self.port} (passwords + ACL)")

    def _start_server(self, stack: contextlib.ExitStack) -> None:
        settings = Settings(
            demo=True,
            database_url=f"sqlite:///{self.folder / 'panicbutton.sqlite3'}",
            log_checkpoint_file=self.folder / "log-checkpoints.jsonl",
            mqtt_port=self.port,
            mqtt_password=SecretStr(self.users[SERVER_USER]),
            notifier="console",
            twilio_auth_token=SecretStr(self.twilio_token),
            # localhost, not 127.0.0.1: browsers refuse passkeys on an IP address.
            public_base_url=self.public_url,
            http_port=self.http_port,
            cookies_secure=False,
        )
        server = build(settings, site=demo_site(self.rooms), notifier=ConsoleNotifier(self.say))
        self.server = server
        web = web_server(server, host="127.0.0.1", port=self.http_port, log_level="warning")
        thread = threading.Thread(target=web.run, name="http", daemon=True)
        thread.start()
        stack.callback(thread.join, 10)
        stack.callback(setattr, web, "should_exit", True)
        self.wait_for(lambda: web.started and server.ingest.connected.is_set(), 15)
        self.say(f"server: SQLite database, HTTP on 127.0.0.1:{self.http_port}, SMS printed here")
        self._open_accounts(server)

    def _open_accounts(self, server: Server) -> None:
        """The workers' accounts, and a made-up password for everyone (the demo only)."""
        services = server.services
        now = services.clock.now()
        lines = []
        with services.sessions.begin() as session:
            for worker in WORKERS:
                directory.add_person(
                    session,
                    person_id=worker,
                    name=worker,
                    roles=[Role.WORKER],
                    by=directory.SYSTEM,
                    now=now,
                )
            for person_id in (*(s[0] for s in STAFF), *WORKERS):
                password = "-".join(secrets.token_hex(3) for _ in range(3))
                set_password(session, person_id=person_id, password=password, now=now)
                roles = ", ".join(sorted(r.value for r in active_roles(session, person_id, now)))
                lines.append(f"  {person_id:<10} {password}   ({roles})")
        self.say(f"sign in at {self.public_url}/sign-in with an id and its password:")
        for line in lines:
            self.say(line)
        self.say(
            f"console: {self.public_url}/console (sign in as manager: the live board "
            "shows each press here at once)"
        )
        self.phone_link()

    def phone_link(self) -> None:
        """Print a one-time link that enrols a browser as worker w-1's mobile button."""
        assert self.server is not None
        services = self.server.services
        with services.sessions.begin() as session:
            token = phones.issue(
                session, person_id=WORKERS[0], by=directory.SYSTEM, now=services.clock.now()
            )
        self.say(
            f"mobile button of worker {WORKERS[0]}: open "
            f"{phones.link_url(self.public_url, token)} in a browser on this machine "
            "(one use; `phone` prints a new one)"
        )

    def _start_room(self, stack: contextlib.ExitStack, i: int) -> None:
        device_id = f"unit-{i}"
        config = parse_config(
            {
                "device": {"id": device_id, "state_dir": str(self.folder / device_id)},
                "pins": {"button": BUTTON_PIN, "led": 27},
                "mqtt": {"host": "127.0.0.1", "port": self.port, "password": self.users[device_id]},
            },
            f"demo room {i}",
        )
        factory = MockFactory()
        self.factories[i] = factory

        def on_light(light: Light, room: int = i) -> None:
            self.say(f"  [Room {room} light] {LIGHT_WORDS[light]}")
            with self.changed:
                self.lights[room] = light
                self.changed.notify_all()

        agent = Agent(config, pin_factory=factory, on_light=on_light)
        stack.enter_context(agent)
        self.agents[i] = agent

    def wait_for(self, predicate: object, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not predicate():  # type: ignore[operator]
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.changed.wait(min(left, 0.05))
        return True

    def settle(self, timeout: float = 10.0) -> None:
        """Wait until no page, text or alert is under way, so piped input reads in order."""
        assert self.server is not None
        pager = self.server.services.pager
        time.sleep(0.2)
        self.wait_for(
            lambda: (
                pager.backlog() == 0 and not any(a.outbox.depth() for a in self.agents.values())
            ),
            timeout,
        )
        time.sleep(0.1)

    def press(self, room: int) -> None:
        if room not in self.factories:
            self.say(f"no room {room}: rooms are 1 to {self.rooms}")
            return
        self.say(f"> Room {room}: the button is pressed")
        pin = self.factories[room].pin(BUTTON_PIN)
        pin.drive_low()
        time.sleep(0.1)
        pin.drive_high()
        self.wait_for(lambda: self.lights.get(room) in (Light.RECEIVED, Light.HELP_COMING), 10)
        self.settle()

    def reply(self, phone: str, text: str) -> None:
        code = self._code_for(phone)
        if code is not None:
            text = re.sub(r"(?i)\bcode", str(code), text)
        self.say(f"> SMS from {phone}: {text}")
        url = f"http://127.0.0.1:{self.http_port}/twilio/sms"
        params = {
            "From": phone,
            "To": "+32460000000",
            "Body": text,
            "MessageSid": "SM" + secrets.token_hex(16),
        }
        # Twilio signs the public URL it calls; the request itself goes to loopback.
        signature = RequestValidator(self.twilio_token).compute_signature(
            f"{self.public_url}/twilio/sms", params
        )
        response = httpx.post(
            url, data=params, headers={"X-Twilio-Signature": signature}, timeout=10
        )
        if response.status_code != 200:
            self.say(f"  webhook answered {response.status_code}")
        self.settle()

    def _code_for(self, phone: str) -> int | None:
        """The reply code in the newest page to ``phone`` about an unresolved alarm."""
        assert self.server is not None
        member = self.server.services.site.by_phone(phone)
        if member is None:
            return None
        with self.server.services.sessions() as s:
            code: int | None = s.scalar(
                select(Page.reply_code)
                .join(Incident, Incident.id == Page.incident_id)
                .where(Page.staff_id == member.id, Incident.state != "resolved")
                .order_by(Page.id.desc())
                .limit(1)
            )
        return code

    def handle(self, line: str) -> bool:
        words = line.split()
        if not words:
            return True
        match words[0].lower():
            case "quit" | "exit":
                return False
            case "help" | "?":
                self.say(HELP)
            case "phone":
                self.phone_link()
            case "status":
                for i in sorted(self.lights):
                    self.say(f"  Room {i}: {LIGHT_WORDS[self.lights[i]]}")
            case "reply" if len(words) >= 3:
                self.reply(words[1], " ".join(words[2:]))
            case word if word.isdigit():
                self.press(int(word))
            case _:
                self.say(f"not a command: {line.strip()!r}\n{HELP}")
        return True


def run_demo(
    *, broker: str = "auto", rooms: int = 3, stdin: TextIO | None = None, out: TextIO | None = None
) -> int:
    stdin = stdin or sys.stdin
    out = out or sys.stdout
    for name in ("", "alembic", "uvicorn"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="panicbutton-demo-") as tmp:
        demo = Demo(out, broker, rooms, Path(tmp))
        with demo.running():
            for line in stdin:
                if not demo.handle(line):
                    break
        demo.say("demo stopped")
    return 0
