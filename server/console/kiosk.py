"""The reception screen (role ``kiosk``): the live board full screen, and answering an
alarm there as a person who chooses their name and types their kiosk PIN.

The screen's own account opens nothing else. Its session has no idle limit of
minutes and its cookie is kept across a reboot (``PANICBUTTON_KIOSK_SESSION_DAYS``,
renewed at each page and stream); the page says when it is not live and
reconnects by itself (``static/board.js``). The answer form sits outside the live
part of the page, so a board update never wipes a PIN being typed.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from panicbutton.wire import INT_MAX
from server.console import board, pages
from server.console.access import KioskPage, viewer
from server.console.board import BoardView, RoomView
from server.console.pages import N_, Reader
from server.console.routes import PAGE, HubDep, board_fragment, board_stream
from server.people.kiosk import Pins
from server.people.roles import Right
from server.people.signin import ThrottledError, WrongCredentialsError
from server.routes.deps import ServicesDep, SettingsDep, session_cookie, text_body
from server.services import Services
from server.settings import Settings

router = APIRouter(prefix="/console", tags=["console"], responses=PAGE, include_in_schema=False)

#: What the screen says when an answer is refused (English source, translated there).
WRONG_PIN = N_("Wrong PIN for this name: nothing was acknowledged. Check your name and try again.")
THROTTLED = N_(
    "Too many wrong PINs: wait %(minutes)s minutes and try again, or answer from your phone."
)
GONE = N_("This alarm is already answered or over.")
STALE = N_("The page had expired: nothing was acknowledged. Try again.")


def _keep_signed_in(response: Response, request: Request, settings: Settings) -> Response:
    """Renew the screen's session cookie for ``kiosk_session_days``: a cookie with an
    age outlives a reboot of the browser or the PC (a session cookie would not)."""
    name = session_cookie(settings)
    value = request.cookies.get(name, "")
    if value:
        response.set_cookie(
            name,
            value,
            max_age=settings.kiosk_session_days * 24 * 3600,
            httponly=True,
            secure=settings.cookies_secure,
            samesite="strict",
            path="/",
        )
    return response


def _pins(services: Services) -> Pins:
    return Pins(sessions=services.sessions, clock=services.clock)


def _alarm(view: BoardView, incident_id: int | None) -> RoomView | None:
    """The room whose open alarm is ``incident_id``, if it is still unanswered."""
    for room in view.rooms:
        if incident_id is not None and room.incident_id == incident_id:
            return room if room.state in ("received", "test") else None
    return None


def _screen(
    request: Request,
    services: Services,
    settings: Settings,
    me: Reader,
    *,
    answer: int | None,
    chosen: str = "",
    problem: tuple[str, dict[str, Any]] | None = None,
    status: int = 200,
) -> Response:
    """The whole screen: the board, and the answer form for alarm ``answer``."""
    with services.sessions() as s:
        view = board.read(s, services.site, services.clock.now())
    room = _alarm(view, answer)
    if answer is not None and room is None and problem is None:
        problem = (GONE, {})
    response = pages.page(
        request,
        services,
        me,
        "kiosk.html",
        title=N_("Reception"),
        status=status,
        fragment=board_fragment(services, me, view),
        events="/console/kiosk/events",
        answering=room,
        responders=_pins(services).responders() if room is not None else [],
        chosen=chosen,
        problem=problem,
    )
    return _keep_signed_in(response, request, settings)


@router.get("/kiosk", summary="The reception screen: the live board, full screen")
async def kiosk_page(
    request: Request,
    services: ServicesDep,
    settings: SettingsDep,
    me: KioskPage,
    answer: Annotated[int | None, Query(ge=1, le=INT_MAX)] = None,
) -> Response:
    return await run_in_threadpool(lambda: _screen(request, services, settings, me, answer=answer))


@router.get(
    "/kiosk/events",
    summary="The reception screen's board as Server-Sent Events, like the board's",
    responses={200: text_body("text/event-stream")},
)
async def kiosk_events(
    request: Request, services: ServicesDep, settings: SettingsDep, hub: HubDep, me: KioskPage
) -> Response:
    response = board_stream(request, services, settings, hub, me)
    _keep_signed_in(response, request, settings)
    return response


@router.post(
    "/kiosk/acknowledge",
    summary="Answer an alarm at the reception screen, as the person chosen (with their PIN)",
    status_code=303,
    response_class=RedirectResponse,
)
async def kiosk_acknowledge(
    *,
    request: Request,
    services: ServicesDep,
    settings: SettingsDep,
    me: KioskPage,
    csrf: Annotated[str, Form(max_length=100)],
    incident: Annotated[int, Form(ge=1, le=INT_MAX)],
    person: Annotated[str, Form(min_length=1, max_length=63)],
    pin: Annotated[str, Form(min_length=1, max_length=20)],
) -> Response:
    def again(problem: tuple[str, dict[str, Any]], status: int) -> Response:
        return _screen(
            request,
            services,
            settings,
            me,
            answer=incident,
            chosen=person,
            problem=problem,
            status=status,
        )

    if not me.principal.csrf or not hmac.compare_digest(csrf, me.principal.csrf):
        return await run_in_threadpool(again, (STALE, {}), 403)
    try:
        await run_in_threadpool(
            lambda: _pins(services).prove(screen_id=me.person_id, person_id=person, pin=pin)
        )
    except ThrottledError as exc:
        minutes = exc.retry_after // 60 + 1
        answer = await run_in_threadpool(again, (THROTTLED, {"minutes": minutes}), 429)
        answer.headers["Retry-After"] = str(exc.retry_after)
        return answer
    except WrongCredentialsError:
        return await run_in_threadpool(again, (WRONG_PIN, {}), 403)
    found = await run_in_threadpool(
        lambda: services.responder.acknowledge(
            incident_id=incident, staff_id=person, via=f"kiosk:{me.person_id}"
        )
    )
    if found is None:
        return await run_in_threadpool(again, (GONE, {}), 404)
    return RedirectResponse("/console/kiosk", status_code=303, headers=dict(pages.HEADERS))


@router.get("/kiosk-pin", summary="Your PIN for the reception screen: set or remove it")
async def pin_page(
    request: Request,
    services: ServicesDep,
    me: Annotated[Reader, Depends(viewer(Right.RESPOND))],
) -> HTMLResponse:
    has_pin = await run_in_threadpool(_pins(services).has, me.person_id)
    return pages.page(
        request, services, me, "kiosk_pin.html", title=N_("Kiosk PIN"), has_pin=has_pin
    )
