"""`panicbutton audit keygen | export | verify` as an installer, a manager and an inspector
run them."""

from __future__ import annotations

import json
import stat
import zipfile
from pathlib import Path

import pytest

from panicbutton.cli import main
from panicbutton.log import checkpoints
from panicbutton.wire import Alert, new_alert_id, now_utc
from tests.harness import System


def test_keygen_writes_a_private_key_and_prints_the_verifier_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "log.key"
    assert main(["audit", "keygen", "--name", "house.example/log", "--out", str(key)]) == 0
    printed = capsys.readouterr().out
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    signer = checkpoints.Signer.parse(key.read_text())
    assert str(signer.verifier) in printed
    assert f"PANICBUTTON_LOG_KEY_FILE={key}" in printed

    # A log keeps its key for life: a second keygen never overwrites it.
    assert main(["audit", "keygen", "--out", str(key)]) == 2
    assert "exists" in capsys.readouterr().err
    assert checkpoints.Signer.parse(key.read_text()).verifier == signer.verifier


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_export_on_the_server_then_verify_as_an_inspector(
    system: System,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert system.server is not None
    alert = Alert(device_id="unit-1", alert_id=new_alert_id(), seq=1, pressed_at=now_utc())
    system.server.services.alerts.handle(alert)
    for name, value in {
        "PANICBUTTON_DEMO": "1",
        "PANICBUTTON_DATABASE_URL": system.settings.database_url,
        "PANICBUTTON_LOG_KEY_FILE": str(system.settings.log_key_file),
        "PANICBUTTON_LOG_CHECKPOINT_FILE": str(system.settings.log_checkpoint_file),
    }.items():
        monkeypatch.setenv(name, value)
    bundle = tmp_path / "log.zip"

    refused = main(["audit", "export", "--out", str(bundle), "--by", "inspector-1"])
    assert refused == 2
    assert "--justification" in capsys.readouterr().err

    export = [
        *("audit", "export", "--out", str(bundle), "--by", "inspector-1"),
        *("--justification", "annual inspection of the alarm records"),
    ]
    done = main([*export, "--report", "csv"])
    assert done == 0
    assert "entries written to" in capsys.readouterr().out
    with zipfile.ZipFile(bundle) as zf:
        entries = zf.read(next(n for n in zf.namelist() if n.endswith("entries.jsonl")))
    exported = [
        e["data"] for e in map(json.loads, entries.splitlines()) if e["type"] == "record.exported"
    ]
    assert [(e["by"], e["scope"]) for e in exported] == [("inspector-1", "full")]
    report = (tmp_path / "log-report.csv").read_text()
    assert "derived from log bundle sha256" in report

    # A second export under the same name is refused before anything is logged.
    again = main(export)
    assert again == 2
    assert "exists" in capsys.readouterr().err
    assert len(system.events("record.exported")) == 1
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "log-report.csv").stat().st_mode) == 0o600

    key = str(system.server.services.keeper.signer.verifier)
    code = main(["audit", "verify", str(bundle), "--key", key])
    out = capsys.readouterr().out
    assert code in (0, 3)
    assert out.startswith("verified:")
