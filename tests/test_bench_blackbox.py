"""The bench's black-box part (:mod:`tests.bench.blackbox`): the server as its own
process pages for every unit's alert and confirms it, and the part reports and
writes what it timed. Run with ``pytest -s`` to see the report (``make bench``
prints it too, with 200 alerts)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.bench.blackbox import blackbox_report, measure_blackbox
from tests.bench.figures import draw
from tests.bench.run import parse_args
from tests.conftest import HEAVY, missing
from tests.harness import find_mosquitto

PRESSES = 3


@HEAVY
def test_each_units_alert_is_confirmed_and_paged_by_the_server_process(tmp_path: Path) -> None:
    if find_mosquitto() is None:
        missing("mosquitto is not installed (apt install mosquitto)")
    run = measure_blackbox(tmp_path, f"sqlite:///{tmp_path / 'bench.sqlite3'}", PRESSES, warmup=1)
    report = "\n".join(blackbox_report(run, "SQLite"))
    print(report)
    for samples in (run.app_received, run.app_sms, run.floor_received, run.floor_sms):
        assert len(samples) == PRESSES
        assert all(0 < s < 15 for s in samples), samples
    for row in ("press -> 'received' at the unit", "press -> first SMS request"):
        assert re.search(rf"^  {re.escape(row)} +{PRESSES} ", report, re.MULTILINE), row
    # Every unit is a room of the site file: nothing was paged as an unknown unit.
    log = (tmp_path / "server.log").read_text()
    assert "connected to broker" in log
    assert "not in the site file" not in log
    figures = json.loads(json.dumps(run.figures()))
    assert figures["pairs"]["press -> received"]["app"]["n"] == PRESSES
    assert len(figures["pairs"]["press -> first SMS request"]["floor_samples_ms"]) == PRESSES
    # Drawn for the docs: the SVG names the figures and says how far from the floor.
    svg = tmp_path / "bench.svg"
    draw({"database": "SQLite", "parts": {"blackbox": figures}}, svg)
    drawn = svg.read_text()
    assert drawn.startswith("<?xml")
    assert "<svg" in drawn
    assert "press -&gt; received median (ms)" in drawn
    assert "x floor)" in drawn


def test_the_json_option_needs_an_existing_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--json", str(tmp_path / "nowhere" / "bench.json")])
    assert f"folder {tmp_path / 'nowhere'} does not exist" in capsys.readouterr().err
    assert parse_args(["--json", str(tmp_path / "bench.json")]).json == tmp_path / "bench.json"
