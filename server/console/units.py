"""The units page (the ``units`` right): each room's unit, its health, its last test, its
last install report and when it was offline; adding a unit (provisioning, as
``panicbutton provision`` does), retiring one, and a test alert started from here.

Adding a unit makes its MQTT password and HTTPS token, puts them in the unit's
config file (shown once, as a download and a QR code, never stored or logged: the
site keeps the token's SHA-256, the broker's password file the password's hash),
and adds the room (or gives an existing room the new unit) as one new version of
the site's configuration, logged as ``config.changed`` naming who made it. The
broker's password file is not the server's to write: the page gives its line and
says to reload Mosquitto. A test alert goes through the same path as a unit's
(:meth:`server.units.alerts.Alerts.handle`), logged as ``test.started`` with who.

A unit talks to the broker over TLS, with this server's own CA certificate
(``PANICBUTTON_MQTT_CA_FILE``), unless the broker is on the unit itself
(:func:`server.units.provision.check_broker`). With the server's address, adding a unit
also seals its bundle under a one-time enrolment code (:mod:`server.units.enrolment`,
in the same save), for a fresh SD card that installs itself at first boot
(``firmware_config/firstboot.sh``, offered here for download).
"""

from __future__ import annotations

import copy
import hmac
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import segno
from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from panicbutton.wire import DEVICE_ID_RE, Alert, AlertKind
from server.console import i18n, pages
from server.console.access import UnitsPage
from server.console.pages import N_, Reader
from server.errors import ServerError, SiteError
from server.models import FROM_BUTTON, DeviceRecord, Incident, IncidentKind, LogEntry, State
from server.roster import edit
from server.roster.start import DIGEST_LABEL
from server.routes.deps import MEANING, ServicesDep, SettingsDep
from server.services import Services
from server.settings import Settings
from server.site import ID
from server.units import enrolment
from server.units.provision import Secrets, bundle_files, check_broker, device_toml
from server.units.wheelhouse import Wheelhouse, firmware_folder

router = APIRouter(prefix="/console", tags=["console"], include_in_schema=False)

#: How far back the page shows a unit's times offline.
HISTORY = timedelta(days=30)
#: The most offline spells shown per unit.
SPELLS = 5

Csrf = Annotated[str, Form(max_length=100)]
#: What the units page offers for a fresh SD card's boot partition.
SD_CARD_FILES = ("firstboot.sh", "unit_fetch.py")
T = TypeVar("T")


@dataclass
class UnitRow:
    """One room's unit as the page shows it."""

    room_id: str
    room: str
    device_id: str
    online: bool
    last_seen: datetime | None
    version: str
    outbox: int
    error: str
    https: bool
    #: The last test: when, and "passed", "failed" or "running".
    test_at: datetime | None = None
    test_result: str = ""
    #: (went offline, came back or None) for the last :data:`SPELLS` spells, newest first.
    offline: list[tuple[datetime, datetime | None]] = field(default_factory=list)
    #: An open alarm of this room (it cannot be retired meanwhile).
    open_alarm: int | None = None
    #: The unit's last install report: when, what, which version, "passed" or "failed",
    #: and what its check printed.
    install_at: datetime | None = None
    install_action: str = ""
    install_version: str = ""
    install_result: str = ""
    install_lines: list[str] = field(default_factory=list)
    #: Until when an enrolment code for this unit still works (None: no code waits).
    code_until: datetime | None = None


