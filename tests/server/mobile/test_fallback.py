"""When a worker's data connection fails: an SMS or a call to the site's number from
the phone's enrolled number, with its code, raises the phone's alarm through the same
chain; anything else changes nothing. The worker is answered in their language, and
told who is coming when staff take the alarm."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from httpx import Response
from pydantic import SecretStr
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from panicbutton.wire import new_alert_id, now_utc
from server.mobile.alarms import derived_alert_id
from server.models import Incident, IncidentKind, Outcome
from server.people.roles import Role
from server.replies.fallback import read
from tests.harness import RECEPTION, reply_code
from tests.server.mobile.kit import Phone, enrolled_phone, phone_link
from tests.server.people_helpers import BASE_URL, Served, add_person, browser_as, entries, served

NUMBER = "+32470555001"  # the number enrolled_phone enrols with
RECEIVED = "Alarm received. We are calling your reference person."
COMING = "Reception is coming."
WRONG = "Code not recognised: send the code shown in your panicbutton app."


@pytest.fixture
def site(database_url: str, tmp_path: Path) -> Iterator[Served]:
    with served(database_url, tmp_path, link_secret=SecretStr("m" * 40)) as running:
        yield running


def twilio(
    site: Served, client: httpx.Client, path: str, params: dict[str, str], *, token: str = ""
) -> Response:
    """POST a webhook signed as Twilio signs it (with ``token``: as a forger would)."""
    validator = RequestValidator(token or site.twilio.auth_token)
    signature = validator.compute_signature(BASE_URL + path, params)
    return client.post(path, data=params, headers={"X-Twilio-Signature": signature})


_sids = iter(range(1, 10_000))


def sms(
    site: Served, client: TestClient, body: str, *, sender: str = NUMBER, sid: str = ""
) -> Response:
    params = {"From": sender, "Body": body, "MessageSid": sid or f"SM{next(_sids):032x}"}
    answer = twilio(site, client, "/twilio/sms", params)
    assert answer.status_code == 200, answer.text
    return answer


def incidents(site: Served) -> list[Incident]:
    """The incidents of workers' phones (a moved clock may open others: units unseen)."""
    with site.server.services.sessions() as s:
        query = select(Incident).where(Incident.device_id.startswith("-phone-"))
        return list(s.scalars(query.order_by(Incident.id)))


def code_of(phone: Phone) -> str:
    return phone.fallback["call_digits"].removesuffix("#")


def texts_to(site: Served, number: str, count: int) -> list[str]:
    """The texts sent to ``number``, once there are ``count`` (or after 5 s)."""
    site.twilio.wait_for(lambda sent: len([s for s in sent if s.to == number]) >= count, 5)
    return site.twilio.to(number)


def settled(site: Served) -> None:
    """Wait until the pager has nothing left to send (answers included)."""
    pager = site.server.services.pager
    site.twilio._wait(lambda: pager.backlog() == 0, 5)


ALERT = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    ("body", "found"),
    [
        ("SOS 482913", ("482913", None)),
        (f"SOS 482913 {ALERT}", ("482913", ALERT)),
        (f"sos: 482913, {ALERT.upper()}.", ("482913", ALERT)),
        (f"{ALERT} 482913", ("482913", ALERT)),
        ("SOS 111111 482913", ("111111", None)),  # one code per message: the first
        ("help", (None, None)),
    ],
)
def test_the_code_and_the_alarm_id_are_read_from_the_body(
    body: str, found: tuple[str | None, str | None]
) -> None:
    assert read(body) == found


def test_an_sms_with_the_code_raises_one_alarm_via_sms_that_pages_and_answers(
    site: Served, client: TestClient
) -> None:
    phone = enrolled_phone(site.server, client)
    assert phone.fallback["sms_body"] == f"SOS {code_of(phone)}"
    sms(site, client, phone.fallback["sms_body"], sid="SM" + "a" * 32)
    [incident] = incidents(site)
    assert incident.device_id == f"-phone-{phone.phone_id}"
    assert incident.alert_id == derived_alert_id("sms", "SM" + "a" * 32)
    [(_, raised)] = entries(site.server, "alert.raised")
    assert (raised["via"], raised["kind"]) == ("sms", "panic")
    # The staff on duty are paged as for any alarm, with the map of the phone.
    [page] = texts_to(site, RECEPTION, 1)
    assert page.startswith("ALARM Name of w-17 (mobile) at "), page
    assert f" Map: {BASE_URL}/map/" in page
    # The worker is answered, in their language.
    assert texts_to(site, NUMBER, 1) == [RECEIVED]
    # Twilio's retry of the same message changes nothing and is not answered again.
    sms(site, client, phone.fallback["sms_body"], sid="SM" + "a" * 32)
    settled(site)
    assert len(incidents(site)) == 1
    assert site.twilio.to(NUMBER) == [RECEIVED]
    # The answer's log entry names the phone, never the worker.
    answers = [
        (d["staff"], d["purpose"])
        for _, d in entries(site.server, "message.sent")
        if d["staff"] != "reception" and d["staff"] != "floor"
    ]
    assert answers == [(f"-phone-{phone.phone_id}", "fallback_received")]


