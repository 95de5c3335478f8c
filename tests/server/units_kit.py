"""What the room-unit install tests share: a browser signed in on the console, a site
CA certificate, and a wheelhouse folder made by hand (no pip build)."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from server.app import Server
from server.people import auth
from server.people.roles import Role
from server.people.tables import WebSession
from server.routes.deps import session_cookie
from server.units.wheelhouse import INSTALLER
from tests.harness import open_person, web_session
from tests.server.signin_kit import BROWSER, browser, form_csrf
from tests.tls import certificates


def signed_in(server: Server, person_id: str, roles: tuple[Role, ...]) -> TestClient:
    """A browser signed in on the console as ``person_id`` (opened with ``roles``)."""
    services = server.services
    open_person(services, person_id, roles=roles)
    cookie = web_session(services, person_id, agent=BROWSER)
    with services.sessions() as session:
        assert session.get(WebSession, auth.sha256(cookie)) is not None
    client = browser(server)
    client.headers["Cookie"] = f"{session_cookie(server.settings)}={cookie}"
    return client


def add_unit(client: TestClient, **fields: str) -> tuple[int, str]:
    """Fill and send the units page's "Add a unit" form as a browser does: the page's
    CSRF token, the checkbox sent only when ticked (``tls=""`` unticks it)."""
    page = client.get("/console/units")
    assert page.status_code == 200, page.text
    form = {
        "csrf": form_csrf(page.text),
        "device_id": "unit-9",
        "room_id": "room-9",
        "label": "Room 9",
        "broker_host": "mqtt.house.example",
        "server_url": "https://alarm.example.test",
        "tls": "true",
    } | fields
    if not form["tls"]:
        del form["tls"]
    answer = client.post("/console/units/add", data=form)
    return answer.status_code, answer.text


def site_ca(path: Path) -> str:
    """A fresh CA certificate (PEM) written at ``path``, as a site makes one."""
    pem = certificates(path.parent / f"{path.stem}-made").ca.read_text()
    path.write_text(pem)
    return pem


def hand_made_wheelhouse(folder: Path, version: str = "9.8.7") -> Path:
    """A wheelhouse folder as the server serves it, made by hand: VERSION,
    requirements.txt, the installer files and one small file standing for a wheel."""
    folder.mkdir(parents=True)
    (folder / "VERSION").write_text(version + "\n")
    (folder / "requirements.txt").write_text(
        f"panicbutton-device=={version} --hash=sha256:{'0' * 64}\n"
    )
    for name in INSTALLER:
        (folder / name).write_text(f"# {name} of the wheelhouse {version}\n")
    # An empty zip: the server serves wheels as they are (pip checks them on the unit).
    (folder / f"panicbutton_device-{version}-py3-none-any.whl").write_bytes(
        b"PK\x05\x06" + bytes(18)
    )
    return folder


#: An enrolment code as the added-unit page shows it.
CODE = re.compile(r'id="enrol-code">([0-9A-Z]{4}(?:-[0-9A-Z]{4}){3})<')
