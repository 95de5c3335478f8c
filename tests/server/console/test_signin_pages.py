"""Signing in to the console in Chromium with a password and a TOTP code, the
CSRF rule in the browser, and the headers every console answer carries."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING
from urllib.parse import quote

import httpx
import pyotp

from server.people import auth
from server.people.passwords import new_totp_secret
from server.people.roles import Role
from server.people.signin import set_password
from server.people.tables import WebSession
from tests.harness import System, open_person
from tests.server.console.conftest import AGENT, accessible, session_cookie
from tests.server.test_rights import api_routes

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page


def test_password_and_totp_sign_in_lands_on_the_board_and_csrf_is_required(
    console: System, chromium: Browser, open_page: Callable[..., Page]
) -> None:
    assert console.server is not None
    services = console.server.services
    open_page("reception")  # opens the account
    secret = new_totp_secret()
    now = services.clock.now()
    with services.sessions.begin() as session:
        # Turned on with the previous period's code, as if set up half a minute ago.
        earlier = pyotp.TOTP(secret).at(now - timedelta(seconds=30))
        set_password(
            session,
            person_id="reception",
            password="a long enough passphrase",
            now=now,
            totp_secret=secret,
            totp_code=earlier,
        )
    page = chromium.new_context(user_agent=AGENT).new_page()
    try:
        page.goto(console.base_url + "/sign-in")
        accessible(page)
        page.get_by_label("Your id").fill("reception")
        page.get_by_label("Password", exact=True).fill("a long enough passphrase")
        page.get_by_label("Code from your authenticator app").fill(pyotp.TOTP(secret).now())
        page.get_by_role("button", name="Sign in", exact=True).click()
        page.wait_for_url(console.base_url + "/console/board")
        assert page.locator("header .who").inner_text() == "Reception"
        accessible(page)

        # The session's cookie alone does not make a change: the CSRF token must come too.
        [incident_less] = [console.api + "/incidents/1/acknowledge"]
        refused = page.request.post(incident_less, data={})
        assert refused.status == 403
        assert "X-CSRF-Token" in refused.json()["detail"]
        csrf = page.locator('meta[name="csrf"]').get_attribute("content")
        assert csrf
        allowed = page.request.post(incident_less, data={}, headers={"X-CSRF-Token": csrf})
        assert allowed.status == 404  # past the CSRF check: there is no incident 1
        out = page.request.post(console.base_url + "/sign-out", form={"csrf": "wrong"})
        assert out.status == 403
    finally:
        page.context.close()


def test_every_console_page_carries_the_security_headers(
    console: System, chromium: Browser, open_page: Callable[..., Page]
) -> None:
    assert console.server is not None
    page = open_page("manager", "/console")
    paths = sorted(
        path
        for method, path, _ in api_routes(console.server)
        if path.startswith("/console")
        and method == "GET"
        and "{" not in path
        and not path.endswith("/events")
    )
    assert "/console/board" in paths
    for path in paths:
        answer = page.request.get(console.base_url + path, max_redirects=0)
        headers = answer.headers
        # 403: a manager does not open the reception screen (a page saying so).
        assert answer.status in (200, 303, 403), (path, answer.status)
        csp = headers["content-security-policy"]
        scripts = re.search(r"script-src ([^;]*)", csp)
        assert scripts, (path, csp)
        assert "unsafe" not in scripts.group(1), (path, csp)
        assert "frame-ancestors 'none'" in csp, path
        assert headers["referrer-policy"] == "no-referrer", path
        assert headers["cache-control"] == "no-store", path
        assert headers["x-content-type-options"] == "nosniff", path


def test_a_page_the_reader_may_not_open_says_so_in_their_language(console: System) -> None:
    assert console.server is not None
    open_person(console.server.services, "w-9", roles=(Role.WORKER,), language="nl")
    cookie = session_cookie(console, "w-9")
    with httpx.Client(base_url=console.base_url, headers={"User-Agent": AGENT}) as browser:
        browser.cookies.set(auth.DEMO_SESSION_COOKIE, cookie)
        refused = browser.get("/console/board")
        assert refused.status_code == 403
        assert "<h1>Geen toegang</h1>" in refused.text
        assert "staff" in refused.text  # the roles that carry the right
        assert refused.headers["cache-control"] == "no-store"
        # A worker's console is their own account.
        assert browser.get("/console", follow_redirects=False).headers["location"] == "/account"
    with httpx.Client(base_url=console.base_url) as nobody:
        away = nobody.get("/console/board", follow_redirects=False)
        assert (away.status_code, away.headers["location"]) == (303, "/sign-in")


def test_api_answers_are_private_and_a_reason_may_be_in_any_script(console: System) -> None:
    with httpx.Client(base_url=console.base_url) as client:
        manager = console.headers("manager")
        french = {"X-Panicbutton-Justification": "utf-8''" + quote("l\u2019inspection annuelle")}
        listed = client.get("/api/v1/incidents", headers=manager | french)
        assert listed.status_code == 200, listed.text
        assert listed.headers["cache-control"] == "no-store"
        # Not UTF-8 once decoded: kept as sent (still a reason the schema allows).
        broken = {"X-Panicbutton-Justification": "utf-8''%FF%FE%FD%FC%FB%FA%F9%F8"}
        assert client.get("/api/v1/incidents", headers=manager | broken).status_code == 200
        assert client.get("/api/v1/incidents", headers=manager).status_code == 400
        # The console's own files are public and cached (revalidated by ETag).
        script = client.get("/console/static/board.js")
        assert script.headers["cache-control"] == "no-cache"
        again = client.get(
            "/console/static/board.js", headers={"If-None-Match": script.headers["etag"]}
        )
        assert again.status_code == 304


def test_the_reason_for_opening_records_goes_with_its_session(console: System) -> None:
    assert console.server is not None
    services = console.server.services
    open_person(services, "reception")
    cookie = session_cookie(console, "reception")
    now = services.clock.now()
    with services.sessions.begin() as session:
        row = session.get(WebSession, auth.sha256(cookie))
        assert row is not None
        row.justification = "checking last night's alarm"
        row.ended_at = now  # signed out, or abandoned and ended
    services.keeper.purge(now)
    with services.sessions() as session:
        row = session.get(WebSession, auth.sha256(cookie))
        assert row is not None
        assert row.justification is None
