"""One's own account: who am I, sign out everywhere, personal API tokens.

A token is shown once, when it is made; afterwards only its id, label, scopes
and dates are listed. Its scopes are rights the caller holds; at each use it
carries only those its owner still holds.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, HTTPException, Path
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from server.errors import PeopleError
from server.people.tables import ApiToken
from server.routes.deps import Me, ServicesDep, answers

router = APIRouter(prefix="/api/v1/me", tags=["own account"])


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
    done = await run_in_threadpool(services.signin.revoke_token, principal, token_id)
    if not done:
        raise HTTPException(
            404,
            f"you have no token {token_id!r} that is not revoked: list yours at "
            "GET /api/v1/me/tokens",
        )
