"""The unit's MQTT link as the broker and the journal see it: the "offline" status
at shutdown, and a broken link said again after it had worked."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from gpiozero.pins.mock import MockFactory
from paho.mqtt.enums import CallbackAPIVersion

from device.agent import Agent
from panicbutton.clock import ManualClock
from panicbutton.wire import STATUS_SUBSCRIPTION, LinkState, Status
from tests.device.bare import said, unit
from tests.harness import MONITOR, Broker, wait_until

pytestmark = pytest.mark.mosquitto


def test_offline_status_at_shutdown_carries_the_uptime(broker: Broker, tmp_path: Path) -> None:
    seen: list[Status] = []
    monitor = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="monitor")
    monitor.username_pw_set(MONITOR, broker.users[MONITOR])
    monitor.on_message = lambda c, u, m: seen.append(Status.from_json(bytes(m.payload)))
    subscribed = threading.Event()
    monitor.on_subscribe = lambda *_: subscribed.set()
    monitor.connect("127.0.0.1", broker.port)
    monitor.subscribe(STATUS_SUBSCRIPTION, qos=1)
    monitor.loop_start()
    try:
        assert subscribed.wait(10)
        clock = ManualClock()
        config = unit(tmp_path, port=broker.port, password=broker.users["unit-1"])
        agent = Agent(config, pin_factory=MockFactory(), clock=clock)
        agent.start()
        try:
            assert wait_until(lambda: [s.state for s in seen] == [LinkState.ONLINE])
            clock.advance(15)  # within the heartbeat (20 s): no status in between
            assert agent.sync()
        finally:
            agent.close()
        assert wait_until(lambda: len(seen) == 2)
    finally:
        monitor.disconnect()
        monitor.loop_stop()
    assert [(s.state, s.uptime) for s in seen] == [(LinkState.ONLINE, 0), (LinkState.OFFLINE, 15)]


def test_a_cause_is_said_again_after_the_link_had_worked(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="device.agent")
    where = f"127.0.0.1:{broker.port}"
    refused = f"cannot reach the broker at {where}: connection refused"

    def warned(words: str) -> int:
        return sum(words in w for w in said(caplog, logging.WARNING))

    config = unit(tmp_path, port=broker.port, password=broker.users["unit-1"])
    agent = Agent(config, pin_factory=MockFactory())
    agent.start()
    try:
        assert wait_until(lambda: agent.link.connected)
        broker.stop()
        assert wait_until(lambda: warned(refused) == 1)
        broker.start()
        assert wait_until(lambda: agent.link.connected)
        broker.stop()
        assert wait_until(lambda: warned(refused) == 2), caplog.text
    finally:
        agent.close()
    assert warned(f"lost the broker at {where}: ") == 2
