"""The mobile button's API: enrolling a phone from its link, and the alarms it raises.

Every request of an enrolled phone is signed with its own key (the ``X-Phone``,
``X-Phone-Time`` and ``X-Phone-Signature`` headers, :mod:`server.mobile.signing`);
enrolling is proved by the one-time link's token. Managers (the ``people`` right)
issue links, list a worker's phones and revoke them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Security
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from panicbutton.wire import ALERT_ID_RE, INT_MAX
from server.errors import PeopleError
from server.mobile import phones
from server.mobile.alarms import NotThisPhonesError, TooManyAlarmsError
from server.mobile.phones import PhoneRefusedError
from server.mobile.signing import PHONE, SIGNATURE, TIME
from server.people.auth import Principal
from server.people.directory import find
from server.people.roles import Right
from server.people.signin import LinkGoneError
from server.phones import masked
from server.routes.deps import (
    STRICT,
    NoNulStr,
    Problem,
    ServicesDep,
    SettingsDep,
    answers,
    need,
)
from server.routes.people import NO_PERSON, PersonId, _get, _may_send_links

router = APIRouter(prefix="/api/v1", tags=["mobile button"], dependencies=STRICT)
Manager = Annotated[Principal, Depends(need(Right.PEOPLE))]
AlertId = Annotated[str, Path(pattern=ALERT_ID_RE.pattern, description="the alarm's id")]
PhoneId = Annotated[str, Path(max_length=24, description="the phone's id")]
REFUSED: dict[int | str, dict[str, Any]] = {
    401: {
        "model": Problem,
        "description": "the request is not signed by an enrolled phone's key, the phone "
        "was revoked, or (except for an alarm) its clock is more than 15 minutes off",
    }
}


class Caller(BaseModel):
    """The enrolled phone that signed a request."""

    phone_id: str
    person_id: str
    number: str


async def _signed(request: Request, services: ServicesDep, *, alarm: bool) -> Caller:
    body = await request.body()
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    headers = request.headers
    now = services.clock.now()

    def check() -> Caller:
        with services.sessions.begin() as s:
            phone = phones.authenticate(
                s,
                phone_id=headers.get(PHONE, ""),
                millis=headers.get(TIME, ""),
                signature=headers.get(SIGNATURE, ""),
                method=request.method,
                path=path,
                body=body,
                now=now,
                alarm=alarm,
            )
            return Caller(phone_id=phone.id, person_id=phone.person_id, number=phone.number)

    try:
        return await run_in_threadpool(check)
    except PhoneRefusedError as exc:
        raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "PanicPhone"}) from None


#: The proof every route of an enrolled phone checks, as the HTTP contract names it.
SIGNED = APIKeyHeader(
    name=SIGNATURE,
    scheme_name="PhoneSignature",
    auto_error=False,
    description=(
        "A request of an enrolled phone, signed with the ECDSA P-256 key its page made at "
        "enrolment (WebCrypto, not extractable; its public key went to POST "
        "/api/v1/phone/enrol). Three headers: `X-Phone`: the phone's id; `X-Phone-Time`: "
        "the phone's clock in milliseconds since the epoch; `X-Phone-Signature`: base64url "
        "without padding of the 64-byte signature r || s (as WebCrypto makes it, SHA-256) "
        "over the UTF-8 text `METHOD + LF + path (with ?query if any) + LF + X-Phone-Time "
        "+ LF + lowercase hex SHA-256 of the body bytes` (the empty body's hash for a GET). "
        "A request other than an alarm is refused when X-Phone-Time is more than 15 "
        "minutes from the server's clock; an alarm never is. A revoked phone is refused."
    ),
)
Signature = Annotated[str | None, Security(SIGNED)]


async def signed_phone(request: Request, services: ServicesDep, _: Signature) -> Caller:
    """The phone that signed this request (not an alarm: its clock must be right)."""
    return await _signed(request, services, alarm=False)


async def signed_alarm(request: Request, services: ServicesDep, _: Signature) -> Caller:
    """The phone that signed this alarm (its clock is not checked)."""
    return await _signed(request, services, alarm=True)


Phone = Annotated[Caller, Depends(signed_phone)]
AlarmPhone = Annotated[Caller, Depends(signed_alarm)]


# -- enrolment --------------------------------------------------------------------


class EnrolIn(BaseModel):
    token: NoNulStr = Field(min_length=1, max_length=100, description="from the link's fragment")
    public_key: str = Field(
        pattern=r"^[A-Za-z0-9_-]{40,400}={0,2}$",
        description="ECDSA P-256 public key, WebCrypto 'spki', base64url",
    )
    pin: str = Field(pattern=r"^[0-9]{4,8}$", description="asked at each check-out")
    duress_pin: str = Field(
        pattern=r"^[0-9]{4,8}$",
        description="another PIN: looks like a check-out, silently raises an alarm",
    )
    number: str = Field(
        pattern=r"^\+[1-9][0-9]{6,14}$", description="this phone's number, E.164: +32470123456"
    )
    label: NoNulStr = Field(default="", max_length=60)


class Fallback(BaseModel):
    """What the page keeps for when the data connection fails."""

    #: The site's number: an SMS to it, or a call, with the code raises the alarm.
    number: str
    #: The SMS body to send (the page adds the open alarm's id after it).
    sms_body: str
    #: What to type in the call (the code, then #).
    call_digits: str


class EnrolOut(BaseModel):
    phone_id: str
    #: The worker's name on the site (their chosen code).
    name: str
    fallback: Fallback
    #: The worker's language, for the page's texts: fr, nl or en.
    language: str


def fallback_of(number: str, code: str) -> Fallback:
    return Fallback(number=number, sms_body=f"SOS {code}", call_digits=f"{code}#")


@router.post(
    "/phone/enrol",
    status_code=201,
    response_model=EnrolOut,
    responses={
        **answers(400, 422),
        410: {"model": Problem, "description": "the link was used, expired or is unknown"},
    },
)
def enrol(body: EnrolIn, services: ServicesDep, settings: SettingsDep) -> EnrolOut:
    """Enrol this phone as a worker's mobile button, with the one-time link's token. The
    link works once; a refused key, PIN or number leaves it good."""
    now = services.clock.now()
    try:
        with services.sessions.begin() as s:
            done = phones.enrol(
                s,
                token=body.token,
                public_key=body.public_key,
                pin=body.pin,
                duress_pin=body.duress_pin,
                number=body.number,
                label=body.label,
                now=now,
            )
            language = find(s, done.person_id).language
    except LinkGoneError as exc:
        raise HTTPException(410, str(exc)) from None
    except PeopleError as exc:
        raise HTTPException(422, str(exc)) from None
    return EnrolOut(
        phone_id=done.phone_id,
        name=done.name,
        fallback=fallback_of(settings.twilio_from, done.fallback_code),
        language=language,
    )


# -- the phone's own view ---------------------------------------------------------


class AlarmIn(BaseModel):
    alert_id: str = Field(pattern=ALERT_ID_RE.pattern, description="made by the page at the press")
    pressed_at: datetime = Field(
        description="the phone's clock at the press, with its time zone (for the record: "
        "one without a zone, or out of range, is kept as the server's time of receipt)"
    )
    presses: int = Field(default=1, ge=1, le=INT_MAX)


class AlarmOut(BaseModel):
    # Read from a server.mobile.alarms.PhoneView: ``AlarmOut.model_validate(view)``.
    model_config = ConfigDict(from_attributes=True)

    alert_id: str
    incident: int
    #: panic (the button) or missed_checkout.
    kind: str
    #: received, acknowledged (help is coming) or resolved: as a room unit's light.
    state: str
    #: Who is going, once someone acknowledged.
    going: str | None
    presses: int


class Checkin(BaseModel):
    """A check-in session (server/routes/checkins.py)."""

    # Read from a server.mobile.checkins.CheckinView: ``Checkin.model_validate(view)``.
    model_config = ConfigDict(from_attributes=True)

    client_id: str
    started_at: datetime
    ends_at: datetime
    #: running, closed (checked out) or missed (the alarm went).
    state: str
    #: What the worker chose to share; "" when nothing.
    note: str


class PhoneState(BaseModel):
    phone_id: str
    name: str
    #: The worker's language, for the page's texts: fr, nl or en.
    language: str
    #: This phone's alarms not yet resolved, oldest first.
    alarms: list[AlarmOut]
    #: This phone's running check-in session, if any.
    checkin: Checkin | None
    #: The server's clock (the page shows how far its own is off).
    now: datetime


@router.get("/phone/me", response_model=PhoneState, responses=REFUSED)
def me(caller: Phone, services: ServicesDep) -> PhoneState:
    """Who this phone is for, its open alarms and its running check-in (what the page
    shows after a restart)."""
    with services.sessions() as s:
        person = find(s, caller.person_id)
        name, language = person.name, person.language
    views = services.mobile.open_alarms(phone_id=caller.phone_id)
    checkin = services.checkins.running(caller.phone_id)
    return PhoneState(
        phone_id=caller.phone_id,
        name=name,
        language=language,
        alarms=[AlarmOut.model_validate(v) for v in views],
        checkin=None if checkin is None else Checkin.model_validate(checkin),
        now=services.clock.now(),
    )


@router.post(
    "/phone/alarms",
    response_model=AlarmOut,
    responses={
        **REFUSED,
        **answers(400, 422),
        409: {
            "model": Problem,
            "description": "this alert id is not this phone's (another device's alarm): "
            "make a new one and send the alarm again",
        },
        429: {"model": Problem, "description": "too many alarms of this phone are open"},
    },
)
async def raise_alarm(request: Request, caller: AlarmPhone, services: ServicesDep) -> AlarmOut:
    """Raise an alarm from the phone button. The alert id (made by the page at the press)
    makes it one incident however often it is sent; send it again with more presses
    when the worker presses again. Answers where it stands; 409 (nothing recorded) if
    the id is not this phone's: the page makes a new one."""
    try:
        body = AlarmIn.model_validate_json(await request.body())
    except ValidationError as exc:
        raise HTTPException(422, _errors(exc)) from None
    try:
        view = await run_in_threadpool(
            lambda: services.mobile.raise_alarm(
                phone_id=caller.phone_id,
                alert_id=body.alert_id,
                pressed_at=body.pressed_at,
                presses=body.presses,
            )
        )
    except TooManyAlarmsError as exc:
        raise HTTPException(429, str(exc), headers={"Retry-After": "60"}) from None
    except NotThisPhonesError as exc:
        raise HTTPException(409, str(exc)) from None
    return AlarmOut.model_validate(view)


