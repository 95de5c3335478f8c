"""The log format and its verifier stand alone: every module of ``panicbutton/log/``, and
``panicbutton.wire``, ``panicbutton.clock`` and ``panicbutton.cli``, import and ``panicbutton
audit verify`` runs from a copy of the ``panicbutton`` package alone, in a process where
the server, the device, the demo and the server's libraries cannot be imported."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from panicbutton.log import verify
from tests.log.test_verify import quiet_log, write_bundle

ROOT = Path(__file__).resolve().parents[2]
#: A process of the verifier that imports one of these fails at once: it must not need them.
BLOCKED = (
    "server",
    "device",
    "demo",
    "tests",
    "sqlalchemy",
    "alembic",
    "fastapi",
    "starlette",
    "uvicorn",
    "pydantic",
    "twilio",
    "paho",
    "httpx",
    "gpiozero",
    "amqtt",
)
#: Every module an inspector's copy is made of (``panicbutton.cli`` for ``audit verify``).
MODULES = (
    *sorted(f"panicbutton.log.{p.stem}" for p in (ROOT / "panicbutton" / "log").glob("*.py")),
    "panicbutton.wire",
    "panicbutton.clock",
    "panicbutton.cli",
)

_SCRIPT = """\
import importlib, sys
package, modules, blocked = sys.argv[1], sys.argv[2].split(","), sys.argv[3].split(",")
sys.argv[1:4] = []
sys.path.insert(0, package)

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError(f"the standalone verifier must not import {name}")
        return None

sys.meta_path.insert(0, Block())
for name in modules:
    module = importlib.import_module(name)
    if not module.__file__.startswith(package):
        raise ImportError(f"{name} came from {module.__file__}, not the copy in {package}")
from panicbutton.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run_verifier(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``panicbutton audit verify ARGS`` from a copy of the ``panicbutton`` package alone
    (as ``pip install 'panicbutton[audit]'`` gives it), having imported every module of
    ``MODULES``, in a process where importing anything of ``BLOCKED`` fails."""
    copy = folder / "verifier"
    if not copy.exists():
        ignore = shutil.ignore_patterns("__pycache__")
        shutil.copytree(ROOT / "panicbutton", copy / "panicbutton", ignore=ignore)
    command = [sys.executable, "-I", "-c", _SCRIPT, str(copy), ",".join(MODULES)]
    return subprocess.run(
        [*command, ",".join(BLOCKED), "audit", "verify", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=folder,
    )


def test_the_log_package_and_the_verifier_import_nothing_of_the_server(tmp_path: Path) -> None:
    log = quiet_log()
    bundle = write_bundle(tmp_path / "bundle", log.entries, log.notes)

    done = run_verifier(tmp_path, str(bundle))

    assert done.returncode == verify.OK, done.stderr
    assert f"verified: {len(log.entries)} entries" in done.stdout
    assert len(MODULES) > 10  # the glob found the package's modules


def test_an_import_of_the_server_in_the_copy_fails_the_check(tmp_path: Path) -> None:
    log = quiet_log()
    bundle = write_bundle(tmp_path / "bundle", log.entries, log.notes)
    run_verifier(tmp_path, "--help")  # makes the copy
    meaning = tmp_path / "verifier" / "panicbutton" / "log" / "meaning.py"
    meaning.write_text(meaning.read_text() + "\nimport sqlalchemy  # noqa\n")

    done = run_verifier(tmp_path, str(bundle))

    assert done.returncode == 1
    assert "the standalone verifier must not import sqlalchemy" in done.stderr
