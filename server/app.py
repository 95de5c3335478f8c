"""Builds the server: its services, MQTT ingest, supervision and the FastAPI app, from
settings.

(Over 300 lines: the composition root names every part and what it is given once,
in dependency order; read top to bottom, it is the map of the server.)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

import uvicorn
from fastapi import FastAPI
from sqlalchemy import update
from sqlalchemy.orm import Session

from panicbutton import __version__
from panicbutton.clock import Clock, SystemClock
from panicbutton.log import checkpoints
from panicbutton.redact import protect_handlers
from server.cluster import Cluster, Instances, KeeperLock, Notices
from server.console import incidents as console_incidents
from server.console import kiosk as console_kiosk
from server.console import maps as console_maps
from server.console import pages as console_pages
from server.console import people as console_people
from server.console import poster as console_poster
from server.console import presence as console_presence
from server.console import reports as console_reports
from server.console import roster as console_roster
from server.console import routes as console_routes
from server.console import units as console_units
from server.console.access import PageRefusedError, refused
from server.continuity import Continuity
from server.db import changed, make_engine, migrate, sessions
from server.errors import SettingsError
from server.escalation.scheduler import Scheduler
from server.health import Health
from server.log.append import audit, on_append
from server.log.config import record_config
from server.log.keeper import LogKeeper
from server.log.signing import load_signer
from server.metrics import Metrics
from server.mobile import retention as mobile_retention
from server.mobile.alarms import PhoneAlarms
from server.mobile.checkins import CheckIns
from server.mobile.news import WorkerNews
from server.mobile.timer import CheckinTimer
from server.news import RepressNews, Tell
from server.paging import messages
from server.paging.notifier import ConsoleNotifier, Notifier, TwilioNotifier
from server.paging.pager import Pager
from server.people import presence as presence_register
from server.people import violence as violence_register
from server.people.passkeys import RelyingParty
from server.people.signin import SignIn
from server.people.tables import WebSession
from server.phones import Phones
from server.receipts import Receipts
from server.records import Records
from server.replies.codes import ReplyLimits
from server.replies.fallback import Fallback
from server.replies.optout import OptOut
from server.replies.sms import SmsReplies
from server.replies.voice import VoiceKeys
from server.response import Responder
from server.roster.start import first_site
from server.roster.store import SiteBook
from server.rota import Rota
from server.routes import (
    ack,
    api,
    devices,
    errors,
    monitoring,
    presence,
    records,
    roster,
    violence,
    webhooks,
)
from server.routes import checkins as checkin_routes
from server.routes import install as install_routes
from server.routes import me as me_routes
from server.routes import mobile as mobile_routes
from server.routes import people as people_routes
from server.routes import phone_page as phone_app
from server.routes import phones as phones_routes
from server.routes import pin as pin_routes
from server.routes import positions as positions_routes
from server.routes import signin as signin_routes
from server.routes import units as units_routes
from server.routes.deps import answers
from server.routes.limits import BodyLimit
from server.runner import Runner
from server.services import Services
from server.settings import Settings
from server.site import Site
from server.units.alerts import HOLD_MAX, Alerts
from server.units.feedback import FeedbackSink, Lights
from server.units.ingest import Ingest, feedback_publisher, server_client
from server.units.statuses import Statuses
from server.units.supervision import SupervisionTimes, Supervisor
from server.urls import PublicUrls

log = logging.getLogger(__name__)

#: Seconds a stopping server waits for open connections (live boards) to end.
SHUTDOWN_GRACE = 5
#: What every answer of the HTTP API carries.
API_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


@dataclass(frozen=True)
class Server:
    """Everything one server instance runs; ``start``/``stop`` around its life."""

    settings: Settings
    services: Services
    ingest: Ingest
    supervisor: Supervisor
    app: FastAPI

    def start(self) -> None:
        sv = self.services
        sv.cluster.start()  # this instance's row before it claims anything
        now = sv.clock.now()
        with sv.sessions.begin() as s:
            audit(s, at=now, type="server.started", version=__version__)
            record_config(
                s,
                site=sv.site,
                retention=sv.retention,
                now=now,
                digest_key=sv.keeper.signer.derive(b"panicbutton/config-digest"),
                version=sv.book.version(),
            )
        sv.keeper.start()
        sv.start()
        self.ingest.start()
        self.supervisor.start()

    def stop(self) -> None:
        self.supervisor.stop()
        self.ingest.stop()
        try:
            self.services.statuses.stop()  # the last changes and heartbeats
        except Exception:  # the database is down: the rest of the stop must still run
            log.exception("could not write the units' last heartbeats at stop")
        self.services.stop()
        self.services.keeper.stop()
        self.services.cluster.stop()
        self.services.engine.dispose()


def build(
    settings: Settings,
    *,
    site: Site | None = None,
    notifier: Notifier | None = None,
    clock: Clock | None = None,
) -> Server:
    """Wire a server from ``settings``; the site, notifier and clock can be given (demo,
    tests). Each part is built once, with everything it needs, lowest layer first."""
    if notifier is None:
        notifier = ConsoleNotifier() if settings.notifier == "console" else TwilioNotifier(settings)
    client = server_client(settings)
    services = _services(
        settings,
        site=site,
        notifier=notifier,
        clock=clock or SystemClock(),
        publish=feedback_publisher(client),
    )
    ingest = Ingest(
        settings,
        client,
        # Paging waits while any alert waits to be recorded (see server.units.ingest).
        on_alerts=lambda alerts: services.alerts.handle_many(alerts, page=False),
        on_idle=lambda: services.alerts.page_waiting(most=1),
        on_overdue=lambda: services.alerts.page_waiting(most=1, held=HOLD_MAX),
        on_status=lambda status, retained: services.statuses.handle(status, retained=retained),
    )
    supervisor = Supervisor(
        sessions=services.sessions,
        site=services.book,
        clock=services.clock,
        statuses=services.statuses,
        rota=services.rota,
        tell=services.tell,
        times=SupervisionTimes(
            silence=settings.offline_silence,
            grace=settings.offline_grace,
            interval=settings.supervision_interval,
            link_grace=settings.broker_loss_grace,
        ),
        link_up=ingest.connected.is_set,
        continuity=services.continuity,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # ``server`` is bound below, before the app can start.
        server.start()
        try:
            yield
        finally:
            server.stop()

    health = Health(
        engine=services.engine,
        link_up=ingest.connected.is_set,
        broker=f"{settings.mqtt_host}:{settings.mqtt_port}",
        notifier=notifier,
        clock=services.clock,
    )
    server = Server(
        settings=settings,
        services=services,
        ingest=ingest,
        supervisor=supervisor,
        app=_http_app(settings, services, health, lifespan),
    )
    return server


def _services(
    settings: Settings,
    *,
    site: Site | None,
    notifier: Notifier,
    clock: Clock,
    publish: FeedbackSink,
) -> Services:
    """The services, from the database up."""
    signer = _signer(settings, site)
    engine = make_engine(settings.database_url)
    migrate(engine)
    db = sessions(engine)
    book = SiteBook(sessions=db, clock=clock.now, fresh_for=settings.site_refresh_seconds)
    first_site(settings, db, site=site, clock=clock, signer=signer)
    metrics = Metrics()
    metrics.watch(sessions=db, site=book, clock=clock)
    jobs_moved = threading.Event()  # set when a job is added or moved: the scheduler looks
    wake = jobs_moved.set
    # Other server instances on this database (PostgreSQL): their commits wake the
    # scheduler here too. Its name (its MQTT identity) marks the claims it holds.
    instance = settings.instance_name
    notices = Notices(engine)
    on_append(engine, notices.committed)
    notices.subscribe(wake)
    urls = PublicUrls(
        public_base_url=settings.public_base_url,
        link_secret=settings.link_secret.get_secret_value(),
    )
    # NOTE: the pager reports each page's result to the runner, which pages through
    # the pager: the one cycle of the server, closed by this late-bound call.
    pager = Pager(
        sessions=db,
        site=book,
        notifier=notifier,
        metrics=metrics,
        clock=clock,
        callback_url=urls.callback,
        link_url=urls.ack_link,
        list_url=urls.list_link,
        map_url=urls.map_link,
        bundle_window={"sms": settings.sms_bundle_window, "call": settings.call_bundle_window},
        # Twilio's pace; the console (the demo, tests) prints as fast as it is asked.
        rates=settings.send_rates() if isinstance(notifier, TwilioNotifier) else None,
        burst=settings.twilio_burst,
        # A lambda: ``runner`` is bound below (see the NOTE above).
        on_page_done=lambda incident_id, page_id: runner.page_done(incident_id, page_id),  # noqa: PLW0108
        instance=instance,
    )
    lights = Lights(sessions=db, publish=publish)
    tell = Tell(sessions=db, site=book, pager=pager)
    news = RepressNews(sessions=db, site=book, pager=pager, clock=clock, wake=wake)
    optout = OptOut(site=book, pager=pager)
    worker = WorkerNews(sessions=db, pager=pager)
    phones = Phones(sessions=db, site=book, pager=pager, clock=clock)
    runner = Runner(
        sessions=db,
        site=book,
        clock=clock,
        pager=pager,
        lights=lights,
        news=news,
        optout=optout,
        wake=wake,
        metrics=metrics,
        phones=phones,
    )
    responder = Responder(
        sessions=db,
        site=book,
        clock=clock,
        pager=pager,
        lights=lights,
        news=news,
        tell=tell,
        worker=worker,
        wake=wake,
        metrics=metrics,
    )
    mobile = PhoneAlarms(
        sessions=db, site=book, clock=clock, pager=pager, news=news, wake=wake, metrics=metrics
    )
    fallback = Fallback(
        sessions=db, clock=clock, alarms=mobile, news=worker, callback_url=urls.callback
    )
    rota = Rota(sessions=db, site=book, clock=clock, pager=pager)
    continuity = Continuity(sessions=db, site=book, clock=clock, pager=pager, tell=tell, wake=wake)
    checkin_timer = CheckinTimer(sessions=db, site=book, clock=clock, pager=pager, alarms=mobile)
    # An instance found stopped: its pages are taken over on the heartbeat, its jobs by
    # the scheduler, woken to look.
    instances = Instances(
        name=instance,
        sessions=db,
        clock=clock,
        single=engine.dialect.name == "sqlite",
        shared=settings.mqtt_shared,
        on_beat=pager.request_take_over,
        on_loss=wake,
    )
    instances.check()
    alerts = Alerts(
        sessions=db,
        site=book,
        clock=clock,
        pager=pager,
        lights=lights,
        news=news,
        wake=wake,
        metrics=metrics,
        instance=instance,
    )
    scheduler = Scheduler(
        sessions=db,
        clock=clock,
        run_job=runner.run_job,
        on_pass=pager.request_sweep,
        wake=jobs_moved,
        instance=instance,
        live=instances.live,
        holds=alerts.holds,
    )
    keeper_lock = KeeperLock(engine)
    keeper = LogKeeper(
        engine=engine,
        sessions=db,
        signer=signer,
        checkpoint_file=settings.log_checkpoint_file,
        clock=clock.now,
        retention=settings.retention(),
        purge_registers=lambda s, now: _purge_registers(s, now, settings),
        on_failure=lambda: tell.managers(
            lambda m: messages.log_failed(m.language), purpose="log_failed"
        ),
        keeps=keeper_lock.held,
    )
    return Services(
        book=book,
        clock=clock,
        engine=engine,
        sessions=db,
        retention=settings.retention(),
        keeper=keeper,
        pager=pager,
        scheduler=scheduler,
        lights=lights,
        tell=tell,
        news=news,
        alerts=alerts,
        statuses=Statuses(sessions=db, site=book, clock=clock, pager=pager, tell=tell, wake=wake),
        runner=runner,
        responder=responder,
        rota=rota,
        receipts=Receipts(sessions=db, clock=clock),
        sms=SmsReplies(
            sessions=db,
            site=book,
            clock=clock,
            pager=pager,
            responder=responder,
            rota=rota,
            optout=optout,
            limits=ReplyLimits(),
            fallback=fallback,
        ),
        fallback=fallback,
        voice=VoiceKeys(sessions=db, site=book, responder=responder),
        records=Records(sessions=db, keeper=keeper, clock=clock, retention=settings.retention()),
        phones=phones,
        continuity=continuity,
        mobile=mobile,
        checkins=CheckIns(
            sessions=db,
            site=book,
            clock=clock,
            alarms=mobile,
            continuity=continuity,
            wake=checkin_timer.wake,
        ),
        checkin_timer=checkin_timer,
        signin=SignIn(
            sessions=db,
            clock=clock,
            rp=RelyingParty.of(
                public_base_url=settings.public_base_url,
                rp_id=settings.webauthn_rp_id,
                origin=settings.webauthn_origin,
                name=book().name,
            ),
        ),
        metrics=metrics,
        cluster=Cluster(instances=instances, keeper_lock=keeper_lock, notices=notices),
    )


def _purge_registers(session: Session, now: datetime, settings: Settings) -> int:
    """The presence and violence registers' rows, and the mobile button's positions,
    check-in sessions and revoked phones, past their retention: how many went."""
    before = now - timedelta(days=settings.retention_presence_days)
    stays = presence_register.purge(session, before=before)
    stays += mobile_retention.purge(
        session,
        now=now,
        positions_days=settings.retention_positions_days,
        presence_days=settings.retention_presence_days,
    )
    # The reason a person gave for opening records goes with their session: ended, or
    # past the absolute limit of a person's session (a kiosk's opens no records).
    # (Not counted: the purge's count is of register rows deleted.)
    changed(
        session,
        update(WebSession)
        .where(
            WebSession.justification.is_not(None),
            (WebSession.ended_at.is_not(None))
            | (WebSession.created_at < now - timedelta(hours=settings.session_hours)),
        )
        .values(justification=None),
    )
    return stays + violence_register.purge(session, now=now, days=settings.retention_note_days)


def _http_app(
    settings: Settings,
    services: Services,
    health: Health,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]],
) -> FastAPI:
    """The HTTP app: its routes, middleware and error answers."""
    app = FastAPI(
        title="panicbutton",
        version="1",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        # The body limit (server/routes/limits.py) holds on every route.
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
    # Outermost: every /ack/ and /console/ answer, a refused body's 413 included, is private.
    app.add_middleware(ack.PrivatePages)
    app.add_middleware(
        ack.PrivatePages,
        prefix="/console",
        headers=console_pages.HEADERS,
        exempt="/console/static/",
    )
    # A map link's page says where a worker is: as private as a console page.
    app.add_middleware(ack.PrivatePages, prefix="/map/", headers=console_pages.HEADERS)
    # Answers of the API hold personal data (people, exports, reports): never cached.
    app.add_middleware(ack.PrivatePages, prefix="/api/", headers=API_HEADERS)
    app.state.settings = settings
    app.state.services = services
    app.state.health = health
    app.include_router(monitoring.router)
    app.include_router(api.router)
    app.include_router(records.router)
    app.include_router(webhooks.router)
    app.include_router(devices.router)
    app.include_router(install_routes.router)
    app.include_router(ack.router)
    app.include_router(people_routes.router)
    app.include_router(phones_routes.router)
    app.include_router(presence.router)
    app.include_router(violence.router)
    app.include_router(roster.router)
    app.include_router(units_routes.router)
    app.include_router(signin_routes.router)
    app.include_router(me_routes.router)
    app.include_router(pin_routes.router)
    app.include_router(mobile_routes.router)
    app.include_router(checkin_routes.router)
    app.include_router(phone_app.router)
    app.include_router(positions_routes.router)
    app.include_router(console_routes.router)
    app.include_router(console_incidents.router)
    app.include_router(console_maps.router)
    app.include_router(console_maps.links)
    app.include_router(console_reports.router)
    app.include_router(console_poster.router)
    app.include_router(console_people.router)
    app.include_router(console_roster.router)
    app.include_router(console_presence.router)
    app.include_router(console_units.router)
    app.include_router(console_kiosk.router)
    app.add_exception_handler(PageRefusedError, refused)
    errors.install(app)
    return app


def web_server(server: Server, *, host: str, port: int, log_level: str = "info") -> uvicorn.Server:
    """The HTTP server for ``server.app``, its logs (uvicorn's own and every other
    handler) redacting link tokens and secrets (see :mod:`panicbutton.redact`), as text
    or JSON lines like the process's other logs (:mod:`panicbutton.logformat`)."""
    config = uvicorn.Config(
        server.app,
        host=host,
        port=port,
        # Open live boards (event streams) would hold a stopping server up for ever:
        # after this many seconds they are cut (browsers reconnect by themselves).
        timeout_graceful_shutdown=SHUTDOWN_GRACE,
        proxy_headers=False,
        log_level=log_level,
        lifespan="on",
    )
    # NOTE: after Config: it installs uvicorn's handlers, which must be covered too (and
    # take the format the process's handlers have).
    protect_handlers(server.settings.secret_values())
    return uvicorn.Server(config)


def _signer(settings: Settings, site: Site | None) -> checkpoints.Signer:
    if settings.log_key_file is not None:
        try:
            return load_signer(settings.log_key_file)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
    # Only the demo gets here (settings refuse a missing key otherwise): a throwaway key.
    name = site.name if site is not None else "site"
    slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-") or "site"
    return checkpoints.Signer.generate(f"panicbutton.demo/{slug}")
