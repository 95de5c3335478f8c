"""What a verifier written from VERIFY.md alone found, run beside ours (issue 9): oversized
numbers, impossible dates, unread options and lenient parsing must give the verdict
VERIFY.md promises, never a verifier error, and silence at the end of a log is reported."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from panicbutton.log import canonical, spec
from tests.log.test_verify import (
    KEY,
    SALT,
    SIGNER,
    incident_log,
    proof_lines,
    quiet_log,
    replay,
    run,
    write_bundle,
)

HUGE = b"9" * 5000


# -- 1. oversized numbers and nesting ---------------------------------------------------
def test_a_huge_integer_in_the_manifest_is_an_unreadable_bundle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = quiet_log()
    bundle = write_bundle(tmp_path / "b", log.entries, log.notes)
    m = bundle / "manifest.json"
    m.write_bytes(m.read_bytes().replace(b'"entries":', b'"entries":' + HUGE + b',"e":', 1))

    code, _, err = run(capsys, bundle)

    assert code == 2
    assert err.startswith("cannot verify: manifest.json: ")
    assert "more than 16 digits" in err


def test_a_huge_integer_in_an_entry_fails_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = quiet_log()
    entries = list(log.entries)
    entries[5] = entries[5].replace(b'"page":1', b'"page":' + HUGE)
    bundle = write_bundle(tmp_path / "b", entries, log.notes)

    code, _, err = run(capsys, bundle)

    assert code == 1
    assert err.startswith("FAILED: entry 5: ")
    assert "more than 16 digits" in err


@pytest.mark.parametrize("size", ["9" * 5000, "\u0663", "1" * 17])
def test_a_checkpoint_size_of_huge_or_non_ascii_digits_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], size: str
) -> None:
    log = quiet_log()
    text = f"{SIGNER.name}\n{size}\n{'A' * 43}=\n"
    notes = [*log.notes, SIGNER._note(text)]  # a note no server would sign
    bundle = write_bundle(tmp_path / "b", log.entries, notes)

    code, _, err = run(capsys, bundle)

    assert code == 1
    assert err.startswith(f"FAILED: checkpoint {len(notes)} in checkpoints.jsonl: ")
    assert "tree size" in err


def test_a_deeply_nested_trusted_line_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = quiet_log()
    bundle = write_bundle(tmp_path / "b", log.entries, log.notes)
    kept = tmp_path / "kept.jsonl"
    kept.write_text(json.dumps(log.notes[-1]) + "\n" + "[" * 100_000 + "]" * 100_000 + "\n")

    code, _, err = run(capsys, bundle, "--trusted", str(kept))

    assert code == 2
    assert err == "cannot verify: --trusted: the last line is not a whole JSON string\n"


# -- 2. impossible dates ------------------------------------------------------------------
@pytest.mark.parametrize(
    "at",
    [
        "2026-13-28T21:04:05.123Z",  # month 13
        "2026-02-30T21:04:05.123Z",  # 30 February
        "2026-11-28T25:04:05.123Z",  # hour 25
        "\u0662026-11-28T21:04:05.123Z",  # an Arabic-Indic digit
        "\uff12026-11-28T21:04:05.123Z",  # a fullwidth digit
    ],
)
def test_an_impossible_date_fails_the_format_check_naming_the_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], at: str
) -> None:
    events = list(quiet_log().events)
    # page.queued: no finding reads it, so only the format check can see it.
    assert events[5].type_ == "page.queued"
    events[5] = dataclasses.replace(events[5], at=at)
    log = replay(events)  # chained and signed as the server would
    bundle = write_bundle(tmp_path / "b", log.entries, log.notes)

    code, _, err = run(capsys, bundle)

    assert code == 1
    assert err.startswith("FAILED: entry 5: at ")
    assert "not a real date and time" in err or "YYYY-MM-DDTHH:MM:SS.mmmZ" in err


# -- 3. the key's id is printed when it came from the bundle -----------------------------
def test_without_a_key_the_bundle_key_and_its_id_are_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = quiet_log()
    bundle = write_bundle(tmp_path / "b", log.entries, log.notes)

    code, out, _ = run(capsys, bundle, key=None)

    assert code == 0
    assert (
        f"note: the key came from the bundle itself: {KEY} (name {KEY.name}, key id "
        f"{KEY.id.hex()}); compare it with the key the site publishes\n"
    ) in out


# -- 4. files in a subfolder --------------------------------------------------------------
def test_a_file_in_a_subfolder_of_a_directory_bundle_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = quiet_log()
    bundle = write_bundle(tmp_path / "b", log.entries, log.notes)
    (bundle / "extra").mkdir()
    (bundle / "extra" / "entries.jsonl").write_bytes(b"not checked\n")

    code, _, err = run(capsys, bundle)

    assert code == 1
    assert err == (
        "FAILED: extra/entries.jsonl: in the bundle but not in its manifest (added later?)\n"
    )


# -- 5. silence at the end of the log -----------------------------------------------------
def test_silence_after_the_last_heartbeat_is_a_finding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = quiet_log()
    beat = log.events[-1].at
    log.add("device.online", device="unit-room-3", after=25 * 60)
    bundle = write_bundle(tmp_path / "b", log.entries, log.notes)

    code, out, _ = run(capsys, bundle)

    assert code == 3
    assert (
        f"finding: entry {len(log.entries) - 1}: no heartbeat from {beat} to the log's last "
        f"entry at {log.events[-1].at}: the server was not running or not writing its log\n"
    ) in out


def test_a_short_wait_after_the_last_heartbeat_is_no_finding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = quiet_log()
    log.add("device.online", device="unit-room-3", after=19 * 60)
    bundle = write_bundle(tmp_path / "b", log.entries, log.notes)

    code, out, _ = run(capsys, bundle)

    assert (code, "finding" in out) == (0, False)


# -- 6. no key at all ---------------------------------------------------------------------
def test_no_key_and_no_log_key_pub_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = quiet_log()
    bundle = write_bundle(tmp_path / "b", log.entries, log.notes)
    (bundle / "log-key.pub").unlink()

    code, _, err = run(capsys, bundle, key=None)

    assert code == 2
    assert err == (
        "cannot verify: no --key was given and the bundle has no log-key.pub: give the "
        "site's published verifier key with --key\n"
    )


# -- 7. a mistyped --trusted --------------------------------------------------------------
def test_a_trusted_path_that_does_not_exist_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = quiet_log()
    bundle = write_bundle(tmp_path / "b", log.entries, log.notes)
    missing = tmp_path / "kept-checkpint.txt"

    code, _, err = run(capsys, bundle, "--trusted", str(missing))

    assert code == 2
    assert err == f"cannot verify: --trusted: no such file: {missing}\n"


def test_an_empty_trusted_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = quiet_log()
    bundle = write_bundle(tmp_path / "b", log.entries, log.notes)
    empty = tmp_path / "kept.txt"
    empty.write_text("\n")

    code, _, err = run(capsys, bundle, "--trusted", str(empty))

    assert code == 2
    assert err == f"cannot verify: --trusted: {empty} is empty: it holds no checkpoint\n"


# -- 8. leniencies -----------------------------------------------------------------------
def test_a_trusted_note_with_crlf_line_ends_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = quiet_log()
    bundle = write_bundle(tmp_path / "b", log.entries, log.notes)
    kept = tmp_path / "kept.txt"
    kept.write_bytes(log.notes[-1].replace("\n", "\r\n").encode())

    code, _, err = run(capsys, bundle, "--trusted", str(kept))

    assert code == 2
    assert err.startswith("cannot verify: --trusted: the file has CR LF line ends")


def test_uppercase_hex_in_a_proof_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log, chosen, _ = incident_log()
    size = len(log.entries)
    proofs = proof_lines(log.entries, chosen, size)
    upper = json.loads(proofs[1])
    upper["path"] = [h.upper() for h in upper["path"]]
    proofs[1] = canonical.dumps(upper)
    bundle = write_bundle(
        tmp_path / "b",
        [log.entries[n] for n in chosen],
        [log.notes[-1]],
        scope="incident:7",
        tree_size=size,
        proofs=proofs,
    )

    code, _, err = run(capsys, bundle)

    assert code == 1
    assert err == (
        f"FAILED: entry {chosen[1]}: its proof's path is not a list of hashes as 64 "
        "lowercase hex digits\n"
    )


# -- docs gaps settled in code -------------------------------------------------------------
def test_an_entry_of_a_person_bundle_that_does_not_name_the_person_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log, _, row = incident_log()
    size = len(log.entries)
    mine = [
        n for n, e in enumerate(log.events) if "s-0041" in (e.data.get("staff"), e.data.get("by"))
    ]
    chosen = sorted([*mine, 0])  # server.started names nobody

    def person_bundle(path: Path, chosen: list[int]) -> Path:
        return write_bundle(
            path,
            [log.entries[n] for n in chosen],
            [log.notes[-1]],
            scope="person:s-0041",
            tree_size=size,
            proofs=proof_lines(log.entries, chosen, size),
            personal=[row],
        )

    assert run(capsys, person_bundle(tmp_path / "ok", mine))[0] == 0
    code, _, err = run(capsys, person_bundle(tmp_path / "b", chosen))

    assert code == 1
    assert err == (
        "FAILED: entry 0 does not name s-0041 (as staff, by or person, or through personal data "
        "in this bundle): it is no part of this bundle's person:s-0041\n"
    )


def test_every_commitment_to_a_ref_must_match_its_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log, _, row = incident_log()
    good = spec.commitment(ref="p-0001", salt=SALT, value=row["value"])
    bad = spec.commitment(ref="p-0001", salt=SALT, value="something else")
    log.add("note.added", 7, by="s-0041", ref="p-0001", commitment=bad)
    log.add("note.added", 7, by="s-0041", ref="p-0001", commitment=good)
    bundle = write_bundle(tmp_path / "b", log.entries, log.notes, personal=[row])

    code, _, err = run(capsys, bundle)

    assert code == 1
    assert err.startswith(
        f"FAILED: personal data p-0001 does not match its commitment in entry "
        f"{len(log.entries) - 2}: "
    )


def test_a_proof_line_that_is_not_canonical_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log, chosen, _ = incident_log()
    size = len(log.entries)
    proofs = proof_lines(log.entries, chosen, size)
    proofs[1] = json.dumps(json.loads(proofs[1])).encode()  # with spaces
    bundle = write_bundle(
        tmp_path / "b",
        [log.entries[n] for n in chosen],
        [log.notes[-1]],
        scope="incident:7",
        tree_size=size,
        proofs=proofs,
    )

    code, _, err = run(capsys, bundle)

    assert code == 1
    assert err == ("FAILED: proofs.jsonl line 2: JSON, but not in RFC 8785 canonical form\n")
