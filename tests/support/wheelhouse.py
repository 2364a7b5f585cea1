"""A wheelhouse made offline from what the test interpreter has installed.

The bare-install test installs the project into a new venv with ``pip --no-index``, so
it needs wheels of the project's base dependencies without asking an index. Each
installed distribution is packed back into a wheel from the files its RECORD lists (the
wheel was unpacked to exactly those files), by ``wheel pack``, which writes a fresh
RECORD with hashes. pip then resolves the base requirements against that wheelhouse as
it would against an index: a dependency the metadata forgets is simply not installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
# What the wheel is built from: the metadata and the three packages, nothing else.
PROJECT_FILES = ("pyproject.toml", "README.md", "conveyor", "api", "worker")
# Written by the installer, not part of the wheel.
_INSTALLER_FILES = {"INSTALLER", "RECORD", "REQUESTED", "direct_url.json"}


def isolated_pip_env() -> dict[str, str]:
    """The environment without this machine's pip configuration (its indexes,
    find-links and constraints), so only the wheelhouse is seen, and without PYTHONPATH:
    a checkout on it (with the ``*.egg-info`` of an editable install) would look to pip
    like Conveyor already installed in the target."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def build_project_wheel(dest: Path, scratch: Path) -> Path:
    """The project's wheel, built from a copy of its sources (a build writes ``build/``
    and ``*.egg-info`` beside the sources; the checkout stays untouched)."""
    src = scratch / "src"
    src.mkdir(parents=True)
    for name in PROJECT_FILES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*pip_wheel, "--no-index", "-w", str(dest), str(src)],
        check=True,
        env=isolated_pip_env(),
        capture_output=True,
    )
    (wheel,) = dest.glob("conveyor-*.whl")
    return wheel


def base_requirements(wheel: Path) -> list[Requirement]:
    """The Requires-Dist of ``wheel`` that apply with no extra."""
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = zf.read(name).decode()
    lines = [line for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    reqs = [Requirement(line.split(":", 1)[1].strip()) for line in lines]
    return [r for r in reqs if r.marker is None or r.marker.evaluate({"extra": ""})]


def closure(requirements: list[Requirement]) -> list[metadata.Distribution]:
    """The installed distributions ``requirements`` pull in, transitively."""
    found: dict[str, metadata.Distribution] = {}
    todo = [(r, frozenset(r.extras)) for r in requirements]
    while todo:
        req, extras = todo.pop()
        key = canonicalize_name(req.name)
        dist = metadata.distribution(req.name)
        if key in found and not extras:
            continue
        found[key] = dist
        for raw in dist.requires or []:
            sub = Requirement(raw)
            wanted = sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in {"", *extras})
            if wanted and canonicalize_name(sub.name) not in found:
                todo.append((sub, frozenset(sub.extras)))
    return list(found.values())


def pack_installed(dist: metadata.Distribution, dest: Path, scratch: Path) -> None:
    """Pack an installed distribution back into a wheel in ``dest``."""
    unpacked = scratch / canonicalize_name(dist.metadata["Name"])
    for file in dist.files or []:
        parts = file.parts
        # Scripts live outside site-packages (../../bin); bytecode is rebuilt at install.
        if parts[0] == ".." or "__pycache__" in parts or file.suffix == ".pyc":
            continue
        if parts[0].endswith(".dist-info") and parts[-1] in _INSTALLER_FILES:
            continue
        target = unpacked / file
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(dist.locate_file(file), target)
    subprocess.run(
        [sys.executable, "-m", "wheel", "pack", "-d", str(dest), str(unpacked)],
        check=True,
        capture_output=True,
    )


def make(dest: Path, scratch: Path) -> Path:
    """The project's wheel and a wheel of each base dependency, in ``dest``."""
    wheel = build_project_wheel(dest, scratch / "build")
    for dist in closure(base_requirements(wheel)):
        pack_installed(dist, dest, scratch / "unpacked")
    return wheel
