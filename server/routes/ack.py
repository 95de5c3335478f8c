"""The acknowledgement link's page: GET shows a button, POST acknowledges (once).

A list link (from a bundled SMS) shows every open alarm of the person it was sent
to, each with its own button; a button acknowledges that one alarm (once).
"""

from __future__ import annotations

import html
from collections.abc import Mapping

from fastapi import APIRouter, Form, Response
from fastapi.responses import PlainTextResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.models import Page, State
from server.paging.links import LIST, read_token, token_key
from server.routes.deps import MEANING, ServicesDep, SettingsDep, answers, text_body
from server.services import Services

#: Both answers are HTML pages; a token that is not (or no longer) valid gets 410.
PAGES: dict[int | str, dict[str, object]] = {
    200: text_body("text/html", description="the page"),
    410: text_body("text/html", description=MEANING[410]),
}
router = APIRouter(tags=["acknowledgement links"], responses=PAGES)

HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'",
}


class PrivatePages:
    """ASGI middleware: every answer under ``prefix`` (``/ack/``) carries ``headers``
    (:data:`HEADERS`), errors (404, 405, 410, 422 and 500) included, so no cache keeps
    it and no Referer carries it on."""

    def __init__(
        self,
        app: ASGIApp,
        prefix: str = "/ack/",
        headers: Mapping[str, str] = HEADERS,
        exempt: str | None = None,
    ) -> None:
        self.app = app
        self.prefix = prefix
        self.headers = headers
        #: A path prefix under ``prefix`` left alone (public files with their own caching).
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"] if scope["type"] == "http" else ""
        if (
            scope["type"] != "http"
            or not path.startswith(self.prefix)
            or (self.exempt is not None and path.startswith(self.exempt))
        ):
            await self.app(scope, receive, send)
            return
        started = False

        async def send_private(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message.setdefault("headers", [])
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    headers[name] = value
            await send(message)

        try:
            await self.app(scope, receive, send_private)
        except Exception:
            # Answer the 500 here, with the headers; the error still reaches the
            # server's error log (its own 500 is skipped once one was sent).
            if not started:
                error = PlainTextResponse("Internal Server Error", 500, headers=dict(self.headers))
                await error(scope, receive, send)
            raise


def _page(title: str, body: str, status: int = 200) -> Response:
    doc = (
        '<!doctype html><html><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>body{{font:1.2em sans-serif;"
        "margin:2em}}button{{font-size:1.4em;padding:.6em 1.2em}}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return Response(doc, status_code=status, media_type="text/html", headers=HEADERS)


def _gone() -> Response:
    return _page(
        "Link not valid",
        "<p>This link has expired, was used, or is not ours. "
        "Reply to the SMS with its code instead.</p>",
        status=410,
    )


def _show_list(services: Services, page_id: int) -> Response:
    pages = services.responder.open_pages(page_id)
    if pages is None:
        return _gone()
    items = "".join(
        f"<li>{html.escape(services.site.room(incident.room_id).label)}"
        '<form method="post"><input type="hidden" name="confirm" value="1">'
        f'<input type="hidden" name="page" value="{p.id}">'
        "<button type=submit>I am going</button></form></li>"
        for p, incident in pages
    )
    return _page("Open alarms", f"<ul>{items}</ul>" if items else "<p>No open alarm.</p>")


@router.get("/ack/{token}", response_class=Response)
def show(token: str, services: ServicesDep, settings: SettingsDep) -> Response:
    """Show the incident and an "I am going" button; opening the link changes nothing."""
    secret, now = settings.link_secret.get_secret_value(), services.clock.now()
    if (listed := read_token(secret, token, now, kind=LIST)) is not None:
        return _show_list(services, listed)
    page_id = read_token(secret, token, now)
    found = services.responder.page(page_id) if page_id is not None else None
    if found is None:
        return _gone()
    _, incident = found
    room = services.site.room(incident.room_id).label
    if incident.state != State.OPEN:
        return _page(room, f"<p>Already {html.escape(incident.state)}.</p>")
    return _page(
        room,
        # No action: the form posts back to the URL it was opened on, so it works
        # whatever path the TLS proxy serves the app under.
        '<form method="post">'
        '<input type="hidden" name="confirm" value="1">'
        "<button type=submit>I am going</button></form>",
    )


@router.post("/ack/{token}", response_class=Response, responses=answers(400, 422))
async def acknowledge(
    token: str,
    services: ServicesDep,
    settings: SettingsDep,
    confirm: str = Form(""),
    page: str = Form(""),
) -> Response:
    """Acknowledge as the person the page was for; the token is used up (a list token:
    for the alarm chosen, which must be one of that person's)."""
    secret, now = settings.link_secret.get_secret_value(), services.clock.now()
    key = token_key(token)
    listed = read_token(secret, token, now, kind=LIST)
    page_id = read_token(secret, token, now) if listed is None else _chosen(page)
    if page_id is None or confirm != "1":
        return _gone()
    if listed is not None:
        owner = await run_in_threadpool(services.responder.page, listed)
        chosen = await run_in_threadpool(services.responder.page, page_id)
        if (
            owner is None
            or chosen is None
            or chosen[0].staff_id != owner[0].staff_id
            or chosen[0].id > owner[0].id  # an alarm opened after the link was sent
        ):
            return _gone()
        key = f"{key[:50]}:{page_id}"
    if await run_in_threadpool(services.receipts.seen, key):
        return _gone()
    # A link from before the alarm was resolved and pressed again is for the old round.
    page_row = await run_in_threadpool(services.responder.current_page, page_id)
    if page_row is None:
        return _gone()
    return await _acknowledged(services, page_row)


def _chosen(value: str) -> int | None:
    return int(value) if value.isdigit() and len(value) < 19 else None


async def _acknowledged(services: Services, page: Page) -> Response:
    incident = await run_in_threadpool(
        lambda: services.responder.acknowledge(
            incident_id=page.incident_id, staff_id=page.staff_id, via="link"
        )
    )
    if incident is None:
        return _gone()
    room = services.site.room(incident.room_id).label
    who = incident.acknowledged_by
    if who != page.staff_id and who is not None:
        name = html.escape(services.site.name_of(who))
        return _page(room, f"<p>{name} is already going.</p>")
    return _page(room, "<p>Thank you. You are going; the others have been told.</p>")
