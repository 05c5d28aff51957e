"""Import structure: every module imports on its own (no cycles), and rooms point one way."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import proxy

ROOT = Path(proxy.__file__).parent
MODULES = sorted(m.name for m in pkgutil.walk_packages([str(ROOT)], "proxy.") if not m.name.endswith("__main__"))

# Rooms from the ground up: a module may import its own room and rooms below it, never above.
# Leaves are modules everyone may import; they import only other leaves.
LEAVES = (
    "proxy.config",
    "proxy.config_text",
    "proxy.durations",
    "proxy.timespec",
    "proxy.headers",
    "proxy.errors",
    "proxy.apis",
    "proxy.record.exchange",
    "proxy.replay.matchkey",
)
ROOMS = (
    "proxy.store",
    "proxy.usage",
    "proxy.record",
    "proxy.replay",
    "proxy.admin",
    "proxy.forward",
    "proxy.commands",
    "proxy.cli",
    "proxy.__main__",
)
# Beside the product: they may import anything, and nothing in it imports them.
APART = ("proxy.testing", "proxy.bench")
# Libraries a room must never import.
NEVER = {
    "proxy.store": ("aiohttp",),
    "proxy.usage": ("aiohttp",),
    "proxy.record": ("aiohttp",),
    "proxy.apis": ("aiohttp", "sqlalchemy"),
    "proxy.record.exchange": ("aiohttp", "sqlalchemy"),
    "proxy.replay.matchkey": ("aiohttp", "sqlalchemy"),
    "proxy.config": ("aiohttp", "sqlalchemy"),
    "proxy.config_text": ("aiohttp", "sqlalchemy"),
}


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def rank(module: str) -> int:
    """-1 for leaves, the room's place for the rest, a large number for the rooms apart."""
    if any(_under(module, leaf) for leaf in LEAVES):
        return -1
    for i, room in enumerate(ROOMS):
        if _under(module, room):
            return i
    if any(_under(module, apart) for apart in APART):
        return 100
    raise AssertionError(f"{module} is in no room: add it to LEAVES, ROOMS or APART")


def module_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(("proxy", *parts))


def imported_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            if node.module == "proxy":
                names.update(f"proxy.{alias.name}" for alias in node.names)
    return names


def _import_alone(module: str) -> tuple[str, str | None]:
    out = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=300)
    return module, out.stderr if out.returncode else None


def test_every_module_imports_alone() -> None:
    """Each module first in a fresh interpreter: the way a circular import shows itself.

    A few at a time: starting all of them at once on a busy two-core machine only measures the load.
    """
    with ThreadPoolExecutor(max_workers=4) as pool:
        failures = {m: err for m, err in pool.map(_import_alone, MODULES) if err is not None}
    assert failures == {}


def test_rooms_point_one_way() -> None:
    problems = []
    for path in ROOT.rglob("*.py"):
        module = module_of(path)
        if module == "proxy":
            continue
        own = rank(module)
        for name in imported_names(path):
            if name != "proxy" and _under(name, "proxy"):
                target = rank(name)
                if own == -1 and target != -1:
                    problems.append(f"leaf {module} imports {name}")
                elif target > own:
                    problems.append(f"{module} imports {name}, a room above it")
            for prefix, banned in NEVER.items():
                if _under(module, prefix) and any(_under(name, b) for b in banned):
                    problems.append(f"{module} imports {name}")
    assert problems == []


def test_cli_commands_are_imported_explicitly() -> None:
    """No command is loaded from a string: every import is visible to readers and tools."""
    for path in [ROOT / "cli.py", *(ROOT / "commands").glob("*.py")]:
        assert "import_module" not in path.read_text(), path