def test_an_sms_naming_an_alarm_is_that_incident_whichever_comes_first(
    site: Served, client: TestClient
) -> None:
    phone = enrolled_phone(site.server, client)
    code = code_of(phone)
    # The HTTPS alarm reached the server, its answer did not reach the page: the SMS
    # the page then offers names it, and changes nothing.
    first = new_alert_id()
    assert phone.alarm(first).status_code == 200
    sms(site, client, f"SOS {code} {first}")
    [incident] = incidents(site)
    assert (incident.alert_id, incident.presses) == (first, 1)
    assert [t for t, _ in entries(site.server, "alert.re_pressed")] == []
    assert texts_to(site, NUMBER, 1) == [RECEIVED]
    # The SMS first, the HTTPS alarm late: still one incident (raised via sms).
    site.server.services.responder.resolve(
        incident_id=incident.id, staff_id="reception", outcome=Outcome.GENUINE
    )
    second = new_alert_id()
    sms(site, client, f"SOS {code} {second.upper()}")
    assert phone.alarm(second).status_code == 200
    assert [i.alert_id for i in incidents(site)] == [first, second]
    assert entries(site.server, "alert.raised")[-1][1]["via"] == "sms"


def test_an_sms_without_an_alarm_id_presses_the_open_alarm_again(
    site: Served, client: TestClient
) -> None:
    phone = enrolled_phone(site.server, client)
    alert_id = new_alert_id()
    assert phone.alarm(alert_id).status_code == 200
    sms(site, client, f"sos {code_of(phone)}")
    [incident] = incidents(site)
    assert (incident.alert_id, incident.presses) == (alert_id, 2)
    # A duress alarm is never pressed (nor shown) by the phone: a new alarm instead.
    site.server.services.responder.resolve(
        incident_id=incident.id, staff_id="reception", outcome=Outcome.GENUINE
    )
    site.server.services.mobile.raise_alarm(
        phone_id=phone.phone_id,
        alert_id=new_alert_id(),
        pressed_at=now_utc(),
        kind=IncidentKind.DURESS,
        via="checkin",
    )
    sms(site, client, f"SOS {code_of(phone)}")
    assert [(i.kind, i.presses) for i in incidents(site)] == [
        ("panic", 2),
        ("duress", 1),
        ("panic", 1),
    ]


def test_no_alarm_without_the_enrolled_number_and_its_code(
    site: Served, client: TestClient
) -> None:
    phone = enrolled_phone(site.server, client)
    code = code_of(phone)
    stranger = "+32470999999"
    sms(site, client, f"SOS {code}", sender=stranger)  # the right code, another number
    sms(site, client, "SOS 000000")  # the enrolled number, a wrong code
    sms(site, client, f"SOS 000000 {code}")  # only the first number is a code
    sms(site, client, "STOP")  # the carrier's word: never a code, not answered
    sms(site, client, "help")  # no code at all: answered (a few times), not a guess
    assert incidents(site) == []
    assert texts_to(site, NUMBER, 3) == [WRONG, WRONG, WRONG]
    # A revoked phone's number is no longer heard at all.
    revoked = browser_as(site.server, "manager").post(
        f"/api/v1/people/w-17/phones/{phone.phone_id}/revoke"
    )
    assert revoked.status_code == 204
    sms(site, client, f"SOS {code}")
    sms(site, client, "SOS 123456")
    settled(site)
    assert incidents(site) == []
    assert site.twilio.to(NUMBER) == [WRONG, WRONG, WRONG]
    assert site.twilio.to(stranger) == []
    # ...nor is its call answered.
    call = twilio(site, client, "/twilio/call", {"From": NUMBER, "CallSid": "CA" + "1" * 32})
    assert "<Reject/>" in call.text


