"""The Dockerfile: hadolint-clean, multi-stage, non-root, no installers in the final stage,
and consistent with the commands and paths the chart runs (no Docker engine here to build)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pathspec
import pytest

from tests.chart.render import ROOT, render

DOCKERFILE = ROOT / "Dockerfile"
# Docker's .dockerignore lets a pattern that matches a directory cover everything under it,
# which is pathspec's "gitwildmatch" flavour (its newer "gitignore" one follows git instead).
pytestmark = pytest.mark.filterwarnings("ignore:GitWildMatchPattern:DeprecationWarning")


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _final_stage() -> list[tuple[str, str]]:
    instructions = _instructions()
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def test_hadolint_is_clean(tmp_path: Path) -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    result = subprocess.run(
        [str(hadolint), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install gcc\nRUN cd /app && pip install .\n")
    hadolint = Path(sys.executable).with_name("hadolint")
    result = subprocess.run(
        [str(hadolint), "--no-color", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0 and "DL3007" in result.stdout


def test_multi_stage_and_the_final_stage_is_lean_and_non_root() -> None:
    froms = [rest for word, rest in _instructions() if word == "FROM"]
    assert len(froms) >= 2 and " AS " in froms[0].upper()
    final = _final_stage()
    runs = " ".join(rest for word, rest in final if word == "RUN")
    assert not re.search(r"apt-get install|apk add|gcc|build-essential|pip install", runs)
    assert "pip uninstall" in runs  # the base image's installer goes too
    users = [rest for word, rest in final if word == "USER"]
    assert users and re.fullmatch(
        r"[1-9][0-9]{3,}(:[0-9]+)?", users[-1]
    )  # numeric: runAsNonRoot can check it
    copies_from_build = [rest for word, rest in final if word == "COPY" and rest.startswith("--from=")]
    assert copies_from_build, "the final stage takes the venv from the build stage"
    build_runs = " ".join(
        rest for word, rest in _instructions()[: len(_instructions()) - len(final)] if word == "RUN"
    )
    assert "pip uninstall -y pip setuptools" in build_runs  # and the venv carries no installer


def test_the_image_holds_what_the_chart_runs() -> None:
    final = _final_stage()
    copies = [rest.split() for word, rest in final if word == "COPY" and not rest.startswith("--from=")]
    destinations = {dest: src for src, dest in copies}
    operator = next(c for _, spec in _pods() for c in spec["containers"] if c["name"] == "operator")
    script = Path(operator["command"][-1])
    # The chart runs the operator script from the directory the image copies k8s/controller to.
    source = destinations[str(script.parent)]
    assert (ROOT / source / script.name).is_file()
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(rest for word, rest in final if word == "ENV")))
    assert env["CONVEYOR_API_HOST"] == "0.0.0.0"
    assert env["CONVEYOR_TASKTYPES"] == "/etc/conveyor/tasktypes"


def _pods() -> list[tuple[str, dict]]:
    from tests.chart.render import pod_specs

    return pod_specs(render("secret-auth"))


def test_the_commands_the_chart_runs_exist() -> None:
    from conveyor.cli import main

    for _, spec in _pods():
        for container in spec["containers"]:
            command = container["command"]
            if command[0] == "conveyor":
                assert command[1] in main.commands, command
            else:
                assert command[0] in ("kopf", "python"), command


@pytest.mark.parametrize(
    ("path", "included"),
    [
        ("pyproject.toml", True),
        ("README.md", True),
        ("conveyor/engine.py", True),
        ("api/app.py", True),
        ("api/static/index.html", True),
        ("worker/runtime.py", True),
        ("k8s/controller/tasktypes.py", True),
        ("k8s/examples/echo.yaml", True),
        (".venv/bin/python", False),
        (".git/HEAD", False),
        ("tests/conftest.py", False),
        ("charts/conveyor/values.yaml", False),
        ("conveyor/__pycache__/engine.cpython-311.pyc", False),
    ],
)
def test_dockerignore_sends_only_what_the_build_needs(path: str, included: bool) -> None:
    patterns = (ROOT / ".dockerignore").read_text().splitlines()
    ignored = pathspec.PathSpec.from_lines("gitwildmatch", patterns)
    assert ignored.match_file(path) is not included


def test_every_copy_source_reaches_the_build() -> None:
    patterns = (ROOT / ".dockerignore").read_text().splitlines()
    ignored = pathspec.PathSpec.from_lines("gitwildmatch", patterns)
    for word, rest in _instructions():
        if word != "COPY" or rest.startswith("--from="):
            continue
        for source in rest.split()[:-1]:
            assert (ROOT / source).exists(), source
            assert not ignored.match_file(source if (ROOT / source).is_file() else f"{source}/x.py"), source