def _errors(exc: ValidationError) -> str:
    """A validation failure in words (never the input back: it may be personal data)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
    )


@router.get(
    "/phone/alarms/{alert_id}",
    response_model=AlarmOut,
    responses={**REFUSED, 404: {"model": Problem, "description": "no such alarm of this phone"}},
)
def alarm_state(alert_id: AlertId, caller: Phone, services: ServicesDep) -> AlarmOut:
    """Where this phone's alarm stands: received, acknowledged (with who is going) or
    resolved."""
    view = services.mobile.view(phone_id=caller.phone_id, alert_id=alert_id)
    if view is None:
        raise HTTPException(404, "this phone raised no alarm with that id")
    return AlarmOut.model_validate(view)


# -- managers ---------------------------------------------------------------------


class PhoneLink(BaseModel):
    #: The one-time link to open on the worker's phone (shown only here).
    link: str
    expires_at: datetime


class PhoneOut(BaseModel):
    id: str
    label: str
    #: Masked: ``+32 4** ** ** 56``.
    number: str
    enrolled_at: datetime
    last_seen_at: datetime | None
    revoked_at: datetime | None


@router.post(
    "/people/{person_id}/phone-link",
    status_code=201,
    response_model=PhoneLink,
    responses={**answers(400, 401, 403, 422), **NO_PERSON},
)
def phone_link(
    person_id: PersonId, me: Manager, services: ServicesDep, settings: SettingsDep
) -> PhoneLink:
    """A one-time link that enrols a worker's phone as their mobile button (72 hours;
    an earlier unused one stops working). Only from a signed-in browser."""
    _may_send_links(me, person_id)
    now = services.clock.now()
    try:
        with services.sessions.begin() as s:
            _get(s, person_id)
            token = phones.issue(s, person_id=person_id, by=me.person_id, now=now)
    except PeopleError as exc:
        raise HTTPException(422, str(exc)) from None
    return PhoneLink(
        link=phones.link_url(settings.public_base_url, token),
        expires_at=now + timedelta(hours=phones.LINK_HOURS),
    )


@router.get(
    "/people/{person_id}/phones",
    response_model=list[PhoneOut],
    responses={**answers(401, 403), **NO_PERSON},
)
def list_phones(person_id: PersonId, _: Manager, services: ServicesDep) -> list[PhoneOut]:
    """A worker's enrolled phones, newest first, revoked ones too."""
    with services.sessions() as s:
        _get(s, person_id)
        return [
            PhoneOut(
                id=p.id,
                label=p.label,
                number=masked(p.number) or "",
                enrolled_at=p.created_at,
                last_seen_at=p.last_seen_at,
                revoked_at=p.revoked_at,
            )
            for p in phones.phones_of(s, person_id)
        ]


@router.post(
    "/people/{person_id}/phones/{phone_id}/revoke",
    status_code=204,
    responses={**answers(401, 403), **NO_PERSON},
)
def revoke_phone(
    person_id: PersonId, phone_id: PhoneId, me: Manager, services: ServicesDep
) -> None:
    """Revoke a worker's phone: it can raise no alarm and read nothing from then on
    (its open alarms go on until resolved, and a check-in it started still raises the
    missed check-out alarm: it can no longer check out)."""
    now = services.clock.now()
    try:
        with services.sessions.begin() as s:
            _get(s, person_id)
            phones.revoke(s, phone_id=phone_id, person_id=person_id, by=me.person_id, now=now)
    except PeopleError as exc:
        raise HTTPException(404, str(exc)) from None
