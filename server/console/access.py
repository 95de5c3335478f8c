"""Who may open a console page: the signed-in person with the right it needs.

A browser that is not signed in is sent to ``/sign-in`` (303); a person without
the right gets a page saying so (403). The checks are the API's own
(:func:`server.routes.deps.need`), so a page and its API route agree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from server.console import pages
from server.console.pages import Reader
from server.people.roles import RIGHTS, Right
from server.routes.deps import ServicesDep, SettingsDep, authenticate


class PageRefusedError(Exception):
    """A console page the reader may not open: a redirect to sign in, or a 403 page."""

    def __init__(
        self,
        status: int,
        *,
        location: str = "",
        right: str = "",
        roles: str = "",
        language: str = "en",
    ) -> None:
        super().__init__(f"needs the right {right!r} ({roles})" if right else location)
        self.status = status
        self.location = location
        self.right = right
        self.roles = roles
        self.language = language


def viewer(right: Right, *or_rights: Right) -> Callable[..., object]:
    """A dependency: the :class:`Reader` of a page that needs ``right`` (or any of
    ``or_rights``)."""

    async def dependency(request: Request, services: ServicesDep, settings: SettingsDep) -> Reader:
        principal = await run_in_threadpool(authenticate, request, services, settings, None)
        if principal is None:
            raise PageRefusedError(303, location="/sign-in")
        if not any(principal.can(r) for r in (right, *or_rights)):
            holders = ", ".join(sorted(r.value for r, rights in RIGHTS.items() if right in rights))
            me = await run_in_threadpool(pages.reader, services, principal)
            raise PageRefusedError(403, right=right.value, roles=holders, language=me.language)
        return await run_in_threadpool(pages.reader, services, principal)

    # Read by tests/server/test_rights.py, like need()'s.
    dependency.right = right  # type: ignore[attr-defined]
    return dependency


#: The reader of a page that needs the right named.
BoardPage = Annotated[Reader, Depends(viewer(Right.BOARD))]
RecordsPage = Annotated[Reader, Depends(viewer(Right.RECORDS))]
ReviewPage = Annotated[Reader, Depends(viewer(Right.REVIEW))]
ExportPage = Annotated[Reader, Depends(viewer(Right.EXPORT))]
PeoplePage = Annotated[Reader, Depends(viewer(Right.PEOPLE))]
RosterPage = Annotated[Reader, Depends(viewer(Right.ROSTER))]
UnitsPage = Annotated[Reader, Depends(viewer(Right.UNITS))]
PresencePage = Annotated[Reader, Depends(viewer(Right.PRESENCE))]
SelfPage = Annotated[Reader, Depends(viewer(Right.SELF))]
KioskPage = Annotated[Reader, Depends(viewer(Right.KIOSK))]
#: Anyone signed in: a person (their own account) or a reception screen.
SignedInPage = Annotated[Reader, Depends(viewer(Right.SELF, Right.KIOSK))]


async def refused(_request: Request, exc: Exception) -> Response:
    """The answer to :class:`PageRefusedError`: the redirect, or a plain page saying why."""
    assert isinstance(exc, PageRefusedError)
    if exc.location:
        return RedirectResponse(exc.location, status_code=exc.status, headers=dict(pages.HEADERS))
    body = pages.render_text(
        "refused.html", language=exc.language, lang=exc.language, right=exc.right, roles=exc.roles
    )
    return HTMLResponse(body, status_code=exc.status, headers=dict(pages.HEADERS))
