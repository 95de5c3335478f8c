"""Keys, signed notes and checkpoints of the incident log (C2SP signed-note and
tlog-checkpoint, Ed25519): :class:`Signer` on the server's side, :class:`VerifierKey`
and :func:`open_checkpoint` on the inspector's.

``VERIFY.md`` section 7 describes the same format in prose.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from panicbutton.log import canonical
from panicbutton.log.spec import HEX64_RE, LogFormatError

ED25519 = 0x01


def key_id(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([ED25519]) + public).digest()[:4]


def _check_name(name: str) -> None:
    if not name or any(c.isspace() or c == "+" for c in name):
        raise LogFormatError(f"key name {name!r} must be non-empty, without spaces or '+'")


@dataclass(frozen=True)
class VerifierKey:
    """A public key as C2SP notes write it: ``<name>+<key id hex>+<base64(0x01 || key)>``."""

    name: str
    public: bytes

    @property
    def id(self) -> bytes:
        return key_id(self.name, self.public)

    def __str__(self) -> str:
        blob = base64.b64encode(bytes([ED25519]) + self.public).decode()
        return f"{self.name}+{self.id.hex()}+{blob}"

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        # NOTE: at most 2 splits: the base64 key itself may hold '+'.
        parts = text.strip().split("+", 2)
        if len(parts) != 3:
            raise LogFormatError("a verifier key is <name>+<8 hex digits>+<base64 key>")
        name, hexid, blob = parts
        _check_name(name)
        try:
            raw = base64.b64decode(blob, validate=True)
            wanted = bytes.fromhex(hexid)
        except ValueError:
            raise LogFormatError("a verifier key's id or key is not hex / base64") from None
        if len(raw) != 33 or raw[0] != ED25519:
            raise LogFormatError("a verifier key must be an Ed25519 key (type 0x01, 32 bytes)")
        key = cls(name, raw[1:])
        if key.id != wanted:
            raise LogFormatError("the verifier key's id does not match its name and key")
        return key


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    note: str  # the whole signed note, as stored and exported

    def text(self) -> str:
        return checkpoint_text(self.origin, self.size, self.root)


def checkpoint_text(origin: str, size: int, root: bytes) -> str:
    _check_name(origin)
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"


_SIZE_RE = re.compile(rf"0|[1-9][0-9]{{0,{canonical.MAX_DIGITS - 1}}}")


def parse_checkpoint_text(text: str) -> tuple[str, int, bytes]:
    lines = text.split("\n")
    if len(lines) != 4 or lines[3] != "":
        raise LogFormatError("a checkpoint is three lines: origin, tree size, root hash")
    origin, size_s, root_s = lines[:3]
    if not _SIZE_RE.fullmatch(size_s):
        raise LogFormatError(
            f"checkpoint tree size {size_s[:20]!r} is not a decimal number of ASCII digits "
            f"(at most {canonical.MAX_DIGITS}, no leading zero)"
        )
    try:
        root = base64.b64decode(root_s, validate=True)
    except ValueError:
        raise LogFormatError("checkpoint root hash is not base64") from None
    if len(root) != 32:
        raise LogFormatError("checkpoint root hash is not 32 bytes")
    return origin, int(size_s), root


def split_note(note: str) -> tuple[str, list[tuple[str, bytes]]]:
    """A signed note's text and its (key name, base64-decoded signature) lines."""
    head, sep, tail = note.partition("\n\n")
    if not sep or not tail.endswith("\n"):
        raise LogFormatError("a signed note is text, a blank line, then signature lines")
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        raise LogFormatError("a signed note may not hold control characters")
    sigs = []
    for line in tail[:-1].split("\n"):
        if not line.startswith("\u2014 "):
            raise LogFormatError(f"signature line {line[:40]!r} does not start with an em dash")
        name, _, blob = line[2:].rpartition(" ")
        try:
            sigs.append((name, base64.b64decode(blob, validate=True)))
        except ValueError:
            raise LogFormatError("a signature is not base64") from None
    return head + "\n", sigs


def open_note(note: str, key: VerifierKey, *, what: str = "checkpoint") -> str:
    """The text of ``note`` once its signature by ``key`` verifies; LogFormatError if not."""
    text, sigs = split_note(note)
    public = Ed25519PublicKey.from_public_bytes(key.public)
    ours = [s for name, s in sigs if name == key.name and s[:4] == key.id]
    if not ours:
        raise LogFormatError(f"the {what} carries no signature by {key.name}")
    for sig in ours:
        try:
            public.verify(sig[4:], text.encode())
        except InvalidSignature:
            raise LogFormatError(f"the {what}'s signature does not verify") from None
    return text


