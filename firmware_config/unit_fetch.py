#!/usr/bin/env python3
"""Talk to the panicbutton server before the agent is installed (standard library only).

    unit_fetch.py enrol --server URL --code CODE [--ca FILE] --out BUNDLE
        trade a one-time enrolment code for the unit's bundle (config and secrets)
    unit_fetch.py wheelhouse --bundle BUNDLE --out DIR
        fetch what the unit installs (wheels pinned by hash, the installer), with the
        unit's token from the bundle
    unit_fetch.py report --bundle BUNDLE --action install --version V (--passed|--failed)
        [--lines FILE]
        tell the server how the install went (shown on the console's units page)

Used by ``firstboot.sh`` and ``provision.sh``. Exit 0 on success; on failure, one line
on standard error saying what is wrong and what to do, and exit 1 (3: the server
refused the enrolment code, so trying it again cannot help).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import ssl
import sys
import tarfile
import tempfile
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any


class FetchError(Exception):
    """What went wrong, said for the installer."""


class CodeRefusedError(FetchError):
    """The server refused the enrolment code (unknown, used or expired): exit status 3,
    so that the first-boot script stops trying it."""


#: The only hosts plain http may go to: the unit itself.
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def _context(ca: Path | None) -> ssl.SSLContext:
    """The system's trusted CAs, plus the site's own CA when there is one."""
    context = ssl.create_default_context()
    if ca is not None and ca.is_file():
        context.load_verify_locations(cafile=str(ca))
    return context


def _call(
    url: str, *, ca: Path | None, token: str | None = None, body: dict[str, Any] | None = None
) -> bytes:
    headers = {"User-Agent": "panicbutton-unit-fetch"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in LOOPBACK):
        raise FetchError(f"{url}: the server must be reached over https://")
    request = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=60, context=_context(ca)) as resp:  # noqa: S310
            return bytes(resp.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        with contextlib.suppress(ValueError, AttributeError):
            detail = str(json.loads(detail).get("detail", detail))
        error = (
            CodeRefusedError if exc.code == 404 and url.endswith("/api/v1/enrol") else FetchError
        )
        raise error(f"{url}: the server answered {exc.code}: {detail[:300]}") from None
    except ssl.SSLCertVerificationError as exc:
        raise FetchError(
            f"{url}: the server's certificate is not trusted ({exc.verify_message}): "
            "give the site's CA certificate (--ca)"
        ) from None
    except OSError as exc:
        reason = getattr(exc, "reason", exc)
        raise FetchError(
            f"{url}: cannot reach the server ({reason}): check the network and the address"
        ) from None


class Bundle:
    """A unit's bundle folder: device.toml and its secrets beside it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        try:
            self.config = tomllib.loads((folder / "device.toml").read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise FetchError(f"{folder}/device.toml cannot be read: {exc}") from None
        server = self.config.get("server", {})
        self.url = str(server.get("url", "")).rstrip("/")
        self.token = str(server.get("token", "")) or self._file("device-token")
        self.device_id = str(self.config.get("device", {}).get("id", ""))
        if not self.url or not self.token:
            raise FetchError(
                f"{folder}/device.toml has no [server] url and token: this unit cannot "
                "fetch from the server; copy a wheelhouse into the bundle instead "
                "(panicbutton provision --wheelhouse)"
            )

    def _file(self, name: str) -> str:
        path = self.folder / name
        return path.read_text().strip() if path.is_file() else ""

    @property
    def ca(self) -> Path | None:
        path = self.folder / "ca.crt"
        return path if path.is_file() else None


def enrol(server: str, code: str, ca: Path | None, out: Path) -> str:
    answer = json.loads(
        _call(f"{server.rstrip('/')}/api/v1/enrol", ca=ca, body={"code": code.strip()})
    )
    # Written whole into a new folder, then renamed: a power cut leaves no half bundle.
    out.parent.mkdir(parents=True, exist_ok=True)
    new = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    for name, text in answer["files"].items():
        if "/" in name or name.startswith(".") or name in ("", ".."):
            raise FetchError(f"the server sent a file named {name!r}: refusing it")
        fd = os.open(new / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    if ca is not None and not (new / "ca.crt").exists():
        (new / "ca.crt").write_bytes(ca.read_bytes())
    if out.exists():
        shutil.rmtree(out)
    new.rename(out)
    return str(answer["device_id"])


def wheelhouse(bundle: Bundle, out: Path) -> str:
    body = _call(
        f"{bundle.url}/api/v1/devices/{bundle.device_id}/wheelhouse",
        ca=bundle.ca,
        token=bundle.token,
    )
    untar(body, out)
    return (out / "VERSION").read_text().strip()


def untar(body: bytes, out: Path) -> None:
    """The wheelhouse's files into ``out``: plain files with plain names only (bookworm's
    Python 3.11.2 predates tarfile's extraction filters, so this is checked here)."""
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        for member in tar.getmembers():
            if not member.isfile() or "/" in member.name or member.name.startswith("."):
                raise FetchError(f"the wheelhouse holds {member.name!r}: refusing it")
            source = tar.extractfile(member)
            assert source is not None  # a regular file, checked above
            (out / member.name).write_bytes(source.read())
            (out / member.name).chmod(0o755 if member.mode & 0o100 else 0o644)


def report(bundle: Bundle, action: str, version: str, passed: bool, lines: list[str]) -> None:
    _call(
        f"{bundle.url}/api/v1/devices/{bundle.device_id}/install",
        ca=bundle.ca,
        token=bundle.token,
        body={
            "action": action,
            "version": version,
            "passed": passed,
            "lines": [line[:300] for line in lines if line.strip()][-40:],
        },
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="unit_fetch.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("enrol")
    e.add_argument("--server", required=True)
    e.add_argument("--code", required=True)
    e.add_argument("--ca", type=Path)
    e.add_argument("--out", type=Path, required=True)
    w = sub.add_parser("wheelhouse")
    w.add_argument("--bundle", type=Path, required=True)
    w.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("report")
    r.add_argument("--bundle", type=Path, required=True)
    r.add_argument("--action", choices=["install", "upgrade", "rollback"], default="install")
    r.add_argument("--version", required=True)
    r.add_argument("--passed", action="store_true")
    r.add_argument("--failed", action="store_true")
    r.add_argument("--lines", type=Path)
    args = p.parse_args(argv)
    try:
        if args.command == "enrol":
            device_id = enrol(args.server, args.code, args.ca, args.out)
            print(f"enrolled as {device_id}: bundle in {args.out}")
        elif args.command == "wheelhouse":
            version = wheelhouse(Bundle(args.bundle), args.out)
            print(f"wheelhouse {version} in {args.out}")
        else:
            lines = args.lines.read_text().splitlines() if args.lines else []
            report(Bundle(args.bundle), args.action, args.version, args.passed, lines)
            print("reported to the server")
    except FetchError as exc:
        print(f"unit_fetch: {exc}", file=sys.stderr)
        return 3 if isinstance(exc, CodeRefusedError) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
