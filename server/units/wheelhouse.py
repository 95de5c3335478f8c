"""The room units' wheelhouse: everything a unit installs, served by the server, so that a
unit on a LAN that reaches only the server installs and upgrades with no internet.

``panicbutton wheelhouse build --out DIR`` (run where the server is installed, which has
the internet) writes into ``DIR``:

- ``panicbutton_device-<version>-py3-none-any.whl``: the agent, built from this install's
  own ``panicbutton`` and ``device`` packages and nothing else (no server code: the
  project's own wheel carries the server too);
- its dependencies (gpiozero, colorzero, paho-mqtt, and what they need) and ``lgpio``
  for 64-bit (aarch64) and 32-bit (armv7l) Raspberry Pi OS and Debian, from PyPI;
- ``requirements.txt`` and ``lgpio.txt``: each file pinned with its SHA-256, for pip's
  hash-checking mode (``--require-hashes``): a file that differs is refused;
- ``provision.sh``, ``unit_fetch.py``, ``panicbutton-device.service``, ``99-gpio.rules``
  and ``firstboot.sh`` from ``firmware_config/``, so a unit gets the installer that goes
  with the wheels;
- ``VERSION``: the agent's version.

The server serves the folder (``PANICBUTTON_WHEELHOUSE_DIR``) as one tar file to units
holding their HTTPS token (:mod:`server.routes.install`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import device
import panicbutton
from server.errors import ServerError

#: The Pythons of the OS releases a unit may run: Debian and Raspberry Pi OS bookworm
#: (3.11) and trixie (3.13).
PYTHONS: Final = ("3.11", "3.13")
#: The Pythons PyPI has ``lgpio`` wheels for (trixie's Raspberry Pi OS has python3-lgpio).
LGPIO_PYTHONS: Final = ("3.11",)
LGPIO: Final = "lgpio>=0.2"
#: Raspberry Pi OS 64-bit and 32-bit (armhf runs armv7l wheels), with every glibc tag up
#: to bookworm's 2.36.
ARCHES: Final = ("aarch64", "armv7l")
_GLIBC: Final = ("2_17", "2_28", "2_31", "2_34", "2_35", "2_36")
#: What ``firmware_config/`` gives each unit beside the wheels.
INSTALLER: Final = (
    "provision.sh",
    "unit_fetch.py",
    "panicbutton-device.service",
    "99-gpio.rules",
    "firstboot.sh",
)
DIST: Final = "panicbutton-device"
_WHEEL_NAME = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)-.+\.whl$")


def device_requirements() -> list[str]:
    """The ``device`` extra's requirements, as this install's metadata gives them."""
    out = []
    for req in importlib.metadata.requires("panicbutton") or []:
        spec, _, marker = req.partition(";")
        if re.search(r"""extra\s*==\s*["']device["']""", marker):
            out.append(spec.strip())
    if not out:
        raise ServerError("panicbutton's metadata names no 'device' extra: reinstall panicbutton")
    return out


#: Where an installed server (the Docker image) keeps its copy of ``firmware_config/``.
FIRMWARE_DIR: Final = "PANICBUTTON_FIRMWARE_DIR"


def firmware_folder() -> Path:
    """The project's ``firmware_config/``: the folder ``PANICBUTTON_FIRMWARE_DIR`` names
    (the Docker image sets it: an installed package has no checkout around it), else the
    one of the checkout this server runs from."""
    named = os.environ.get(FIRMWARE_DIR, "")
    folder = (
        Path(named)
        if named
        else Path(panicbutton.__file__).resolve().parent.parent / "firmware_config"
    )
    if not (folder / "provision.sh").is_file():
        raise ServerError(
            f"{folder} is not the project's firmware_config/ (it has no provision.sh): run "
            f"from the project's checkout, or set {FIRMWARE_DIR} to a copy of its "
            "firmware_config/"
        )
    return folder


def _pyproject(version: str, requirements: list[str]) -> str:
    deps = ", ".join(f'"{r}"' for r in requirements)
    return f"""[build-system]
requires = ["setuptools>=77.0.3"]
build-backend = "setuptools.build_meta"

[project]
name = "{DIST}"
version = "{version}"
description = "panicbutton room unit agent (button, light, outbox, MQTT link)"
license = "Apache-2.0"
requires-python = ">=3.11"
dependencies = [{deps}]

[project.scripts]
panicbutton = "panicbutton.cli:main"

[tool.setuptools.packages.find]
include = ["panicbutton*", "device*"]

[tool.setuptools.package-data]
device = ["py.typed"]
panicbutton = ["py.typed", "log/VERIFY.md"]
"""


def build_device_wheel(out: Path, *, version: str | None = None) -> Path:
    """Build the agent's wheel into ``out``: the ``panicbutton`` and ``device`` packages
    of this install, nothing else. ``version`` stamps another version (tests of upgrades)."""
    version = version or panicbutton.__version__
    with tempfile.TemporaryDirectory(prefix="panicbutton-device-") as tmp:
        root = Path(tmp)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        for package in (panicbutton, device):
            source = Path(package.__file__ or "").parent
            shutil.copytree(source, root / source.name, ignore=ignore)
        init = root / "panicbutton" / "__init__.py"
        init.write_text(
            re.sub(r'__version__ = "[^"]*"', f'__version__ = "{version}"', init.read_text())
        )
        (root / "pyproject.toml").write_text(_pyproject(version, device_requirements()))
        (root / "README.md").write_text("panicbutton room unit agent\n")
        before = set(out.glob("*.whl"))
        _pip("wheel", "--no-deps", "--wheel-dir", str(out), str(root))
    built = [p for p in out.glob("panicbutton_device-*.whl") if p not in before]
    if len(built) != 1:
        raise ServerError(f"building the agent's wheel left {len(built)} wheels in {out}")
    return built[0]


def _platforms(arch: str) -> list[str]:
    tags = [f"manylinux_{g}_{arch}" for g in _GLIBC] + [f"linux_{arch}"]
    return [arg for tag in tags for arg in ("--platform", tag)]


def download(out: Path, requirements: list[str], *, pythons: tuple[str, ...]) -> None:
    """Binary wheels of ``requirements`` (and theirs) for each of ``pythons`` and CPUs."""
    for python in pythons:
        for arch in ARCHES:
            _pip(
                "download",
                "--only-binary=:all:",
                "--implementation",
                "cp",
                "--python-version",
                python,
                *_platforms(arch),
                "--dest",
                str(out),
                *requirements,
            )


def _pip(*args: str) -> None:
    result = subprocess.run(  # noqa: S603 -- our own interpreter's pip, with our arguments
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-5:])
        raise ServerError(f"pip {args[0]} failed:\n{tail}")


