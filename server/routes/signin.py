"""The sign-in pages: ``/sign-in`` (passkey or password + code), ``/enrol/{token}``
(a one-time link sets up a passkey or a password), ``/account`` and ``/sign-out``.

These routes have no principal yet by nature (or, for sign-out, check the session
and its form token themselves). Their forms carry a CSRF token bound to a
pre-session cookie (double submit): a form field or ``X-CSRF-Token`` header equal
to the cookie. The session cookie is ``HttpOnly``, ``Secure`` (but the demo on
loopback), ``SameSite=Strict``, path ``/``.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from server.errors import PeopleError
from server.people.auth import Principal
from server.people.passwords import new_totp_secret, totp_uri
from server.people.roles import Right
from server.people.signin import LinkGoneError, ThrottledError, WrongCredentialsError
from server.routes.deps import (
    CSRF_HEADER,
    MEANING,
    ServicesDep,
    SettingsDep,
    answers,
    authenticate,
    client_address,
    need,
    session_cookie,
    text_body,
)
from server.settings import Settings

PAGES: dict[int | str, dict[str, Any]] = {200: text_body("text/html", description="the page")}
router = APIRouter(tags=["sign-in"], responses=PAGES)
_pages = Environment(
    loader=PackageLoader("server", "templates"), autoescape=select_autoescape(["html"])
)


def _json(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"type": "object"}}},
    }


def _html_errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Statuses answered with a page; a 422 also as JSON (a form that does not follow
    the schema: FastAPI's list of what is wrong)."""
    out: dict[int | str, dict[str, Any]] = {
        code: text_body("text/html", description=MEANING[code]) for code in codes
    }
    if 422 in codes:
        out[422]["content"]["application/json"] = {
            "schema": {"$ref": "#/components/schemas/Invalid"}
        }
    return out


MEANING_HERE = {
    303: "done: on to the next page (with the session cookie when signed in)",
    429: "too many failed sign-ins for this account or address: wait Retry-After seconds",
}


def _page(
    template: str,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    problem: str = "",
    **values: Any,
) -> HTMLResponse:
    """A page from ``server/templates``, private, its scripts allowed by a fresh nonce."""
    nonce = secrets.token_urlsafe(16)
    body = _pages.get_template(template).render(nonce=nonce, problem=problem, **values)
    return HTMLResponse(
        body,
        status_code=status,
        headers={
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Content-Security-Policy": f"default-src 'none'; script-src 'nonce-{nonce}'; "
            "style-src 'unsafe-inline'; connect-src 'self'; form-action 'self'; "
            "frame-ancestors 'none'",
            **(headers or {}),
        },
    )


def _pre_cookie(settings: Settings) -> str:
    return "__Host-pb_presignin" if settings.cookies_secure else "pb_presignin"


def _with_pre(response: Response, settings: Settings, value: str) -> Response:
    response.set_cookie(
        _pre_cookie(settings),
        value,
        httponly=True,
        secure=settings.cookies_secure,
        samesite="strict",
        path="/",
    )
    return response


def _pre_token(request: Request, settings: Settings) -> str:
    """The pre-session token of this browser, or a new one."""
    return request.cookies.get(_pre_cookie(settings), "") or secrets.token_urlsafe(32)


def _check_pre(request: Request, settings: Settings, given: str) -> None:
    expected = request.cookies.get(_pre_cookie(settings), "")
    if not expected or not given or not hmac.compare_digest(expected, given):
        raise HTTPException(
            403, "the form's CSRF token is missing or wrong: reload the page and try again"
        )


def _forget(response: Response, settings: Settings, name: str) -> None:
    """Delete a cookie with the attributes it was set with: a browser ignores the
    deletion of a ``__Host-`` cookie that is not ``Secure``."""
    response.delete_cookie(
        name, path="/", secure=settings.cookies_secure, httponly=True, samesite="strict"
    )


def _signed_in(response: Response, settings: Settings, cookie: str) -> Response:
    response.set_cookie(
        session_cookie(settings),
        cookie,
        httponly=True,
        secure=settings.cookies_secure,
        samesite="strict",
        path="/",
    )
    _forget(response, settings, _pre_cookie(settings))
    return response


def _agent(request: Request) -> str:
    return request.headers.get("user-agent", "")


def _gone(exc: LinkGoneError) -> HTMLResponse:
    return _page("message.html", status=410, title="This link no longer works", message=str(exc))


