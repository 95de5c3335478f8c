"""A passkey in a real browser: Debian's Chromium, headless, with Chromium's virtual
authenticator (CDP ``WebAuthn``), enrols through a one-time link and signs in again,
on the pages as they are served (their scripts, CSP and cookies), at http://localhost.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import uvicorn

from demo.broker import free_port
from server.app import Server
from server.people.roles import Role
from tests.server.signin_kit import events, invite, running

if TYPE_CHECKING:
    from playwright.sync_api import Browser


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Server, str]]:
    port = free_port()
    base = f"http://localhost:{port}"
    with running(
        f"sqlite:///{tmp_path / 'browser.sqlite3'}",
        tmp_path,
        start=datetime.now(UTC),
        public_base_url=base,
        cookies_secure=False,
    ) as server:
        web = uvicorn.Server(
            uvicorn.Config(
                server.app, host="127.0.0.1", port=port, lifespan="off", log_level="warning"
            )
        )
        thread = threading.Thread(target=web.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not web.started and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            yield server, base
        finally:
            web.should_exit = True
            thread.join(timeout=10)


def test_passkey_enrolment_and_sign_in_in_chromium(
    served: tuple[Server, str], chromium: Browser
) -> None:
    server, base = served
    link = invite(server, "first-manager", Role.MANAGER)
    context = chromium.new_context()
    try:
        page = context.new_page()
        cdp = page.context.new_cdp_session(page)
        cdp.send("WebAuthn.enable")
        cdp.send(
            "WebAuthn.addVirtualAuthenticator",
            {
                "options": {
                    "protocol": "ctap2",
                    "transport": "internal",
                    "hasResidentKey": True,
                    "hasUserVerification": True,
                    "isUserVerified": True,
                }
            },
        )
        page.goto(base + link)
        page.get_by_label("Name for this device").fill("test phone")
        page.get_by_role("button", name="Create a passkey").click()
        # Signed in, a manager lands on the console's live board.
        page.wait_for_url(f"{base}/console/board")
        assert page.locator("header .who").inner_text() == "Name of first-manager"

        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url(f"{base}/sign-in")
        page.get_by_role("button", name="Sign in with a passkey").click()
        page.wait_for_url(f"{base}/console/board")
        page.goto(f"{base}/account")
        assert page.locator("#who").inner_text() == "first-manager"
    finally:
        context.close()
    assert events(server, "signin.method_added") == [
        {"person": "first-manager", "method": "passkey"}
    ]
