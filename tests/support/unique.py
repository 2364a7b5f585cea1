"""Task types with each uniqueness rule, for the tests of unique keys."""

from __future__ import annotations

from pathlib import Path

TYPE = """\
apiVersion: conveyor.dev/v1alpha1
kind: TaskType
metadata: {{name: {name}}}
spec: {{handler: echo, uniqueness: {uniqueness}}}
"""

UNIQUE_TYPES = {
    "latest": "{key: /user}",  # while queued, return-existing: the defaults
    "once": "{key: /user, while: queued-or-running, onDuplicate: reject}",
    "debounce": "{key: /user, onDuplicate: replace}",
    "single": "{onDuplicate: reject}",  # no key: one active task of the type
    "strict": "{key: /user, while: queued-or-running, onDuplicate: replace}",
}


def unique_types(directory: Path) -> Path:
    """Write the types above, and ``plain`` (no uniqueness), into ``directory``."""
    for name, uniqueness in UNIQUE_TYPES.items():
        (directory / f"{name}.yaml").write_text(TYPE.format(name=name, uniqueness=uniqueness))
    (directory / "plain.yaml").write_text(TYPE.format(name="plain", uniqueness="null"))
    return directory
