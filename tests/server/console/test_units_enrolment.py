"""Adding a unit on the units page, for a unit that installs itself from an empty SD
card: TLS by default with this server's CA, plain MQTT refused for a broker on the
network, and a one-time enrolment code whose bundle makes a working ``device.toml``."""

from __future__ import annotations

import hashlib
import html
import re
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from device.config import load_config
from server.console import i18n
from server.people.roles import Role
from server.people.tables import SiteVersion
from server.units import enrolment
from server.units.tables import UnitEnrolment
from server.units.wheelhouse import firmware_folder
from tests.harness import bearer
from tests.server.signin_kit import browser, clock, form_csrf, running
from tests.server.units_kit import CODE, add_unit, hand_made_wheelhouse, signed_in, site_ca

INSTALLER = (Role.INSTALLER,)


def rooms(server: object) -> list[str]:
    return [r.id for r in server.services.site.rooms]  # type: ignore[attr-defined]


def test_the_form_starts_with_tls_and_the_servers_address(
    database_url: str, tmp_path: Path
) -> None:
    with running(database_url, tmp_path) as server:
        page = signed_in(server, "fitter", INSTALLER).get("/console/units").text
        assert re.search(r'<input type="checkbox" name="tls" value="true" checked', page)
        assert (
            'name="server_url" type="url" maxlength="300" value="https://alarm.example.test"'
            in (page)
        )


def test_a_unit_added_with_tls_enrols_once_with_its_code(database_url: str, tmp_path: Path) -> None:
    ca = site_ca(tmp_path / "site-ca.crt")
    with running(database_url, tmp_path, mqtt_ca_file=tmp_path / "site-ca.crt") as server:
        fitter = signed_in(server, "fitter", INSTALLER)
        status, page = add_unit(fitter, label="Room 9 <b>bis</b>")
        assert status == 200, page
        [code] = CODE.findall(page)
        until = clock(server).now() + enrolment.LIFETIME
        shown = i18n.when(until, language="en", timezone=server.services.site.timezone)
        assert (
            f"it works until {shown}, and no longer than 15 minutes after the unit first uses it"
        ) in page
        assert f'id="enrol-txt">server=https://alarm.example.test\ncode={code}\n</pre>' in page
        for name in ("firstboot.sh", "unit_fetch.py"):
            assert f'href="/console/units/sd-card/{name}" download="{name}"' in page
        assert "docs/install/room-units.md, “From an empty SD card”" in html.unescape(page)
        # The one-file config and the CA for a unit made by hand, as before.
        config_text = html.unescape(page.split('id="device-toml">')[1].split("</pre>")[0])
        assert "port = 8883" in config_text
        assert 'ca_file = "/etc/panicbutton/ca.crt"' in config_text
        assert html.unescape(page.split('id="ca-crt">')[1].split("</pre>")[0]) == ca

        # Until it is used, the units page says a code waits for the unit.
        units = fitter.get("/console/units").text
        row = units.split('id="unit-room-9"')[1].split("</tr>")[0]
        waiting = i18n.when(until, language="en", timezone=server.services.site.timezone)
        assert f"enrolment code waiting until {waiting}" in row
        # A manager reads it in French.
        french = signed_in(server, "manager", (Role.MANAGER,)).get("/console/units").text
        assert "code d'enregistrement en attente jusqu'au" in french.split('id="unit-room-9"')[1]

        # The unit trades the code (typed in lower case) for its bundle: its files make a
        # config that loads, with the secrets the console showed and the server's CA.
        got = browser(server).post("/api/v1/enrol", json={"code": code.lower()})
        assert got.status_code == 200, got.text
        bundle = got.json()
        assert bundle["device_id"] == "unit-9"
        files = bundle["files"]
        assert set(files) == {"device.toml", "mqtt-password", "device-token", "ca.crt"}
        assert files["ca.crt"] == ca
        etc = tmp_path / "etc-panicbutton"
        etc.mkdir()
        for name, text in files.items():
            (etc / name).write_text(text.replace("/etc/panicbutton", str(etc)))
        config = load_config(etc / "device.toml")
        assert (config.device_id, config.mqtt.host, config.mqtt.port) == (
            "unit-9",
            "mqtt.house.example",
            8883,
        )
        assert config.mqtt.ca_file == etc / "ca.crt"
        assert config.https is not None
        assert config.https.url == "https://alarm.example.test"
        assert config.https.ca_file == etc / "ca.crt"
        assert f"password = {_quoted(config.mqtt.password)}" in config_text
        assert f"token = {_quoted(config.https.token)}" in config_text
        # The site holds the token's hash: the bundle's token opens the unit's routes.
        [room] = [r for r in server.services.site.rooms if r.id == "room-9"]
        assert room.token_sha256 == hashlib.sha256(config.https.token.encode()).hexdigest()
        wheelhouse = browser(server).get(
            "/api/v1/devices/unit-9/wheelhouse", headers=bearer(config.https.token)
        )
        assert wheelhouse.status_code == 503  # past the token: this server has no wheelhouse
        # Used: the page no longer says it waits. A unit whose answer was lost asks again
        # with the same code and gets the same bundle, for 15 minutes; then never.
        row = fitter.get("/console/units").text.split('id="unit-room-9"')[1].split("</tr>")[0]
        assert "enrolment code waiting" not in row
        clock(server).advance(enrolment.GRACE.total_seconds() - 1)
        again = browser(server).post("/api/v1/enrol", json={"code": code})
        assert (again.status_code, again.json()) == (200, bundle)
        clock(server).advance(1)
        assert browser(server).post("/api/v1/enrol", json={"code": code}).status_code == 404
        # The secrets are nowhere in the server's database.
        with server.services.sessions() as s:
            stored = str([v.document for v in s.scalars(select(SiteVersion))])
        for secret in (config.mqtt.password, config.https.token):
            assert secret not in stored


