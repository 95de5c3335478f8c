"""A software passkey authenticator: what a phone's secure chip does, in Python.

It makes a P-256 key pair per credential, answers ``navigator.credentials.create``
options with an attestation object (format ``none``, CBOR) and ``get`` options
with an assertion signed over ``authenticatorData || SHA-256(clientDataJSON)``,
flags user present and user verified, and a counter that grows by one per use.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

UP, UV, AT = 0x01, 0x04, 0x40


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Credential:
    id: bytes
    key: ec.EllipticCurvePrivateKey
    rp_id: str
    user_handle: bytes
    counter: int = 0


@dataclass
class Authenticator:
    """Holds its credentials; ``origin`` is the page the browser would be on."""

    origin: str
    credentials: list[Credential] = field(default_factory=list)

    def _client_data(self, kind: str, challenge: str, origin: str | None) -> bytes:
        return json.dumps(
            {
                "type": kind,
                "challenge": challenge,
                "origin": origin or self.origin,
                "crossOrigin": False,
            }
        ).encode()

    def create(self, options: dict[str, Any], *, origin: str | None = None) -> dict[str, Any]:
        """The PublicKeyCredential (as JSON) for these creation options."""
        rp_id = options["rp"]["id"]
        key = ec.generate_private_key(ec.SECP256R1())
        cred = Credential(
            id=os.urandom(32), key=key, rp_id=rp_id, user_handle=unb64(options["user"]["id"])
        )
        numbers = key.public_key().public_numbers()
        cose = cbor2.dumps(
            {
                1: 2,  # kty: EC2
                3: -7,  # alg: ES256
                -1: 1,  # crv: P-256
                -2: numbers.x.to_bytes(32, "big"),
                -3: numbers.y.to_bytes(32, "big"),
            }
        )
        auth_data = (
            hashlib.sha256(rp_id.encode()).digest()
            + bytes([UP | UV | AT])
            + struct.pack(">I", cred.counter)
            + bytes(16)  # AAGUID: none
            + struct.pack(">H", len(cred.id))
            + cred.id
            + cose
        )
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        self.credentials.append(cred)
        client_data = self._client_data("webauthn.create", options["challenge"], origin)
        return {
            "id": b64(cred.id),
            "rawId": b64(cred.id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64(client_data),
                "attestationObject": b64(attestation),
                "transports": ["internal"],
            },
            "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
        }

    def get(
        self,
        options: dict[str, Any],
        *,
        origin: str | None = None,
        counter: int | None = None,
    ) -> dict[str, Any]:
        """The assertion (as JSON) for these request options, from the first credential
        for the RP; ``counter`` forces the signature counter (a cloned authenticator)."""
        cred = next(c for c in self.credentials if c.rp_id == options["rpId"])
        cred.counter = cred.counter + 1 if counter is None else counter
        auth_data = (
            hashlib.sha256(cred.rp_id.encode()).digest()
            + bytes([UP | UV])
            + struct.pack(">I", cred.counter)
        )
        client_data = self._client_data("webauthn.get", options["challenge"], origin)
        signature = cred.key.sign(
            auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256())
        )
        return {
            "id": b64(cred.id),
            "rawId": b64(cred.id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64(client_data),
                "authenticatorData": b64(auth_data),
                "signature": b64(signature),
                "userHandle": b64(cred.user_handle),
            },
            "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
        }
