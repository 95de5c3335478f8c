"""``panicbutton provision --csv rooms.csv``: many room units' bundles in one run.

The CSV (UTF-8, a header ``device_id,room_id,label``, labels with commas in double
quotes) is checked whole before anything is written: every bad row is named by its
line in one message. Then each unit gets a bundle folder as ``panicbutton provision``
makes for one (:func:`server.units.provision.write_bundle`), and the run writes
beside them:

- ``passwd-lines``: every unit's line for the broker's password file;
- ``site-rooms.toml``: every room's ``[[rooms]]`` entry for the site file;
- with a wheelhouse, one copy of it, ``wheelhouse/``, that each bundle links to
  (``BUNDLE/wheelhouse -> ../wheelhouse``, where ``provision.sh`` looks).

Everything is made in a hidden folder inside the output folder and moved into place
only when all of it is written, so a run that fails (a full disk) leaves nothing
behind. The broker's ACL needs no change: its pattern covers every unit by user name.
"""

from __future__ import annotations

import csv
import io
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from server.errors import ServerError
from server.units.provision import Link, Unit, installer_files, write_bundle
from server.units.wheelhouse import Wheelhouse

HEADER: Final = ("device_id", "room_id", "label")
PASSWD_LINES: Final = "passwd-lines"  # noqa: S105 -- a file name, not a password
SITE_ROOMS: Final = "site-rooms.toml"
WHEELHOUSE: Final = "wheelhouse"
#: Bad rows named in one message; the rest are counted (a wrong file can have 10,000).
SHOWN: Final = 20


@dataclass(frozen=True, slots=True)
class Batch:
    """What one run wrote into ``folder``."""

    folder: Path
    units: tuple[Unit, ...]
    passwd_lines: tuple[str, ...]
    wheelhouse: bool

    @property
    def passwd_file(self) -> Path:
        return self.folder / PASSWD_LINES

    @property
    def site_file(self) -> Path:
        return self.folder / SITE_ROOMS


def read_units(path: Path) -> tuple[Unit, ...]:
    """The units in the CSV file at ``path``, or ServerError naming every bad row by its
    line number (and what to do)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ServerError(f"cannot read {path}: {exc.strerror}") from None
    try:
        # utf-8-sig: a spreadsheet's "CSV UTF-8" starts with a byte-order mark.
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ServerError(
            f"{path}: line {line} is not UTF-8: save the file as 'CSV UTF-8'"
        ) from None
    return parse_units(text, str(path))


def parse_units(text: str, source: str) -> tuple[Unit, ...]:
    """The units in CSV ``text`` (see :func:`read_units`)."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = [name.strip() for name in next(reader, [])]
    except csv.Error as exc:
        raise ServerError(f"{source}: line 1: {exc}") from None
    if tuple(header) != HEADER:
        raise ServerError(
            f"{source}: the first line must be the header {','.join(HEADER)} "
            f"(got {','.join(header) or 'an empty line'})"
        )
    rows: list[tuple[int, Unit]] = []
    bad: list[str] = []
    line = reader.line_num + 1
    while True:
        try:
            row = next(reader, None)
        except csv.Error as exc:
            bad.append(f'line {line}: {exc}: put a label holding commas or quotes in "..."')
            break  # the reader cannot find the next row's start after this
        if row is None:
            break
        if row and any(cell.strip() for cell in row):
            if len(row) != len(HEADER):
                bad.append(
                    f"line {line}: {len(row)} fields, expected {len(HEADER)} "
                    f'({",".join(HEADER)}): put a label holding commas in "..."'
                )
            else:
                device_id, room_id, label = (cell.strip() for cell in row)
                unit = Unit(device_id=device_id, room_id=room_id, label=label)
                bad += [f"line {line}: {problem}" for problem in unit.problems()]
                rows.append((line, unit))
        line = reader.line_num + 1
    bad += _duplicates(rows)
    if bad:
        bad.sort(key=lambda message: int(message.split(":", 1)[0].removeprefix("line ")))
        more = f"\n  ... and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
        raise ServerError(
            f"{source}: {len(bad)} problem{'s' if len(bad) > 1 else ''}, nothing written:\n  "
            + "\n  ".join(bad[:SHOWN])
            + more
        )
    if not rows:
        raise ServerError(f"{source}: no rooms under the header: add one line per unit")
    return tuple(unit for _, unit in rows)


def _duplicates(rows: Sequence[tuple[int, Unit]]) -> list[str]:
    found = []
    for what, attr in (("device id", "device_id"), ("room id", "room_id")):
        first: dict[str, int] = {}
        for line, unit in rows:
            value = getattr(unit, attr)
            if value in first:
                found.append(f"line {line}: {what} {value!r} is also on line {first[value]}")
            else:
                first[value] = line
    return found


def provision_many(
    *, units: Sequence[Unit], out: Path, link: Link, wheelhouse: Path | None = None
) -> Batch:
    """Write a bundle for each unit into ``out``, and the lines for the broker and the
    site file beside them; refuse (ServerError, nothing written) if any is there already.
    """
    taken = [u.device_id for u in units if (out / u.device_id).exists()]
    taken += [name for name in (PASSWD_LINES, SITE_ROOMS) if (out / name).exists()]
    if wheelhouse is not None:
        Wheelhouse(wheelhouse).check()
        # A wheelhouse already in place (given as --wheelhouse OUT/wheelhouse) is used as it is.
        if (out / WHEELHOUSE).exists() and (out / WHEELHOUSE).resolve() != wheelhouse.resolve():
            taken.append(WHEELHOUSE)
    if taken:
        more = f" and {len(taken) - SHOWN} more" if len(taken) > SHOWN else ""
        raise ServerError(
            f"{out} already holds {', '.join(taken[:SHOWN])}{more}: each unit is provisioned "
            "once; give another --out for a new batch, or remove them to issue new "
            "credentials (and replace their old lines)"
        )
    files = installer_files()
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".provision-", dir=out))
    try:
        lines, entries = [], []
        for unit in units:
            bundle = write_bundle(stage / unit.device_id, unit=unit, link=link, installer=files)
            if wheelhouse is not None:
                (bundle.folder / WHEELHOUSE).symlink_to(Path("..") / WHEELHOUSE)
            lines.append(bundle.passwd_line)
            entries.append(bundle.site_entry)
        (stage / PASSWD_LINES).write_text("".join(f"{line}\n" for line in lines))
        (stage / PASSWD_LINES).chmod(0o600)
        (stage / SITE_ROOMS).write_text(
            f"# {len(entries)} rooms for the site file, from `panicbutton provision --csv`\n\n"
            + "\n\n".join(entries)
            + "\n",
            encoding="utf-8",
        )
        if wheelhouse is not None and not (out / WHEELHOUSE).exists():
            shutil.copytree(wheelhouse, stage / WHEELHOUSE)
        for made in stage.iterdir():
            made.rename(out / made.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return Batch(
        folder=out,
        units=tuple(units),
        passwd_lines=tuple(lines),
        wheelhouse=wheelhouse is not None,
    )
