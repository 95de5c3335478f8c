"""The server's log package imports the foundation and ``panicbutton`` only."""

from __future__ import annotations

import ast
from pathlib import Path

SERVER_LOG = Path(__file__).resolve().parents[2] / "server" / "log"
#: What server/log may import of the server besides itself.
FOUNDATION = {"server.errors", "server.settings", "server.site", "server.db", "server.models"}


def _server_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module == "server":
            found.update(f"server.{a.name}" for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {name for name in found if name.split(".")[0] == "server"}


def test_the_log_package_imports_nothing_above_the_foundation() -> None:
    above = {
        f"{path.name}: {name}"
        for path in sorted(SERVER_LOG.glob("*.py"))
        for name in _server_imports(path)
        if name not in FOUNDATION and not name.startswith("server.log")
    }
    assert not above
