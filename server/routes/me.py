"""One's own account: who am I, sign out everywhere, personal API tokens, and one's
own ways to sign in (passkeys, password, TOTP).

A token is shown once, when it is made; afterwards only its id, label, scopes
and dates are listed. Its scopes are rights the caller holds; at each use it
carries only those its owner still holds.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Path, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from server.errors import PeopleError
from server.people.auth import Principal
from server.people.passwords import new_totp_secret, totp_uri
from server.people.signin import ThrottledError, WrongCredentialsError
from server.people.tables import ApiToken, Passkey
from server.routes.deps import (
    STRICT,
    Me,
    Problem,
    ServicesDep,
    SettingsDep,
    answers,
    client_address,
)

router = APIRouter(
    prefix="/api/v1/me", tags=["own account"], responses=answers(400), dependencies=STRICT
)
#: What an API token may not do to the account it belongs to.
BROWSER_ONLY = (
    "only from a signed-in browser, not with an API token: changing how you sign in "
    "(password, TOTP, passkeys) and making or revoking tokens"
)


def _browser(principal: Principal) -> None:
    """403 unless the caller is a signed-in browser: a leaked token must not be able
    to take the account over (new password, passkey or token)."""
    if principal.via != "session":
        raise HTTPException(403, BROWSER_ONLY)


class MeOut(BaseModel):
    """The caller: id, roles and the rights they carry (on this request)."""

    id: str
    roles: list[str]
    rights: list[str]
    via: str


class Ended(BaseModel):
    """How many browser sessions were ended."""

    ended: int


class TokenIn(BaseModel):
    """A new personal API token."""

    scopes: list[str] = Field(min_length=1, max_length=20, description="rights it carries")
    days: int = Field(default=90, ge=1, le=365, description="days until it expires")
    label: str = Field(default="", max_length=60, description="what it is for")


class TokenOut(BaseModel):
    """A personal API token, never its secret."""

    id: str
    label: str
    scopes: list[str]
    created: datetime
    expires: datetime
    last_used: datetime | None
    revoked: datetime | None

    @classmethod
    def of(cls, row: ApiToken) -> TokenOut:
        return cls(
            id=row.id,
            label=row.label,
            scopes=list(row.scopes),
            created=row.created_at,
            expires=row.expires_at,
            last_used=row.last_used_at,
            revoked=row.revoked_at,
        )


class NewToken(TokenOut):
    """A new token: ``token`` is shown this once; keep it in a password manager."""

    token: str


@router.get("", summary="Who you are: id, roles, rights", responses=answers(401, 403))
def me(principal: Me) -> MeOut:
    return MeOut(
        id=principal.person_id,
        roles=sorted(r.value for r in principal.roles),
        rights=sorted(r.value for r in principal.rights),
        via=principal.via,
    )


@router.post(
    "/sessions/end",
    summary="Sign out everywhere: end every browser session of yours",
    responses=answers(401, 403),
)
async def end_sessions(principal: Me, services: ServicesDep) -> Ended:
    count = await run_in_threadpool(services.signin.sign_out_everywhere, principal)
    return Ended(ended=count)


@router.get("/tokens", summary="Your personal API tokens", responses=answers(401, 403))
async def tokens(principal: Me, services: ServicesDep) -> list[TokenOut]:
    rows = await run_in_threadpool(services.signin.tokens, principal.person_id)
    return [TokenOut.of(row) for row in rows]


@router.post(
    "/tokens",
    status_code=201,
    summary="Make a personal API token (shown once)",
    responses=answers(400, 401, 403, 422),
)
async def create_token(body: TokenIn, principal: Me, services: ServicesDep) -> NewToken:
    _browser(principal)
    try:
        row, token = await run_in_threadpool(
            lambda: services.signin.create_token(
                principal, scopes=body.scopes, days=body.days, label=body.label
            )
        )
    except PeopleError as exc:
        raise HTTPException(422, str(exc)) from None
    return NewToken(**TokenOut.of(row).model_dump(), token=token)


@router.delete(
    "/tokens/{token_id}",
    status_code=204,
    summary="Revoke one of your personal API tokens",
    responses=answers(401, 403, 404),
)
async def revoke_token(
    principal: Me,
    services: ServicesDep,
    token_id: str = Path(max_length=24, description="the token's id (pbt_<id>_...)"),
) -> None:
    _browser(principal)
    done = await run_in_threadpool(services.signin.revoke_token, principal, token_id)
    if not done:
        raise HTTPException(
            404,
            f"you have no token {token_id!r} that is not revoked: list yours at "
            "GET /api/v1/me/tokens",
        )


class PasskeyIn(BaseModel):
    """A browser's new credential (PublicKeyCredential as JSON) and what to call it."""

    credential: dict[str, Any]
    label: str = Field(default="", max_length=60)