# -- signing in ------------------------------------------------------------------


@router.get("/sign-in", summary="The sign-in page: passkey, or password and code")
def sign_in_page(request: Request, settings: SettingsDep) -> Response:
    csrf = _pre_token(request, settings)
    return _with_pre(
        _page("sign_in.html", title="Sign in", csrf=csrf, person_id=""), settings, csrf
    )


@router.post(
    "/sign-in/password",
    summary="Sign in with id, password and (if on) a TOTP code",
    status_code=303,
    response_class=RedirectResponse,
    responses={
        303: {"description": MEANING_HERE[303]},
        **_html_errors(401, 422),
        **answers(400, 403),
        429: text_body("text/html", description=MEANING_HERE[429]),
    },
)
async def sign_in_password(
    *,
    request: Request,
    services: ServicesDep,
    settings: SettingsDep,
    person_id: Annotated[str, Form(alias="id", min_length=1, max_length=200)],
    password: Annotated[str, Form(min_length=1, max_length=1000)],
    csrf: Annotated[str, Form(max_length=100)] = "",
    code: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    _check_pre(request, settings, csrf)
    try:
        cookie = await run_in_threadpool(
            services.signin.with_password,
            person_id=person_id,
            password=password,
            code=code,
            address=client_address(request, settings),
            agent=_agent(request),
        )
    except ThrottledError as exc:
        return _page(
            "sign_in.html",
            status=429,
            headers={"Retry-After": str(exc.retry_after)},
            problem=str(exc),
            title="Sign in",
            csrf=csrf,
            person_id=person_id,
        )
    except WrongCredentialsError as exc:
        return _page(
            "sign_in.html",
            status=401,
            problem=str(exc),
            title="Sign in",
            csrf=csrf,
            person_id=person_id,
        )
    return _signed_in(RedirectResponse("/console", status_code=303), settings, cookie)


def _check_header(request: Request, settings: Settings) -> None:
    _check_pre(request, settings, request.headers.get(CSRF_HEADER, ""))


#: A browser's answer to a passkey ceremony (PublicKeyCredential, as JSON).
Credential = Annotated[dict[str, Any], Body(embed=True)]


@router.post(
    "/sign-in/passkey/options",
    summary="Start a passkey sign-in: the options for navigator.credentials.get",
    responses={200: _json("PublicKeyCredentialRequestOptions, as JSON"), **answers(400, 403)},
)
async def passkey_options(
    request: Request, services: ServicesDep, settings: SettingsDep
) -> Response:
    _check_header(request, settings)
    options = await run_in_threadpool(services.signin.passkey_options)
    return Response(options, media_type="application/json")


@router.post(
    "/sign-in/passkey",
    summary="Finish a passkey sign-in: the browser's answer; sets the session cookie",
    responses={
        200: _json("signed in: the session cookie is set"),
        **answers(400, 401, 403, 422),
        429: {"model": dict[str, str], "description": MEANING_HERE[429]},
    },
)
async def passkey_sign_in(
    request: Request, services: ServicesDep, settings: SettingsDep, credential: Credential
) -> Response:
    _check_header(request, settings)
    try:
        cookie = await run_in_threadpool(
            services.signin.with_passkey,
            credential=credential,
            address=client_address(request, settings),
            agent=_agent(request),
        )
    except ThrottledError as exc:
        return JSONResponse(
            {"detail": str(exc)}, status_code=429, headers={"Retry-After": str(exc.retry_after)}
        )
    except WrongCredentialsError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=401)
    return _signed_in(JSONResponse({"signed_in": True}), settings, cookie)


# -- signed in -------------------------------------------------------------------


@router.get("/account", summary="Who is signed in, and the sign-out button", responses=answers(401))
def account(principal: Annotated[Principal, Depends(need(Right.SELF))]) -> Response:
    return _page(
        "account.html",
        title="Your account",
        person_id=principal.person_id,
        roles=", ".join(sorted(r.value for r in principal.roles)),
        csrf=principal.csrf or "",
    )