def test_wrong_codes_go_unanswered_after_five_but_the_right_code_always_raises_the_alarm(
    site: Served, client: TestClient
) -> None:
    """Someone who spoofs the worker's number and sends wrong codes must never silence
    the worker: after five wrong codes they go unanswered, yet the right code, by SMS
    or by call, still raises the alarm at once."""
    phone = enrolled_phone(site.server, client)
    for guess in range(5):
        sms(site, client, f"SOS {100000 + guess}")
    assert texts_to(site, NUMBER, 5) == [WRONG] * 5
    # The sixth wrong code is neither answered nor acted on...
    sms(site, client, "SOS 100005")
    settled(site)
    assert incidents(site) == []
    assert site.twilio.to(NUMBER) == [WRONG] * 5
    # ...a wrong code in a call hangs up without asking again...
    sid = "CA" + "2" * 32
    asked = twilio(site, client, "/twilio/call", {"From": NUMBER, "CallSid": sid})
    assert "<Gather" in asked.text
    wrong = twilio(
        site, client, "/twilio/call/code?attempt=1", {"From": NUMBER, "CallSid": sid, "Digits": "0"}
    )
    assert "<Gather" not in wrong.text
    assert incidents(site) == []
    # ...and the right code raises the alarm all the same, and is answered.
    sms(site, client, phone.fallback["sms_body"])
    assert len(incidents(site)) == 1
    assert texts_to(site, NUMBER, 6)[-1] == RECEIVED
    # The same in a call, locked or not: it presses that open alarm.
    sid = "CA" + "3" * 32
    twilio(site, client, "/twilio/call", {"From": NUMBER, "CallSid": sid})
    said = twilio(
        site,
        client,
        "/twilio/call/code?attempt=1",
        {"From": NUMBER, "CallSid": sid, "Digits": code_of(phone)},
    )
    assert "<Say" in said.text
    [incident] = incidents(site)
    assert incident.presses == 2


def test_unsigned_or_forged_webhooks_are_refused_and_change_nothing(
    site: Served, client: TestClient
) -> None:
    phone = enrolled_phone(site.server, client)
    body = phone.fallback["sms_body"]
    params = {"From": NUMBER, "Body": body, "MessageSid": "SM" + "f" * 32}
    assert client.post("/twilio/sms", data=params).status_code == 403
    forged = twilio(site, client, "/twilio/sms", params, token="0" * 32)
    assert forged.status_code == 403
    assert forged.json()["detail"] == "invalid Twilio signature"
    call = {"From": NUMBER, "CallSid": "CA" + "f" * 32, "Digits": code_of(phone)}
    for path in ("/twilio/call", "/twilio/call/code?attempt=1"):
        assert client.post(path, data=call).status_code == 403
        assert twilio(site, client, path, call, token="0" * 32).status_code == 403
    settled(site)
    assert incidents(site) == []
    assert site.twilio.to(NUMBER) == []


def test_a_call_with_the_code_raises_the_alarm_via_call(site: Served, client: TestClient) -> None:
    phone = enrolled_phone(site.server, client)
    sid = "CA" + "c" * 32
    # Any other number is rejected, unanswered.
    stranger = {"From": "+32470999999", "CallSid": "CA" + "e" * 32}
    other = twilio(site, client, "/twilio/call", stranger)
    assert other.status_code == 200
    assert other.headers["content-type"].startswith("application/xml")
    assert "<Reject/>" in other.text
    assert "<Say" not in other.text
    # The enrolled number is asked for its code.
    asked = twilio(site, client, "/twilio/call", {"From": NUMBER, "CallSid": sid})
    gather = re.search(r"<Gather ([^>]*)>", asked.text)
    assert gather is not None, asked.text
    assert 'input="dtmf"' in gather.group(1)
    assert 'finishOnKey="#"' in gather.group(1)
    assert f'numDigits="{len(code_of(phone))}"' in gather.group(1)
    assert 'timeout="10"' in gather.group(1)
    assert f'action="{BASE_URL}/twilio/call/code?attempt=1"' in gather.group(1)
    assert "Enter your code, then hash." in asked.text
    # A wrong code: once more, then the call hangs up.
    keys = {"From": NUMBER, "CallSid": sid}
    wrong = twilio(site, client, "/twilio/call/code?attempt=1", {**keys, "Digits": "999999"})
    assert "Code not recognised. Enter your code, then hash." in wrong.text
    assert f'action="{BASE_URL}/twilio/call/code?attempt=2"' in wrong.text
    right = twilio(site, client, "/twilio/call/code?attempt=2", {**keys, "Digits": code_of(phone)})
    assert "Alarm raised. We are calling your reference person." in right.text
    assert right.text.endswith("<Hangup/></Response>")
    assert len(right.text) < 4000
    [incident] = incidents(site)
    assert incident.alert_id == derived_alert_id("call", sid)
    assert entries(site.server, "alert.raised")[-1][1]["via"] == "call"
    assert site.twilio.wait_for(lambda sent: any(s.to == RECEPTION for s in sent))
    # The same keys replayed are not acted on again.
    again = twilio(site, client, "/twilio/call/code?attempt=2", {**keys, "Digits": code_of(phone)})
    assert again.status_code == 200
    assert "<Say" not in again.text
    assert [(i.id, i.presses) for i in incidents(site)] == [(incident.id, 1)]
    # A second wrong try ends the call.
    other_call = {"From": NUMBER, "CallSid": "CA" + "d" * 32, "Digits": "123"}
    ended = twilio(site, client, "/twilio/call/code?attempt=2", other_call)
    assert "Code not recognised." in ended.text
    assert "<Gather" not in ended.text
    assert ended.text.endswith("<Hangup/></Response>")