class PasskeyOut(BaseModel):
    """One of your passkeys."""

    id: str
    label: str
    created: datetime
    last_used: datetime | None

    @classmethod
    def of(cls, row: Passkey) -> PasskeyOut:
        return cls(id=row.id, label=row.label, created=row.created_at, last_used=row.last_used_at)


class PasswordIn(BaseModel):
    """A new password. ``current_password`` (and ``current_code`` while TOTP is on) is
    required when you have a password already. With ``totp_secret`` (from GET
    /api/v1/me/totp-seed) and its first ``totp_code``, TOTP is turned on; with
    ``totp_off``, off; otherwise it stays as it is."""

    password: str = Field(max_length=1000)
    current_password: str = Field(default="", max_length=1000)
    current_code: str = Field(default="", max_length=12)
    totp_secret: str = Field(default="", max_length=64)
    totp_code: str = Field(default="", max_length=12)
    totp_off: bool = False


class Seed(BaseModel):
    """A fresh TOTP seed for an authenticator app (not kept until confirmed)."""

    secret: str
    uri: str


@router.post(
    "/passkey-options",
    summary="Start adding a passkey: the options for navigator.credentials.create",
    responses={
        200: {
            "description": "PublicKeyCredentialCreationOptions, as JSON",
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
        **answers(401, 403),
    },
)
async def passkey_options(principal: Me, services: ServicesDep) -> Response:
    _browser(principal)
    options = await run_in_threadpool(services.signin.passkey_options_for, principal.person_id)
    return Response(options, media_type="application/json")


@router.post(
    "/passkeys",
    status_code=201,
    summary="Add a passkey (the browser's answer to the options)",
    responses=answers(400, 401, 403, 422),
)
async def add_passkey(body: PasskeyIn, principal: Me, services: ServicesDep) -> PasskeyOut:
    _browser(principal)
    try:
        row = await run_in_threadpool(
            lambda: services.signin.add_passkey(
                principal.person_id, credential=body.credential, label=body.label
            )
        )
    except PeopleError as exc:
        raise HTTPException(422, str(exc)) from None
    return PasskeyOut.of(row)


@router.get("/passkeys", summary="Your passkeys", responses=answers(401, 403))
async def passkeys(principal: Me, services: ServicesDep) -> list[PasskeyOut]:
    rows = await run_in_threadpool(services.signin.passkeys, principal.person_id)
    return [PasskeyOut.of(row) for row in rows]


@router.delete(
    "/passkeys/{key_id}",
    status_code=204,
    summary="Remove one of your passkeys",
    responses=answers(401, 403, 404, 422),
)
async def remove_passkey(
    principal: Me,
    services: ServicesDep,
    key_id: str = Path(max_length=1400, description="the passkey's id"),
) -> None:
    _browser(principal)
    try:
        done = await run_in_threadpool(services.signin.remove_passkey, principal.person_id, key_id)
    except PeopleError as exc:
        raise HTTPException(422, str(exc)) from None
    if not done:
        raise HTTPException(404, "you have no such passkey: list yours at GET /api/v1/me/passkeys")


@router.get(
    "/totp-seed",
    summary="A fresh TOTP seed to confirm with PUT /api/v1/me/password",
    responses=answers(401, 403),
)
def totp_seed(principal: Me, services: ServicesDep) -> Seed:
    _browser(principal)
    secret = new_totp_secret()
    return Seed(
        secret=secret,
        uri=totp_uri(secret, person_id=principal.person_id, issuer=services.signin.rp.name),
    )


@router.put(
    "/password",
    status_code=204,
    summary="Set or change your password (and turn TOTP on or off); your other "
    "browser sessions end",
    responses={
        **answers(400, 401, 403, 422),
        429: {
            "model": Problem,
            "description": "too many wrong current passwords: wait Retry-After seconds",
        },
    },
)
async def change_password(
    body: PasswordIn,
    principal: Me,
    services: ServicesDep,
    settings: SettingsDep,
    request: Request,
) -> None:
    _browser(principal)
    try:
        await run_in_threadpool(
            lambda: services.signin.change_password(
                principal,
                current_password=body.current_password,
                current_code=body.current_code,
                password=body.password,
                address=client_address(request, settings),
                totp_secret=body.totp_secret,
                totp_code=body.totp_code,
                totp_off=body.totp_off,
            )
        )
    except ThrottledError as exc:
        raise HTTPException(429, str(exc), headers={"Retry-After": str(exc.retry_after)}) from None
    except WrongCredentialsError as exc:
        raise HTTPException(403, str(exc)) from None
    except PeopleError as exc:
        raise HTTPException(422, str(exc)) from None
