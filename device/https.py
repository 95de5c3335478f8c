"""The second path: an alert POSTed to the server over HTTPS when the broker is out of reach.

Alarm transmission standards grade systems higher when they have two paths.
The body is the same alert JSON as on MQTT and the answer is the same
feedback JSON, so the server de-duplicates across both paths by alert id.
Standard library only (the unit is a Pi Zero 2 W); runs on its own thread so a
slow network never holds up the agent.
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from device.config import HttpsPath
from device.link import FeedbackIn, LinkDown, LinkEvent, Via
from panicbutton.wire import Alert

log = logging.getLogger(__name__)

#: Seconds one POST may take before it is abandoned (the agent tries again later).
TIMEOUT = 5.0


def trust(ca_file: Path | None) -> ssl.SSLContext:
    """What the unit trusts for the server's HTTPS: the system's CAs (a server behind a
    proxy with a public certificate, as Twilio needs) and the site's own CA, if any (a
    server whose certificate the site signed). The broker's MQTT keeps to the site's CA."""
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context


class HttpsSender:
    """Posts alerts one at a time; each answer goes to ``hand_over`` as feedback, each
    failure as :class:`~device.link.LinkDown` (called on this sender's thread)."""

    def __init__(
        self, config: HttpsPath, device_id: str, hand_over: Callable[[LinkEvent], None]
    ) -> None:
        self._base = f"{config.url}/api/v1/devices/{device_id}"
        self._token = config.token
        self._hand_over = hand_over
        self._context = trust(config.ca_file)
        self._jobs: queue.Queue[Alert | None] = queue.Queue()
        self._busy = threading.Event()
        self._thread = threading.Thread(target=self._run, name="https-path", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        return self._busy.is_set() or not self._jobs.empty()

    def submit(self, alert: Alert) -> None:
        self._jobs.put(alert)

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(TIMEOUT + 1)

    def _run(self) -> None:
        while (alert := self._jobs.get()) is not None:
            self._busy.set()
            try:
                self._hand_over(FeedbackIn(self.post(alert), via=Via.HTTPS))
                log.info("alert %s delivered over the HTTPS path", alert.alert_id)
            except OSError as exc:  # URLError, HTTPError, timeouts and TLS errors
                self._hand_over(LinkDown(f"HTTPS path: {describe(exc)}", path=Via.HTTPS))
            except Exception as exc:  # noqa: BLE001 -- e.g. a proxy's garbage status line
                reason = f"HTTPS path: {type(exc).__name__}: {exc}"
                self._hand_over(LinkDown(reason, path=Via.HTTPS))
            finally:
                self._busy.clear()

    def post(self, alert: Alert) -> bytes:
        request = urllib.request.Request(  # noqa: S310 -- the URL is https:// by config check
            f"{self._base}/alerts",
            data=alert.to_json(),
            method="POST",
            headers={"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=TIMEOUT, context=self._context) as resp:  # noqa: S310
            body: bytes = resp.read(4096)
            return body

    def check(self) -> None:
        """GET the unit's check URL with its token; raises OSError (see :func:`describe`)."""
        request = urllib.request.Request(  # noqa: S310 -- https:// by config check
            f"{self._base}/check", headers={"Authorization": f"Bearer {self._token}"}
        )
        with urllib.request.urlopen(request, timeout=TIMEOUT, context=self._context):  # noqa: S310
            pass


def describe(exc: OSError) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"server answered {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"cannot reach the server: {exc.reason}"
    return str(exc)