def open_checkpoint(note: str, key: VerifierKey) -> Checkpoint:
    """Verify ``note``'s signature by ``key`` and parse its checkpoint; LogFormatError if not."""
    text = open_note(note, key)
    origin, size, root = parse_checkpoint_text(text)
    if origin != key.name:
        raise LogFormatError(f"checkpoint origin {origin!r} is not the key's name {key.name!r}")
    return Checkpoint(origin=origin, size=size, root=root, note=note)


#: The second line of a signed manifest. Never a decimal number, so a signed manifest
#: is never a checkpoint (whose second line is its size), nor a checkpoint a manifest.
MANIFEST_LINE = "panicbutton-log-bundle/v1 manifest"


def manifest_text(origin: str, manifest: bytes) -> str:
    """What signs a bundle's manifest: origin, ``MANIFEST_LINE``, SHA-256 hex of the
    manifest's bytes, each line ending in LF."""
    _check_name(origin)
    return f"{origin}\n{MANIFEST_LINE}\n{hashlib.sha256(manifest).hexdigest()}\n"


def open_manifest(note: str, key: VerifierKey) -> str:
    """The SHA-256 hex of the manifest that ``note`` (a signed manifest) signs, once its
    signature by ``key`` verifies; LogFormatError if not."""
    text = open_note(note, key, what="signed manifest")
    lines = text.split("\n")
    if len(lines) != 4 or lines[3] != "" or lines[1] != MANIFEST_LINE:
        raise LogFormatError(
            f"a signed manifest is three lines: origin, {MANIFEST_LINE!r}, and the "
            "SHA-256 of manifest.json"
        )
    if lines[0] != key.name:
        raise LogFormatError(f"its origin {lines[0]!r} is not the key's name {key.name!r}")
    if not HEX64_RE.fullmatch(lines[2]):
        raise LogFormatError("the manifest's SHA-256 is not 64 lowercase hex digits")
    return lines[2]


class Signer:
    """An Ed25519 note signer. The key file holds
    ``PRIVATE+KEY+<name>+<key id hex>+<base64(0x01 || 32-byte seed)>``."""

    def __init__(self, name: str, seed: bytes) -> None:
        _check_name(name)
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        public = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.verifier = VerifierKey(name, public)
        self._seed = seed

    @property
    def name(self) -> str:
        return self.verifier.name

    @classmethod
    def generate(cls, name: str) -> Signer:
        return cls(name, secrets.token_bytes(32))

    @classmethod
    def parse(cls, text: str) -> Signer:
        parts = text.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise LogFormatError(
                "a log signing key is PRIVATE+KEY+<name>+<id>+<key>; "
                "make one with `panicbutton audit keygen`"
            )
        try:
            raw = base64.b64decode(parts[4], validate=True)
        except ValueError:
            raise LogFormatError("the log signing key is not base64") from None
        if len(raw) != 33 or raw[0] != ED25519:
            raise LogFormatError("the log signing key is not an Ed25519 key")
        signer = cls(parts[2], raw[1:])
        if signer.verifier.id.hex() != parts[3]:
            raise LogFormatError("the log signing key's id does not match the key")
        return signer

    def derive(self, label: bytes) -> bytes:
        """A secret for ``label``, derived from the signing key (HMAC-SHA256)."""
        return hmac.new(self._seed, label, hashlib.sha256).digest()

    def private_text(self) -> str:
        blob = base64.b64encode(bytes([ED25519]) + self._seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.verifier.id.hex()}+{blob}\n"

    def _note(self, text: str) -> str:
        sig = self.verifier.id + self._key.sign(text.encode())
        return f"{text}\n\u2014 {self.name} {base64.b64encode(sig).decode()}\n"

    def sign_checkpoint(self, size: int, root: bytes) -> Checkpoint:
        note = self._note(checkpoint_text(self.name, size, root))
        return Checkpoint(origin=self.name, size=size, root=root, note=note)

    def sign_manifest(self, manifest: bytes) -> str:
        """The signed note that binds a bundle's manifest (``manifest.sig``)."""
        return self._note(manifest_text(self.name, manifest))
