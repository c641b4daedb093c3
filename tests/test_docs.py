"""The README and benchmarks/README.md link to each other's sections: every relative link resolves. The seed
tables either prints under a ``seed_table.py`` command are what that command gives today on the kept result
files."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
DOCS = ["README.md", "benchmarks/README.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors for a markdown file's headings: lower case, punctuation but ``-`` and ``_`` dropped,
    spaces as ``-``, a repeated heading suffixed ``-1``, ``-2``, ...; fenced code is skipped."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    fenced = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        heading = re.match(r"^#+ (.*)$", line)
        if fenced or not heading:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
        seen[slug] = seen.get(slug, -1) + 1
        anchors.add(slug if seen[slug] == 0 else f"{slug}-{seen[slug]}")
    return anchors


def test_heading_anchors_follow_github() -> None:
    text = "# Routing: the `standard` sweep\n```\n# not a heading\n```\n## 90% / 5% at 1%\n## 90% / 5% at 1%\n"
    assert heading_anchors(text) == {"routing-the-standard-sweep", "90--5-at-1", "90--5-at-1-1"}


@pytest.mark.parametrize("doc", DOCS)
def test_every_relative_link_resolves(doc: str) -> None:
    source = ROOT / doc
    broken = []
    for target in LINK.findall(source.read_text()):
        if re.match(r"^[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (source.parent / path).resolve() if path else source
        if not file.exists():
            broken.append(target)
        elif anchor and anchor not in heading_anchors(file.read_text()):
            broken.append(target)
    assert not broken, f"{doc}: links to missing files or sections: {broken}"


def _cells(row: str) -> list[str]:
    return [cell.strip() for cell in row.strip().strip("|").split("|")]


@pytest.mark.parametrize(("doc", "at_least"), [("README.md", 4), ("benchmarks/README.md", 10)])
def test_every_seed_table_matches_its_command(doc: str, at_least: int) -> None:
    """Each ``R=...; .venv/bin/python benchmarks/seed_table.py \\`` command block, run on the kept files, gives
    the rows of the table printed after it (a README row may add words after the label, e.g. ", constant rate");
    ``at_least`` rows are checked, so a doc whose commands went missing fails."""
    lines = (ROOT / doc).read_text().splitlines()
    checked, wrong = 0, []
    for start, line in enumerate(lines):
        if "benchmarks/seed_table.py \\" not in line:
            continue
        end, command = start, [line.strip()]
        while command[-1].endswith("\\"):
            end += 1
            command.append(lines[end].strip())
        script = "\n".join(command).replace(".venv/bin/python", sys.executable)
        printed = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        rows = [_cells(row) for row in printed.splitlines() if row.startswith("| ") and not row.startswith("| method")]
        documented = [_cells(row) for row in lines[end + 1 : end + 30] if row.strip().startswith("| ")]
        assert rows, f"line {start + 1}: the command printed no table"
        for row in rows:
            match = next((doc for doc in documented if doc[0].startswith(row[0])), None)
            checked += 1
            if match is None or match[1:] != row[1:]:
                wrong.append(f"line {start + 1}: {row[0]}: README {match and match[1:]} vs command {row[1:]}")
    assert checked >= at_least and not wrong, wrong
