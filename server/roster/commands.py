"""``panicbutton site import`` and ``panicbutton site export`` on the server's database."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from panicbutton.clock import SystemClock
from panicbutton.log.checkpoints import Signer
from server.db import make_engine, migrate, sessions
from server.log.signing import load_signer
from server.people.directory import SYSTEM
from server.roster import transfer
from server.roster.start import DIGEST_LABEL
from server.settings import Settings
from server.site import load_site


def _settings() -> Settings:
    return Settings(demo=True)  # the database URL and log key are all that is needed


def _digest_key(settings: Settings) -> bytes:
    if settings.log_key_file is not None:
        return load_signer(settings.log_key_file).derive(DIGEST_LABEL)
    return Signer.generate("panicbutton.demo/site").derive(DIGEST_LABEL)


def import_site(path: Path, *, confirm: Callable[[list[str]], bool], phones_confirmed: bool) -> str:
    """Read ``path``, show its changes to ``confirm``, apply them in one transaction."""
    site = load_site(path)
    settings = _settings()
    engine = make_engine(settings.database_url)
    try:
        migrate(engine)
        maker = sessions(engine)
        now = SystemClock().now()
        with maker() as s:
            plan = transfer.plan(s, site, now)
        if not confirm(plan.lines):
            return "nothing applied"
        with maker.begin() as s:
            version = transfer.apply(
                s,
                site,
                by=SYSTEM,
                now=now,
                expected=plan.version,
                phones_confirmed=phones_confirmed,
                retention=settings.retention(),
                digest_key=_digest_key(settings),
            )
        return f"applied: the configuration in force is version {version}"
    finally:
        engine.dispose()


def export_site(out: Path | None) -> str:
    """The configuration in force as a site file: written to ``out`` (what was done is
    returned), or returned itself."""
    settings = _settings()
    engine = make_engine(settings.database_url)
    try:
        migrate(engine)
        with sessions(engine)() as s:
            text, warnings = transfer.export(s, SystemClock().now())
    finally:
        engine.dispose()
    notes = "".join(f"# warning: {w}\n" for w in warnings)
    if out is None:
        return notes + text
    out.write_text(text, encoding="utf-8")
    out.chmod(0o600)
    return notes + f"written to {out} (it holds names and phone numbers: keep it private)\n"
