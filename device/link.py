"""The MQTT link from a room unit to the broker (paho-mqtt 2.x).

paho runs its network loop on its own thread; every callback only puts an
event on the agent's queue, so the agent's thread stays the single owner of
the outbox and the light. A failed connect or login is handed over with its
cause and what to check (:mod:`device.why`).
"""

from __future__ import annotations

import logging
import ssl
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from device import why
from device.config import DeviceConfig
from panicbutton import __version__
from panicbutton.clock import Clock, SystemClock
from panicbutton.sockets import no_delay
from panicbutton.wire import (
    QOS,
    Alert,
    LinkState,
    Status,
    alert_topic,
    feedback_topic,
    status_topic,
)

log = logging.getLogger(__name__)


class Via(StrEnum):
    """The unit's two paths to the server."""

    MQTT = "mqtt"
    HTTPS = "https"


@dataclass(frozen=True, slots=True)
class LinkUp:
    """The broker accepted the unit's login (again)."""


@dataclass(frozen=True, slots=True)
class LinkDown:
    """A path failed; ``reason`` says how and what to check, for the log and the status."""

    reason: str
    path: Via = Via.MQTT


@dataclass(frozen=True, slots=True)
class FeedbackIn:
    """The server's feedback JSON, as it came over ``via``."""

    payload: bytes
    via: Via = Via.MQTT


#: What the paths hand to the agent's thread.
LinkEvent = LinkUp | LinkDown | FeedbackIn


class Link:
    """One MQTT session to the broker, reconnecting by itself.

    ``connect_async`` plus ``loop_start`` keeps retrying at boot when the
    network or the broker is not up yet. ``hand_over`` gives each :data:`LinkEvent`
    to the agent's thread (it is called on paho's). ``clock`` dates each status
    (defaults to the real clocks); paho's keepalive and reconnect timers stay on
    real time.
    """

    def __init__(
        self,
        config: DeviceConfig,
        hand_over: Callable[[LinkEvent], None],
        *,
        clock: Clock | None = None,
    ) -> None:
        self._config = config
        self._clock: Clock = clock or SystemClock()
        self._hand_over = hand_over
        self.connected = False
        # Whether the broker answered the current attempt's login (paho's thread only):
        # a refused login is said once, not again when the broker then closes.
        self._answered = False
        #: Alerts the broker has accepted (PUBACK), resends included.
        self.alerts_delivered = 0
        # Message ids of alerts and statuses not yet accepted, and of acceptances that
        # came in before publish() returned the id (paho's thread can be that quick).
        self._alert_mids: set[int] = set()
        self._status_mids: set[int] = set()
        self._early: set[int] = set()
        self._mids = threading.Lock()
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=config.device_id,
            # A clean session: what the unit must know after a reconnect comes
            # from the retained feedback, and unconfirmed alerts are resent.
            clean_session=True,
            protocol=MQTTProtocolVersion.MQTTv311,
        )
        c.username_pw_set(config.mqtt.username, config.mqtt.password)
        if config.mqtt.ca_file is not None:
            c.tls_set(ca_certs=str(config.mqtt.ca_file), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        c.will_set(
            status_topic(config.device_id), self._status(LinkState.OFFLINE, 0), qos=QOS, retain=True
        )
        c.reconnect_delay_set(min_delay=1, max_delay=10)
        c.on_pre_connect = self._on_pre_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        self._client = c

    def _status(self, state: LinkState, outbox: int, uptime: int = 0, error: str = "") -> bytes:
        return Status(
            device_id=self._config.device_id,
            state=state,
            at=self._clock.now(),
            version=__version__,
            outbox=outbox,
            uptime=uptime,
            error=error,
        ).to_json()

    def start(self) -> None:
        self._client.connect_async(
            self._config.mqtt.host, self._config.mqtt.port, keepalive=self._config.mqtt.keepalive
        )
        self._client.loop_start()

    def stop(self, outbox: int, uptime: int) -> None:
        """Say "offline" (a clean disconnect does not fire the Last Will) and close;
        ``uptime`` is the agent's, in seconds."""
        if self.connected:
            info = self._client.publish(
                status_topic(self._config.device_id),
                self._status(LinkState.OFFLINE, outbox, uptime),
                qos=QOS,
                retain=True,
            )
            try:
                info.wait_for_publish(timeout=2)
            except (RuntimeError, ValueError):
                log.warning("could not say offline before closing")
        self._client.disconnect()
        self._client.loop_stop()

    def publish_alert(self, alert: Alert) -> None:
        # paho queues in memory while disconnected; the outbox is what is durable.
        info = self._client.publish(alert_topic(alert.device_id), alert.to_json(), qos=QOS)
        self._track(info.mid, alert=True)

    def publish_status(self, *, outbox: int, uptime: int, error: str) -> None:
        """The retained "online" status with health figures (also the heartbeat)."""
        info = self._client.publish(
            status_topic(self._config.device_id),
            self._status(LinkState.ONLINE, outbox, uptime, error),
            qos=QOS,
            retain=True,
        )
        self._track(info.mid, alert=False)

    def _track(self, mid: int, *, alert: bool) -> None:
        """Note a message just handed to paho, for :attr:`alerts_delivered`."""
        with self._mids:
            if mid in self._early:
                self._early.discard(mid)
                self.alerts_delivered += alert
            else:
                (self._alert_mids if alert else self._status_mids).add(mid)

    # paho callbacks: on paho's thread, so they only hand events over.
    def _on_pre_connect(self, client: mqtt.Client, userdata: Any) -> None:
        self._answered = False

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho does not pass the error, but calls this inside its `except OSError`
        # around the connect (loop_forever), so it is the exception being handled.
        cause = why.cannot_connect(sys.exception(), self._config.mqtt)
        self._hand_over(LinkDown(str(cause)))

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self._answered = True
        if reason.is_failure:
            self._hand_over(LinkDown(str(why.refused(reason, self._config.mqtt))))
            return
        no_delay(client.socket())  # an alert must not wait for a delayed ACK
        self.connected = True
        client.subscribe(feedback_topic(self._config.device_id), qos=QOS)
        self._hand_over(LinkUp())

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if self.connected:
            self.connected = False
            where = f"{self._config.mqtt.host}:{self._config.mqtt.port}"
            self._hand_over(LinkDown(f"lost the broker at {where}: {reason}"))
        elif not self._answered:
            self._hand_over(LinkDown(str(why.closed_early(self._config.mqtt))))

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any
    ) -> None:
        with self._mids:
            if mid in self._alert_mids:
                self._alert_mids.discard(mid)
                self.alerts_delivered += 1
            elif mid in self._status_mids:
                self._status_mids.discard(mid)
            else:  # publish() has not returned this id yet
                self._early.add(mid)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._hand_over(FeedbackIn(bytes(message.payload)))