@router.post(
    "/sign-out",
    summary="Sign out of this browser (the form carries the session's CSRF token)",
    status_code=303,
    response_class=RedirectResponse,
    responses={303: {"description": "signed out: on to /sign-in"}, **answers(400, 403, 422)},
)
async def sign_out(
    request: Request,
    services: ServicesDep,
    settings: SettingsDep,
    csrf: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    principal = await run_in_threadpool(authenticate, request, services, settings, None)
    if principal is not None:
        if not principal.csrf or not hmac.compare_digest(csrf, principal.csrf):
            raise HTTPException(
                403, "the form's CSRF token is missing or wrong: reload the page and try again"
            )
        await run_in_threadpool(
            services.signin.sign_out, person_id=principal.person_id, handle=principal.handle
        )
    response = RedirectResponse("/sign-in", status_code=303)
    _forget(response, settings, session_cookie(settings))
    return response


# -- enrolment and recovery links ------------------------------------------------

LinkPages = _html_errors(410)


@router.get(
    "/enrol/{token}",
    summary="A one-time link's page: set up a passkey or a password (+ TOTP)",
    responses=LinkPages,
)
def enrol_page(
    token: str, request: Request, services: ServicesDep, settings: SettingsDep
) -> Response:
    try:
        person_id, name, purpose = services.signin.link_person(token)
    except LinkGoneError as exc:
        return _gone(exc)
    csrf = _pre_token(request, settings)
    secret = new_totp_secret()
    page = _page(
        "enrol.html",
        title="Set up your sign-in" if purpose == "enrol" else "Recover your sign-in",
        person_id=person_id,
        name=name,
        purpose=purpose,
        token=token,
        csrf=csrf,
        totp_secret=secret,
        totp_uri=totp_uri(secret, person_id=person_id, issuer=services.signin.rp.name),
    )
    return _with_pre(page, settings, csrf)


@router.post(
    "/enrol/{token}/password",
    summary="Set a password (and optionally TOTP) through a one-time link",
    status_code=303,
    response_class=RedirectResponse,
    responses={
        303: {"description": MEANING_HERE[303]},
        **_html_errors(410, 422),
        **answers(400, 403),
    },
)
async def enrol_password(
    *,
    token: str,
    request: Request,
    services: ServicesDep,
    settings: SettingsDep,
    password: Annotated[str, Form(min_length=1, max_length=1000)],
    csrf: Annotated[str, Form(max_length=100)] = "",
    totp_secret: Annotated[str, Form(max_length=100)] = "",
    totp_code: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    _check_pre(request, settings, csrf)
    try:
        cookie = await run_in_threadpool(
            services.signin.enrol_password,
            token,
            password=password,
            totp_secret=totp_secret,
            totp_code=totp_code,
            agent=_agent(request),
        )
    except LinkGoneError as exc:
        return _gone(exc)
    except PeopleError as exc:
        # The link is still unused (the transaction rolled back): the page again.
        return _page(
            "message.html",
            status=422,
            title="Not set",
            problem=str(exc),
            message="Nothing was changed.",
            link=f"/enrol/{token}",
            link_text="Back to the set-up page",
        )
    return _signed_in(RedirectResponse("/console", status_code=303), settings, cookie)


@router.post(
    "/enrol/{token}/passkey/options",
    summary="Start registering a passkey through a one-time link",
    responses={
        200: {"description": "PublicKeyCredentialCreationOptions as JSON"},
        **answers(403, 410),
    },
)
async def enrol_passkey_options(
    token: str, request: Request, services: ServicesDep, settings: SettingsDep
) -> Response:
    _check_header(request, settings)
    try:
        options = await run_in_threadpool(services.signin.enrol_passkey_options, token)
    except LinkGoneError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=410)
    return Response(options, media_type="application/json")


@router.post(
    "/enrol/{token}/passkey",
    summary="Finish registering a passkey through a one-time link; signs in",
    responses={
        200: _json("registered, and signed in: the session cookie is set"),
        **answers(400, 403, 410, 422),
    },
)
async def enrol_passkey(
    *,
    token: str,
    request: Request,
    services: ServicesDep,
    settings: SettingsDep,
    credential: Credential,
    label: Annotated[str, Body(embed=True, max_length=60)] = "",
) -> Response:
    _check_header(request, settings)
    try:
        cookie = await run_in_threadpool(
            services.signin.enrol_passkey,
            token,
            credential=credential,
            label=label,
            agent=_agent(request),
        )
    except LinkGoneError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=410)
    except PeopleError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=422)
    return _signed_in(JSONResponse({"signed_in": True}), settings, cookie)
