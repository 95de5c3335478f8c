"""The room units' wheelhouse, built for real (``panicbutton wheelhouse build``: pip
downloads from PyPI once), fetched from a running server with the unit's own tools
(``firmware_config/unit_fetch.py``), and installed from no index into a fresh venv.

The arm64/armhf install itself is ``make pi-check`` (tests/pi/check.py); here the
wheels that are pure Python install on this machine, which is enough to show that the
agent's wheel carries no server code and that pip checks every file's hash.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import io
import re
import subprocess
import sys
import tarfile
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from panicbutton import __version__
from server.units import enrolment
from server.units.provision import Secrets, bundle_files
from server.units.tables import UnitInstall
from server.units.wheelhouse import INSTALLER, build
from tests.harness import DEVICE_TOKENS, System

REPO = Path(__file__).resolve().parent.parent
FETCH = REPO / "firmware_config" / "unit_fetch.py"


@pytest.fixture(scope="module")
def house(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One wheelhouse for every test worker of this run (built under a lock by the first)."""
    shared = tmp_path_factory.getbasetemp().parent
    folder = shared / "wheelhouse"
    with (shared / "wheelhouse.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "VERSION").is_file():
            build(folder)
    return folder


@pytest.fixture(scope="module")
def agent_venv(house: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv (no site packages) with the wheelhouse's agent, as a unit installs it."""
    folder = tmp_path_factory.mktemp("venv") / "agent"
    venv.create(folder, with_pip=True)
    install = subprocess.run(
        [
            folder / "bin" / "python",
            "-m",
            "pip",
            "install",
            "--no-index",
            "--find-links",
            house,
            "--require-hashes",
            "-r",
            house / "requirements.txt",
        ],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "PIP_CONFIG_FILE": "/dev/null"},
    )
    assert install.returncode == 0, install.stderr
    return folder


def test_the_agent_wheel_holds_the_agent_and_nothing_of_the_server(house: Path) -> None:
    wheel = next(house.glob("panicbutton_device-*.whl"))
    assert wheel.name == f"panicbutton_device-{__version__}-py3-none-any.whl"
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"panicbutton", "device", f"panicbutton_device-{__version__}.dist-info"}
    assert "device/agent.py" in names
    assert "panicbutton/wire.py" in names
    metadata = (
        zipfile.ZipFile(wheel).read(f"panicbutton_device-{__version__}.dist-info/METADATA").decode()
    )
    requires = sorted(line for line in metadata.splitlines() if line.startswith("Requires-Dist"))
    assert [re.split(r"[<>=! ]", r.split(":")[1].strip())[0] for r in requires] == [
        "gpiozero",
        "paho-mqtt",
    ]


def test_every_file_is_pinned_by_its_hash_and_lgpio_comes_for_both_pis(house: Path) -> None:
    pinned = (house / "requirements.txt").read_text() + (house / "lgpio.txt").read_text()
    wheels = sorted(house.glob("*.whl"))
    for wheel in wheels:
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        assert f"--hash=sha256:{digest}" in pinned, f"{wheel.name} is not pinned"
    lgpio = [w.name for w in wheels if w.name.startswith("lgpio-")]
    assert any(n.endswith("_aarch64.whl") for n in lgpio), lgpio
    assert any(n.endswith("_armv7l.whl") for n in lgpio), lgpio
    assert all("cp311" in n for n in lgpio), lgpio
    for name in INSTALLER:
        assert (house / name).read_bytes() == (REPO / "firmware_config" / name).read_bytes()
    assert (house / "VERSION").read_text().strip() == __version__


