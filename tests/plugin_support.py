"""Installing example plug-in packages for real, offline, without touching the project's environment.

Each package under ``tests/plugins/`` is copied to a temporary directory (so the build leaves nothing in the
source tree) and installed with pip into another temporary directory (``--target``: offline, no
dependencies, no build isolation, so it uses this environment's setuptools). The caller puts that
directory on ``sys.path`` while its tests run.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PLUGINS = Path(__file__).parent / "plugins"


def can_build_wheels() -> bool:
    """pip builds the wheel with this environment's setuptools: it needs bdist_wheel (setuptools >= 70.1
    has it built in; older ones need the ``wheel`` package)."""
    try:
        version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return False
    major, minor = (int(part) for part in re.findall(r"\d+", version)[:2])
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


def install(packages: list[str], root: Path) -> Path:
    """Install the named ``tests/plugins`` packages into ``root / "site-packages"``; that directory."""
    if not can_build_wheels():
        pytest.skip("building the example plug-ins needs setuptools >= 70.1 (or the wheel package)")
    target, sources = root / "site-packages", []
    for package in packages:
        source = root / "source" / package
        shutil.copytree(
            PLUGINS / package, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
        )
        sources.append(str(source))
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index"]
    pip += ["--quiet", "--disable-pip-version-check", "--target", str(target), *sources]
    result = subprocess.run(pip, capture_output=True, text=True, timeout=300, check=False)
    if result.returncode != 0:
        pytest.fail(f"pip could not install {packages}:\n{result.stdout}\n{result.stderr}")
    return target


def forget(module_prefix: str) -> None:
    """Drop the modules of ``module_prefix`` so the next import finds whatever ``sys.path`` holds then."""
    for name in [name for name in sys.modules if name.split(".")[0] == module_prefix]:
        del sys.modules[name]
    importlib.invalidate_caches()
