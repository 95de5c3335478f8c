"""The acknowledgement link's page: GET shows a button, POST acknowledges (once)."""

from __future__ import annotations

import html

from fastapi import APIRouter, Form, Response
from starlette.concurrency import run_in_threadpool

from server.deps import MEANING, RuntimeDep, SettingsDep, answers, text_body
from server.links import read_token, token_key
from server.models import Incident, Page

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


@router.get("/ack/{token}", response_class=Response)
def show(token: str, runtime: RuntimeDep, settings: SettingsDep) -> Response:
    """Show the incident and an "I am going" button; opening the link changes nothing."""
    page_id = read_token(settings.link_secret.get_secret_value(), token, runtime.clock())
    if page_id is None:
        return _gone()
    with runtime.sessions() as s:
        page = s.get(Page, page_id)
        incident = s.get(Incident, page.incident_id) if page else None
    if page is None or incident is None:
        return _gone()
    room = runtime.site.room(incident.room_id).label
    if incident.state != "open":
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
    token: str, runtime: RuntimeDep, settings: SettingsDep, confirm: str = Form("")
) -> Response:
    """Acknowledge as the person the page was for; the token is used up."""
    page_id = read_token(settings.link_secret.get_secret_value(), token, runtime.clock())
    if page_id is None or confirm != "1":
        return _gone()
    if await run_in_threadpool(runtime.seen_webhook, token_key(token)):
        return _gone()
    with runtime.sessions() as s:
        page = s.get(Page, page_id)
    if page is None:
        return _gone()
    incident = await run_in_threadpool(
        lambda: runtime.acknowledge(
            incident_id=page.incident_id, staff_id=page.staff_id, via="link"
        )
    )
    if incident is None:
        return _gone()
    room = runtime.site.room(incident.room_id).label
    who = incident.acknowledged_by
    if who != page.staff_id and who is not None:
        name = html.escape(runtime.site.member(who).name)
        return _page(room, f"<p>{name} is already going.</p>")
    return _page(room, "<p>Thank you. You are going; the others have been told.</p>")
