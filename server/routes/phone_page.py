"""The phone button's web app: the page a worker adds to their home screen, its
manifest, its service worker and its files (``server/mobile/web/``).

The app is a shell, the same for everyone and holding no personal data: what it
knows of its worker (the phone's id, key and fallback) stays in the phone's own
IndexedDB, and it reads the rest from the signed API (:mod:`server.routes.mobile`).
An enrolment link (``/phone/enrol#<token>``) opens the same app: its token is in
the fragment, which a browser never sends. The service worker keeps the shell so
the app opens with no data connection at all (then it offers the SMS and the call);
it never keeps an answer of the API.

Every answer carries a strict Content-Security-Policy (scripts, styles and requests
only to this server; no inline script or style), no referrer and nosniff; files
carry an ETag, so a phone revalidates them cheaply.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from importlib import resources

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

from server.routes.deps import answers

#: What every answer of the app carries.
HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; manifest-src 'self'; worker-src 'self'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(self)",
    # The shell is public and the same for everyone; the browser revalidates it (ETag).
    "Cache-Control": "no-cache",
}
#: The app's path: its pages, its files and its service worker's scope. NOTE: the
#: scope is "/phone", not "/phone/": a scope must be a prefix of the start URL
#: ("/phone"), or browsers widen the installed app to the whole site.
SCOPE = "/phone"
_MEDIA = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".webmanifest": "application/manifest+json",
}

router = APIRouter(prefix=SCOPE, tags=["phone app"], include_in_schema=False)


class File:
    """One file of the app as served: its body, media type and ETag."""

    def __init__(self, body: bytes, name: str) -> None:
        self.body = body
        self.media = _MEDIA.get(name[name.rfind(".") :], "application/octet-stream")
        self.etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'

    def answer(self, request: Request, **extra: str) -> Response:
        headers = {**HEADERS, "ETag": self.etag, **extra}
        if request.headers.get("if-none-match") == self.etag:
            return Response(status_code=304, headers=headers)
        return Response(self.body, media_type=self.media, headers=headers)


def _read(folder: str) -> dict[str, bytes]:
    where = resources.files("server.mobile").joinpath("web", folder)
    return {entry.name: entry.read_bytes() for entry in where.iterdir() if entry.is_file()}


STATIC = {name: File(body, name) for name, body in _read("static").items()}
_TEMPLATES = _read("templates")
APP = File(_TEMPLATES["app.html"], "app.html")
MANIFEST = File(_TEMPLATES["manifest.webmanifest"], "manifest.webmanifest")
#: What the service worker keeps: the app (at both its addresses) and every file.
SHELL = [SCOPE, f"{SCOPE}/manifest.webmanifest"] + [f"{SCOPE}/static/{n}" for n in sorted(STATIC)]


def _worker() -> File:
    """The service worker, told the shell's files and their version (a hash of them all:
    any change installs a new worker, which fetches the new shell)."""
    digest = hashlib.sha256(APP.body + MANIFEST.body)
    for name in sorted(STATIC):
        digest.update(STATIC[name].body)
    text = (
        _TEMPLATES["sw.js"]
        .decode()
        .replace("__VERSION__", digest.hexdigest()[:16])
        .replace("__SHELL__", json.dumps(SHELL))
    )
    return File(text.encode(), "sw.js")


WORKER = _worker()


@router.get("", summary="The phone button (the app a worker adds to the home screen)")
def app(request: Request) -> Response:
    return APP.answer(request)


@router.get(
    "/enrol",
    summary="The phone button, opened from a manager's one-time link "
    "(the token is in the fragment: it never reaches the server)",
)
def enrol(request: Request) -> Response:
    return APP.answer(request)


@router.get("/manifest.webmanifest", summary="The app's manifest (name, icons, start page)")
def manifest(request: Request) -> Response:
    return MANIFEST.answer(request)


@router.get("/sw.js", summary="The service worker: keeps the app for when there is no data")
def worker(request: Request) -> Response:
    # Its scope is "/phone" (see SCOPE), above its own folder: the header allows it.
    return WORKER.answer(request, **{"Service-Worker-Allowed": SCOPE})


@router.get(
    "/static/{name}",
    summary="The app's script, style and icons (no personal data)",
    responses=answers(404),
)
def static_file(name: str, request: Request) -> Response:
    found = STATIC.get(name)
    if found is None:
        raise HTTPException(404, f"no phone app file {name!r}")
    return found.answer(request)