def read_units(services: Services) -> list[UnitRow]:
    """Every room's unit: health, last test and its result, offline spells."""
    site = services.site
    now = services.clock.now()
    devices = {r.device for r in site.rooms}
    with services.sessions() as s:
        known = {d.device_id: d for d in s.scalars(select(DeviceRecord))}
        tests: dict[str, Incident] = {}
        for incident in s.scalars(
            select(Incident)
            .where(Incident.kind == IncidentKind.TEST, Incident.device_id.in_(devices))
            .order_by(Incident.id)
        ):
            tests[incident.device_id] = incident
        results = {
            e.incident_id: str(e.data.get("result", ""))
            for e in s.scalars(
                select(LogEntry).where(
                    LogEntry.type == "test.completed",
                    LogEntry.incident_id.in_([t.id for t in tests.values()]),
                )
            )
        }
        open_alarms = {
            i.room_id: i.id
            for i in s.scalars(
                select(Incident).where(
                    Incident.kind.in_(FROM_BUTTON), Incident.state != State.RESOLVED
                )
            )
        }
        spells: dict[str, list[tuple[datetime, datetime | None]]] = defaultdict(list)
        for e in s.scalars(
            select(LogEntry)
            .where(
                LogEntry.type.in_(("device.offline", "device.online")),
                LogEntry.at >= now - HISTORY,
            )
            .order_by(LogEntry.n)
        ):
            device = str(e.data.get("device"))
            if e.type == "device.offline":
                spells[device].append((e.at, None))
            elif spells[device] and spells[device][-1][1] is None:
                spells[device][-1] = (spells[device][-1][0], e.at)
        installs = enrolment.last_installs(s, devices)
        codes = enrolment.pending(s, now=now)
    rows = []
    for room in site.rooms:
        d = known.get(room.device)
        test = tests.get(room.device)
        row = UnitRow(
            room_id=room.id,
            room=room.label,
            device_id=room.device,
            online=bool(d and d.online),
            last_seen=d.last_seen if d else None,
            version=d.version if d else "",
            outbox=d.outbox if d else 0,
            error=d.error if d else "",
            https=room.token_sha256 is not None,
            offline=spells[room.device][::-1][:SPELLS],
            open_alarm=open_alarms.get(room.id),
            code_until=codes.get(room.device),
        )
        if (report := installs.get(room.device)) is not None:
            row.install_at = report.at
            row.install_action = report.action
            row.install_version = report.version
            row.install_result = report.result
            row.install_lines = list(report.lines)
        if test is not None:
            row.test_at = test.received_at
            row.test_result = results.get(test.id) or (
                "running" if test.state != State.RESOLVED else ""
            )
        rows.append(row)
    return rows


def _units_page(
    request: Request,
    services: Services,
    me: Reader,
    *,
    status: int = 200,
    done: str = "",
    problem: str = "",
    form: dict[str, str] | None = None,
) -> Response:
    return pages.page(
        request,
        services,
        me,
        "units.html",
        title=N_("Units"),
        status=status,
        units=read_units(services),
        done=done,
        problem=problem,
        form=form or {},
        id_pattern=ID,
        device_pattern=DEVICE_ID_RE.pattern.strip("^$"),
    )


@router.get("/units", summary="Room units: health, tests, offline history; add, retire, test")
async def units_page(
    request: Request, services: ServicesDep, settings: SettingsDep, me: UnitsPage
) -> Response:
    # The form starts from this server's own address, when it has a public one, and
    # with TLS: a unit reaches the broker over the network but on the one-Pi site.
    form = {"server_url": settings.public_base_url, "tls": "on"}
    return await run_in_threadpool(lambda: _units_page(request, services, me, form=form))


def _said(me: Reader, text: str, **values: object) -> str:
    """``text`` (an English source text) in ``me``'s language."""
    return i18n.translations(me.language).gettext(text) % values


def _check(me: Reader, csrf: str) -> None:
    if not me.principal.csrf or not hmac.compare_digest(csrf, me.principal.csrf):
        raise HTTPException(403, MEANING[403])


def _save(
    services: Services,
    me: Reader,
    change: Any,
    summary: str,
    also: Callable[[Session, datetime], T] | None = None,
) -> T | None:
    """One new version of the site's configuration (raises SiteError naming the problem),
    and ``also`` in the same transaction (its answer is returned): both are stored or
    neither."""
    now = services.clock.now()
    with services.sessions.begin() as s:
        version, doc = edit.current_document(s, now)
        edit.save(
            s,
            document=change(doc),
            by=me.person_id,
            now=now,
            expected=version,
            retention=services.retention,
            digest_key=services.keeper.signer.derive(DIGEST_LABEL),
            summary=summary,
        )
        return also(s, now) if also is not None else None