def test_the_installed_agent_runs_and_says_the_server_is_not_here(
    agent_venv: Path, tmp_path: Path
) -> None:
    python = agent_venv / "bin" / "python"
    no_server = subprocess.run(
        [python, "-c", "import server"], capture_output=True, text=True, check=False, cwd=tmp_path
    )
    assert "No module named 'server'" in no_server.stderr
    version = subprocess.run(
        [agent_venv / "bin" / "panicbutton", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert version.stdout.strip() == f"panicbutton {__version__}"
    refused = subprocess.run(
        [agent_venv / "bin" / "panicbutton", "server"], capture_output=True, text=True, check=False
    )
    assert refused.returncode == 2
    assert "this is a room unit's agent (panicbutton-device)" in refused.stderr
    config = tmp_path / "device.toml"
    config.write_text(
        f'[device]\nid = "unit-1"\nstate_dir = "{tmp_path}"\n'
        '[mqtt]\nhost = "127.0.0.1"\npassword = "x"\n'
    )
    check = subprocess.run(
        [agent_venv / "bin" / "panicbutton", "device", "check", "--installed", "--config", config],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"config: unit-1 loads with agent {__version__}" in check.stdout
    assert "pin library: native" in check.stdout  # lgpio is the Pi's; gpiozero's own is here


def test_a_wheel_that_differs_from_its_hash_is_refused(house: Path, tmp_path: Path) -> None:
    copy = tmp_path / "house"
    copy.mkdir()
    for f in house.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    gpiozero = next(copy.glob("gpiozero-*.whl"))
    gpiozero.write_bytes(gpiozero.read_bytes() + b"\0")
    folder = tmp_path / "venv"
    venv.create(folder, with_pip=True)
    result = subprocess.run(
        [
            *(folder / "bin" / "python", "-m", "pip", "install", "--no-index"),
            *("--find-links", copy, "--require-hashes", "-r", copy / "requirements.txt"),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "PIP_CONFIG_FILE": "/dev/null"},
    )
    assert result.returncode != 0
    assert "DO NOT MATCH THE HASHES" in result.stderr


@pytest.fixture
def served(system: System, house: Path) -> Iterator[System]:
    """The system's server, serving ``house`` to its units."""
    assert system.server is not None
    app = system.server.app
    before = app.state.settings
    app.state.settings = before.model_copy(update={"wheelhouse_dir": house})
    try:
        yield system
    finally:
        app.state.settings = before


def fetch(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, FETCH, *map(str, args)], capture_output=True, text=True, check=False
    )


def test_a_unit_enrols_fetches_its_wheels_and_reports(
    served: System, house: Path, tmp_path: Path
) -> None:
    system = served
    assert system.server is not None
    services = system.server.services
    # The sample site's unit-1 has this token's hash: the bundle carries the same token.
    secret = Secrets(password=system.users["unit-1"], token=DEVICE_TOKENS["unit-1"])
    files = bundle_files(
        device_id="unit-1",
        label="Room 1",
        broker_host="127.0.0.1",
        server_url=system.base_url,
        ca_pem=None,
        secret=secret,
        by="a test",
    )
    with services.sessions.begin() as s:
        code = enrolment.create(
            s, device_id="unit-1", files=files, by="manager", now=services.clock.now()
        )
    bundle = tmp_path / "bundle"
    got = fetch("enrol", "--server", system.base_url, "--code", code.lower(), "--out", bundle)
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() == f"enrolled as unit-1: bundle in {bundle}"
    assert (bundle / "device-token").read_text().strip() == DEVICE_TOKENS["unit-1"]
    assert (bundle / "mqtt-password").stat().st_mode & 0o777 == 0o600
    # A unit whose answer was lost asks again with the same code: the same bundle (for
    # 15 minutes after the first use; the route tests move the clock past that).
    again = fetch("enrol", "--server", system.base_url, "--code", code, "--out", tmp_path / "b2")
    assert again.returncode == 0, again.stderr
    for name in ("device.toml", "device-token", "mqtt-password"):
        assert (tmp_path / "b2" / name).read_text() == (bundle / name).read_text()
    unknown = fetch(
        "enrol", "--server", system.base_url, "--code", "0000-0000-0000-0000", "--out", bundle
    )
    assert unknown.returncode == 3  # the first-boot script stops trying a refused code
    assert "unknown, used or expired" in unknown.stderr
    assert (bundle / "device.toml").is_file(), "a refused code must not spoil the bundle"

    wheels = tmp_path / "wheels"
    got = fetch("wheelhouse", "--bundle", bundle, "--out", wheels)
    assert got.returncode == 0, got.stderr
    assert sorted(p.name for p in wheels.iterdir()) == sorted(p.name for p in house.iterdir())
    for f in house.iterdir():
        assert (wheels / f.name).read_bytes() == f.read_bytes()
    assert (wheels / "provision.sh").stat().st_mode & 0o100, "the installer must be executable"

    lines = tmp_path / "check.txt"
    lines.write_text("ok    config: device unit-1\nall checks passed\n")
    got = fetch(
        "report", "--bundle", bundle, "--version", __version__, "--passed", "--lines", lines
    )
    assert got.returncode == 0, got.stderr
    with services.sessions() as s:
        report = s.scalars(select(UnitInstall)).one()
    assert (report.device_id, report.action, report.version, report.result) == (
        "unit-1",
        "install",
        __version__,
        "passed",
    )
    assert report.lines == ["ok    config: device unit-1", "all checks passed"]


def test_a_wrong_token_gets_no_wheels(served: System, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "device.toml").write_text(
        f'[device]\nid = "unit-1"\n[server]\nurl = "{served.base_url}"\ntoken = "wrong"\n'
    )
    got = fetch("wheelhouse", "--bundle", bundle, "--out", tmp_path / "wheels")
    assert got.returncode == 1
    assert "the server answered 401: unknown unit or wrong token" in got.stderr
    assert not (tmp_path / "wheels").exists()


@pytest.mark.parametrize(
    "server",
    ["http://alarm.example.test", "http://localhost.evil.example", "http://127.0.0.1@evil.example"],
)
def test_the_unit_talks_to_the_server_in_clear_only_on_itself(server: str, tmp_path: Path) -> None:
    got = fetch("enrol", "--server", server, "--code", "ABCD", "--out", tmp_path / "bundle")
    assert got.returncode == 1
    assert "the server must be reached over https://" in got.stderr
    assert not (tmp_path / "bundle").exists()


def test_a_wheelhouse_with_a_path_in_it_is_refused(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("unit_fetch", FETCH)
    assert spec is not None
    assert spec.loader is not None
    unit_fetch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(unit_fetch)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        evil = tarfile.TarInfo("../escaped.txt")
        evil.size = 4
        tar.addfile(evil, io.BytesIO(b"evil"))
    with pytest.raises(unit_fetch.FetchError, match=r"holds '\.\./escaped\.txt': refusing it"):
        unit_fetch.untar(buffer.getvalue(), tmp_path / "house")
    assert not (tmp_path / "escaped.txt").exists()
