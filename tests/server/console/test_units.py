"""The units page in Chromium, as an installer uses it: each unit's health, a new unit's
config file (once, with its QR code), a test alert from the page, and retiring a unit
(refused while its room's alarm is open)."""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import segno
from sqlalchemy import select

from device.config import parse_config
from device.indicator import Light
from panicbutton import __version__
from server.people.roles import Role
from server.people.tables import SiteVersion
from tests.harness import System, wait_until
from tests.server.console.conftest import accessible, screenshot

if TYPE_CHECKING:
    from playwright.sync_api import Page


def test_units_show_health_and_a_new_unit_gets_its_config_once(
    console: System, open_page: Callable[..., Page], tmp_path: Path
) -> None:
    room = console.room("unit-1")
    # Unit 3 goes away once and comes back: a spell offline in its history.
    away = console.room("unit-3")
    assert wait_until(lambda: away.light is Light.ARMED), away.lights
    away.agent.close()
    assert wait_until(lambda: console.events("device.offline"))
    back = console.room("unit-3")
    assert wait_until(lambda: room.light is Light.ARMED and back.light is Light.ARMED)
    assert wait_until(lambda: len(console.events("device.online")) == 3)
    page = open_page("fitter", "/console/units", roles=(Role.INSTALLER,))
    online, offline = page.locator("#unit-room-1"), page.locator("#unit-room-2")
    assert online.locator(".link").inner_text() == "online"
    assert online.locator(".version").inner_text() == __version__
    assert "offline" in offline.locator(".link").inner_text()
    assert "never heard from" in offline.inner_text()
    assert " to " in page.locator("#unit-room-3 .spells li").inner_text()
    accessible(page)
    screenshot(page, "units", tmp_path)
    # A manager reads it in French, on a phone.
    french = open_page("manager", "/console/units", viewport={"width": 390, "height": 844})
    assert french.locator("#unit-room-1 .link").inner_text() == "en ligne"
    assert "jamais entendu" in french.locator("#unit-room-2").inner_text()
    accessible(french)
    # An installer sees the units, not the board.
    refused = page.context.new_page()
    response = refused.goto(console.base_url + "/console/board")
    assert response is not None
    assert response.status == 403
    # A form without the session's CSRF token changes nothing.
    forged = page.request.post(
        console.base_url + "/console/units/room-2/retire", form={"csrf": "not-it"}
    )
    assert forged.status == 403

    page.fill("#device_id", "unit-9")
    page.fill("#room_id", "room-9")
    page.fill("#label", "Room 9 <b>bis</b>")
    page.fill("#broker_host", "mqtt.house.example")
    page.fill("#server_url", "https://alarm.example.test")
    # TLS is ticked from the start, but this server has no CA certificate to give.
    tls = page.get_by_label("The broker uses TLS (port 8883), with this server's CA certificate")
    assert tls.is_checked()
    page.get_by_role("button", name="Add the unit").click()
    problem = page.locator(".problem:not([hidden])")
    assert "PANICBUTTON_MQTT_CA_FILE is not set" in problem.inner_text()
    # Plain MQTT to a broker on the network is refused; on the unit itself it is allowed.
    tls.uncheck()
    page.get_by_role("button", name="Add the unit").click()
    assert "mqtt.house.example over the network, so it must use TLS" in problem.inner_text()
    assert page.locator("#label").input_value() == "Room 9 <b>bis</b>"
    assert not tls.is_checked()
    page.fill("#broker_host", "127.0.0.1")
    page.get_by_role("button", name="Add the unit").click()
    page.locator("#device-toml").wait_for()
    text = page.locator("#device-toml").inner_text()
    config = parse_config(tomllib.loads(text), "from the console")
    assert (config.device_id, config.mqtt.host, config.mqtt.port) == (
        "unit-9",
        "127.0.0.1",
        1883,
    )
    # With the server's address, a one-time code for a card that installs itself.
    code = page.locator("#enrol-code").inner_text()
    assert page.locator("#enrol-txt").inner_text() == (
        f"server=https://alarm.example.test\ncode={code}\n"
    )
    with page.expect_download() as saved_code:
        page.get_by_role("button", name="Download enrol.txt").click()
    assert (
        Path(saved_code.value.path()).read_text()
        == f"server=https://alarm.example.test\ncode={code}\n"
    )
    assert config.https is not None
    assert config.https.url == "https://alarm.example.test"
    with page.expect_download() as saved:
        page.get_by_role("button", name="Download device.toml").click()
    assert Path(saved.value.path()).read_text() == text
    qr = page.get_by_role("img", name="The config file of unit-9 as a QR code")
    # The code is the file itself: segno draws the same modules from the text.
    modules = segno.make(text, error="l").svg_inline(scale=3, dark="#000", light="#fff")
    drawn = qr.locator("path[stroke='#000']").get_attribute("d")
    assert drawn is not None
    assert f'd="{drawn}"' in modules
    assert page.locator("#passwd-line").inner_text().startswith("unit-9:$7$101$")
    accessible(page)
    # The room is in the site, with the token's hash; the secrets are nowhere on the server.
    [new] = [r for r in console.server.services.site.rooms if r.id == "room-9"]  # type: ignore[union-attr]
    assert (new.device, new.label) == ("unit-9", "Room 9 <b>bis</b>")
    assert new.token_sha256 == hashlib.sha256(config.https.token.encode()).hexdigest()
    with console.server.services.sessions() as s:  # type: ignore[union-attr]
        stored = str([v.document for v in s.scalars(select(SiteVersion))])
    logged = b"".join(e.body for e in console.events())
    for secret in (config.mqtt.password, config.https.token):
        assert secret not in stored
        assert secret.encode() not in logged
    [changed] = console.events("config.changed")[-1:]
    assert changed.data["by"] == "fitter"

    # A test alert from the page: the server's own, paging the test recipients.
    page.goto(console.base_url + "/console/units")
    page.get_by_role("button", name="Test alert unit-1").click()
    assert wait_until(
        lambda: any(i.kind == "test" and i.outcome == "test" for i in console.incidents())
    )
    [started] = console.events("test.started")
    assert started.data == {"device": "unit-1", "by": "fitter"}
    assert console.events("alert.raised")[-1].data["seq"] == 0
    assert not console.events("device.sequence_back")
    page.reload()
    assert "passed" in page.locator("#unit-room-1 .test").inner_text()
    # Not the unit's alert: its light is told nothing of it.
    assert Light.RECEIVED not in room.lights
    assert room.light is Light.ARMED

    # Retiring: refused while the room's alarm is open; then another unit goes.
    room.press()
    assert wait_until(lambda: any(i.kind == "panic" for i in console.incidents()))
    page.reload()
    page.on("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Retire unit-1").click()
    assert "is open: resolve it first." in page.locator(".problem:not([hidden])").inner_text()
    page.goto(console.base_url + "/console/units")
    page.get_by_role("button", name="Retire unit-2").click()
    assert "unit-2 is retired" in page.locator(".done").inner_text()
    rooms = [r.id for r in console.server.services.site.rooms]  # type: ignore[union-attr]
    assert rooms == ["room-1", "room-3", "room-9"]
