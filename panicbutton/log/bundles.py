"""A log bundle's files, from a directory or a .zip, checked against its manifest and
the manifest's signature (``VERIFY.md`` section 8, and section 9 step 2)."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

from panicbutton.log import canonical, checkpoints, spec
from panicbutton.log.verdict import BundleError, VerificationError

BUNDLE_FORMAT = "panicbutton-log-bundle/v1"
#: The files a manifest cannot list: itself, and the signature over it.
UNLISTED = frozenset({"manifest.json", "manifest.sig"})


class Bundle:
    """The files of a bundle, from a directory or a .zip, checked against its manifest."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.files: dict[str, bytes] = {}
        try:
            if path.is_dir():
                for p in sorted(path.rglob("*")):
                    if p.is_dir():
                        continue
                    name = p.relative_to(path).as_posix()
                    # NOTE: a file in a subfolder is never a bundle file: kept by its path
                    # (unread), so that check_files refuses it as unlisted, as in a zip.
                    self.files[name] = p.read_bytes() if p.parent == path else b""
            else:
                with zipfile.ZipFile(path) as zf:
                    for info in zf.infolist():
                        if info.is_dir():
                            continue
                        name = Path(info.filename).name
                        if name in self.files:
                            # Which copy would an unzipped bundle show? Refuse to guess.
                            raise BundleError(f"{path} holds two files named {name}")
                        self.files[name] = zf.read(info)
        except (OSError, zipfile.BadZipFile) as exc:
            raise BundleError(f"cannot read {path}: {exc}") from None
        if "manifest.json" not in self.files:
            raise BundleError(f"{path} has no manifest.json: is it a panicbutton log bundle?")
        try:
            manifest = canonical.loads(self.files["manifest.json"])
        except canonical.CanonicalError as exc:
            raise BundleError(f"manifest.json: {exc}") from None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
            raise BundleError("manifest.json is not an object with a files object")
        self.manifest: dict[str, Any] = manifest
        if self.manifest.get("format") != BUNDLE_FORMAT:
            raise BundleError(f"manifest.json: format is not {BUNDLE_FORMAT}")

    def check_signature(self, key: checkpoints.VerifierKey) -> None:
        """``manifest.sig`` signs ``manifest.json`` (and so every file it lists, and its
        ``personal`` flag) with ``key``."""
        sig = self.files.get("manifest.sig")
        if sig is None:
            raise VerificationError("manifest.sig is missing: nothing signs this bundle's manifest")
        try:
            signed = checkpoints.open_manifest(sig.decode("utf-8"), key)
        except (UnicodeDecodeError, spec.LogFormatError) as exc:
            raise VerificationError(f"manifest.sig: {exc}") from None
        if signed != hashlib.sha256(self.files["manifest.json"]).hexdigest():
            raise VerificationError(
                "manifest.json is not the manifest the log's key signed (manifest.sig): "
                "a file was added, removed or changed after the export"
            )

    def check_files(self) -> None:
        listed: dict[str, str] = self.manifest.get("files", {})
        for name, want in sorted(listed.items()):
            data = self.files.get(name)
            if data is None:
                raise VerificationError(f"{name} is listed in the manifest but missing")
            if hashlib.sha256(data).hexdigest() != want:
                raise VerificationError(f"{name} does not match its SHA-256 in the manifest")
        for name in ("entries.jsonl", "checkpoints.jsonl"):
            if name not in listed:
                raise VerificationError(f"the manifest does not list {name}")
        unlisted = sorted(set(self.files) - set(listed) - UNLISTED)
        if unlisted:
            raise VerificationError(
                f"{', '.join(unlisted)}: in the bundle but not in its manifest (added later?)"
            )

    def lines(self, name: str) -> list[bytes]:
        data = self.files.get(name, b"")
        if data and not data.endswith(b"\n"):
            raise VerificationError(f"{name} does not end with a newline: it was cut short")
        return data.split(b"\n")[:-1] if data else []

    def json_lines(self, name: str) -> list[Any]:
        out = []
        for i, line in enumerate(self.lines(name)):
            try:
                out.append(json.loads(line))
            except (ValueError, RecursionError):
                raise VerificationError(f"{name} line {i + 1} is not JSON") from None
        return out

    def canonical_lines(self, name: str) -> list[Any]:
        """The lines of ``name``, each canonical JSON (section 3 of VERIFY.md)."""
        out = []
        for i, line in enumerate(self.lines(name)):
            try:
                out.append(canonical.loads(line))
            except canonical.CanonicalError as exc:
                raise VerificationError(f"{name} line {i + 1}: {exc}") from None
        return out
