"""A room unit without a server, for tests of its broker link: its config, and the
lines its agent wrote in the journal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from device.config import DeviceConfig, parse_config
from tests.harness import BUTTON, LED


def unit(tmp_path: Path, **mqtt: Any) -> DeviceConfig:
    """Unit unit-1's config, its broker settings replaced by ``mqtt``."""
    return parse_config(
        {
            "device": {"id": "unit-1", "state_dir": str(tmp_path / "state")},
            "pins": {"button": BUTTON, "led": LED},
            "mqtt": {"host": "127.0.0.1", "port": 1883, "password": "not-its-password", **mqtt},
        }
    )


def said(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    """What the agent wrote in the journal at ``level``."""
    return [
        r.getMessage() for r in caplog.records if r.name == "device.agent" and r.levelno == level
    ]
