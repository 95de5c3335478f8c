"""Acknowledgement links: a signed, expiring, single-use token per page.

The token names a page (so a person and an incident) and an expiry, signed
with HMAC-SHA256 under ``PANICBUTTON_LINK_SECRET``. A *list* token (a bundled
SMS names only the rooms that fit) names a page in the same way but opens the
list of that person's open alarms, each with its own button; it is told apart
by its own signing label, and lives under the same ``/ack/`` path. Opening the link (GET)
only shows a page with a button: link previews in messaging apps fetch URLs,
and a fetch must never acknowledge. The button POSTs; the token is then used
up. Pages are served with ``Cache-Control: no-store`` and every value is
escaped.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from datetime import datetime

#: How long a link works, in seconds.
LINK_TTL = 2 * 3600


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


#: Signing labels: one page's link, a person's list of open alarms, and the map of a
#: worker's phone's positions during the alarm a page is about (``/map/{token}``: read
#: only, opened as often as needed until it expires).
PAGE, LIST, MAP = b"ack-link-v1", b"ack-list-v1", b"map-link-v1"


def make_token(secret: str, page_id: int, now: datetime, *, kind: bytes = PAGE) -> str:
    body = struct.pack(">QQ", page_id, int(now.timestamp()) + LINK_TTL)
    mac = hmac.new(secret.encode(), kind + body, hashlib.sha256).digest()[:16]
    return f"{_b64(body)}.{_b64(mac)}"


def read_token(secret: str, token: str, now: datetime, *, kind: bytes = PAGE) -> int | None:
    """The page id if the token is genuine, of this kind and not expired; None otherwise."""
    try:
        body_text, mac_text = token.split(".")
        body, mac = _unb64(body_text), _unb64(mac_text)
        page_id, expires = struct.unpack(">QQ", body)
    except (ValueError, struct.error):
        return None
    # NOTE: base64 decoding is lenient (padding, stray characters, unused low bits):
    # only the one text this module writes is taken, so a used token cannot be made
    # new again by spelling it differently (the used mark is on the text).
    if token != f"{_b64(body)}.{_b64(mac)}":
        return None
    expected = hmac.new(secret.encode(), kind + body, hashlib.sha256).digest()[:16]
    if not secret or not hmac.compare_digest(mac, expected) or now.timestamp() > expires:
        return None
    return int(page_id)


def token_key(token: str) -> str:
    """What marks a token as used (its hash, so the log holds no live token)."""
    return "link:" + hashlib.sha256(token.encode()).hexdigest()[:40]
