"""The configuration at server start: a site given (demo, tests) is applied; on an
upgrade (no configuration in the database yet), the site file is imported once."""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session, sessionmaker

from panicbutton.clock import Clock
from panicbutton.log.checkpoints import Signer
from server.errors import PeopleError, SiteError
from server.people.directory import SYSTEM
from server.roster.store import newest_version
from server.roster.transfer import apply, plan
from server.settings import Settings
from server.site import Site, load_site

log = logging.getLogger(__name__)

DIGEST_LABEL = b"panicbutton/config-digest"


def first_site(
    settings: Settings,
    sessions: sessionmaker[Session],
    *,
    site: Site | None,
    clock: Clock,
    signer: Signer,
) -> None:
    """Apply ``site`` if given; else, with no configuration yet, import the site file
    (its phones counted as confirmed: they were in use). Neither: say what to do."""
    with sessions.begin() as s:
        version = newest_version(s)
        source = "the site given"
        if site is None and version == 0 and settings.site_file.is_file():
            site = load_site(settings.site_file)
            source = f"site file {settings.site_file}"
        if site is None and version > 0 and settings.site_file.is_file():
            _warn_if_file_differs(s, settings, version, clock)
        if site is None:
            if version == 0:
                log.warning(
                    "no site configuration yet (no rooms, no duty): import a site file with "
                    "`panicbutton site import FILE`, or PUT /api/v1/site. Until then an alarm "
                    "still opens an incident, and pages whoever holds the staff or manager role "
                    "with a confirmed phone, if anyone"
                )
            return
        now = clock.now()
        applied = apply(
            s,
            site,
            by=SYSTEM,
            now=now,
            expected=None,
            phones_confirmed=True,
            retention=settings.retention(),
            digest_key=signer.derive(DIGEST_LABEL),
        )
    if applied != version:
        # A site given (demo, tests) is routine; a site file imported is news to the operator.
        log.log(
            logging.WARNING if source.startswith("site file") else logging.INFO,
            "%s imported as site configuration version %d (phones counted as confirmed)%s",
            source,
            applied,
            "; the site file is no longer read: change the configuration with the API or "
            "`panicbutton site import`"
            if source.startswith("site file")
            else "",
        )


def _warn_if_file_differs(session: Session, settings: Settings, version: int, clock: Clock) -> None:
    """Say, at every start, that an edited site file is not in force: someone who still
    edits it (or a configuration tool that does) would otherwise believe it is."""
    try:
        changes = plan(session, load_site(settings.site_file), clock.now()).lines
    except (SiteError, PeopleError) as exc:
        changes = [str(exc)]
    if changes:
        log.warning(
            "the site file %s differs from the configuration in force (version %d) and is "
            "no longer read; to apply it, run `panicbutton site import %s` (it shows the "
            "changes first): %d difference(s)",
            settings.site_file,
            version,
            settings.site_file,
            len(changes),
        )
