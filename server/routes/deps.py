"""FastAPI dependencies: settings, the services, who is calling and what they may do,
and the error answers.

Every route of the API names the right it needs with :func:`need` (a personal
API token or a signed-in browser; :mod:`server.people.auth`), or has its own
proof (a Twilio signature, a unit's token, a signed link): ``tests/server/
test_rights.py`` holds every route to one or the other.

Every route documents each status it can answer (``answers(...)``), with the
body it then carries: ``{"detail": "what is wrong and what to do"}``, or for
422 also FastAPI's list of what in the request does not follow the schema.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from datetime import timedelta
from ipaddress import ip_address, ip_network
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, BaseModel

from panicbutton.wire import INT_MAX
from server.people import auth
from server.people.auth import Principal
from server.people.roles import RIGHTS, Right
from server.services import Services
from server.settings import Settings


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _no_nul(text: str) -> str:
    if "\x00" in text:
        raise ValueError("holds the NUL character (U+0000), which no text may: remove it")
    return text


#: Text a database keeps as sent: PostgreSQL refuses the NUL character in text (a 500,
#: not an answer), so it is refused here with the field's name (422).
NoNulStr = Annotated[str, AfterValidator(_no_nul)]


class Problem(BaseModel):
    """An error answer: what is wrong and what to do, in words."""

    detail: str


class Invalid(BaseModel):
    """A 422: words (a value the site file does not know, a payload the contract
    refuses), or FastAPI's list of the fields that do not follow the schema."""

    detail: str | list[dict[str, Any]]


#: What each error status means, wherever a route can answer it.
MEANING: dict[int, str] = {
    400: "the request cannot be read (a malformed body or form), or a header or "
    "parameter is wrong in a way the message names",
    401: "not signed in: the personal API token or session is missing, wrong, expired or revoked",
    403: "not allowed: your roles do not carry the right this needs, the form's CSRF "
    "token is missing or wrong, a webhook without a valid Twilio signature, or a "
    "unit alerting for another unit",
    404: "no such incident (or report format)",
    410: "the link has expired, was used, or is not ours",
    413: "the request body is over 64 KiB",
    422: "the request does not follow this schema, or names what the site file does not know",
    503: "not possible right now (the message says why); try again shortly",
}


def answers(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route that can answer these error statuses."""
    return {
        code: {"model": Invalid if code == 422 else Problem, "description": MEANING[code]}
        for code in codes
    }


def text_body(*media_types: str, description: str = "") -> dict[str, Any]:
    """A 200 answer that is not JSON (a note, a zip, a page), in these media types."""
    binary = {"application/zip", "application/pdf"}
    return {
        "description": description or "the answer, as " + " or ".join(media_types),
        "content": {
            media: {
                "schema": {"type": "string", **({"format": "binary"} if media in binary else {})}
            }
            for media in media_types
        },
    }


SettingsDep = Annotated[Settings, Depends(get_settings)]
ServicesDep = Annotated[Services, Depends(get_services)]
_bearer = HTTPBearer(auto_error=False)
#: An incident number in a path: the database keeps them in 32-bit integers.
IncidentId = Annotated[int, Path(ge=1, le=INT_MAX, description="the incident's number")]


#: Methods that change nothing: a session needs no CSRF token for them.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"


def session_cookie(settings: Settings) -> str:
    """The session cookie's name: ``__Host-`` wherever cookies are Secure."""
    return auth.SESSION_COOKIE if settings.cookies_secure else auth.DEMO_SESSION_COOKIE


def client_address(request: Request, settings: Settings) -> str:
    """The caller's address: the peer, or, when the peer is one of
    ``PANICBUTTON_TRUSTED_PROXIES``, the nearest ``X-Forwarded-For`` hop that is not a
    trusted proxy (read right to left: each proxy appends the address it was called
    from, so the hops left of the first untrusted one are the caller's to forge)."""
    peer = request.client.host if request.client else ""
    forwarded = request.headers.get("x-forwarded-for", "")
    if not forwarded or not settings.trusted_proxies:
        return peer
    try:
        proxies = [ip_network(net, strict=False) for net in settings.trusted_proxies]
    except ValueError:
        return peer

    def trusted(address: str) -> bool:
        try:
            ip = ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in proxies)

    if not trusted(peer):
        return peer
    hops = [h.strip() for h in forwarded.split(",") if h.strip()]
    for hop in reversed(hops):
        if not trusted(hop):
            return hop
    # Every hop is a proxy of ours: the first of them is as near the caller as we know.
    return hops[0] if hops else peer