def _server_ca(me: Reader, settings: Settings) -> tuple[str | None, str]:
    """(the PEM of this server's broker CA, "") or (None, what is wrong, in ``me``'s
    language): a unit on TLS trusts the broker the server itself trusts."""
    path = settings.mqtt_ca_file
    if path is None:
        return None, _said(
            me,
            N_(
                "This server has no CA certificate for the broker "
                "(PANICBUTTON_MQTT_CA_FILE is not set), so it has none to give a unit "
                "that uses TLS. Set it to the site's CA certificate (the one that signed "
                "the broker's certificate) and restart the server; or, if the broker runs "
                "on the unit itself, give 127.0.0.1 as its host and untick TLS. "
                "Nothing was changed."
            ),
        )
    try:
        pem = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        return None, _said(
            me,
            N_(
                "This server's CA certificate for the broker, %(file)s "
                "(PANICBUTTON_MQTT_CA_FILE), cannot be read: %(error)s. Nothing was changed."
            ),
            file=str(path),
            error=exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc),
        )
    if "BEGIN CERTIFICATE" not in pem:
        return None, _said(
            me,
            N_(
                "This server's CA certificate for the broker, %(file)s "
                "(PANICBUTTON_MQTT_CA_FILE), is not a PEM certificate (it has no "
                "BEGIN CERTIFICATE line). Nothing was changed."
            ),
            file=str(path),
        )
    return pem, ""


#: How to fix a plain unit for a network broker, on this page.
CONSOLE_FIX = (
    "tick “The broker uses TLS” (the unit gets this server's CA certificate for the "
    "broker). Plain MQTT is only for a broker on the unit itself (broker host 127.0.0.1)"
)


