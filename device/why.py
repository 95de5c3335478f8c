"""Why a room unit cannot reach or log in to its broker, and what to check.

One wording for both places a person reads it: the agent's journal (through
:mod:`device.link`) and ``panicbutton device check`` (:mod:`device.check`), so
the same cause gets the same hint in both. Each :class:`Why` says what happened
and names the settings or files to check.
"""

from __future__ import annotations

import errno
import socket
import ssl
from dataclasses import dataclass

from paho.mqtt.reasoncodes import ReasonCode

from device.config import MqttConfig

#: OpenSSL's verify codes (X509_V_ERR_*) that have a hint of their own.
_NOT_FOR_THIS_NAME = frozenset({62, 64})  # HOSTNAME_MISMATCH, IP_ADDRESS_MISMATCH
_NOT_YET_VALID, _EXPIRED = 9, 10
#: The errno values that mean no route to the broker's address.
_NO_ROUTE = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN})
#: The CONNACK reason codes of a refused login: "Bad user name or password" and "Not
#: authorized" (MQTT 3.1.1's 4 and 5, as paho numbers them).
_LOGIN_REFUSED = frozenset({134, 135})


@dataclass(frozen=True, slots=True)
class Why:
    """What went wrong (``what``) and what to check to fix it (``check``)."""

    what: str
    check: str

    def __str__(self) -> str:
        return f"{self.what}; check {self.check}"


def cannot_connect(exc: BaseException | None, mqtt: MqttConfig) -> Why:
    """Why opening the connection to the broker failed with ``exc`` (paho raises the
    socket's or the TLS handshake's error; None when it did not say)."""
    where = f"{mqtt.host}:{mqtt.port}"
    reach = f"cannot reach the broker at {where}"
    detail = _detail(exc)
    match exc:
        case socket.gaierror():
            found = Why(
                f"{reach}: the name {mqtt.host!r} does not resolve ({detail})",
                "mqtt.host (its spelling) and this unit's DNS (is the network up?)",
            )
        case ConnectionRefusedError():
            found = Why(
                f"{reach}: connection refused (nothing listens there)",
                f"mqtt.host and mqtt.port, that the broker runs, and that its firewall "
                f"lets port {mqtt.port} in",
            )
        case TimeoutError():
            found = Why(
                f"{reach}: no answer (timed out)",
                f"mqtt.host, this unit's network, and any firewall on the way that drops "
                f"port {mqtt.port}",
            )
        case OSError(errno=code) if code in _NO_ROUTE:
            found = Why(
                f"{reach}: {detail}",
                "this unit's network (cable or Wi-Fi, its address and router) and mqtt.host",
            )
        case ssl.SSLCertVerificationError():
            found = _certificate(exc, mqtt, reach)
        case ssl.SSLError() | ConnectionResetError() | ConnectionAbortedError():
            # A reset during the TLS handshake: what a plain MQTT port does with TLS.
            if mqtt.ca_file is not None:
                found = Why(
                    f"{reach}: the TLS handshake failed ({detail})",
                    f"mqtt.port is the broker's TLS port (usually 8883): mqtt.ca_file is set, "
                    f"so the unit speaks TLS, and port {mqtt.port} may be plain MQTT (1883)",
                )
            else:
                found = closed_early(mqtt)
        case _:
            found = Why(
                f"{reach}: {detail}",
                "mqtt.host, mqtt.port and this unit's network",
            )
    return found


def _certificate(exc: ssl.SSLCertVerificationError, mqtt: MqttConfig, reach: str) -> Why:
    code = exc.verify_code
    if code in _NOT_FOR_THIS_NAME:
        return Why(
            f"{reach}: the broker's certificate is not for the name {mqtt.host!r} "
            f"({exc.verify_message})",
            "mqtt.host is the name (or address) the broker's certificate was made for",
        )
    if code in (_NOT_YET_VALID, _EXPIRED):
        state = "not valid yet" if code == _NOT_YET_VALID else "expired"
        return Why(
            f"{reach}: the broker's certificate is {state} by this unit's clock",
            "this unit's clock (timedatectl: is network time synchronised?) and the "
            "dates of the broker's certificate",
        )
    return Why(
        f"{reach}: the broker's certificate is not signed by mqtt.ca_file {mqtt.ca_file} "
        f"({exc.verify_message})",
        "mqtt.ca_file is the CA certificate (ca.crt) that signed the broker's certificate",
    )


def refused(reason: ReasonCode, mqtt: MqttConfig) -> Why:
    """Why the broker answered the login with a failing ``reason`` (its CONNACK)."""
    where = f"{mqtt.host}:{mqtt.port}"
    user = mqtt.username
    what = f"the broker at {where} refused the login of {user}: {reason}"
    # NOTE: Mosquitto answers a wrong password or an unknown user "not authorised" too.
    if reason.value in _LOGIN_REFUSED:
        return Why(
            what,
            f"that mqtt.password_file holds this unit's password and that the broker's "
            f"password file has a line for {user} made from it (then reload the broker)",
        )
    return Why(what, "the broker's log")


def closed_early(mqtt: MqttConfig) -> Why:
    """Why the broker's port took the connection and then closed it before answering
    the login (what a TLS port does with plain MQTT)."""
    where = f"{mqtt.host}:{mqtt.port}"
    what = f"the broker at {where} closed the connection before answering the login"
    if mqtt.ca_file is None:
        return Why(
            what,
            f"mqtt.ca_file: port {mqtt.port} may speak TLS (usually 8883), which needs "
            "the broker's CA certificate; else the broker's log",
        )
    return Why(what, "the broker's log")


def _detail(exc: BaseException | None) -> str:
    if exc is None:
        return "no cause given"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
