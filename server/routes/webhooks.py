"""Twilio webhooks: inbound SMS, call key presses, delivery and call status, and the
fallbacks of a worker's phone (an SMS, or a call to the site's number with its code).

Every request must carry a valid signature, checked against the URL as Twilio
called it: ``PANICBUTTON_PUBLIC_BASE_URL`` + path + query (behind a TLS proxy
the request's own URL differs). The primary and, during rotation, the
secondary auth token are accepted; anything else gets 403 and changes
nothing. A replayed webhook is answered but not acted on twice: replays are
recognised by signed fields (``MessageSid``; ``CallSid`` with the pages or the
attempt; the status with its id), not by ``I-Twilio-Idempotency-Token``, which the
signature does not cover.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from starlette.concurrency import run_in_threadpool
from twilio.request_validator import RequestValidator

from server.routes.deps import ServicesDep, SettingsDep, answers, text_body

T = TypeVar("T")
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


async def signed_form(request: Request, settings: SettingsDep) -> dict[str, str]:
    """The POST parameters, once the Twilio signature over them checks out."""
    form = await request.form()
    params = {k: v for k, v in form.items() if isinstance(v, str)}
    signature = request.headers.get("X-Twilio-Signature", "")
    url = settings.public_base_url + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    tokens = settings.twilio_tokens()
    if (
        not signature
        or not tokens
        or not any(RequestValidator(token).validate(url, params, signature) for token in tokens)
    ):
        raise HTTPException(status_code=403, detail="invalid Twilio signature")
    # NOTE: PostgreSQL cannot store a NUL byte in text (500, with the values in the
    # error): refused here, at the edge, before any field reaches storage.
    if any("\x00" in value for value in params.values()):
        raise HTTPException(
            status_code=400, detail="a form field holds a NUL byte, which no Twilio field has"
        )
    return params


SignedForm = Annotated[dict[str, str], Depends(signed_form)]
router = APIRouter(
    prefix="/twilio",
    tags=["webhooks"],
    responses={200: text_body("application/xml", description="TwiML"), **answers(400, 403)},
)
#: The form fields read (Twilio sends more); all of them signed.
FIELDS = ("From", "Body", "MessageSid", "SmsSid", "CallSid", "Digits", "MessageStatus")
FORM = {
    "requestBody": {
        # An empty form is answered (and ignored) like any other, once signed.
        "required": False,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "properties": {
                        # No Twilio field holds a NUL byte (one is answered 400).
                        f: {"type": "string", "pattern": "^[^\\u0000]*$"}
                        for f in (*FIELDS, "CallStatus", "ErrorCode")
                    },
                }
            }
        },
    }
}


def _xml(body: str = EMPTY_TWIML) -> Response:
    return Response(body, media_type="application/xml")


#: The page ids a callback URL names (the server writes them): up to 9 digits each.
Pages = Annotated[
    str,
    Query(
        pattern=r"^([1-9][0-9]{0,8}(,[1-9][0-9]{0,8})*)?$",
        description="the page ids this callback is about, separated by commas",
    ),
]


def _pages(pages: str) -> list[int]:
    return [int(p) for p in pages.split(",") if p][:20]


async def _replayed(request: Request, services: ServicesDep, signed: str) -> bool:
    """True for a webhook handled before. ``signed`` is made of signed fields (the
    message or call id), so a captured request replayed with a fresh idempotency
    header (which the signature does not cover) is still caught."""
    if not signed:
        return False
    request.state.receipt = f"twilio:{signed}"
    return await run_in_threadpool(services.receipts.seen, request.state.receipt)


async def _handle(request: Request, services: ServicesDep, work: Callable[[], T]) -> T:
    """Run ``work``; if it fails, forget the receipt so Twilio's retry is acted on."""
    try:
        return await run_in_threadpool(work)
    except Exception:
        receipt = getattr(request.state, "receipt", None)
        if receipt:
            await run_in_threadpool(services.receipts.forget, receipt)
        raise


@router.post("/sms", response_class=Response, openapi_extra=FORM)
async def inbound_sms(params: SignedForm, request: Request, services: ServicesDep) -> Response:
    """A staff member's SMS (acknowledge or close by code, DUTY, opt-out words), or a
    worker's phone's fallback SMS (its code raises its alarm)."""
    sid = params.get("MessageSid") or params.get("SmsSid") or ""
    if await _replayed(request, services, f"sms:{sid}" if sid else ""):
        return _xml()
    phone, body = params.get("From", ""), params.get("Body", "")
    await _handle(request, services, lambda: services.sms.handle(phone=phone, body=body, sid=sid))
    return _xml()


@router.post("/call", response_class=Response, openapi_extra=FORM)
async def inbound_call(params: SignedForm, request: Request, services: ServicesDep) -> Response:
    """A call to the site's number: from a worker's enrolled phone, asks for its code
    (keys, then #); any other call is rejected unanswered."""
    sid = params.get("CallSid", "")
    if await _replayed(request, services, f"call:{sid}" if sid else ""):
        return _xml()
    phone = params.get("From", "")
    return _xml(await _handle(request, services, lambda: services.fallback.call(number=phone)))


#: Which try at the code a call's keys are (the server writes it): a wrong code is
#: asked once more.
Attempt = Annotated[int, Query(ge=1, le=2, description="which try at the code: 1 or 2")]


@router.post("/call/code", response_class=Response, responses=answers(422), openapi_extra=FORM)
async def call_code(
    params: SignedForm, request: Request, services: ServicesDep, attempt: Attempt = 1
) -> Response:
    """The code a worker's phone typed in its call: the right one raises its alarm."""
    sid = params.get("CallSid", "")
    if await _replayed(request, services, f"call-code:{sid}:{attempt}" if sid else ""):
        return _xml()
    phone, digits = params.get("From", ""), params.get("Digits", "")
    twiml = await _handle(
        request,
        services,
        lambda: services.fallback.call_code(
            number=phone, digits=digits, call_sid=sid, attempt=attempt
        ),
    )
    return _xml(twiml)


@router.post("/voice", response_class=Response, responses=answers(422), openapi_extra=FORM)
async def voice_key(
    params: SignedForm, request: Request, services: ServicesDep, pages: Pages = ""
) -> Response:
    """A key pressed during a page call ("1" acknowledges); answers with what to say."""
    ids = _pages(pages)
    sid = params.get("CallSid", "")
    if await _replayed(request, services, f"voice:{sid}:{pages}" if sid else ""):
        return _xml()
    digits = params.get("Digits", "")
    twiml = await _handle(
        request, services, lambda: services.voice.handle(page_ids=ids, digits=digits)
    )
    return _xml(twiml)


@router.post("/status", response_class=Response, responses=answers(422), openapi_extra=FORM)
async def provider_status(
    params: SignedForm, request: Request, services: ServicesDep, pages: Pages = ""
) -> Response:
    """Delivery status of an SMS or a call. Never an acknowledgement."""
    ids = _pages(pages)
    status = params.get("MessageStatus") or params.get("CallStatus") or ""
    sid = params.get("MessageSid") or params.get("CallSid") or ""
    if await _replayed(request, services, f"status:{sid}:{status}" if sid else ""):
        return _xml()
    code = params.get("ErrorCode", "")
    await _handle(
        request,
        services,
        lambda: services.runner.provider_status(
            page_ids=ids, status=status, error_code=code, provider_sid=sid
        ),
    )
    return _xml()
