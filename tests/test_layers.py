"""The package's shape: one installed namespace, layers that import downwards only.

The contracts live in pyproject.toml ([tool.importlinter]); docs/architecture.md draws them.
import-linter walks a package's folder, and ours is spread over the repository's top-level
folders (setup.py maps ``daq/`` to ``cortexcast.daq`` ...), so the check runs on a copy laid
out as it is installed.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("daq", "stream", "decoder", "display")
PYTHON_DIRS = ("cortexcast", *FOLDERS, "tests")


def _installed_layout(out: Path) -> Path:
    """The package as a wheel lays it out: cortexcast/ with the four folders inside it."""

    def ignore(folder: str, names: list[str]) -> list[str]:
        return [n for n in names if n == "__pycache__"
                or (not n.endswith(".py") and not (Path(folder) / n).is_dir())]

    shutil.copytree(ROOT / "cortexcast", out / "cortexcast", ignore=ignore)
    for folder in FOLDERS:
        shutil.copytree(ROOT / folder, out / "cortexcast" / folder, ignore=ignore)
    return out


def test_layer_contracts_hold(tmp_path: Path) -> None:
    pytest.importorskip("importlinter")
    layout = _installed_layout(tmp_path / "layout")
    lint = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(layout)}
    proc = subprocess.run([str(lint), "--no-cache", str(ROOT / "pyproject.toml")],
                          cwd=layout, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "BROKEN" not in proc.stdout


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
