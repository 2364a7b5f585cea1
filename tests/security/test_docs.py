"""docs/SECURITY.md and docs/RELIABILITY.md stay true: every test they cite exists, and
every security setting is documented."""

from __future__ import annotations

import re

import pytest

from tests.conftest import ROOT

DOCS = [ROOT / "docs" / "SECURITY.md", ROOT / "docs" / "RELIABILITY.md"]
SETTINGS = [
    "AUTH_ENABLED",
    "AUTH_TOKENS_FILE",
    "METRICS_REQUIRE_TOKEN",
    "RATE_LIMIT",
    "LOG_REDACT_KEYS",
    "AUTH_FAILURE_LIMIT",
]


def cited(text: str) -> list[tuple[str, str]]:
    """(file, test name) for every `tests/...py::name` and `<file>.py::name` in a doc."""
    out = []
    for path, names in re.findall(r"`((?:tests/)?[\w/]+\.py)::([\w`/ ]+)`", text):
        for name in re.findall(r"test_\w+", names):
            out.append((path, name))
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_cited_test_exists(doc):
    refs = cited(doc.read_text())
    assert refs, "no tests cited"
    for path, name in refs:
        file = ROOT / path if path.startswith("tests/") else ROOT / "tests" / "faults" / path
        assert file.exists(), path
        assert re.search(rf"^(?:async )?def {name}\(", file.read_text(), re.M), f"{path}::{name}"


def test_every_security_setting_is_documented():
    text = DOCS[0].read_text()
    assert all(f"CONVEYOR_{s}" in text for s in SETTINGS)
