"""The phone button's page: its shell served with a strict policy and no inline code,
installable (manifest, icons, service worker); then, in Chromium emulating a phone,
set up from a manager's link, held 2 s to alarm, the state shown as a room light
shows it (and still after a reload), the SMS and the call when the data connection
fails, the app opening with no connection at all, and a removed phone told so."""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from playwright.sync_api import Request, expect

from server.mobile.phones import code_sha256
from server.mobile.tables import MobilePhone
from server.routes import phone_page
from tests import web
from tests.harness import System, reply_code, wait_until
from tests.server.console.conftest import accessible, screenshot
from tests.server.mobile.conftest import WHERE, PhonePage
from tests.server.people_helpers import browser_as

RECEIVED = "Received — we are calling your reference person"


POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; manifest-src 'self'; worker-src 'self'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)


def shell() -> TestClient:
    app = FastAPI()
    app.include_router(phone_page.router)
    return TestClient(app)


def test_every_file_of_the_app_carries_a_strict_policy_and_revalidates_by_etag() -> None:
    client = shell()
    paths = ["/phone", "/phone/enrol", "/phone/manifest.webmanifest", "/phone/sw.js"]
    paths += [f"/phone/static/{name}" for name in phone_page.STATIC]
    for path in paths:
        answer = client.get(path)
        assert answer.status_code == 200, path
        assert answer.headers["content-security-policy"] == POLICY, path
        assert answer.headers["referrer-policy"] == "no-referrer", path
        assert answer.headers["x-content-type-options"] == "nosniff", path
        again = client.get(path, headers={"If-None-Match": answer.headers["etag"]})
        assert again.status_code == 304, path
    assert client.get("/phone/static/app.js").headers["content-type"].startswith("text/javascript")
    missing = client.get("/phone/static/../app.py")
    assert missing.status_code == 404
    assert client.get("/phone/static/nothing.js").json() == {
        "detail": "no phone app file 'nothing.js'"
    }


def test_the_page_holds_no_inline_script_or_style_and_sets_no_html_from_text() -> None:
    page = shell().get("/phone").text
    assert all(' src="/phone/static/' in tag for tag in re.findall(r"<script[^>]*>", page))
    assert "<style" not in page
    assert not re.search(r"\s(style|on[a-z]+)=", page)
    for name, file in phone_page.STATIC.items():
        if name.endswith(".js"):
            # Names and the server's words are put in as text, never as HTML.
            assert b"innerHTML" not in file.body, name
            assert b"eval(" not in file.body, name


def test_the_app_is_installable_and_its_worker_keeps_the_shell_but_no_api_answer() -> None:
    client = shell()
    manifest = client.get("/phone/manifest.webmanifest").json()
    assert manifest["start_url"] == "/phone"
    assert manifest["start_url"].startswith(manifest["scope"])
    assert manifest["display"] == "standalone"
    assert manifest["name"]
    assert manifest["short_name"]
    sizes: dict[str, set[str]] = {}
    for icon in manifest["icons"]:
        body = client.get(icon["src"]).content
        with Image.open(io.BytesIO(body)) as image:
            assert image.format == "PNG"
            assert f"{image.width}x{image.height}" == icon["sizes"]
        sizes.setdefault(icon["purpose"], set()).add(icon["sizes"])
    assert sizes == {"any": {"192x192", "512x512"}, "maskable": {"512x512"}}
    worker = client.get("/phone/sw.js")
    # The worker sits in /phone/ but serves the whole app, /phone itself included.
    assert worker.headers["service-worker-allowed"] == "/phone"
    found = re.search(r"const SHELL = (\[.*?\]);", worker.text)
    assert found is not None, worker.text
    kept = json.loads(found.group(1))
    assert set(kept) == {"/phone", "/phone/manifest.webmanifest"} | {
        f"/phone/static/{name}" for name in phone_page.STATIC
    }
    assert not [path for path in kept if "/api/" in path]


def _sms_reply(console: System) -> str:
    """The first person paged answers with their reply code; their name."""
    assert console.twilio.wait_for(lambda sent: len(sent) >= 1)
    paged = console.twilio.sent[0].to
    code = reply_code(console.twilio.to(paged))
    answer = console.twilio.inbound_sms(
        console.sms_webhook, from_=paged, body=code, public_url=console.sms_webhook_public
    )
    assert answer.status_code == 200, answer.text
    member = console.site.by_phone(paged)
    assert member is not None
    return member.name


def test_a_tap_raises_nothing_a_hold_alarms_and_help_coming_shows_after_a_reload(
    console: System, phone: Callable[..., PhonePage], tmp_path: Path
) -> None:
    worker = phone()
    worker.enrol()
    page = worker.page
    shared: list[Request] = []
    page.on("request", lambda r: shared.append(r) if r.url.endswith("/positions") else None)
    expect(page.locator("#who-name")).to_have_text("Name of w-17")
    page.locator("#sos").tap()
    expect(page.locator("#hold-hint")).to_have_text("Hold 2 seconds")
    assert console.incidents() == []
    assert shared == [], "a position went out with no alarm"

    worker.hold()
    expect(page.locator("#state-text")).to_have_text(RECEIVED)
    screenshot(page, "phone-received", tmp_path)
    [incident] = console.incidents()
    assert console.twilio.wait_for(lambda sent: len(sent) >= 1)
    assert "Name of w-17 (mobile)" in console.twilio.sent[0].body, console.twilio.sent[0].body
    # The position goes out during the alarm, signed, for this alarm.
    assert wait_until(lambda: shared), "no position was sent during the alarm"
    assert shared[0].url.endswith(f"/api/v1/phone/alarms/{incident.alert_id}/positions")
    assert json.loads(shared[0].post_data or "{}")["latitude"] == WHERE["latitude"]

    name = _sms_reply(console)
    expect(page.locator("#state-text")).to_have_text(f"Help is coming: {name}")
    screenshot(page, "phone-help-coming", tmp_path)
    page.reload()
    expect(page.locator("#state-text")).to_have_text(f"Help is coming: {name}")
    assert len(console.incidents()) == 1


