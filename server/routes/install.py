"""Installing room units from the server: the enrolment code, the wheelhouse, the report.

- ``POST /api/v1/enrol``: a fresh unit's first-boot script trades its one-time code
  for its bundle (config and secrets; :mod:`server.units.enrolment`). Anonymous, so an
  address with too many failed codes is refused for a while (429).
- ``GET /api/v1/devices/{id}/wheelhouse``: everything the unit installs, as one tar,
  for the unit's token (:mod:`server.units.wheelhouse`); pip checks each wheel's hash.
- ``POST /api/v1/devices/{id}/install``: what the unit's ``device check`` said after an
  install, an upgrade or a rollback; shown on the console's units page.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.concurrency import run_in_threadpool

from server.errors import ServerError
from server.people.signin import ThrottledError
from server.routes.deps import Problem, ServicesDep, SettingsDep, answers, client_address
from server.routes.devices import DeviceRoom
from server.units import enrolment
from server.units.wheelhouse import Wheelhouse, tar_of

router = APIRouter(prefix="/api/v1", tags=["room units"])


#: The one answer to a code that is unknown, used or expired (which of them is not said).
UNKNOWN_CODE = (
    "this enrolment code is unknown, used or expired: on the console's Units page, add "
    "the unit again with the same room id and unit id and the server's address; that "
    "makes new secrets and a new code (and a new line for the broker's password file). "
    "Put the new code in enrol.txt"
)


class UnitEnrolIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: Annotated[str, StringConstraints(min_length=1, max_length=40)] = Field(
        description="the one-time code from the console's units page, like ABCD-EFGH-JKLM-NPQR"
    )


class BundleOut(BaseModel):
    device_id: str
    files: dict[str, str] = Field(
        description="file name -> text: device.toml, mqtt-password, device-token, ca.crt"
    )


@router.post(
    "/enrol",
    response_model=BundleOut,
    summary="A new unit's bundle, for its one-time enrolment code",
    responses={
        **answers(400, 422),
        404: {"model": Problem, "description": "the code is unknown, used or expired"},
        429: {
            "model": Problem,
            "description": f"{enrolment.PER_ADDRESS} codes from this address failed within "
            f"{enrolment.WINDOW.seconds // 60} minutes: wait Retry-After seconds",
        },
    },
)
async def enrol(
    body: UnitEnrolIn, request: Request, services: ServicesDep, settings: SettingsDep
) -> BundleOut:
    """Within 7 days of the code being made. Once used, the code gives the same bundle
    again for 15 minutes (a unit whose answer was lost asks again), then never."""
    address = client_address(request, settings)
    try:
        got = await run_in_threadpool(
            lambda: enrolment.redeem(
                services.sessions, body.code, address=address, now=services.clock.now()
            )
        )
    except ThrottledError as exc:
        raise HTTPException(429, str(exc), headers={"Retry-After": str(exc.retry_after)}) from None
    if got is None:
        raise HTTPException(404, UNKNOWN_CODE)
    return BundleOut(device_id=got.device_id, files=got.files)


@router.get(
    "/devices/{device_id}/wheelhouse",
    response_class=Response,
    summary="What a unit installs: the agent's wheel, its dependencies and the installer",
    responses={
        200: {
            "description": "an uncompressed tar: wheels, requirements.txt with hashes, VERSION",
            "content": {"application/x-tar": {"schema": {"type": "string", "format": "binary"}}},
        },
        **answers(401, 503),
    },
)
async def wheelhouse(room: DeviceRoom, settings: SettingsDep) -> Response:
    if settings.wheelhouse_dir is None:
        raise HTTPException(
            503,
            "this server serves no wheelhouse: build one with `panicbutton wheelhouse build "
            "--out DIR` and set PANICBUTTON_WHEELHOUSE_DIR=DIR",
        )
    house = Wheelhouse(settings.wheelhouse_dir)
    try:
        body = await run_in_threadpool(tar_of, house)
    except (ServerError, OSError) as exc:
        raise HTTPException(503, str(exc)) from None
    return Response(
        body,
        media_type="application/x-tar",
        headers={"X-Panicbutton-Version": house.version, "Cache-Control": "no-store"},
    )


class InstallIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["install", "upgrade", "rollback"]
    version: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    passed: bool = Field(description="whether `panicbutton device check` passed")
    lines: list[Annotated[str, StringConstraints(max_length=enrolment.MAX_LINE)]] = Field(
        default=[], max_length=enrolment.MAX_LINES, description="what the check printed"
    )


@router.post(
    "/devices/{device_id}/install",
    status_code=204,
    summary="A unit reports an install, an upgrade or a rollback, and its check",
    responses=answers(400, 401, 422),
)
async def install_report(body: InstallIn, room: DeviceRoom, services: ServicesDep) -> None:
    def record() -> None:
        with services.sessions.begin() as s:
            enrolment.record_install(
                s,
                device_id=room.device,
                action=body.action,
                version=body.version,
                passed=body.passed,
                lines=body.lines,
                now=services.clock.now(),
            )

    await run_in_threadpool(record)
