"""What an outsider must be able to trust about the verifier's verdict (issue 9, item 10):
a bug in the verifier never reads as tampering, the manifest is signed, an export's
tail is signed, a failed self-check inside the log is reported, personal-data rows
have one exact form."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from panicbutton.log import canonical, checkpoints, spec, verify
from tests.log.test_verify import (
    SIGNER,
    incident_log,
    manifest,
    quiet_log,
    run,
    write_bundle,
)


# -- a verifier bug is not tampering ------------------------------------------------------
def test_verify_runs_where_the_os_has_no_cpu_affinity(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # macOS and Windows have no os.sched_getaffinity.
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    log = quiet_log()
    bundle = write_bundle(tmp_path / "b", log.entries, log.notes)

    code, out, err = run(capsys, bundle)

    assert (code, err) == (0, "")
    assert out.startswith("verified:")


@pytest.mark.parametrize("bug", [KeyError("x"), AttributeError("y"), RuntimeError("z")])
def test_a_bug_in_the_verifier_is_a_verifier_error_never_tampering(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    bug: Exception,
) -> None:
    def broken(*_: object, **__: object) -> None:
        raise bug

    # NOTE: our own code mocked on purpose: a bug cannot be had any other way.
    monkeypatch.setattr(verify, "check_meaning", broken)
    log = quiet_log()
    bundle = write_bundle(tmp_path / "b", log.entries, log.notes)

    code, out, err = run(capsys, bundle)

    assert code == verify.VERIFIER_ERROR == 4
    assert out == ""
    assert err.startswith("VERIFIER ERROR: a bug in the verifier stopped it")
    assert "not a verdict on the bundle" in err
    assert "FAILED" not in err


# -- an export signs its whole tail -------------------------------------------------------
def test_entries_after_the_last_checkpoint_of_a_full_bundle_are_tampering(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = quiet_log()
    notes = log.notes[:5]  # later checkpoints dropped, the tail rewritten
    bundle = write_bundle(tmp_path / "b", log.entries, notes)

    code, _, err = run(capsys, bundle)

    assert code == 1
    assert err == (
        f"FAILED: entries 5..{len(log.entries) - 1} come after the bundle's last signed "
        "checkpoint (size 5): an export signs every entry it holds, so they were added "
        "or changed after the export\n"
    )


def test_a_full_bundle_whose_manifest_size_is_not_its_last_checkpoint_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = quiet_log()
    bundle = write_bundle(tmp_path / "b", log.entries, log.notes, tree_size=3)

    code, _, err = run(capsys, bundle)

    assert code == 1
    size = len(log.entries)
    assert err == (
        f"FAILED: manifest.json says tree_size 3 and entries {size}, but the bundle's last "
        f"checkpoint is of size {size} and it holds {size} entries\n"
    )


# -- the manifest is signed ---------------------------------------------------------------
def resign_free(bundle: Path, edit: dict[str, bytes | None], **fields: object) -> None:
    """Change files and recompute the manifest, as a tamperer without the key would."""
    for name, data in edit.items():
        if data is None:
            (bundle / name).unlink()
        else:
            (bundle / name).write_bytes(data)
    old = canonical.loads((bundle / "manifest.json").read_bytes())
    files = {
        p.name: p.read_bytes()
        for p in bundle.iterdir()
        if p.name not in ("manifest.json", "manifest.sig")
    }
    new = canonical.loads(
        manifest(files, scope=old["scope"], tree_size=old["tree_size"], entries=old["entries"])
    )
    new.update({"personal": old.get("personal", False), **fields})
    (bundle / "manifest.json").write_bytes(canonical.dumps(new))


@pytest.mark.parametrize(
    "tamper",
    ["add a file", "edit VERIFY.md", "drop personal data"],
)
def test_a_manifest_changed_without_the_key_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tamper: str
) -> None:
    log, _, row = incident_log()
    bundle = write_bundle(
        tmp_path / "b", log.entries, log.notes, personal=[row], personal_flag=True
    )
    assert run(capsys, bundle)[0] == 0
    if tamper == "add a file":
        resign_free(bundle, {"README.txt": b"these entries were checked by us\n"})
    elif tamper == "edit VERIFY.md":
        text = (bundle / "VERIFY.md").read_bytes().replace(b"| 1 |", b"| 9 |")
        resign_free(bundle, {"VERIFY.md": text})
    else:
        resign_free(bundle, {"personal.jsonl": None}, personal=False)

    code, _, err = run(capsys, bundle)

    assert code == 1
    assert err == (
        "FAILED: manifest.json is not the manifest the log's key signed (manifest.sig): "
        "a file was added, removed or changed after the export\n"
    )


def test_a_bundle_without_a_manifest_signature_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = quiet_log()
    bundle = write_bundle(tmp_path / "b", log.entries, log.notes)
    (bundle / "manifest.sig").unlink()

    code, _, err = run(capsys, bundle)

    assert code == 1
    assert "manifest.sig is missing: nothing signs this bundle's manifest" in err


def test_a_manifest_signature_is_no_checkpoint_and_a_checkpoint_no_manifest_signature(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = quiet_log()
    bundle = write_bundle(tmp_path / "b", log.entries, log.notes)
    sig = (bundle / "manifest.sig").read_text()
    (bundle / "manifest.sig").write_text(log.notes[-1])

    code, _, err = run(capsys, bundle)
    assert code == 1
    assert "manifest.sig: a signed manifest is three lines" in err

    with pytest.raises(spec.LogFormatError, match="is not a decimal number"):
        checkpoints.open_checkpoint(sig, SIGNER.verifier)


# -- a failed self-check inside the log ---------------------------------------------------
def test_a_failed_self_check_recorded_in_the_log_is_a_finding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = quiet_log()
    n = log.add("log.verified", result="failed", size=None, root=None, findings=0)
    log.heartbeat()
    bundle = write_bundle(tmp_path / "b", log.entries, log.notes)

    code, out, _ = run(capsys, bundle)

    assert code == 3
    assert (
        f"finding: entry {n}: the server's own check of the log failed: the stored log did "
        "not match its signed checkpoints then (see the server's log of that time)"
    ) in out.splitlines()


def test_numbers_going_back_and_refused_alerts_are_findings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = quiet_log()
    back = log.add("device.sequence_back", device="unit-2", previous=6, got=3)
    refused = log.add("alert.refused", alert_id="ab" * 16, device="unit-2", seq=7)
    log.heartbeat()
    bundle = write_bundle(tmp_path / "b", log.entries, log.notes)

    code, out, _ = run(capsys, bundle)

    assert code == 3
    lines = out.splitlines()
    assert (
        f"finding: entry {back}: unit unit-2 sent alert number 3 after 6: an old outbox put "
        "back, or a unit replaying numbers"
    ) in lines
    assert (
        f"finding: entry {refused}: unit unit-2 sent an alert id that another unit's incident "
        "holds (a cloned unit, or a unit's credentials misused): refused"
    ) in lines


# -- personal-data rows --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            lambda r: json.dumps(r).encode(),
            "personal.jsonl line 1: not canonical JSON",
        ),
        (
            lambda r: canonical.dumps({**r, "note": "x"}),
            "personal.jsonl line 1: a row is an object with exactly ref, salt, value",
        ),
        (
            lambda r: canonical.dumps({"ref": r["ref"], "value": r["value"]}),
            "personal.jsonl line 1: a row is an object with exactly ref, salt, value",
        ),
        (
            lambda r: canonical.dumps({**r, "salt": r["salt"].upper()}),
            "personal.jsonl line 1: salt must be 32 lowercase hex digits",
        ),
        (
            lambda r: canonical.dumps({**r, "ref": 1}),
            "personal.jsonl line 1: ref must be a string",
        ),
    ],
)
def test_a_personal_data_row_of_another_form_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: object, message: str
) -> None:
    log, _, row = incident_log()
    bundle = write_bundle(tmp_path / "b", log.entries, log.notes, personal=[row])
    resign = line(row)  # type: ignore[operator]
    write_bundle(tmp_path / "c", log.entries, log.notes, personal_lines=[resign])

    code, _, err = run(capsys, tmp_path / "c")

    assert bundle.exists()
    assert code == 1
    assert err.startswith(f"FAILED: {message}")


def test_a_personal_data_row_given_twice_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log, _, row = incident_log()
    bundle = write_bundle(tmp_path / "b", log.entries, log.notes, personal=[row, row])

    code, _, err = run(capsys, bundle)

    assert code == 1
    assert err == "FAILED: personal.jsonl line 2: personal data p-0001 is given twice\n"


# -- control characters, as VERIFY.md section 3 says -------------------------------------
@pytest.mark.parametrize(
    ("raw", "canonical_"),
    [
        (b'"\\n"', True),
        (b'"\\u001f"', True),
        (b'"\\u0000"', True),
        (b'"\x7f"', True),  # DEL, literal
        ('"\x85"'.encode(), True),  # a C1 control, literal
        (b'"\\u000a"', False),  # LF has a short form
        (b'"\\u001F"', False),  # upper-case hex
        (b'"\\/"', False),
        (b'"\x01"', False),  # a raw control byte
        (b'"\\ud800"', False),  # a lone surrogate
    ],
)
def test_control_characters_are_as_verify_md_says(raw: bytes, canonical_: bool) -> None:
    if canonical_:
        assert canonical.dumps(canonical.loads(raw)) == raw
    else:
        with pytest.raises(canonical.CanonicalError):
            canonical.loads(raw)
