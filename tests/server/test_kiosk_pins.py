"""Kiosk PINs and reception screens' sessions: a PIN is set from a browser by someone who
responds, wrong PINs pause the screen for that person and for the screen, and a
screen's session outlives a person's idle limit but not its account."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.app import Server
from server.errors import PeopleError
from server.people import auth, directory
from server.people.kiosk import PER_PERSON, PER_SCREEN, Pins, check_pin
from server.people.roles import Role
from server.people.signin import ThrottledError, WrongCredentialsError, wipe_access
from server.people.tables import WebSession
from server.routes.deps import session_cookie
from tests.harness import bearer, open_person, person_token, web_session
from tests.server.signin_kit import BROWSER, browser, clock, events, running

SCREEN = "reception-screen"


def signed_in(server: Server, person_id: str, roles: tuple[Role, ...]) -> TestClient:
    """A browser signed in as ``person_id`` (opened with ``roles``), sending its CSRF."""
    services = server.services
    open_person(services, person_id, roles=roles)
    cookie = web_session(services, person_id, agent=BROWSER)
    with services.sessions() as session:
        row = session.get(WebSession, auth.sha256(cookie))
        assert row is not None
        csrf = row.csrf
    client = browser(server)
    client.headers["Cookie"] = f"{session_cookie(server.settings)}={cookie}"
    client.headers["X-CSRF-Token"] = csrf
    return client


def pins(server: Server) -> Pins:
    return Pins(sessions=server.services.sessions, clock=server.services.clock)


@pytest.mark.parametrize(
    ("pin", "why"),
    [
        ("123", "4 to 8 digits"),
        ("123456789", "4 to 8 digits"),
        ("12a4", "4 to 8 digits"),
        ("١٢٣٤٥", "4 to 8 digits"),  # digits, but not 0-9
        ("7777", "first PIN a guesser tries"),
        ("3456", "first PIN a guesser tries"),
        ("98765", "first PIN a guesser tries"),
    ],
)
def test_a_weak_or_malformed_pin_is_refused_with_the_reason(pin: str, why: str) -> None:
    with pytest.raises(PeopleError, match=why):
        check_pin(pin)


def test_a_responder_sets_their_pin_from_a_browser_only(database_url: str, tmp_path: Path) -> None:
    with running(database_url, tmp_path) as server:
        staff = signed_in(server, "reception", (Role.STAFF,))
        assert staff.put("/api/v1/me/kiosk-pin", json={"pin": "1111"}).status_code == 422
        assert staff.put("/api/v1/me/kiosk-pin", json={"pin": "2580"}).status_code == 204
        assert pins(server).has("reception")
        assert [r.person_id for r in pins(server).responders()] == ["reception"]
        # An API token cannot set one (a leaked token must not let anyone answer as you).
        token = bearer(person_token(server.services, "reception"))
        client = TestClient(server.app)
        put = client.put("/api/v1/me/kiosk-pin", json={"pin": "2468"}, headers=token)
        assert put.status_code == 403
        assert "only from a signed-in browser" in put.json()["detail"]
        # Who does not respond has nothing to answer at a screen.
        worker = signed_in(server, "w-1", (Role.WORKER,))
        assert worker.put("/api/v1/me/kiosk-pin", json={"pin": "2580"}).status_code == 403
        assert staff.delete("/api/v1/me/kiosk-pin").status_code == 204
        assert staff.delete("/api/v1/me/kiosk-pin").status_code == 404
        assert not pins(server).responders()
        # A recovery takes the PIN away with every other way to act as the person.
        assert staff.put("/api/v1/me/kiosk-pin", json={"pin": "2468"}).status_code == 204
        with server.services.sessions.begin() as session:
            wipe_access(session, "reception", server.services.clock.now())
        assert not pins(server).has("reception")
        assert [e["method"] for e in events(server, "signin.method_added")] == ["kiosk-pin"] * 2
        assert [e["method"] for e in events(server, "signin.method_removed")] == ["kiosk-pin"] * 2


def test_wrong_pins_pause_the_person_then_the_screen(database_url: str, tmp_path: Path) -> None:
    with running(database_url, tmp_path) as server:
        open_person(server.services, "reception")
        pins(server).set("reception", "2580")
        screen = signed_in(server, SCREEN, (Role.KIOSK,))
        form = {"csrf": screen.headers["X-CSRF-Token"], "incident": "1", "person": "reception"}
        for _ in range(PER_PERSON):
            wrong = screen.post("/console/kiosk/acknowledge", data=form | {"pin": "1397"})
            assert wrong.status_code == 403
            assert "Wrong PIN for this name: nothing was acknowledged." in wrong.text
        # Paused: even the right PIN is not checked now, and the screen says for how long.
        paused = screen.post("/console/kiosk/acknowledge", data=form | {"pin": "2580"})
        assert paused.status_code == 429
        assert int(paused.headers["Retry-After"]) > 0
        assert "Too many wrong PINs: wait 16 minutes" in paused.text
        # Some time later the person may try again (the right PIN, no such alarm: 404).
        clock(server).advance(16 * 60)
        later = screen.post("/console/kiosk/acknowledge", data=form | {"pin": "2580"})
        assert later.status_code == 404

        # Someone trying names at one screen pauses that screen for everyone.
        for n in range(PER_SCREEN):
            with pytest.raises(WrongCredentialsError):
                pins(server).prove(screen_id=SCREEN, person_id=f"guess-{n}", pin="1397")
        with pytest.raises(ThrottledError, match="this reception screen"):
            pins(server).prove(screen_id=SCREEN, person_id="reception", pin="2580")
        pins(server).prove(screen_id="another-screen", person_id="reception", pin="2580")


def test_a_screens_session_outlives_the_idle_limit_but_not_its_account(
    database_url: str, tmp_path: Path
) -> None:
    with running(database_url, tmp_path) as server:
        services = server.services
        screen = signed_in(server, SCREEN, (Role.KIOSK,))
        person = signed_in(server, "reception", (Role.STAFF,))
        # A weekend without use: the person signs in again, the screen does not.
        clock(server).advance(2 * 24 * 3600)
        assert person.get("/console/board", follow_redirects=False).headers["location"] == (
            "/sign-in"
        )
        page = screen.get("/console/kiosk")
        assert page.status_code == 200
        # Its cookie is kept across a reboot for PANICBUTTON_KIOSK_SESSION_DAYS (30).
        assert "Max-Age=2592000" in page.headers["set-cookie"]
        # The screen opens nothing else, and its entry is its screen.
        assert screen.get("/console/board").status_code == 403
        entry = screen.get("/console", follow_redirects=False)
        assert entry.headers["location"] == "/console/kiosk"
        # A manager closes the screen's account: its session ends at once.
        with services.sessions.begin() as session:
            directory.close(session, person_id=SCREEN, by="manager", now=services.clock.now())
        assert screen.get("/console/kiosk", follow_redirects=False).status_code == 303
