"""FastAPI dependencies: settings, the services, bearer-token auth, and the error answers.

Every route documents each status it can answer (``answers(...)``), with the
body it then carries: ``{"detail": "what is wrong and what to do"}``, or for
422 also FastAPI's list of what in the request does not follow the schema.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from panicbutton.wire import INT_MAX
from server.services import Services
from server.settings import Settings


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


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
    401: "the token is missing or wrong",
    403: "not allowed: a webhook without a valid Twilio signature, or a unit "
    "alerting for another unit",
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


def require_token(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Refuse any API call without the configured bearer token (constant-time compare)."""
    expected = settings.api_token.get_secret_value().encode()
    given = credentials.credentials.encode() if credentials else b""
    if not expected or not hmac.compare_digest(given, expected):
        raise HTTPException(
            status_code=401,
            detail="missing or wrong API token",
            headers={"WWW-Authenticate": "Bearer"},
        )
