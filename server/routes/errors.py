"""How the app answers errors no route answers itself: 400, 405 and FastAPI's 422."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from server.routes import records

#: The methods a 405 may name.
METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def install(app: FastAPI) -> None:
    """Answer 400, 405 and 422 as below on every route of ``app``."""
    app.add_exception_handler(400, _bad_request)
    app.add_exception_handler(405, _method_not_allowed)
    app.add_exception_handler(RequestValidationError, _invalid)


async def _bad_request(request: Request, exc: Exception) -> Response:
    """400 as FastAPI answers it, but saying why when a JSON body is nested too deeply."""
    if not isinstance(exc, StarletteHTTPException):
        raise exc
    if isinstance(exc.__cause__, RecursionError):
        exc = StarletteHTTPException(
            400, "the JSON body is nested too deeply to read; send the object this route documents"
        )
    return await http_exception_handler(request, exc)


async def _invalid(request: Request, exc: Exception) -> Response:
    """FastAPI's 422, except for a missing or wrong who/why header of a record's view: 400
    saying what to send (server/routes/records.py)."""
    if not isinstance(exc, RequestValidationError):
        raise exc
    errors = exc.errors()
    for error in errors:
        where = tuple(error.get("loc", ()))
        if len(where) == 2 and where[0] == "header" and where[1] in records.HEADER_HELP:
            return JSONResponse({"detail": records.HEADER_HELP[where[1]]}, status_code=400)
    # NOTE: never the input back: it may be a value JSON cannot carry (NaN, bytes that
    # are not UTF-8, a lone surrogate), which made the answer itself fail with a 500,
    # and it may be personal data (a note's text).
    detail = [
        {"type": e.get("type"), "loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg")}
        for e in errors
    ]
    return JSONResponse({"detail": detail}, status_code=422)


async def _method_not_allowed(request: Request, _: Exception) -> JSONResponse:
    """405 naming every method of the path (Starlette names only the first route's)."""
    allowed = [
        method
        for method in METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL
            for route in request.app.router.routes
        )
    ]
    return JSONResponse(
        {"detail": f"{request.method} is not allowed here; use {', '.join(allowed)}"},
        status_code=405,
        headers={"Allow": ", ".join(allowed)},
    )