def _with_room(doc: dict[str, Any], room: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with ``room`` added, or in place of the room with its id (whole: a unit
    without the HTTPS path leaves no old token behind)."""
    out = copy.deepcopy(doc)
    rooms: list[dict[str, Any]] = out.setdefault("rooms", [])
    out["rooms"] = [r for r in rooms if r.get("id") != room["id"]] + [room]
    return out


@router.post("/units/add", summary="Add a unit: its room, its config file and QR code")
async def add_unit(
    *,
    request: Request,
    services: ServicesDep,
    settings: SettingsDep,
    me: UnitsPage,
    csrf: Csrf,
    device_id: Annotated[str, Form(max_length=63)],
    room_id: Annotated[str, Form(max_length=63)],
    label: Annotated[str, Form(max_length=200)],
    broker_host: Annotated[str, Form(max_length=253)],
    server_url: Annotated[str, Form(max_length=300)] = "",
    tls: Annotated[bool, Form()] = False,
) -> Response:
    _check(me, csrf)
    form = {
        "device_id": device_id,
        "room_id": room_id,
        "label": label,
        "broker_host": broker_host,
        "server_url": server_url,
        "tls": "on" if tls else "",
    }
    secret = Secrets.new()
    url = server_url.strip().rstrip("/") or None
    host = broker_host.strip()
    room: dict[str, Any] = {"id": room_id.strip(), "label": label.strip(), "device": device_id}
    if url is not None:
        room["device_token_sha256"] = secret.token_sha256
    problem = ""
    ca_pem: str | None = None
    if not host or any(c.isspace() for c in host):
        problem = _said(me, N_("The broker's host name is needed, as the unit sees it."))
    elif url is not None and not url.startswith("https://"):
        problem = _said(
            me,
            N_(
                "The server's address must start with https:// "
                "(the token must not cross the network in clear)."
            ),
        )
    elif tls:
        ca_pem, problem = await run_in_threadpool(_server_ca, me, settings)
    else:
        try:
            check_broker(host, tls=False, fix=CONSOLE_FIX)
        except ServerError as exc:
            problem = f"{exc}; nothing was changed"

    def enrol(s: Session, now: datetime) -> tuple[str, datetime] | None:
        """A one-time code for the unit's bundle (same secrets), when it has the server's
        address: what it enrols with at first boot, and when the code stops working."""
        if url is None:
            return None
        files = bundle_files(
            device_id=device_id,
            label=label.strip(),
            broker_host=host,
            server_url=url,
            ca_pem=ca_pem,
            secret=secret,
            by="the console (enrolment)",
        )
        code = enrolment.create(s, device_id=device_id, files=files, by=me.person_id, now=now)
        return code, now + enrolment.LIFETIME

    code: tuple[str, datetime] | None = None
    if not problem:
        try:
            code = await run_in_threadpool(
                _save,
                services,
                me,
                lambda d: _with_room(d, room),
                f"unit {device_id} added in room {room['id']}",
                enrol,
            )
        except (SiteError, edit.StaleVersionError) as exc:
            problem = f"{exc}; nothing was changed"
    if problem:
        return await run_in_threadpool(
            lambda: _units_page(request, services, me, status=422, problem=problem, form=form)
        )
    config = device_toml(
        device_id=device_id,
        label=label.strip(),
        broker_host=host,
        server_url=url,
        tls=tls,
        by="the console",
        inline=secret,
    )
    qr = segno.make(config, error="l")
    svg = qr.svg_inline(scale=3, dark="#000", light="#fff", svgclass="qr", lineclass=None)
    return pages.page(
        request,
        services,
        me,
        "unit_added.html",
        title=N_("Unit added"),
        device_id=device_id,
        room=room,
        config=config,
        qr=Markup(svg.replace("<svg ", '<svg role="img" aria-labelledby="qr-caption" ', 1)),  # noqa: S704 -- segno's own SVG of our text: paths only
        passwd_line=secret.passwd_line(device_id),
        tls=tls,
        ca_pem=ca_pem,
        code=code[0] if code else "",
        code_until=code[1] if code else None,
        enrol_txt=f"server={url}\ncode={code[0]}\n" if code else "",
        sd_card_files=SD_CARD_FILES,
    )


@router.get(
    "/units/sd-card/{name}", summary="A file for a fresh SD card's boot partition (first boot)"
)
async def sd_card_file(
    name: Literal["firstboot.sh", "unit_fetch.py"], settings: SettingsDep, me: UnitsPage
) -> Response:
    """``firstboot.sh`` or ``unit_fetch.py``: from the wheelhouse the server serves, when
    it has one (the installer that goes with its wheels), else from this install's
    ``firmware_config/``."""

    def read() -> bytes:
        if settings.wheelhouse_dir is not None:
            house = Wheelhouse(settings.wheelhouse_dir)
            house.check()
            folder: Path = house.folder
        else:
            folder = firmware_folder()
        return (folder / name).read_bytes()

    try:
        body = await run_in_threadpool(read)
    except (ServerError, OSError) as exc:
        raise HTTPException(503, str(exc)) from None
    return Response(
        body,
        media_type="text/x-shellscript" if name.endswith(".sh") else "text/x-python",
        headers={**pages.HEADERS, "Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.post("/units/{room_id}/retire", summary="Retire a room's unit (the room goes with it)")
async def retire_unit(
    request: Request, room_id: str, services: ServicesDep, me: UnitsPage, csrf: Csrf
) -> Response:
    _check(me, csrf)
    room = next((r for r in services.site.rooms if r.id == room_id), None)
    if room is None:
        raise HTTPException(404, f"there is no room {room_id!r}")

    def retire() -> str:
        with services.sessions() as s:
            alarm = s.scalar(
                select(Incident.id).where(
                    Incident.room_id == room_id,
                    Incident.kind.in_(FROM_BUTTON),
                    Incident.state != State.RESOLVED,
                )
            )
        if alarm is not None:
            return _said(
                me,
                N_("Alarm %(id)s of this room is open: resolve it first. Nothing was changed."),
                id=alarm,
            )
        try:
            _save(
                services,
                me,
                lambda d: {**d, "rooms": [r for r in d.get("rooms", []) if r.get("id") != room_id]},
                f"unit {room.device} retired with room {room_id}",
                lambda s, _now: enrolment.cancel(s, room.device),
            )
        except (SiteError, edit.StaleVersionError) as exc:
            return f"{exc}; nothing was changed"
        return ""

    problem = await run_in_threadpool(retire)
    return await run_in_threadpool(
        lambda: _units_page(
            request,
            services,
            me,
            status=409 if problem else 200,
            problem=problem,
            done="" if problem else room.device,
        )
    )


@router.post("/units/{room_id}/test", summary="Run a test alert for a room's unit")
async def test_unit(room_id: str, services: ServicesDep, me: UnitsPage, csrf: Csrf) -> Response:
    _check(me, csrf)
    room = next((r for r in services.site.rooms if r.id == room_id), None)
    if room is None:
        raise HTTPException(404, f"there is no room {room_id!r}")
    alert = Alert(
        device_id=room.device,
        alert_id=uuid.uuid4().hex,
        seq=1,  # not the unit's number: stored and logged as 0 (started_by)
        pressed_at=services.clock.now(),
        kind=AlertKind.TEST,
    )
    await run_in_threadpool(lambda: services.alerts.handle(alert, started_by=me.person_id))
    return RedirectResponse(
        f"/console/units#unit-{room_id}", status_code=303, headers=dict(pages.HEADERS)
    )
