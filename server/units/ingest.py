"""The server's MQTT side: alerts and status in, feedback out (paho-mqtt 2.x).

An alert is acknowledged to the broker (``manual_ack``) and confirmed to the
room unit only after its incident is committed. A malformed payload, or one
from an unknown device, is logged with what is wrong and acknowledged (it can
never succeed, so it must not be redelivered forever).

When recording fails (the database is down), the message is acknowledged to
the broker all the same but no ``received`` goes to the unit: the unit keeps
the alert in its outbox and resends it until the server confirms. Holding the
broker's message instead would fill the broker's in-flight window for this
client (20 by default in Mosquitto) and stop every later alert.

The two are told apart by what failed: the contract (:class:`WireError`: the
payload itself is wrong, and resending it cannot help) or the database's
refusal of a value (``DataError``) is a *rejection*, logged in one line and
counted in :attr:`Ingest.rejected`; anything else is taken as a passing
failure and left for the unit to resend, traceback and all. NOTE: an unknown
error errs on the side of the resend: a dropped alarm is worse than a
repeated log line.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from sqlalchemy.exc import DataError

from panicbutton.wire import (
    ALERT_SUBSCRIPTION,
    QOS,
    STATUS_SUBSCRIPTION,
    Alert,
    Feedback,
    Status,
    WireError,
    feedback_topic,
    parse_topic,
)
from server.settings import Settings
from server.units.feedback import FeedbackSink
from server.units.statuses import UnknownDeviceError

log = logging.getLogger(__name__)


def server_client(settings: Settings) -> mqtt.Client:
    """The server's MQTT client, not yet connected: :class:`Ingest` runs it."""
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=settings.mqtt_client_id,
        # A persistent session: alerts published while the server is down
        # wait at the broker (and the units resend them anyway).
        clean_session=False,
        protocol=MQTTProtocolVersion.MQTTv311,
        manual_ack=True,
    )
    c.username_pw_set(settings.mqtt_username, settings.mqtt_password.get_secret_value())
    if settings.mqtt_ca_file is not None:
        c.tls_set(ca_certs=str(settings.mqtt_ca_file), tls_version=ssl.PROTOCOL_TLS_CLIENT)
    c.reconnect_delay_set(min_delay=1, max_delay=10)
    return c


def feedback_publisher(client: mqtt.Client) -> FeedbackSink:
    """Publishes feedback on ``client``: retained for panic alerts, so a unit that
    reboots shows where its alert stands; a test's feedback is not retained (it
    must never hide a real alert's state)."""

    def publish(device_id: str, feedback: Feedback, retain: bool) -> None:
        client.publish(feedback_topic(device_id), feedback.to_json(), qos=QOS, retain=retain)

    return publish


class Ingest:
    """Runs the server's MQTT session: hands alerts and statuses to their services."""

    def __init__(
        self,
        settings: Settings,
        client: mqtt.Client,
        *,
        on_alert: Callable[[Alert], object],
        on_status: Callable[[Status, bool], None],
    ) -> None:
        self._settings = settings
        self._on_alert = on_alert
        self._on_status = on_status
        self.connected = threading.Event()
        #: Messages refused since start: they can never be recorded, so nobody resends them.
        self.rejected = 0
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client

    def start(self) -> None:
        self._client.connect_async(self._settings.mqtt_host, self._settings.mqtt_port, keepalive=15)
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            log.error(
                "broker %s:%d refused the server: %s (check PANICBUTTON_MQTT_USERNAME "
                "and PANICBUTTON_MQTT_PASSWORD)",
                self._settings.mqtt_host,
                self._settings.mqtt_port,
                reason,
            )
            return
        client.subscribe([(ALERT_SUBSCRIPTION, QOS), (STATUS_SUBSCRIPTION, QOS)])
        log.info("connected to broker %s:%d", self._settings.mqtt_host, self._settings.mqtt_port)
        self.connected.set()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self.connected.clear()
        if reason.is_failure:
            log.warning("disconnected from broker: %s; reconnecting", reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            self._handle(msg.topic, bytes(msg.payload), bool(msg.retain))
        except (WireError, UnknownDeviceError) as exc:
            self._reject(msg.topic, str(exc))
        except DataError as exc:
            name = type(exc.orig).__name__
            self._reject(msg.topic, f"the database refuses a value in it ({name})")
        except Exception:
            # No feedback went out, so the unit resends from its outbox (see above).
            log.exception("could not record message on %s; the unit will resend it", msg.topic)
        if msg.qos > 0:
            client.ack(msg.mid, msg.qos)

    def _handle(self, topic: str, payload: bytes, retained: bool) -> None:
        device_id, kind = parse_topic(topic)
        if kind == "alert":
            alert = Alert.from_json(payload)
            if alert.device_id != device_id:
                raise WireError(
                    f"alert names device {alert.device_id!r} but came on the topic "
                    f"of {device_id!r}; a unit may only alert for itself"
                )
            self._on_alert(alert)  # records, pages and publishes the feedback
        elif kind == "status":
            if not payload:
                return  # a retained status being cleared
            status = Status.from_json(payload)
            if status.device_id != device_id:
                raise WireError(
                    f"status names device {status.device_id!r} on the topic of {device_id!r}"
                )
            self._on_status(status, retained)

    def _reject(self, topic: str, reason: str) -> None:
        """A message that can never be recorded: one line, counted, and not left to resend."""
        self.rejected += 1
        log.error("rejected message on %s: %s", topic, reason)
