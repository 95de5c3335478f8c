"""Builds the server: runtime, MQTT ingest and the FastAPI app, from settings."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exception_handlers import (
    http_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from panicbutton import __version__
from panicbutton.clock import Clock
from panicbutton.log import spec
from panicbutton.redact import protect_handlers
from server.db import make_engine, migrate
from server.errors import SettingsError
from server.log.append import audit
from server.log.keeper import LogKeeper, load_signer, record_config
from server.paging import messages
from server.paging.notifier import ConsoleNotifier, Notifier, TwilioNotifier
from server.routes import ack, api, devices, records, webhooks
from server.routes.deps import answers
from server.routes.limits import BodyLimit
from server.runtime import Runtime
from server.settings import Settings
from server.site import Site, load_site
from server.units.ingest import Ingest
from server.units.supervision import SupervisionTimes, Supervisor

log = logging.getLogger(__name__)
#: The methods a 405 may name.
METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


@dataclass
class Server:
    """Everything one server instance runs; ``start``/``stop`` around its life."""

    settings: Settings
    runtime: Runtime
    ingest: Ingest
    supervisor: Supervisor
    keeper: LogKeeper
    app: FastAPI

    def start(self) -> None:
        now = self.runtime.clock()
        with self.runtime.sessions.begin() as s:
            audit(s, at=now, type="server.started", version=__version__)
            record_config(
                s,
                site=self.runtime.site,
                retention=self.settings.retention(),
                now=now,
                digest_key=self.keeper.signer.derive(b"panicbutton/config-digest"),
            )
        self.keeper.start()
        self.runtime.start()
        self.ingest.start()
        self.supervisor.start()

    def stop(self) -> None:
        self.supervisor.stop()
        self.ingest.stop()
        self.runtime.close()
        self.keeper.stop()
        self.runtime.engine.dispose()


def build(
    settings: Settings,
    *,
    site: Site | None = None,
    notifier: Notifier | None = None,
    clock: Clock | None = None,
) -> Server:
    """Wire a server from ``settings``; the site and notifier can be given (demo, tests)."""
    site = site or load_site(settings.site_file)
    if notifier is None:
        notifier = ConsoleNotifier() if settings.notifier == "console" else TwilioNotifier(settings)
    signer = _signer(settings, site)
    engine = make_engine(settings.database_url)
    migrate(engine)
    runtime = Runtime(
        site=site,
        engine=engine,
        notifier=notifier,
        clock=clock,
        public_base_url=settings.public_base_url,
        link_secret=settings.link_secret.get_secret_value(),
        bundle_window={"sms": settings.sms_bundle_window, "call": settings.call_bundle_window},
    )
    ingest = Ingest(settings, runtime)
    supervisor = Supervisor(
        runtime,
        SupervisionTimes(
            silence=settings.offline_silence,
            grace=settings.offline_grace,
            interval=settings.supervision_interval,
            link_grace=settings.broker_loss_grace,
        ),
        link_up=ingest.connected.is_set,
    )
    keeper = LogKeeper(
        engine=engine,
        sessions=runtime.sessions,
        signer=signer,
        checkpoint_file=settings.log_checkpoint_file,
        clock=runtime.clock,
        retention=settings.retention(),
        on_failure=lambda: runtime.tell_managers(
            lambda m: messages.log_failed(m.language), purpose="log_failed"
        ),
    )
    runtime.keeper = keeper
    runtime.retention = settings.retention()
    server = Server(
        settings=settings,
        runtime=runtime,
        ingest=ingest,
        supervisor=supervisor,
        keeper=keeper,
        app=FastAPI(),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        server.start()
        try:
            yield
        finally:
            server.stop()

    app = FastAPI(
        title="panicbutton",
        version="1",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        # The body limit (server/limits.py) holds on every route.
        responses=answers(413),
        # NOTE: no 307 to the path without its trailing slash: the redirect would be
        # built from the Host header over plain http (for a link: https and any proxy
        # prefix dropped). A path with a trailing slash is simply not found.
        redirect_slashes=False,
        # A 405 belongs to no operation (it answers a method the path lacks), so it
        # is said here rather than in each operation's answers.
        description="A method a path does not have is answered 405, with an `Allow` "
        "header and a JSON `detail` naming the path's methods. A path with a trailing "
        "slash is not redirected: it is not found (404).",
    )
    app.add_middleware(BodyLimit)
    # Outermost: every /ack/ answer, a refused body's 413 included, is private.
    app.add_middleware(ack.PrivatePages)
    app.state.settings = settings
    app.state.runtime = runtime
    app.include_router(api.router)
    app.include_router(records.router)
    app.include_router(webhooks.router)
    app.include_router(devices.router)
    app.include_router(ack.router)
    app.add_exception_handler(400, _bad_request)
    app.add_exception_handler(405, _method_not_allowed)
    app.add_exception_handler(RequestValidationError, _invalid)
    server.app = app
    return server


def web_server(server: Server, *, host: str, port: int, log_level: str = "info") -> uvicorn.Server:
    """The HTTP server for ``server.app``, its logs (uvicorn's own and every other
    handler) redacting link tokens and secrets (see :mod:`panicbutton.logs`)."""
    config = uvicorn.Config(
        server.app,
        host=host,
        port=port,
        proxy_headers=False,
        log_level=log_level,
        lifespan="on",
    )
    # NOTE: after Config: it installs uvicorn's handlers, which must be covered too.
    protect_handlers(server.settings.secret_values())
    return uvicorn.Server(config)


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
    saying what to send (server/records.py)."""
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


def _signer(settings: Settings, site: Site) -> spec.Signer:
    if settings.log_key_file is not None:
        try:
            return load_signer(settings.log_key_file)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
    # Only the demo gets here (settings refuse a missing key otherwise): a throwaway key.
    slug = "".join(c if c.isalnum() else "-" for c in site.name.lower()).strip("-") or "site"
    return spec.Signer.generate(f"panicbutton.demo/{slug}")
