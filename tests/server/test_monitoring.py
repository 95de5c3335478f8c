"""Seeing the server run, as a monitoring system does: ``/metrics`` scraped and parsed
like Prometheus parses it while a room unit's alarm is raised and answered, ``/readyz``
while the broker and Twilio fail, ``/healthz``, and the token each needs.

Real server on loopback, real Mosquitto, real room unit on gpiozero's mock pins, the
real twilio library against the fake Twilio.
"""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from device.indicator import Light
from panicbutton.clock import ManualClock
from server.people.roles import Role
from tests import web
from tests.harness import (
    FLOOR,
    MANAGER,
    RECEPTION,
    System,
    bearer,
    person_token,
    reply_code,
    wait_until,
)

#: A figure: (sample name, its labels, sorted).
Figures = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def monitoring_token(system: System) -> str:
    """A token as a site makes one for Prometheus: an account holding the role
    ``monitoring`` alone."""
    assert system.server is not None
    return person_token(system.server.services, "prometheus", roles=[Role.MONITORING])


def scrape(system: System, token: str) -> tuple[str, Figures]:
    """``GET /metrics`` as Prometheus sends it: the text and its figures, parsed."""
    answer = web.get(f"{system.base_url}/metrics", headers=bearer(token), timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    figures = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }
    return answer.text, figures


def figure(figures: Figures, name: str, **labels: str) -> float:
    return figures[(name, tuple(sorted(labels.items())))]


def page_requests(system: System) -> dict[str, int]:
    """The pages Twilio was asked for, by channel (a page carries a status callback;
    a plain text, such as a confirmation, does not)."""
    sms = [s for s in system.twilio.sent if "StatusCallback" in s.params]
    calls = [c for c in system.twilio.calls if "StatusCallback" in c.params]
    return {"sms": len(sms), "call": len(calls)}


def test_an_alarm_and_its_answer_show_in_the_figures_which_name_no_one(system: System) -> None:
    token = monitoring_token(system)
    room = system.room("unit-1")
    assert wait_until(lambda: room.light is Light.ARMED), room.lights
    assert wait_until(
        lambda: figure(scrape(system, token)[1], "panicbutton_units", state="online") == 1
    )
    _, before = scrape(system, token)
    assert figure(before, "panicbutton_units", state="offline") == 2  # never heard from
    assert figure(before, "panicbutton_alarms_total", kind="panic") == 0
    assert figure(before, "panicbutton_first_page_seconds_count") == 0

    room.press()
    assert system.twilio.wait_for(lambda sent: len(sent) == 2)
    taken = reply_code(system.twilio.to(RECEPTION))
    reply = system.twilio.inbound_sms(
        system.sms_webhook, public_url=system.sms_webhook_public, from_=RECEPTION, body=taken
    )
    assert reply.status_code == 200
    assert wait_until(lambda: room.light is Light.HELP_COMING), room.lights
    system.wait_idle()
    # Twilio reports the first SMS delivered, as it calls back.
    first = system.twilio.sent[0]
    url = first.params["StatusCallback"]
    delivered = system.twilio.signed_post(
        url.replace(system.settings.public_base_url, system.base_url),
        {"MessageSid": first.sid, "MessageStatus": "delivered"},
        public_url=url,
    )
    assert delivered.status_code == 200
    text, after = scrape(system, token)

    assert figure(after, "panicbutton_alarms_total", kind="panic") == 1
    assert figure(after, "panicbutton_alarms_total", kind="test") == 0
    asked = page_requests(system)
    assert asked["sms"] == 2
    for channel in ("sms", "call"):
        assert (
            figure(after, "panicbutton_pages_total", channel=channel, status="sent")
            == (asked[channel])
        )
        assert figure(after, "panicbutton_pages_total", channel=channel, status="failed") == 0
    assert figure(after, "panicbutton_pages_total", channel="sms", status="delivered") == 1
    # One alarm: one first page timed (of its two to four requests), one answer.
    assert figure(after, "panicbutton_first_page_seconds_count") == 1
    first_page = figure(after, "panicbutton_first_page_seconds_sum")
    assert 0 < first_page < 5
    assert figure(after, "panicbutton_first_page_seconds_bucket", le="+Inf") == 1
    assert figure(after, "panicbutton_acknowledged_seconds_count") == 1
    assert first_page < figure(after, "panicbutton_acknowledged_seconds_sum") < 60
    assert figure(after, "panicbutton_pages_pending") == 0
    assert figure(after, "panicbutton_escalation_jobs_due") == 0
    assert figure(after, "panicbutton_log_entries") > figure(before, "panicbutton_log_entries")

    # Nobody can be found in the figures: no number, name, person, room or unit, and no
    # label but closed sets.
    assert system.server is not None
    [incident] = system.incidents()
    named = [
        *(number.lstrip("+") for number in (RECEPTION, FLOOR, MANAGER)),
        *("reception", "floor", "manager", "prometheus", "test house"),
        *("room 1", "room-1", "unit-1", incident.alert_id),
    ]
    assert [word for word in named if word in text.lower()] == []
    labels = {name for _, pairs in after for name, _ in pairs}
    assert labels == {"kind", "channel", "status", "state", "le"}


