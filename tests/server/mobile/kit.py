"""A worker's phone as the test sees it: a P-256 key pair like the page's WebCrypto one,
enrolment through the one-time link, and requests signed as the page signs them
(:mod:`server.mobile.signing`)."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from fastapi.testclient import TestClient
from httpx import Response

from panicbutton.wire import new_alert_id, now_utc
from server.app import Server
from server.mobile.signing import PHONE, SIGNATURE, TIME, message
from server.people.roles import Role
from tests.server.people_helpers import add_person, browser_as

#: The PINs every test phone enrols with.
PIN, DURESS = "2580", "7391"


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass
class Phone:
    """One phone: its key, and once enrolled its id and fallback."""

    #: The app under test (a TestClient) or a running server (an httpx.Client).
    client: httpx.Client
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    phone_id: str = ""
    fallback: dict[str, str] = field(default_factory=dict)
    #: Milliseconds added to this phone's clock (a phone whose clock is wrong).
    skew_ms: int = 0

    @property
    def public_key(self) -> str:
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return b64url(der)

    def enrol(
        self,
        token: str,
        *,
        number: str = "+32470555001",
        pin: str = PIN,
        duress: str = DURESS,
    ) -> Response:
        answer = self.client.post(
            "/api/v1/phone/enrol",
            json={
                "token": token,
                "public_key": self.public_key,
                "pin": pin,
                "duress_pin": duress,
                "number": number,
                "label": "test phone",
            },
        )
        if answer.status_code == 201:
            self.phone_id = answer.json()["phone_id"]
            self.fallback = answer.json()["fallback"]
        return answer

    def headers(self, method: str, path: str, body: bytes) -> dict[str, str]:
        millis = str(int(time.time() * 1000) + self.skew_ms)
        der = self.key.sign(message(method, path, millis, body), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return {PHONE: self.phone_id, TIME: millis, SIGNATURE: b64url(raw)}

    def call(self, method: str, path: str, payload: Any = None) -> Response:
        """A request signed with this phone's key."""
        body = b"" if payload is None else json.dumps(payload).encode()
        headers = {**self.headers(method, path, body), "Content-Type": "application/json"}
        return self.client.request(method, path, content=body, headers=headers)

    def alarm(self, alert_id: str | None = None, presses: int = 1) -> Response:
        return self.call(
            "POST",
            "/api/v1/phone/alarms",
            {
                "alert_id": alert_id or new_alert_id(),
                "pressed_at": now_utc().isoformat(),
                "presses": presses,
            },
        )


def phone_link(server: Server, worker: str, *, by: str = "manager") -> str:
    """A one-time enrolment link's token for ``worker``'s phone, as a manager makes it."""
    answer = browser_as(server, by).post(f"/api/v1/people/{worker}/phone-link")
    assert answer.status_code == 201, answer.text
    link: str = answer.json()["link"]
    assert "/phone/enrol#" in link, link
    return link.rsplit("#", 1)[1]


def enrolled_phone(server: Server, client: TestClient, worker: str = "w-17") -> Phone:
    """A worker (opened if needed) with an enrolled phone."""
    add_person(server, worker, Role.WORKER)
    phone = Phone(client)
    answer = phone.enrol(phone_link(server, worker))
    assert answer.status_code == 201, answer.text
    return phone
