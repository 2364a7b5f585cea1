"""Put the figures of the last fault runs (test-artifacts/reliability/*.json) into
docs/RELIABILITY.md, between its ``figures`` markers.

Run after ``make chaos``: ``.venv/bin/python -m tests.faults.figures`` (prints the table;
``--write`` updates the doc).
"""

from __future__ import annotations

import json
import sys

from tests.faults.harness import ARTIFACTS, ROOT

DOC = ROOT / "docs" / "RELIABILITY.md"
START, END = "<!-- figures:start -->", "<!-- figures:end -->"


def table() -> str:
    rows = ["| run | when (UTC) | figures |", "|---|---|---|"]
    for path in sorted(ARTIFACTS.glob("*.json")):
        data = json.loads(path.read_text())
        name, at = data.pop("test"), data.pop("at")
        figures = ", ".join(f"{k} = {json.dumps(v)}" for k, v in sorted(data.items()))
        rows.append(f"| `{name}` | {at} | {figures} |")
    return "\n".join(rows)


def main() -> None:
    text = table()
    if "--write" in sys.argv:
        doc = DOC.read_text()
        head, rest = doc.split(START, 1)
        _, tail = rest.split(END, 1)
        DOC.write_text(f"{head}{START}\n{text}\n{END}{tail}")
    print(text)


if __name__ == "__main__":
    main()
