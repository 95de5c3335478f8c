"""Dependencies point one way: every import of the code follows the layers in
``server/__init__.py``, room-unit code never needs the server, and the shared
``panicbutton`` package needs neither (its command imports them only inside
the subcommand that runs them)."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import server

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("server", "panicbutton", "device", "demo")
#: A layer line of server/__init__.py: "3. name: module, module".
LAYER_LINE = re.compile(r"^\s*(\d+)\. [^:]+: (.+)$")


def layers() -> dict[str, int]:
    """``server`` module prefixes -> their layer number, from the package docstring."""
    found: dict[str, int] = {}
    # A layer's list may go on over the next line, after a trailing comma.
    text = re.sub(r",\n\s+", ", ", server.__doc__ or "")
    for line in text.splitlines():
        if (match := LAYER_LINE.match(line)) is not None:
            for name in match.group(2).split(","):
                found[f"server.{name.strip()}"] = int(match.group(1))
    return found


def modules() -> Iterator[tuple[str, Path]]:
    """(name, path) of every module; a package's ``__init__`` that imports none of ours
    (a docstring) is left out: it belongs to no layer."""
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__" and next(imports(path), None) is None:
                continue
            yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def imports(path: Path, *, top_level_only: bool = False) -> Iterator[tuple[int, str]]:
    """(line, module) of each absolute import of one of our packages."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from server import duty" imports the module server.duty.
            names = [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in PACKAGES:
                yield node.lineno, name


def layer_of(module: str, table: dict[str, int]) -> int | None:
    """The layer of the longest prefix of ``module`` in ``table`` (a name imported from
    a module, like ``server.site.Site``, falls under that module)."""
    parts = module.split(".")
    for end in range(len(parts), 1, -1):
        if (layer := table.get(".".join(parts[:end]))) is not None:
            return layer
    return None


def test_every_server_module_has_a_layer() -> None:
    table = layers()
    assert table, "server/__init__.py lists no layers"
    missing = [m for m, _ in modules() if m.startswith("server.") and layer_of(m, table) is None]
    assert not missing, f"give these modules a layer in server/__init__.py: {missing}"


def test_server_imports_point_down_the_layers() -> None:
    table = layers()
    wrong = []
    for module, path in modules():
        if not module.startswith("server."):
            continue
        own = layer_of(module, table)
        assert own is not None
        for line, name in imports(path):
            if not name.startswith("server."):
                continue
            theirs = layer_of(name, table)
            if theirs is not None and theirs > own:
                wrong.append(
                    f"{path.relative_to(ROOT)}:{line} imports {name} (layer {theirs} > {own})"
                )
    assert not wrong, "imports from a higher layer:\n" + "\n".join(wrong)


def test_units_and_the_shared_package_do_not_need_the_server() -> None:
    wrong = []
    for module, path in modules():
        package = module.split(".")[0]
        if package not in ("panicbutton", "device"):
            continue
        # The command's subcommands import what they run, inside the subcommand.
        top_level_only = module in ("panicbutton.cli", "panicbutton.subcommands")
        for line, name in imports(path, top_level_only=top_level_only):
            banned = ("server", "demo") if package == "device" else ("server", "device", "demo")
            if name.split(".")[0] in banned:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_no_cycle_between_server_packages() -> None:
    """Sub-packages and top-level modules of ``server`` import each other one way only
    (a module in a package counts as the package)."""

    def unit(name: str) -> str:
        return ".".join(name.split(".")[:2])

    edges: dict[str, set[str]] = {}
    for module, path in modules():
        if not module.startswith("server."):
            continue
        for _, name in imports(path):
            if name.startswith("server.") and unit(name) != unit(module):
                edges.setdefault(unit(module), set()).add(unit(name))
    cycles = [
        f"{a} -> {b} -> {a}"
        for a, targets in edges.items()
        for b in targets
        if a in _reach(b, edges)
    ]
    assert not cycles, "packages that need each other:\n" + "\n".join(sorted(cycles))


def _reach(start: str, edges: dict[str, set[str]]) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in edges.get(todo.pop(), set()) - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen
