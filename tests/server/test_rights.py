"""Rights on every route: a table of role x route x expected status, generated from the
app's own routes, so that a new route without a rule fails here.

Every route either names the right it needs (``server.routes.deps.need``) or is listed
in :data:`OWN_PROOF` with the proof it checks instead (a Twilio signature, a unit's
token, a signed link, or none yet because it is how one signs in).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import SecretStr

from server.app import Server, build
from server.paging.notifier import ConsoleNotifier
from server.people.roles import RIGHTS, Right, Role
from server.settings import Settings
from tests.harness import bearer, browser_headers, person_token, sample_site

#: Routes that check a proof of their own instead of a person's right, and which proof.
OWN_PROOF: dict[str, str] = {
    "POST /twilio/sms": "Twilio signature",
    "POST /twilio/voice": "Twilio signature",
    "POST /twilio/status": "Twilio signature",
    "POST /twilio/call": "Twilio signature",
    "POST /twilio/call/code": "Twilio signature",
    "POST /api/v1/devices/{device_id}/alerts": "the unit's own token",
    "GET /api/v1/devices/{device_id}/check": "the unit's own token",
    "GET /api/v1/devices/{device_id}/wheelhouse": "the unit's own token",
    "POST /api/v1/devices/{device_id}/install": "the unit's own token",
    "POST /api/v1/enrol": "the one-time enrolment code in the body (a new unit has no "
    "token yet: the code is what gives it one)",
    "GET /ack/{token}": "a signed single-use link from a page",
    "POST /ack/{token}": "a signed single-use link from a page",
    "GET /map/{token}": "a signed link from a page (read only, until it expires)",
    "GET /console/static/{name}": "none: the console's scripts, styles and icons, the same "
    "for everyone and holding no personal data",
    "GET /healthz": "none: it says only that the process answers, for health checks that "
    "hold no secret (docker, systemd)",
    **{
        f"GET {path}": "none: the phone app's shell, the same for everyone, holding no "
        "personal data"
        for path in (
            "/phone",
            "/phone/enrol",
            "/phone/manifest.webmanifest",
            "/phone/sw.js",
            "/phone/static/{name}",
        )
    },
}
#: Routes a person reaches before signing in (their proof is what they send).
SIGN_IN = re.compile(r"^(GET|POST) /(sign-in|sign-out|enrol)(/|$)")
#: The mobile button's API: a request signed by an enrolled phone's own key (enrolling:
#: the one-time link's token). No person's right opens it.
PHONE = re.compile(r"^(GET|POST) /api/v1/phone/")

#: Where a route with the right still refuses a role for a reason of its own: a check
#: inside the route (for example, only a worker consents for themselves).
NOT_WORKERS = (Role.MANAGER, Role.STAFF, Role.INSPECTOR, Role.INSTALLER)
#: Changing how one signs in, and one's tokens: only from a signed-in browser, never
#: with an API token (a stolen token must not take the account over).
BROWSER_ONLY = (
    "POST /api/v1/me/passkey-options",
    "DELETE /api/v1/me/tokens/{token_id}",
    "DELETE /api/v1/me/passkeys/{key_id}",
    "GET /api/v1/me/totp-seed",
    "DELETE /api/v1/me/kiosk-pin",
    # A phone's enrolment link lets whoever opens it raise alarms as that worker.
    "POST /api/v1/people/{person_id}/phone-link",
)
INSIDE: dict[tuple[str, Role], int] = {
    **{(route, role): 403 for route in BROWSER_ONLY for role in Role},
    # Checking oneself in or out, and consenting in the violence register, are a
    # worker's own acts (staff check a worker in by naming them: `person`).
    **{
        (f"{method} {path}", role): 403
        for method, path in (
            ("POST", "/api/v1/presence/check-in"),
            ("POST", "/api/v1/presence/check-out"),
            ("POST", "/api/v1/me/violence/{incident_id}/consent"),
            ("DELETE", "/api/v1/me/violence/{incident_id}/consent"),
        )
        for role in NOT_WORKERS
    },
    # The console's entry sends a reception screen to its one page.
    ("GET /console", Role.KIOSK): 303,
    # A test page is for people who are paged: staff and managers.
    **{
        ("POST /api/v1/me/test-page", role): 403
        for role in (Role.WORKER, Role.INSPECTOR, Role.INSTALLER)
    },
}

PARAMS = {
    "incident_id": "1",
    "device_id": "unit-1",
    "fmt": "csv",
    "person_id": "nobody-here",
    "role": "staff",
    "token_id": "nosuchtoken0",
    "token": "x",
    "alert_id": "0" * 32,
    "phone_id": "0" * 16,
}


def needed_right(route: Any) -> Right | None:
    """The right a route's dependencies name via ``need()``, if any."""
    stack = [route.dependant]
    while stack:
        dependant = stack.pop()
        right = getattr(dependant.call, "right", None)
        if isinstance(right, Right):
            return right
        stack.extend(dependant.dependencies)
    return None


def api_routes(server: Server) -> Iterator[tuple[str, str, Any]]:
    """Every operation (method, path, route) the app serves, routers included. (FastAPI
    0.16x keeps an included router's routes behind ``effective_route_contexts``.)"""
    for route in server.app.routes:
        contexts: list[Any] = (
            [route]
            if isinstance(route, APIRoute)
            else list(getattr(route, "effective_route_contexts", list)())
        )
        for context in contexts:
            for method in sorted(set(context.methods) - {"HEAD"}):
                yield method, context.path, context


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    settings = Settings(
        demo=True,
        database_url=f"sqlite:///{tmp_path / 'rights.sqlite3'}",
        log_checkpoint_file=tmp_path / "checkpoints.jsonl",
        twilio_auth_token=SecretStr("t" * 32),
        public_base_url="https://alarm.example.test",
    )
    built = build(settings, site=sample_site(), notifier=ConsoleNotifier(lambda _: None))
    yield built
    built.services.stop()


def test_every_route_names_a_right_or_its_own_proof(server: Server) -> None:
    unruled = [
        f"{method} {path}"
        for method, path, route in api_routes(server)
        if needed_right(route) is None
        and f"{method} {path}" not in OWN_PROOF
        and not SIGN_IN.match(f"{method} {path}")
        and not PHONE.match(f"{method} {path}")
    ]
    assert not unruled, (
        f"routes with no rule: {unruled}; give each `Depends(need(Right.X))` "
        "(server/routes/deps.py), or list its own proof in OWN_PROOF with a reason"
    )


def test_a_phones_routes_answer_no_person(server: Server) -> None:
    """Neither nobody nor a manager's token (every right) reaches a phone's routes: only
    the phone's own signature does (tests/server/mobile)."""
    client = TestClient(server.app, raise_server_exceptions=False)
    manager = bearer(person_token(server.services, "only-manager", roles=[Role.MANAGER]))
    routes = [
        (method, path)
        for method, path, _ in api_routes(server)
        if PHONE.match(f"{method} {path}") and path != "/api/v1/phone/enrol"
    ]
    assert len(routes) >= 3, routes
    for method, path in routes:
        for who in ({}, manager):
            got = _call(client, method, path, who).status_code
            assert got == 401, f"{method} {path} answered {got} to {who or 'nobody'}"


def _call(client: TestClient, method: str, path: str, headers: dict[str, str]) -> Any:
    url = re.sub(r"\{(\w+)\}", lambda m: PARAMS.get(m.group(1), "x"), path)
    headers = headers | {"X-Panicbutton-Justification": "checking the rights table"}
    if method in ("GET", "DELETE"):
        answer = client.request(method, url, headers=headers, follow_redirects=False)
    else:
        answer = client.request(method, url, headers=headers, json={}, follow_redirects=False)
    if answer.status_code == 303 and answer.headers.get("location") == "/sign-in":
        # A console page sends a browser that is not signed in to sign in: its 401.
        answer.status_code = 401
    return answer


#: The console's pages open to a signed-in browser only (its session cookie); a browser
#: that is not signed in is sent to /sign-in (counted as 401).
CONSOLE = re.compile(r"^(GET|POST|PUT|DELETE) /console(/|$)")
#: The User-Agent of the rights table's browser sessions.
AGENT = "rights-table"


def test_role_by_route_table(server: Server) -> None:
    """Each role with one token per person holding that role alone: a route answers 403
    to every role without its right, and never 401/403 to a role with it."""
    client = TestClient(server.app, raise_server_exceptions=False)
    tokens = {
        role: person_token(server.services, f"only-{role.value}", roles=[role]) for role in Role
    }
    table: dict[str, dict[Role, int]] = {}
    for method, path, route in api_routes(server):
        right = needed_right(route)
        if right is None:
            continue
        row = table.setdefault(f"{method} {path}", {})
        console = CONSOLE.match(f"{method} {path}") is not None
        streams = "text/event-stream" in route.responses.get(200, {}).get("content", {})
        for role in Role:
            if streams and right in RIGHTS[role]:
                # An event stream never ends: a role with the right is not called (the
                # browser tests open the stream); those without it must be refused.
                row[role] = 200
                continue
            # A fresh session each time: an API call before may have ended them all.
            who = f"only-{role.value}"
            caller = browser_headers(server, who, agent=AGENT) if console else bearer(tokens[role])
            row[role] = _call(client, method, path, caller).status_code
        nobody = _call(client, method, path, {}).status_code
        assert nobody == 401, f"{method} {path} answered {nobody} to nobody"
        for role in Role:
            expected = INSIDE.get((f"{method} {path}", role))
            got = row[role]
            if expected is not None:
                assert got == expected, (method, path, role, got)
            elif right in RIGHTS[role]:
                assert got not in (401, 403), f"{method} {path}: {role} has {right}, got {got}"
            else:
                assert got == 403, f"{method} {path}: {role} lacks {right}, got {got}"
    assert len(table) >= 12, f"only {len(table)} routes name a right"


def test_a_token_carries_only_its_scopes(server: Server) -> None:
    client = TestClient(server.app)
    narrow = person_token(server.services, "manager", scopes=[Right.BOARD.value])
    assert client.get("/api/v1/paging", headers=bearer(narrow)).status_code == 200
    refused = client.get(
        "/api/v1/incidents",
        headers=bearer(narrow) | {"X-Panicbutton-Justification": "board check"},
    )
    assert refused.status_code == 403
    assert "only the scopes it was made with" in refused.json()["detail"]


def test_a_role_taken_away_is_gone_from_every_token_at_once(server: Server) -> None:
    from server.people import directory  # noqa: PLC0415

    client = TestClient(server.app)
    token = person_token(server.services, "floor")
    assert client.get("/api/v1/paging", headers=bearer(token)).status_code == 200
    with server.services.sessions.begin() as session:
        directory.revoke(
            session,
            person_id="floor",
            role=Role.STAFF,
            by="manager",
            now=server.services.clock.now(),
        )
    # No role left: the token opens nothing (401: it no longer names anyone who may act).
    assert client.get("/api/v1/paging", headers=bearer(token)).status_code == 401


def test_the_rights_table_in_the_docs_is_the_codes() -> None:
    page = (Path(__file__).parents[2] / "docs" / "use" / "roles.md").read_text()
    table = page.partition("<!-- rights-table")[2].partition("<!-- end of rights-table")[0]
    rows = re.findall(r"^\| `(\w+)` \| [^|]+ \|(.*)\|$", table, re.MULTILINE)
    documented = {
        Right(right): {
            role for role, cell in zip(Role, cells.split("|"), strict=True) if cell.strip()
        }
        for right, cells in rows
    }
    assert documented == {right: {r for r in Role if right in RIGHTS[r]} for right in Right}


def test_an_installer_sees_the_units_health_and_nothing_of_incidents(server: Server) -> None:
    client = TestClient(server.app)
    installer = bearer(person_token(server.services, "fitter", roles=[Role.INSTALLER]))
    units = client.get("/api/v1/units", headers=installer)
    assert units.status_code == 200
    assert [(u["room_id"], u["device_id"], u["online"]) for u in units.json()] == [
        ("room-1", "unit-1", False),
        ("room-2", "unit-2", False),
        ("room-3", "unit-3", False),
    ]
    assert all(u["https"] for u in units.json())  # the sample site gives each a token
    why = {"X-Panicbutton-Justification": "checking the units"}
    assert client.get("/api/v1/incidents", headers=installer | why).status_code == 403
    assert client.get("/api/v1/people", headers=installer).status_code == 403
