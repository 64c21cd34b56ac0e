"""The package's shape: one installed namespace, layers that import downwards only.

The contracts live in pyproject.toml ([tool.importlinter]); docs/architecture.md draws them.
import-linter walks a package's folder; ours is spread over the repository's top-level
folders (setup.py maps ``daq/`` to ``cortexcast.daq`` ...), and ``cortexcast/daq`` etc. are
symbolic links to them, so ``lint-imports`` run from the repository root sees the installed
layout.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("daq", "stream", "decoder", "display")
PYTHON_DIRS = ("cortexcast", *FOLDERS, "tests")


def test_the_package_folder_links_the_top_level_folders() -> None:
    """cortexcast/daq ... link to the top-level folders, so tools that walk the package's
    folder (import-linter, grimp) see it as installed."""
    for folder in FOLDERS:
        link = ROOT / "cortexcast" / folder
        assert link.is_symlink() and link.resolve() == (ROOT / folder).resolve(), link


def test_layer_contracts_hold() -> None:
    """`lint-imports` from the repository root, as a developer or CI runs it."""
    pytest.importorskip("importlinter")
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "BROKEN" not in proc.stdout and "0 broken" in proc.stdout


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def test_no_code_imports_a_bare_top_level_folder() -> None:
    bad = []
    for top in PYTHON_DIRS:
        for path in (ROOT / top).rglob("*.py"):
            for line, module in _imported_modules(path):
                if module.split(".")[0] in FOLDERS:
                    bad.append(f"{path.relative_to(ROOT)}:{line}: import {module}")
    assert not bad, "import cortexcast.<folder>..., never the bare folder:\n" + "\n".join(bad)


def test_the_bare_folder_names_are_not_importable() -> None:
    code = ("import importlib.util, sys; "
            f"sys.exit(any(importlib.util.find_spec(n) for n in {FOLDERS!r}))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path.home(), capture_output=True)
    assert proc.returncode == 0, "a bare daq/stream/decoder/display package is installed"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] in FOLDERS:
        parts.insert(0, "cortexcast")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def test_no_import_cycles() -> None:
    """No module reaches itself through our imports (function-level ones included)."""
    paths = [p for top in ("cortexcast", *FOLDERS) for p in (ROOT / top).rglob("*.py")]
    modules = {_module_name(p): p for p in paths}
    graph = {m: {dep for _, dep in _imported_modules(p) if dep in modules and dep != m}
             for m, p in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:  # Tarjan's strongly connected components
        index[m] = low[m] = len(index)
        stack.append(m)
        for dep in graph[m]:
            if dep not in index:
                visit(dep)
                low[m] = min(low[m], low[dep])
            elif dep in stack:
                low[m] = min(low[m], index[dep])
        if low[m] == index[m]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == m:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for m in sorted(graph):
        if m not in index:
            visit(m)
    assert not cycles, f"import cycles: {cycles}"