def authenticate(
    request: Request,
    services: Services,
    settings: Settings,
    credentials: HTTPAuthorizationCredentials | None,
) -> Principal | None:
    """The caller, by personal API token (``Authorization: Bearer``) or session cookie."""
    now = services.clock.now()
    with services.sessions.begin() as session:
        if credentials is not None:
            return auth.by_token(session, credentials.credentials, now)
        cookie = request.cookies.get(session_cookie(settings), "")
        if not cookie:
            return None
        return auth.by_session(
            session,
            cookie,
            agent=request.headers.get("user-agent", ""),
            now=now,
            limits=auth.SessionLimits(
                idle=timedelta(minutes=settings.session_idle_minutes),
                absolute=timedelta(hours=settings.session_hours),
                kiosk=timedelta(days=settings.kiosk_session_days),
            ),
        )


def _unauthenticated(settings: Settings, credentials: HTTPAuthorizationCredentials | None) -> str:
    retired = settings.api_token.get_secret_value().encode()
    if (
        credentials is not None
        and retired
        and hmac.compare_digest(credentials.credentials.encode(), retired)
    ):
        return (
            "the shared PANICBUTTON_API_TOKEN is retired: sign in, or create a "
            "personal API token (`panicbutton people token` or POST /api/v1/me/tokens) "
            "and send it as Authorization: Bearer pbt_..."
        )
    return (
        "not signed in: send a personal API token (Authorization: Bearer pbt_...) or "
        "sign in at /sign-in"
    )


def need(right: Right) -> Callable[..., Principal]:
    """A dependency: the caller, who must hold ``right`` (401 if nobody is signed in,
    403 if their roles do not carry it or a session's CSRF token is missing)."""

    def dependency(
        request: Request,
        services: ServicesDep,
        settings: SettingsDep,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        principal = authenticate(request, services, settings, credentials)
        if principal is None:
            raise HTTPException(
                status_code=401,
                detail=_unauthenticated(settings, credentials),
                headers={"WWW-Authenticate": "Bearer"},
            )
        if principal.via == "session" and request.method not in SAFE_METHODS:
            given = request.headers.get(CSRF_HEADER, "")
            if not principal.csrf or not hmac.compare_digest(given, principal.csrf):
                raise HTTPException(
                    403,
                    f"the {CSRF_HEADER} header is missing or wrong: reload the page and try again",
                )
        if not principal.can(right):
            holders = ", ".join(sorted(r.value for r, rights in RIGHTS.items() if right in rights))
            raise HTTPException(
                403,
                f"not allowed: this needs the right {right.value!r}, which the roles "
                f"{holders} carry (an API token carries only the scopes it was made with)",
            )
        return principal

    dependency.right = right  # type: ignore[attr-defined]  # read by tests/server/test_rights.py
    return dependency


#: A signed-in caller, any role (their own account).
Me = Annotated[Principal, Depends(need(Right.SELF))]


def strict_query(request: Request) -> None:
    """Refuse a query parameter the route does not take (400, naming it and those it
    takes): a misspelt ``?stat=open`` must not be answered as if it were not there."""
    dependant = getattr(request.scope.get("route"), "dependant", None)
    if dependant is None or not request.query_params:
        return
    known: set[str] = set()
    stack = [dependant]
    while stack:
        current = stack.pop()
        known.update(field.alias for field in current.query_params)
        stack.extend(current.dependencies)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        takes = ", ".join(sorted(known)) or "none"
        raise HTTPException(
            400,
            f"unknown query parameter(s) {', '.join(unknown)}: this route takes {takes}",
        )


#: The dependencies of every router of the API: unknown query parameters are refused.
STRICT = [Depends(strict_query)]
