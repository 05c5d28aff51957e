"""Import structure: every module imports on its own (no cycles), and layers point one way."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import proxy

ROOT = Path(proxy.__file__).parent
MODULES = sorted(m.name for m in pkgutil.walk_packages([str(ROOT)], "proxy.") if not m.name.endswith("__main__"))
# Leaves import nothing from the request path; storage never imports the web framework.
FORBIDDEN = {
    "proxy.store": ("aiohttp", "proxy.server", "proxy.admin", "proxy.cli", "proxy.commands"),
    "proxy.exchange": ("aiohttp", "sqlalchemy", "proxy.server"),
    "proxy.schemas": ("aiohttp", "sqlalchemy", "proxy."),
    "proxy.sse": ("aiohttp", "sqlalchemy", "proxy."),
    "proxy.config": ("aiohttp", "sqlalchemy", "proxy.server", "proxy.store"),
}


def test_every_module_imports_alone() -> None:
    """Each module first in a fresh interpreter: the way a circular import shows itself."""
    procs = {
        m: subprocess.Popen([sys.executable, "-c", f"import {m}"], stderr=subprocess.PIPE, text=True) for m in MODULES
    }
    failures = {m: p.communicate(timeout=120)[1] for m, p in procs.items() if p.wait(timeout=120) != 0}
    assert failures == {}


def imported_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_layers_point_one_way() -> None:
    problems = []
    for path in ROOT.rglob("*.py"):
        module = "proxy." + ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for prefix, banned in FORBIDDEN.items():
            if module == prefix or module.startswith(prefix + "."):
                problems += [
                    f"{module} imports {n}"
                    for n in imported_names(path)
                    if any(n == b or n.startswith(b) for b in banned) and n != "proxy.redact"
                ]
    nobody_imports = ("proxy.server", "proxy.cli")
    for path in ROOT.rglob("*.py"):
        module = "proxy." + ".".join(path.relative_to(ROOT).with_suffix("").parts)
        if module.startswith(("proxy.commands", "proxy.bench", "proxy.cli", "proxy.__main__", "proxy.resend")):
            continue
        problems += [f"{module} imports {n}" for n in imported_names(path) if n in nobody_imports]
    assert problems == []
