"""The server's MQTT side: alerts and status in, feedback out (paho-mqtt 2.x).

An alert is acknowledged to the broker (``manual_ack``) and confirmed to the
room unit only after its incident is committed. Several server instances share
the units' messages (:attr:`Settings.mqtt_shared`) through an MQTT 5 shared
subscription (``$share/<group>/``) on clean sessions: each message goes to one
instance, and an instance that stops gets no share while it is away (a member's
persistent session would go on taking its share). A QoS 1 message in flight to
an instance that dies can be lost at the broker (eclipse/mosquitto#2662): the
unit resends until some instance confirms it. A malformed payload, or one
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

Group commit: paho's thread parses each alert and queues it; the ``ingest``
thread takes every alert queued at that moment (up to :data:`MAX_BATCH`), has
them recorded in one transaction (``on_alerts``), and only then publishes each
unit's feedback and acknowledges each message. An alert alone is taken at once:
nothing waits for a batch to fill. Work that can follow the units' "received"
(paging, ``on_idle``) is done on the same thread, a little at a time, whenever no
alert is waiting: in a storm every unit is confirmed first, and a lone alert is
paged at once. Statuses are handled on paho's thread.
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from sqlalchemy.exc import DataError

from panicbutton.sockets import no_delay
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

#: The most alerts recorded in one transaction: a storm is committed in batches of
#: this many, so that the first unit of a batch does not wait for a thousand others.
MAX_BATCH = 64

#: Seconds the ``ingest`` thread waits for more alerts after a batch of :data:`STORM`
#: or more, before it pages: the broker sends a client only so many unacknowledged
#: messages at a time (Mosquitto: 20), so the rest of a storm comes only after this
#: batch's acknowledgements. A lone alert, or two or three together, is paged at once.
LINGER = 0.05
STORM = 8

#: What becomes of each alert of a batch, in order: its feedback (sent to the unit
#: already), or the error that kept it from being recorded.
AlertOutcome = Feedback | Exception


@dataclass(frozen=True, slots=True)
class _Queued:
    """An alert taken off the wire, waiting for its batch (and its acknowledgement)."""

    topic: str
    mid: int
    qos: int
    alert: Alert


def server_client(settings: Settings) -> mqtt.Client:
    """The server's MQTT client, not yet connected: :class:`Ingest` runs it. Shared by
    several instances: MQTT 5 with a clean session in a shared-subscription group (a
    member's persistent session would go on taking its share while it is down). One
    server: MQTT 3.1.1 on a persistent session (alerts published while the server
    restarts wait at the broker; the units resend them anyway)."""
    shared = settings.mqtt_shared
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=settings.mqtt_client_id,
        clean_session=None if shared else False,  # MQTT 5: clean_start at connect
        protocol=MQTTProtocolVersion.MQTTv5 if shared else MQTTProtocolVersion.MQTTv311,
        manual_ack=True,
    )
    c.username_pw_set(settings.mqtt_username, settings.mqtt_password.get_secret_value())
    if settings.mqtt_ca_file is not None:
        c.tls_set(ca_certs=str(settings.mqtt_ca_file), tls_version=ssl.PROTOCOL_TLS_CLIENT)
    c.reconnect_delay_set(min_delay=1, max_delay=10)
    return c


#: What the server reads: every unit's alerts and statuses.
SUBSCRIPTIONS = (ALERT_SUBSCRIPTION, STATUS_SUBSCRIPTION)


def subscription(topic: str, settings: Settings) -> str:
    """``topic`` as this instance subscribes to it: in the shared-subscription group when
    several instances share the work. (Retained statuses are not replayed to a shared
    subscription: a unit that went offline while every server was down is found by its
    silence.)"""
    if settings.mqtt_shared:
        return f"$share/{settings.mqtt_share_group}/{topic}"
    return topic


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
        on_alerts: Callable[[Sequence[Alert]], Sequence[AlertOutcome]],
        on_status: Callable[[Status, bool], None],
        on_idle: Callable[[], bool] = lambda: False,
        on_overdue: Callable[[], bool] = lambda: False,
    ) -> None:
        """``on_alerts(alerts)`` records alerts in one transaction, publishes each
        unit's feedback after the commit, and returns what became of each, in order.
        ``on_idle()`` does a little of the work that follows (paging) and says whether
        there was any; it is called whenever no alert is waiting. ``on_overdue()`` does
        the same for work held too long, and is called after each batch of alerts (a
        storm that goes on must not hold its first pages back until it ends)."""
        self._settings = settings
        self._on_alerts = on_alerts
        self._on_idle = on_idle
        self._on_overdue = on_overdue
        self._on_status = on_status
        self.connected = threading.Event()
        #: Messages refused since start: they can never be recorded, so nobody resends them.
        self.rejected = 0
        self._queue: queue.SimpleQueue[_Queued | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client

    def start(self) -> None:
        self._thread = threading.Thread(target=self._take_alerts, name="ingest", daemon=True)
        self._thread.start()
        clean: dict[str, Any] = {"clean_start": True} if self._settings.mqtt_shared else {}
        self._client.connect_async(
            self._settings.mqtt_host, self._settings.mqtt_port, keepalive=15, **clean
        )
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        # The alerts queued before it are still recorded (their units hear nothing, as
        # the link is down, and resend; the records make those resends no-ops).
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(30)

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
        no_delay(client.socket())  # feedback must not wait for a delayed ACK
        client.subscribe([(subscription(t, self._settings), QOS) for t in SUBSCRIPTIONS])
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
            queued = self._take(msg)
        except Exception as exc:  # noqa: BLE001 -- logged or rejected by _failed
            self._failed(msg.topic, exc)
            queued = False
        if not queued:
            self._done(msg.topic, msg.mid, msg.qos)

    def _take(self, msg: mqtt.MQTTMessage) -> bool:
        """Queue an alert for its batch (True), or handle a status at once (False)."""
        payload, topic = bytes(msg.payload), msg.topic
        device_id, kind = parse_topic(topic)
        if kind == "alert":
            alert = Alert.from_json(payload)
            if alert.device_id != device_id:
                raise WireError(
                    f"alert names device {alert.device_id!r} but came on the topic "
                    f"of {device_id!r}; a unit may only alert for itself"
                )
            self._queue.put(_Queued(topic, msg.mid, msg.qos, alert))
            return True
        if kind == "status" and payload:  # an empty one: a retained status being cleared
            status = Status.from_json(payload)
            if status.device_id != device_id:
                raise WireError(
                    f"status names device {status.device_id!r} on the topic of {device_id!r}"
                )
            self._on_status(status, bool(msg.retain))
        return False

    def _failed(self, topic: str, exc: Exception) -> None:
        """A message not recorded: a rejection, or left for the unit to resend (see the
        module's docstring)."""
        if isinstance(exc, WireError | UnknownDeviceError):
            self._reject(topic, str(exc))
        elif isinstance(exc, DataError):
            self._reject(topic, f"the database refuses a value in it ({type(exc.orig).__name__})")
        else:
            # No feedback went out, so the unit resends from its outbox (see above).
            log.error(
                "could not record message on %s; the unit will resend it", topic, exc_info=exc
            )

    def _take_alerts(self) -> None:
        """The ``ingest`` thread: record every alert queued at this moment, together;
        when none is, do what follows them (see the module's docstring)."""
        together = False
        while (first := self._next(together)) is not None:
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:  # stopping: this batch first
                    self._queue.put(None)
                    break
                batch.append(item)
            self._record(batch)
            together = len(batch) >= STORM
            self._idle(self._on_overdue)
        # Stopping: the alerts recorded here are paged before the pager closes (should
        # the process die first, their step 0 jobs wait in the database for the next start).
        while self._idle(self._on_idle):
            pass

    def _next(self, together: bool) -> _Queued | None:
        """The next alert (None: stopping); while none is waiting, what follows the
        alerts, a piece at a time. After alerts that came together, a moment's wait for
        more first (see :data:`LINGER`)."""
        if together:
            try:
                return self._queue.get(timeout=LINGER)
            except queue.Empty:
                pass
        while self._queue.empty() and self._idle(self._on_idle):
            pass  # look for alerts again before the next piece
        return self._queue.get()

    def _idle(self, work: Callable[[], bool]) -> bool:
        try:
            return work()
        except Exception:  # the thread must outlive it; the scheduler pages instead
            log.exception("work after the alerts' receipt failed")
            return False

    def _record(self, batch: list[_Queued]) -> None:
        try:
            outcomes = self._on_alerts([q.alert for q in batch])
        except Exception as exc:  # noqa: BLE001 -- on_alerts reports each alert's own; a bug
            outcomes = [exc] * len(batch)
        for q, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, Exception):
                self._failed(q.topic, outcome)
            self._done(q.topic, q.mid, q.qos)

    def _done(self, topic: str, mid: int, qos: int) -> None:
        """A message handled (recorded, refused or left to resend): acknowledged to the
        broker. Once per message, on paho's thread or the ``ingest`` thread."""
        if qos > 0:
            self._client.ack(mid, qos)

    def _reject(self, topic: str, reason: str) -> None:
        """A message that can never be recorded: one line, counted, and not left to resend."""
        self.rejected += 1
        log.error("rejected message on %s: %s", topic, reason)
