"""The console's own routes: its entry, its static files, the live board and its
event stream, and the reason asked before incident records open.

Changes are not made here: the board's "I'm going" posts to the API
(``/api/v1/incidents/{id}/acknowledge``) with the session's CSRF token.
"""

from __future__ import annotations

import hashlib
import hmac
import mimetypes
from datetime import datetime
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import update
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from server.console import board, i18n, live, pages
from server.console.access import BoardPage, SelfPage, SignedInPage
from server.console.board import BoardView
from server.console.pages import N_, Reader
from server.people.roles import Right
from server.people.tables import WebSession
from server.routes.deps import MEANING, ServicesDep, SettingsDep, answers, authenticate, text_body
from server.services import Services
from server.settings import Settings

PAGE: dict[int | str, dict[str, Any]] = {
    200: text_body("text/html", description="the page"),
    303: {"description": "not signed in: on to /sign-in"},
    **answers(403),
}
#: Console pages are for browsers, not a contract for programs: they stay out of the
#: OpenAPI document (``docs/use/console.md`` lists them), and change nothing themselves.
router = APIRouter(prefix="/console", tags=["console"], responses=PAGE, include_in_schema=False)


def _static_files() -> dict[str, tuple[bytes, str, str]]:
    """Every file of ``static/``: name -> (body, media type, ETag)."""
    out = {}
    for entry in resources.files("server.console").joinpath("static").iterdir():
        body = entry.read_bytes()
        media = mimetypes.guess_type(entry.name)[0] or "application/octet-stream"
        if media.startswith("text/") or media.endswith("javascript"):
            media += "; charset=utf-8"
        out[entry.name] = (body, media, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
    return out


STATIC = _static_files()


@router.get(
    "/static/{name}",
    summary="The console's scripts, styles, icons and sounds (no personal data)",
    responses={
        200: text_body("text/css", "text/javascript", "image/svg+xml"),
        **answers(404),
    },
)
def static_file(name: str, request: Request) -> Response:
    found = STATIC.get(name)
    if found is None:
        raise HTTPException(404, f"no console file {name!r}")
    body, media, etag = found
    headers = {
        "ETag": etag,
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
    }
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media, headers=headers)


@router.get("", summary="The console: on to the first part the reader may open")
def home(me: SignedInPage) -> Response:
    if not me.can(Right.SELF):  # a reception screen has its one page
        return RedirectResponse("/console/kiosk", status_code=303)
    sections = [s for s in pages.SECTIONS if me.can(s.right)]
    return RedirectResponse(sections[0].path if sections else "/account", status_code=303)


# -- the live board ----------------------------------------------------------------


def get_hub(request: Request, services: ServicesDep) -> live.Hub:
    """This server's board watcher, made on first use."""
    hub: live.Hub | None = getattr(request.app.state, "console_hub", None)
    if hub is None:
        hub = request.app.state.console_hub = live.Hub(services)
    return hub


HubDep = Annotated[live.Hub, Depends(get_hub)]


def board_fragment(services: Services, me: Reader, view: BoardView) -> str:
    """The board's live part, as ``me`` reads it."""
    site = services.site

    def when(moment: Any, style: str = "time") -> str:
        return i18n.when(moment, language=me.language, timezone=site.timezone, style=style)

    def ago(moment: datetime) -> str:
        return i18n.ago(view.at - moment, language=me.language)

    return pages.render_text(
        "_board.html",
        language=me.language,
        board=view,
        me=me,
        csrf=me.principal.csrf,
        when=when,
        ago=ago,
    )


@router.get("/board", summary="The live board: every room, open alarms, who is going")
async def board_page(request: Request, services: ServicesDep, me: BoardPage) -> Response:
    def read() -> BoardView:
        with services.sessions() as s:
            return board.read(s, services.site, services.clock.now())

    view = await run_in_threadpool(read)
    return pages.page(
        request,
        services,
        me,
        "board.html",
        title=N_("Board"),
        fragment=board_fragment(services, me, view),
        events="/console/board/events",
    )


@router.get(
    "/board/events",
    summary="The live board as Server-Sent Events: `board` (its HTML) at each change, "
    "`signed-out` when the session ends",
    responses={200: text_body("text/event-stream")},
)
async def board_events(
    request: Request, services: ServicesDep, settings: SettingsDep, hub: HubDep, me: BoardPage
) -> Response:
    return board_stream(request, services, settings, hub, me)


def board_stream(
    request: Request, services: Services, settings: Settings, hub: live.Hub, me: Reader
) -> EventSourceResponse:
    """The live board's events for ``me``, until their session ends (also the reception
    screen's: :mod:`server.console.kiosk`)."""

    page = request.url.path.removesuffix("/events")

    def gone() -> str | None:
        """Where the page must go now: sign in again, or reload with the reader's new
        rights (a role taken away must not leave a board streaming); None: nowhere."""
        principal = authenticate(request, services, settings, None)
        if principal is None or principal.handle != me.principal.handle:
            return "/sign-in"
        return page if principal.rights != me.principal.rights else None

    if not hub.admit(me.principal.handle):
        raise HTTPException(
            429,
            f"more than {live.STREAMS_PER_SESSION} live boards are open in this browser "
            "session: close one and reload",
        )
    events = live.stream(
        hub,
        lambda view: board_fragment(services, me, view),
        gone,
        released=lambda: hub.release(me.principal.handle),
    )
    return EventSourceResponse(
        events,
        ping=15,
        headers={**pages.HEADERS, "X-Accel-Buffering": "no"},
        send_timeout=10,
    )


# -- why records are opened ----------------------------------------------------------


def justification(services: Services, me: Reader) -> str | None:
    """The reason ``me`` gave in this browser session for opening records, if any."""
    with services.sessions() as s:
        row = s.get(WebSession, me.principal.handle)
        return row.justification if row is not None else None


@router.post(
    "/reason",
    summary="Say once per session why you open incident records (kept with each view)",
    status_code=303,
    response_class=RedirectResponse,
    responses={303: {"description": "kept: on to `next`"}, **answers(400, 403, 422)},
)
async def give_reason(
    services: ServicesDep,
    me: SelfPage,
    csrf: Annotated[str, Form(max_length=100)],
    reason: Annotated[str, Form(min_length=8, max_length=1000, pattern=r"^\S[\s\S]*\S$")],
    next: Annotated[
        str, Form(max_length=300, pattern=r"^/console/[A-Za-z0-9/_?=&.%+-]*$")
    ],  # the form's field
) -> Response:
    if not me.principal.csrf or not hmac.compare_digest(csrf, me.principal.csrf):
        raise HTTPException(403, MEANING[403])

    def keep() -> None:
        with services.sessions.begin() as s:
            s.execute(
                update(WebSession)
                .where(WebSession.id_sha256 == me.principal.handle)
                .values(justification=reason.strip())
            )

    await run_in_threadpool(keep)
    return RedirectResponse(next, status_code=303, headers=dict(pages.HEADERS))


def reason_page(request: Request, services: Services, me: Reader) -> HTMLResponse:
    """The page that asks why, then goes on to the page asked for."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return pages.page(
        request,
        services,
        me,
        "reason.html",
        title=N_("Why are you opening this record?"),
        next=target,
    )