def hash_lines(folder: Path, names: set[str] | None = None) -> list[str]:
    """``name==version --hash=sha256:...`` for each wheel in ``folder`` (every file of a
    name and version on one line), limited to ``names`` when given."""
    found: dict[tuple[str, str], list[str]] = {}
    for wheel in sorted(folder.glob("*.whl")):
        m = _WHEEL_NAME.match(wheel.name)
        if m is None:
            continue
        key = (m["name"].lower().replace("_", "-"), m["version"])
        found.setdefault(key, []).append(hashlib.sha256(wheel.read_bytes()).hexdigest())
    return [
        f"{name}=={version} " + " ".join(f"--hash=sha256:{h}" for h in hashes)
        for (name, version), hashes in sorted(found.items())
        if names is None or name in names
    ]


def build(out: Path, *, version: str | None = None, pythons: tuple[str, ...] = PYTHONS) -> Path:
    """Write a whole wheelhouse into ``out`` (emptied first); return ``out``."""
    if out.exists() and any(out.iterdir()):
        if not (out / "VERSION").is_file():
            raise ServerError(f"{out} holds other files: give an empty or new folder")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    wheel = build_device_wheel(out, version=version)
    download(out, device_requirements(), pythons=pythons)
    download(out, [LGPIO], pythons=tuple(p for p in pythons if p in LGPIO_PYTHONS))
    lgpio = hash_lines(out, {"lgpio"})
    (out / "requirements.txt").write_text(
        "# the room unit agent and what it needs; pip install --require-hashes -r this\n"
        + "\n".join(line for line in hash_lines(out) if line not in lgpio)
        + "\n"
    )
    (out / "lgpio.txt").write_text(
        "# the pin driver, for an OS that has no python3-lgpio package\n" + "\n".join(lgpio) + "\n"
    )
    firmware = firmware_folder()
    for name in INSTALLER:
        shutil.copy2(firmware / name, out / name)
    m = _WHEEL_NAME.match(wheel.name)
    (out / "VERSION").write_text((m["version"] if m else "") + "\n")
    return out


@dataclass(frozen=True, slots=True)
class Wheelhouse:
    """A built wheelhouse folder, as the server serves it."""

    folder: Path

    @property
    def version(self) -> str:
        return (self.folder / "VERSION").read_text().strip()

    def check(self) -> None:
        """Raise ServerError saying what to do if the folder is not a built wheelhouse."""
        missing = [
            n
            for n in ("VERSION", "requirements.txt", *INSTALLER)
            if not (self.folder / n).is_file()
        ]
        if missing:
            raise ServerError(
                f"the wheelhouse {self.folder} lacks {', '.join(missing)}: build it with "
                f"`panicbutton wheelhouse build --out {self.folder}`"
            )


_tars: dict[tuple[Path, int], bytes] = {}
_tars_lock = threading.Lock()


def tar_of(house: Wheelhouse) -> bytes:
    """The folder as one uncompressed tar (wheels are zips already), made once per change
    of the folder and kept in memory (about 3 MB)."""
    house.check()
    key = (house.folder.resolve(), (house.folder / "VERSION").stat().st_mtime_ns)
    with _tars_lock:
        if key not in _tars:
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as tar:
                for path in sorted(house.folder.iterdir()):
                    if path.is_file():
                        tar.add(path, arcname=path.name, recursive=False)
            _tars.clear()
            _tars[key] = buffer.getvalue()
        return _tars[key]
