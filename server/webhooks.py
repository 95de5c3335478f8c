"""Twilio webhooks: inbound SMS. Every request must carry a valid signature.

The signature covers the URL as Twilio called it, so the URL is built from
``PANICBUTTON_PUBLIC_BASE_URL`` (behind a TLS proxy the request's own URL
differs). A forged or unsigned request gets 403 and changes nothing; a
replayed one (same ``MessageSid``) is answered but not acted on twice.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from starlette.concurrency import run_in_threadpool
from twilio.request_validator import RequestValidator

from server.deps import RuntimeDep, SettingsDep

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
    return params


SignedForm = Annotated[dict[str, str], Depends(signed_form)]
router = APIRouter(prefix="/twilio", tags=["webhooks"])


@router.post("/sms", response_class=Response)
async def inbound_sms(params: SignedForm, runtime: RuntimeDep) -> Response:
    """A staff member's SMS reply: acknowledges by code; opt-out words are recorded."""
    sid = params.get("MessageSid") or params.get("SmsSid") or ""
    phone, body = params.get("From", ""), params.get("Body", "")
    replayed = bool(sid) and await run_in_threadpool(runtime.seen_webhook, f"sms:{sid}")
    if replayed:
        return Response(EMPTY_TWIML, media_type="application/xml")
    await run_in_threadpool(lambda: runtime.handle_sms(phone=phone, body=body))
    return Response(EMPTY_TWIML, media_type="application/xml")
