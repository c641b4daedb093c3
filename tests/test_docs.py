"""The README and benchmarks/README.md link to each other's sections: every relative link resolves."""

from __future__ import annotations

import re
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
