"""The console in a real browser: Debian's Chromium, headless, driven by Playwright,
against the whole system (real Mosquitto, the fake Twilio, the server on loopback).

One Chromium per test process (``chromium``); each test opens its own browser
context, signed in as a person by a web session made for it (the sign-in pages
themselves are tested in ``test_signin_pages.py``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from server.people import auth
from server.people.roles import Role
from tests.harness import Broker, System, open_person, web_session

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

#: The browser's User-Agent: a web session is bound to the browser that signed in.
AGENT = "panicbutton-console-tests"
ROOT = Path(__file__).resolve().parents[3]
#: Where screenshots for the docs go when PANICBUTTON_SCREENSHOTS=1 (`make screenshots`).
DOC_IMAGES = ROOT / "docs" / "use" / "img"


@pytest.fixture
def console(broker: Broker, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[System]:
    """The whole system on SQLite, its cookies usable over plain HTTP on loopback.

    ``@pytest.mark.settings(...)`` and ``@pytest.mark.site(...)`` work as for ``system``.
    """
    from tests.harness import sample_site  # noqa: PLC0415

    marker = request.node.get_closest_marker("settings")
    site_marker = request.node.get_closest_marker("site")
    with System(
        mqtt_port=broker.port,
        users=broker.users,
        database_url=f"sqlite:///{tmp_path / 'console.sqlite3'}",
        folder=tmp_path,
        broker=broker,
        settings={"cookies_secure": False, **(dict(marker.kwargs) if marker else {})},
        site=sample_site(**site_marker.kwargs) if site_marker else None,
    ) as system:
        yield system


def session_cookie(system: System, person_id: str) -> str:
    """A web session for ``person_id``, as signing in makes one (from the test browser)."""
    assert system.server is not None
    return web_session(system.server.services, person_id, agent=AGENT)


@pytest.fixture
def open_page(chromium: Browser, console: System) -> Iterator[Callable[..., Page]]:
    """``open_page(person_id, path, roles=...)``: a new browser signed in as that person
    (their account opened with ``roles`` if it has none), at ``path``."""
    contexts = []

    def opened(
        person_id: str = "manager",
        path: str = "/console/board",
        *,
        roles: tuple[Role, ...] | None = None,
        **context: Any,
    ) -> Page:
        assert console.server is not None
        open_person(console.server.services, person_id, roles=roles)
        ctx = chromium.new_context(user_agent=AGENT, **context)
        contexts.append(ctx)
        ctx.add_cookies(
            [
                {
                    "name": auth.DEMO_SESSION_COOKIE,
                    "value": session_cookie(console, person_id),
                    "url": console.base_url,
                    "httpOnly": True,
                    "sameSite": "Strict",
                }
            ]
        )
        page = ctx.new_page()
        page.goto(console.base_url + path)
        return page

    try:
        yield opened
    finally:
        for ctx in contexts:
            ctx.close()


#: axe-core impact levels the console must not have.
FORBIDDEN = ("serious", "critical")


def accessible(page: Page) -> list[dict[str, Any]]:
    """axe-core's violations on the page as it is now; asserts none is serious or
    critical (each named with its rule, help and first element), returns them all."""
    from axe_playwright_python.sync_playwright import Axe  # noqa: PLC0415

    results = Axe().run(page)
    violations: list[dict[str, Any]] = results.response["violations"]
    bad = [
        f"{v['id']} ({v['impact']}): {v['help']} at {v['nodes'][0]['target']}"
        for v in violations
        if v.get("impact") in FORBIDDEN
    ]
    assert not bad, f"{page.url}: " + "; ".join(bad)
    return violations


def screenshot(page: Page, name: str, tmp_path: Path) -> Path:
    """A full-page screenshot: into the docs (``docs/use/img/<name>.png``) under
    PANICBUTTON_SCREENSHOTS=1, else beside the test's files."""
    folder = DOC_IMAGES if os.environ.get("PANICBUTTON_SCREENSHOTS") == "1" else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 1000
    return path