def test_a_worker_whose_alarm_came_by_sms_is_told_who_is_coming(
    site: Served, client: TestClient
) -> None:
    add_person(site.server, "w-21", Role.WORKER, language="fr")
    phone = Phone(client)
    assert phone.enrol(phone_link(site.server, "w-21"), number=NUMBER).status_code == 201
    sms(site, client, phone.fallback["sms_body"])
    assert texts_to(site, NUMBER, 1) == [
        "Alerte transmise. Nous appelons votre personne de référence."
    ]
    [page] = texts_to(site, RECEPTION, 1)
    assert sms_from_staff(site, client, reply_code([page])).status_code == 200
    assert texts_to(site, NUMBER, 2)[-1] == "Reception arrive."
    # Staff read that Reception goes to help the worker (not "to" them, as to a room).
    assert texts_to(site, RECEPTION, 2)[-1] == (
        "Thanks. You are going to help Name of w-21 (mobile). The others have been told."
    )
    # Another SMS while it is taken says who is coming at once.
    sms(site, client, phone.fallback["sms_body"])
    assert texts_to(site, NUMBER, 3)[-1] == "Reception arrive."


def test_nothing_is_texted_to_the_phone_about_a_duress_alarm_or_an_https_one(
    site: Served, client: TestClient
) -> None:
    phone = enrolled_phone(site.server, client)
    # An alarm over HTTPS: the page reads who is coming itself; no SMS.
    assert phone.alarm().status_code == 200
    [page] = texts_to(site, RECEPTION, 1)
    assert sms_from_staff(site, client, reply_code([page])).status_code == 200
    # A duress alarm named by an SMS (as a guess would): answered as an id that is not
    # the phone's (its own open alarm is pressed again), and taking the duress alarm
    # texts nothing to the phone.
    duress = new_alert_id()
    site.clock.advance(30)  # past the bundle windows: a page of its own
    site.server.services.mobile.raise_alarm(
        phone_id=phone.phone_id,
        alert_id=duress,
        pressed_at=now_utc(),
        kind=IncidentKind.DURESS,
        via="checkin",
    )
    sms(site, client, f"SOS {code_of(phone)} {duress}")
    assert texts_to(site, NUMBER, 1) == [COMING]
    page = next(t for t in texts_to(site, RECEPTION, 3) if t.startswith("DURESS"))
    assert sms_from_staff(site, client, reply_code([page])).status_code == 200
    settled(site)
    assert site.twilio.to(NUMBER) == [COMING]
    assert [(i.kind, i.state, i.presses) for i in incidents(site)] == [
        ("panic", "acknowledged", 2),
        ("duress", "acknowledged", 1),
    ]


def sms_from_staff(site: Served, client: TestClient, body: str) -> Response:
    return sms(site, client, body, sender=RECEPTION)


def test_a_worker_who_is_staff_too_on_one_number_raises_the_alarm_with_the_code(
    site: Served, client: TestClient
) -> None:
    """Reception also works outside, with one phone number for both: the fallback SMS
    with the phone's code is an alarm, never taken for a reply code or a word."""
    add_person(site.server, "reception", Role.WORKER, phone=RECEPTION, confirmed=True)
    phone = Phone(client)
    assert phone.enrol(phone_link(site.server, "reception"), number=RECEPTION).status_code == 201
    sms(site, client, phone.fallback["sms_body"], sender=RECEPTION)
    [incident] = incidents(site)
    assert incident.device_id == f"-phone-{phone.phone_id}"
    assert site.twilio.wait_for(lambda sent: any(s.body == RECEIVED for s in sent))
