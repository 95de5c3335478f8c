"""Requests signed by an enrolled phone's own key.

At enrolment the page makes an ECDSA P-256 key pair with WebCrypto, marked not
extractable (kept in the browser's IndexedDB: a script cannot read it out), and
sends the public key. Every later request carries three headers:

- ``X-Phone``: the phone's id;
- ``X-Phone-Time``: the phone's clock, milliseconds since the epoch;
- ``X-Phone-Signature``: base64url (no padding) of the 64-byte ECDSA signature
  (r || s, as WebCrypto makes it) over :func:`message`.

An alarm is never refused for the phone's clock (a phone with a wrong clock must
still alarm; an alarm is idempotent by its id, so a replay changes nothing); any
other request must be within :data:`SKEW` of the server's clock.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from datetime import UTC, datetime, timedelta

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from server.errors import PeopleError

#: How far a signed request's time may be from the server's (alarms excepted).
SKEW = timedelta(minutes=15)
#: The headers a signed request carries.
PHONE, TIME, SIGNATURE = "X-Phone", "X-Phone-Time", "X-Phone-Signature"


class BadKeyError(PeopleError):
    """A public key that is not an ECDSA P-256 key in SubjectPublicKeyInfo form."""


def b64url_decode(text: str) -> bytes:
    """base64url with or without padding; ValueError if it is not."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None


def load_key(spki_b64url: str) -> bytes:
    """The DER of a P-256 public key sent as base64url SPKI; BadKeyError if it is not one."""
    try:
        der = b64url_decode(spki_b64url)
        key = serialization.load_der_public_key(der)
    except ValueError:
        raise BadKeyError(
            "public_key must be the page's ECDSA P-256 public key, exported by WebCrypto "
            "as 'spki' and sent as base64url"
        ) from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise BadKeyError("public_key must be an ECDSA key on the P-256 curve")
    return der


def message(method: str, path: str, millis: str, body: bytes) -> bytes:
    """What the phone signs: method, path with query, its time and the body's SHA-256."""
    return f"{method.upper()}\n{path}\n{millis}\n{hashlib.sha256(body).hexdigest()}".encode()


def verify(der: bytes, signed: bytes, signature_b64url: str) -> bool:
    """Whether ``signature_b64url`` (r || s, 64 bytes) is this key's over ``signed``."""
    try:
        raw = b64url_decode(signature_b64url)
    except ValueError:
        return False
    if len(raw) != 64:
        return False
    key = serialization.load_der_public_key(der)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    try:
        key.verify(encode_dss_signature(r, s), signed, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def phone_time(millis: str) -> datetime | None:
    """The phone's clock from ``X-Phone-Time``, or None if it is not a sane number."""
    if not (millis.isascii() and millis.isdigit()) or len(millis) > 15:  # "²" is a digit too
        return None
    try:
        return datetime.fromtimestamp(int(millis) / 1000, UTC)
    except (ValueError, OverflowError, OSError):  # beyond the year 9999: no sane clock
        return None
