"""Packaging: every package under proxy/ is installed, and the migrations ship as ``proxy.migrations``."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from importlib.resources import files
from pathlib import Path

import proxy

ROOT = Path(proxy.__file__).parent
PYPROJECT = ROOT.parent / "pyproject.toml"


def test_every_package_is_listed() -> None:
    listed = set(tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(("proxy", *p.parent.relative_to(ROOT).parts)) for p in ROOT.rglob("__init__.py")} | {
        "proxy.migrations"
    }
    assert listed == found


def test_migrations_are_proxy_data_not_a_top_level_package(tmp_path: Path) -> None:
    versions = files("proxy.migrations") / "versions"
    assert any(p.name.startswith("0001_") for p in versions.iterdir())
    # From outside the checkout, as an installed user sees it: no generic top-level `migrations` module.
    out = subprocess.run(
        [sys.executable, "-c", "import importlib.util; print(importlib.util.find_spec('migrations'))"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "None"


def test_wheel_declares_the_license_in_the_current_form(tmp_path: Path) -> None:
    """SPDX ``license`` string and the LICENSE file: no setuptools deprecation banner on install."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(tmp_path), str(PYPROJECT.parent)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "deprecat" not in (out.stdout + out.stderr).lower()
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        metadata = zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))).decode()
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in zf.namelist())
    assert "License-Expression: Apache-2.0" in metadata
    assert "Apache License" in (PYPROJECT.parent / "LICENSE").read_text()[:200]
