"""The standalone verifier: ``panicbutton audit verify BUNDLE [--key K] [--trusted CP]``.

:func:`verify_bundle` checks a whole bundle: its files (:mod:`.bundles`), then the
full log (:mod:`.integrity`) or the proven part of it (:mod:`.partial`), personal data
(:mod:`.commitments`) and the findings (:mod:`.meaning`). Like all of
:mod:`panicbutton.log` it needs only the standard library and ``cryptography``, so an
inspector can check an export with nothing of ours but this package
(``pip install '<source folder>[audit]'``); ``VERIFY.md`` in every bundle describes the
same algorithm for anyone who would rather write their own.

Exit status: 0 verified and no findings; 1 verification failed (the message
names the first bad entry or file); 2 the bundle or an option could not be
read; 3 verified, with findings (open alerts, late steps, lost alerts, silent
periods) listed; 4 the verifier itself failed (a bug: no verdict on the bundle).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from panicbutton.log import checkpoints, spec
from panicbutton.log.bundles import Bundle
from panicbutton.log.commitments import check_kept, personal_rows
from panicbutton.log.integrity import verify_full
from panicbutton.log.meaning import check_meaning
from panicbutton.log.partial import verify_partial
from panicbutton.log.verdict import BundleError, Report, VerificationError

#: The command's exit codes (``VERIFY.md`` section 12).
OK, FAILED, UNREADABLE, FINDINGS, VERIFIER_ERROR = 0, 1, 2, 3, 4


def verify_bundle(
    path: Path,
    *,
    key: checkpoints.VerifierKey | None = None,
    trusted_note: str | None = None,
    workers: int = 1,
) -> Report:
    bundle = Bundle(path)
    own_key = key is None
    if key is None:
        if "log-key.pub" not in bundle.files:
            raise BundleError(
                "no --key was given and the bundle has no log-key.pub: give the site's "
                "published verifier key with --key"
            )
        try:
            key = checkpoints.VerifierKey.parse(bundle.files["log-key.pub"].decode())
        except (UnicodeDecodeError, spec.LogFormatError) as exc:
            raise VerificationError(f"log-key.pub: {exc}") from None
    bundle.check_signature(key)
    bundle.check_files()
    trusted = None
    if trusted_note is not None:
        try:
            trusted = checkpoints.open_checkpoint(trusted_note, key)
        except spec.LogFormatError as exc:
            raise VerificationError(f"the trusted checkpoint: {exc}") from None
    notes = bundle.json_lines("checkpoints.jsonl")
    personal = personal_rows(bundle.lines("personal.jsonl"))
    scope = str(bundle.manifest.get("scope", ""))
    if scope == "full":
        report, parsed = verify_full(
            bundle.lines("entries.jsonl"),
            notes,
            key,
            trusted=trusted,
            personal=personal,
            workers=workers,
            sealed=True,
        )
    else:
        if trusted is not None:
            raise BundleError("--trusted needs a full bundle: a partial one holds no history")
        report, parsed = verify_partial(
            bundle.lines("entries.jsonl"),
            notes,
            key,
            bundle.canonical_lines("proofs.jsonl"),
            personal,
            scope=scope,
        )
    said = bundle.manifest.get("tree_size"), bundle.manifest.get("entries")
    held = report.size, report.size if report.disclosed is None else report.disclosed
    if said != held:
        raise VerificationError(
            f"manifest.json says tree_size {said[0]!r} and entries {said[1]!r}, but the bundle's "
            f"last checkpoint is of size {held[0]} and it holds {held[1]} entries"
        )
    if scope == "full" and bundle.manifest.get("personal") is True:
        check_kept(parsed, personal, report)
    check_meaning(parsed, report, full=scope == "full")
    if own_key:
        report.bundle_key = key
    return report


def _trusted_note(value: str) -> str:
    """A kept checkpoint: the note itself, or a line of a checkpoint file (a JSON string);
    from a file of several lines, the last."""
    p = Path(value)
    if not p.is_file() and "\n" not in value:
        raise BundleError(f"--trusted: no such file: {value}")
    text = _read_option(value)
    if not text.strip():
        raise BundleError(f"--trusted: {value} is empty: it holds no checkpoint")
    if "\r" in text:
        raise BundleError(
            "--trusted: the file has CR LF line ends (saved by an editor?): a signed note's "
            "lines end in LF only; use the file as it was exported"
        )
    if not text.lstrip().startswith('"'):
        return text
    last = text.strip().split("\n")[-1].strip()
    try:
        # NOTE: a JSON string nests nothing: anything else is refused before parsing,
        # so no nesting depth can stop the parser.
        if not last.startswith('"'):
            raise ValueError(last[:20])
        note = json.loads(last)
    except (ValueError, RecursionError):
        raise BundleError("--trusted: the last line is not a whole JSON string") from None
    if not isinstance(note, str):
        raise BundleError("--trusted: the last line is not a checkpoint note")
    return note


def _read_option(value: str) -> str:
    p = Path(value)
    try:
        # NOTE: bytes, decoded as they are: read_text would turn CR LF into LF unseen.
        return p.read_bytes().decode("utf-8") if p.is_file() else value
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"cannot read {value}: {exc}") from None


def cores() -> int:
    """The CPUs this process may use (all of them where the OS cannot say)."""
    affinity = getattr(os, "sched_getaffinity", None)  # Linux only, not macOS or Windows
    if affinity is not None:
        return len(affinity(0))
    return os.cpu_count() or 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="panicbutton audit verify",
        description="Verify an exported panicbutton incident log bundle (directory or .zip).",
    )
    parser.add_argument("bundle", type=Path)
    parser.add_argument(
        "--key",
        help="the log's verifier key (text or a file holding it), from a source you trust; "
        "default: the bundle's own log-key.pub",
    )
    parser.add_argument(
        "--trusted",
        help="a checkpoint you kept earlier (a file): the log must still contain it",
    )
    args = parser.parse_args(argv)
    try:
        key = checkpoints.VerifierKey.parse(_read_option(args.key)) if args.key else None
        trusted = _trusted_note(args.trusted) if args.trusted else None
        report = verify_bundle(args.bundle, key=key, trusted_note=trusted, workers=cores())
    except (BundleError, spec.LogFormatError) as exc:
        print(f"cannot verify: {exc}", file=sys.stderr)
        return UNREADABLE
    except VerificationError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return FAILED
    except Exception as exc:  # noqa: BLE001 - whatever it is, it is no verdict on the bundle
        # NOTE: every way a bundle can be malformed is checked and named above; anything
        # else is a fault of this program, and must never read as tampering (exit 1).
        print(
            f"VERIFIER ERROR: a bug in the verifier stopped it ({exc!r}); this is not a "
            "verdict on the bundle. Please report it, with the command you ran.",
            file=sys.stderr,
        )
        return VERIFIER_ERROR
    count = (
        f"{report.size} entries"
        if report.disclosed is None
        else f"{report.disclosed} of {report.size} entries"
    )
    print(
        f"verified: {count}, root {report.root.hex()}, "
        f"{report.checkpoints} signed checkpoint(s), "
        f"{report.personal_checked} personal data row(s) matched"
    )
    if report.bundle_key is not None:
        k = report.bundle_key
        print(
            f"note: the key came from the bundle itself: {k} (name {k.name}, key id "
            f"{k.id.hex()}); compare it with the key the site publishes"
        )
    for note in report.notes:
        print(f"note: {note}")
    if report.open_incidents:
        print("open (never acknowledged): " + ", ".join(map(str, report.open_incidents)))
    for finding in report.findings:
        print(f"finding: {finding}")
    return FINDINGS if report.findings or report.open_incidents else OK


if __name__ == "__main__":
    sys.exit(main())