def _quoted(text: str) -> str:
    return f'"{text}"'


def test_tls_without_a_ca_on_the_server_changes_nothing(database_url: str, tmp_path: Path) -> None:
    with running(database_url, tmp_path) as server:
        status, page = add_unit(signed_in(server, "fitter", INSTALLER))
        assert status == 422
        assert (
            "This server has no CA certificate for the broker (PANICBUTTON_MQTT_CA_FILE is "
            "not set), so it has none to give a unit that uses TLS."
        ) in html.unescape(page)
        assert "Nothing was changed." in page
        _nothing_changed(server)


def test_a_ca_file_that_is_no_longer_a_certificate_changes_nothing(
    database_url: str, tmp_path: Path
) -> None:
    ca = tmp_path / "ca.crt"
    site_ca(ca)
    with running(database_url, tmp_path, mqtt_ca_file=ca) as server:
        # The server started with it (its own broker link reads it at start); since then
        # someone replaced it, then removed it.
        fitter = signed_in(server, "fitter", INSTALLER)
        ca.write_text("not a certificate\n")
        status, page = add_unit(fitter)
        assert status == 422
        assert (
            f"This server's CA certificate for the broker, {ca} (PANICBUTTON_MQTT_CA_FILE), "
            "is not a PEM certificate (it has no BEGIN CERTIFICATE line). Nothing was changed."
        ) in html.unescape(page)
        ca.unlink()
        status, page = add_unit(fitter)
        assert status == 422
        assert "cannot be read: No such file or directory. Nothing was changed." in page
        _nothing_changed(server)


def test_plain_mqtt_is_refused_for_a_broker_on_the_network(
    database_url: str, tmp_path: Path
) -> None:
    site_ca(tmp_path / "ca.crt")
    with running(database_url, tmp_path, mqtt_ca_file=tmp_path / "ca.crt") as server:
        fitter = signed_in(server, "fitter", INSTALLER)
        status, page = add_unit(fitter, tls="")
        assert status == 422
        assert (
            "a unit reaches mqtt.house.example over the network, so it must use TLS: tick "
            "“The broker uses TLS”"
        ) in html.unescape(page)
        assert "nothing was changed" in page
        # What was typed stays in the form, TLS still unticked.
        assert 'name="broker_host" required maxlength="253" value="mqtt.house.example"' in page
        assert re.search(r'name="tls" value="true" aria-describedby', page)
        _nothing_changed(server)

        # A broker on the unit itself (the one-Pi site) is reached in clear.
        status, page = add_unit(fitter, tls="", broker_host="127.0.0.1")
        assert status == 200, page
        config_text = html.unescape(page.split('id="device-toml">')[1].split("</pre>")[0])
        assert "port = 1883" in config_text
        assert "ca_file" not in config_text
        assert 'id="ca-crt"' not in page
        [code] = CODE.findall(page)
        files = browser(server).post("/api/v1/enrol", json={"code": code}).json()["files"]
        assert set(files) == {"device.toml", "mqtt-password", "device-token"}


