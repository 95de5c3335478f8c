"""Why a unit cannot reach or log in to its broker: said once in the journal, with
what to check, and in the same words by ``panicbutton device check``.

Each cause is made for real: a name under ``.invalid``, a loopback port nobody
listens on, a Mosquitto that refuses the password, TLS spoken to its plain port,
and a TLS listener (plain MQTT spoken to it, or certificates it cannot vouch for).
"""

from __future__ import annotations

import logging
import socketserver
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from demo.broker import free_port
from device.agent import Agent
from device.check import check
from device.config import DeviceConfig
from tests.device.bare import said, unit
from tests.harness import Broker, wait_until
from tests.tls import Certificates, certificates

#: Retries the agent must have made, each with the same cause, before the test looks
#: (paho waits 1 + 2 s before the first: a second retry would take 7 s).
RETRIES = 1


def journal(caplog: pytest.LogCaptureFixture, config: DeviceConfig) -> list[str]:
    """The warnings the agent writes while it retries the broker ``RETRIES`` times over."""
    caplog.set_level(logging.DEBUG, logger="device.agent")
    agent = Agent(config, pin_factory=MockFactory())
    agent.start()
    try:
        # A retry with the same cause is only a debug line.
        assert wait_until(lambda: len(said(caplog, logging.DEBUG)) >= RETRIES), caplog.text
    finally:
        agent.close()
    return said(caplog, logging.WARNING)


def checked(config: DeviceConfig) -> list[str]:
    """What ``panicbutton device check`` prints (no test alert: the broker is the point)."""
    lines: list[str] = []
    check(config, say=lines.append, test_alert=False, pin_factory=MockFactory())
    return lines


def assert_said_once_and_checked(
    caplog: pytest.LogCaptureFixture, config: DeviceConfig, *words: str
) -> None:
    warnings = journal(caplog, config)
    assert len(warnings) == 1, warnings
    for w in words:
        assert w in warnings[0]
    assert f"FAIL  broker: {warnings[0]}" in checked(config)


def test_a_name_that_does_not_resolve(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert_said_once_and_checked(
        caplog,
        unit(tmp_path, host="broker.invalid"),
        "cannot reach the broker at broker.invalid:1883: the name 'broker.invalid' does not "
        "resolve (",
        "; check mqtt.host (its spelling) and this unit's DNS",
    )


def test_a_port_nobody_listens_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    assert_said_once_and_checked(
        caplog,
        unit(tmp_path, port=port),
        f"cannot reach the broker at 127.0.0.1:{port}: connection refused (nothing listens "
        f"there); check mqtt.host and mqtt.port, that the broker runs, and that its firewall "
        f"lets port {port} in",
    )


@pytest.mark.mosquitto
def test_a_wrong_password(broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert_said_once_and_checked(
        caplog,
        unit(tmp_path, port=broker.port, password="not-its-password"),
        # Mosquitto says "not authorised" for a wrong password (MQTT 3.1.1).
        f"the broker at 127.0.0.1:{broker.port} refused the login of unit-1: Not authorized; "
        "check that mqtt.password_file holds this unit's password and that the broker's "
        "password file has a line for unit-1",
    )


@contextmanager
def tls_listener(made: Certificates) -> Iterator[int]:
    """A TLS port on loopback that shakes hands with ``made``'s certificate (and never
    speaks MQTT); yields its port."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(made.cert, made.key)

    class Handshake(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            try:
                with context.wrap_socket(self.request, server_side=True) as tls:
                    tls.recv(1)
            except OSError:  # the client's bytes are not TLS, or it refused the certificate
                pass

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handshake)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.mosquitto
def test_tls_spoken_to_the_plain_port(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    made = certificates(tmp_path / "tls")
    assert_said_once_and_checked(
        caplog,
        unit(tmp_path, port=broker.port, password=broker.users["unit-1"], ca_file=str(made.ca)),
        f"cannot reach the broker at 127.0.0.1:{broker.port}: the TLS handshake failed (",
        "; check mqtt.port is the broker's TLS port (usually 8883): mqtt.ca_file is set",
    )


def test_plain_mqtt_spoken_to_a_tls_port(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with tls_listener(certificates(tmp_path / "tls")) as port:
        assert_said_once_and_checked(
            caplog,
            unit(tmp_path, port=port),
            f"the broker at 127.0.0.1:{port} closed the connection before answering the "
            f"login; check mqtt.ca_file: port {port} may speak TLS (usually 8883)",
        )


@pytest.mark.parametrize(
    ("host", "other_ca", "expired", "words"),
    [
        pytest.param(
            "127.0.0.1",
            False,
            False,
            "the broker's certificate is not for the name '127.0.0.1' (IP address mismatch",
            id="name-mismatch",
        ),
        pytest.param(
            "localhost",
            True,
            False,
            "the broker's certificate is not signed by mqtt.ca_file ",
            id="wrong-ca-file",
        ),
        pytest.param(
            "localhost",
            False,
            True,
            "the broker's certificate is expired by this unit's clock; check this unit's clock",
            id="expired",
        ),
    ],
)
def test_a_certificate_the_unit_cannot_trust(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    host: str,
    other_ca: bool,
    expired: bool,
    words: str,
) -> None:
    made = certificates(tmp_path / "broker", expired=expired)
    ca = certificates(tmp_path / "other").ca if other_ca else made.ca
    with tls_listener(made) as port:
        assert_said_once_and_checked(
            caplog,
            unit(tmp_path, host=host, port=port, ca_file=str(ca)),
            f"cannot reach the broker at {host}:{port}: {words}",
        )