def test_holding_again_presses_the_same_alarm_and_after_resolution_opens_a_new_one(
    console: System, phone: Callable[..., PhonePage]
) -> None:
    worker = phone()
    worker.enrol()
    page = worker.page
    worker.hold()
    expect(page.locator("#state-text")).to_have_text(RECEIVED)
    worker.hold(key="Space")
    assert wait_until(lambda: console.incidents()[0].presses == 2), console.incidents()
    [first] = console.incidents()
    answer = web.post(
        f"{console.api}/incidents/{first.id}/resolve",
        json={"staff_id": "manager", "outcome": "genuine"},
        headers=console.headers(),
    )
    assert answer.status_code == 200, answer.text
    expect(page.locator("#state-text")).to_have_text("Resolved")
    worker.hold()
    expect(page.locator("#state-text")).to_have_text(RECEIVED)
    assert [i.id != first.id for i in console.incidents()] == [False, True]


def test_with_no_connection_the_app_opens_offers_the_sms_and_the_alarm_gets_through_later(
    console: System, phone: Callable[..., PhonePage], tmp_path: Path
) -> None:
    worker = phone()
    phone_id = worker.enrol()
    page = worker.page
    assert page.evaluate("navigator.serviceWorker.ready.then(() => true)")
    worker.context.set_offline(True)
    # The app opens with no connection at all: its service worker keeps it.
    opened = page.goto(worker.url)
    assert opened is not None
    assert opened.from_service_worker
    expect(page.locator("#who-name")).to_have_text("Name of w-17")

    worker.hold()
    pressed = time.monotonic()
    expect(page.locator("#fallback")).to_be_visible(timeout=10_000)
    assert time.monotonic() - pressed < 10
    screenshot(page, "phone-fallback", tmp_path)
    digits = page.locator("#fallback-digits").inner_text()
    code = digits.removesuffix("#")
    with console.server.services.sessions() as s:  # type: ignore[union-attr]
        assert s.get(MobilePhone, phone_id).fallback_sha256 == code_sha256(phone_id, code)  # type: ignore[union-attr]
    sms = page.locator("#fallback-sms").get_attribute("href") or ""
    number = console.settings.twilio_from
    assert sms.startswith(f"sms:{number}?body={quote(f'SOS {code} ')}"), sms
    alert_id = sms.rsplit("%20", 1)[1]
    assert page.locator("#fallback-call").get_attribute("href") == f"tel:{number},,{code}%23"
    assert console.incidents() == []

    worker.context.set_offline(False)
    expect(page.locator("#state-text")).to_have_text(RECEIVED)
    expect(page.locator("#fallback")).to_be_hidden()
    assert [i.alert_id for i in console.incidents()] == [alert_id]


def test_an_alarm_the_server_does_not_confirm_offers_the_sms_ten_seconds_after_the_press(
    console: System, phone: Callable[..., PhonePage]
) -> None:
    worker = phone()
    worker.enrol()
    page = worker.page
    # The phone thinks it is online, but its alarms do not get through.
    page.route("**/api/v1/phone/alarms", lambda route: route.abort("connectionrefused"))
    worker.hold()
    pressed = time.monotonic()
    expect(page.locator("#state-text")).to_have_text("Sending your alarm…")
    expect(page.locator("#fallback")).to_be_visible(timeout=20_000)
    # Offered at 10 s by the page's own timer; the upper bound leaves room for a
    # loaded machine's browser.
    assert 9 < time.monotonic() - pressed < 20
    page.unroute("**/api/v1/phone/alarms")
    expect(page.locator("#state-text")).to_have_text(RECEIVED, timeout=10_000)
    assert len(console.incidents()) == 1


def test_a_removed_phone_says_so_and_offers_only_the_emergency_number(
    console: System, phone: Callable[..., PhonePage]
) -> None:
    worker = phone()
    phone_id = worker.enrol()
    assert console.server is not None
    answer = browser_as(console.server, "manager").post(
        f"/api/v1/people/w-17/phones/{phone_id}/revoke"
    )
    assert answer.status_code == 204, answer.text
    page = worker.page
    page.reload()
    expect(page.locator("#removed-title")).to_have_text("This phone was removed")
    expect(page.locator("#removed a")).to_have_attribute("href", "tel:112")
    expect(page.locator("#sos")).to_be_hidden()


def test_the_enrol_and_button_screens_are_accessible_and_in_the_workers_language(
    console: System, phone: Callable[..., PhonePage], tmp_path: Path
) -> None:
    worker = phone()
    page = worker.page
    page.goto(f"{worker.url}/enrol#not-a-real-token")
    expect(page.locator("#enrol-title")).to_be_visible()
    accessible(page)
    screenshot(page, "phone-enrol", tmp_path)
    page.locator("#number").fill("+32470555001")
    page.locator("#pin").fill("2580")
    page.locator("#duress").fill("2580")
    page.locator("#enrol-submit").click()
    expect(page.locator("#enrol-problem")).to_have_text(
        "The duress PIN must differ from the check-out PIN."
    )
    page.locator("#duress").fill("7391")
    page.locator("#enrol-submit").click()
    expect(page.locator("#enrol-problem")).to_contain_text("This link was already used")

    worker.enrol("w-18", language="fr")
    expect(page.locator("#state-text")).to_have_text(
        "Maintenez le bouton 2 secondes pour appeler à l'aide."
    )
    assert page.locator("html").get_attribute("lang") == "fr"
    accessible(page)