def test_without_the_servers_address_there_is_no_code(database_url: str, tmp_path: Path) -> None:
    site_ca(tmp_path / "ca.crt")
    with running(database_url, tmp_path, mqtt_ca_file=tmp_path / "ca.crt") as server:
        fitter = signed_in(server, "fitter", INSTALLER)
        status, page = add_unit(fitter, server_url="")
        assert status == 200, page
        assert not CODE.findall(page)
        assert "No enrolment code: it needs the server's address" in html.unescape(page)
        with server.services.sessions() as s:
            assert s.scalars(select(UnitEnrolment)).all() == []
        # Adding the unit again with the address: new secrets, a code.
        status, page = add_unit(fitter)
        assert status == 200, page
        assert len(CODE.findall(page)) == 1
        assert rooms(server).count("room-9") == 1


def test_retiring_a_unit_drops_its_waiting_code(database_url: str, tmp_path: Path) -> None:
    site_ca(tmp_path / "ca.crt")
    with running(database_url, tmp_path, mqtt_ca_file=tmp_path / "ca.crt") as server:
        fitter = signed_in(server, "fitter", INSTALLER)
        status, page = add_unit(fitter)
        assert status == 200, page
        [code] = CODE.findall(page)
        units = fitter.get("/console/units").text
        retired = fitter.post("/console/units/room-9/retire", data={"csrf": form_csrf(units)})
        assert "The unit unit-9 is retired" in retired.text
        assert browser(server).post("/api/v1/enrol", json={"code": code}).status_code == 404
        _nothing_changed(server)


def _nothing_changed(server: object) -> None:
    assert "room-9" not in rooms(server)
    with server.services.sessions() as s:  # type: ignore[attr-defined]
        assert s.scalars(select(UnitEnrolment)).all() == []


@pytest.mark.parametrize("name", ["firstboot.sh", "unit_fetch.py"])
def test_the_sd_cards_files_come_from_the_wheelhouse_or_the_install(
    name: str, database_url: str, tmp_path: Path
) -> None:
    with running(database_url, tmp_path) as server:
        fitter = signed_in(server, "fitter", INSTALLER)
        got = fitter.get(f"/console/units/sd-card/{name}")
        assert got.status_code == 200
        assert got.content == (firmware_folder() / name).read_bytes()
        assert got.headers["content-disposition"] == f'attachment; filename="{name}"'
        assert fitter.get("/console/units/sd-card/provision.sh").status_code == 422
        refused = signed_in(server, "reception", (Role.STAFF,)).get(
            f"/console/units/sd-card/{name}"
        )
        assert refused.status_code == 403
        stranger = browser(server).get(f"/console/units/sd-card/{name}", follow_redirects=False)
        assert (stranger.status_code, stranger.headers["location"]) == (303, "/sign-in")
    house = hand_made_wheelhouse(tmp_path / "wheelhouse")
    with running(database_url, tmp_path, wheelhouse_dir=house) as server:
        fitter = signed_in(server, "fitter", INSTALLER)
        got = fitter.get(f"/console/units/sd-card/{name}")
        assert got.content == (house / name).read_bytes()
        (house / name).unlink()
        broken = fitter.get(f"/console/units/sd-card/{name}")
        assert broken.status_code == 503
        assert f"the wheelhouse {house} lacks {name}" in broken.text


def test_an_installed_server_takes_the_units_scripts_from_its_firmware_dir(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As in the Docker image: a copy of firmware_config/ away from any checkout.
    copy = tmp_path / "usr-share" / "firmware_config"
    shutil.copytree(firmware_folder(), copy)
    with (copy / "firstboot.sh").open("a") as script:
        script.write("# the image's own copy\n")
    monkeypatch.setenv("PANICBUTTON_FIRMWARE_DIR", str(copy))
    with running(database_url, tmp_path) as server:
        fitter = signed_in(server, "fitter", INSTALLER)
        got = fitter.get("/console/units/sd-card/firstboot.sh")
        assert got.status_code == 200
        assert got.content == (copy / "firstboot.sh").read_bytes()
        assert got.content.endswith(b"# the image's own copy\n")
        monkeypatch.setenv("PANICBUTTON_FIRMWARE_DIR", str(tmp_path / "usr-share"))
        wrong = fitter.get("/console/units/sd-card/firstboot.sh")
        assert wrong.status_code == 503
        assert wrong.json()["detail"] == (
            f"{tmp_path / 'usr-share'} is not the project's firmware_config/ (it has no "
            "provision.sh): run from the project's checkout, or set PANICBUTTON_FIRMWARE_DIR "
            "to a copy of its firmware_config/"
        )