def test_figures_and_readiness_need_a_token_with_the_monitoring_right(system: System) -> None:
    assert system.server is not None
    services = system.server.services
    callers = {
        "nobody": {},
        "staff": bearer(person_token(services, "floor")),
        "a manager's token without the scope": bearer(
            person_token(services, "manager", scopes=["board"])
        ),
    }
    prometheus = bearer(monitoring_token(system))
    for path in ("/metrics", "/readyz"):
        answers = {
            who: web.get(f"{system.base_url}{path}", headers=headers, timeout=10)
            for who, headers in callers.items()
        }
        assert answers["nobody"].status_code == 401, path
        assert answers["nobody"].headers["WWW-Authenticate"] == "Bearer"
        for who in ("staff", "a manager's token without the scope"):
            assert answers[who].status_code == 403, (path, who)
            assert "'monitoring'" in answers[who].json()["detail"]
        assert web.get(f"{system.base_url}{path}", headers=prometheus).status_code == 200
    # The monitoring token reads figures and nothing else.
    why = {"X-Panicbutton-Justification": "monitoring"}
    assert web.get(f"{system.api}/incidents", headers=prometheus | why).status_code == 403
    assert web.get(f"{system.api}/me", headers=prometheus).status_code == 403
    # Liveness is open to all, and says nothing but "ok".
    alive = web.get(f"{system.base_url}/healthz", timeout=10)
    assert (alive.status_code, alive.json()) == (200, {"status": "ok"})


@pytest.mark.clock("2026-03-02T10:00:00+00:00")
def test_readiness_names_the_part_that_is_down(system: System) -> None:
    assert system.broker is not None
    assert isinstance(system.clock, ManualClock)
    headers = bearer(monitoring_token(system))

    def ready() -> httpx.Response:
        return web.get(f"{system.base_url}/readyz", headers=headers, timeout=10)

    system.twilio.account_status = "suspended"
    answer = ready()
    assert answer.status_code == 503
    body = answer.json()
    assert (body["status"], body["database"], body["broker"]) == ("not ready", "ok", "ok")
    assert "the Twilio account is suspended" in body["twilio"]
    # Twilio is asked again only after 30 s.
    system.twilio.account_status = "active"
    assert ready().status_code == 503
    assert system.twilio.account_reads == 1
    system.clock.advance(30)
    answer = ready()
    assert answer.json() == {"status": "ready", "database": "ok", "broker": "ok", "twilio": "ok"}
    assert answer.status_code == 200
    assert system.twilio.account_reads == 2

    system.broker.stop()
    assert wait_until(lambda: ready().status_code == 503), ready().text
    body = ready().json()
    assert (body["database"], body["twilio"]) == ("ok", "ok")
    assert body["broker"].startswith(
        f"not connected to the MQTT broker at 127.0.0.1:{system.mqtt_port}"
    )
    system.broker.start()
    assert wait_until(lambda: ready().status_code == 200, 30), ready().text
