"""A table over seeds from evaluation files: mean and 95% bootstrap interval per row, as `routed-rl report` gives.

For runs that are not one sweep's trials: checkpoints evaluated with ``routed-rl eval RUN --checkpoint ...``,
trials of several sweep folders, evaluations kept in ``benchmarks/results/``. Each row is
``--row LABEL MODE GLOB``: the evaluation files (``eval.json`` or ``routed-rl eval --json`` output, one file per
seed) that ``GLOB`` matches, read at steering mode ``MODE`` (``unsteered``, ``select=diamond``, ...).
The interval is :func:`routed_rl.sweeps.report.interval`'s, the report's own.

Usage: ``python benchmarks/seed_table.py --row routed select=diamond 'runs/a_s*/eval.json' --row naive unsteered ...``
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path
from typing import Any, NoReturn

from routed_rl.sweeps.report import interval


def _fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _files(label: str, pattern: str) -> list[Path]:
    files = [Path(p) for p in sorted(glob.glob(pattern))]
    if not files:
        _fail(f"no file matches {pattern!r} (row {label!r})")
    return files


def _result(path: Path, mode: str) -> dict[str, Any]:
    results = json.loads(path.read_text())
    for r in results:
        if r["mode"] == mode:
            return r
    _fail(f"{path} has no mode {mode!r}; it has {[r['mode'] for r in results]}")


def _cell(values: list[float], percent: bool = False) -> str:
    """Mean [95% bootstrap interval] over seeds, as a fraction or in percent."""
    iv = interval(values)
    if not percent:
        return iv.text()
    iv = type(iv)(iv.point * 100, iv.low * 100, iv.high * 100, iv.n)
    return iv.text(".1f").replace(" [", "% [").replace(" (", "% (")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--row", nargs=3, action="append", required=True, metavar=("LABEL", "MODE", "GLOB"))
    args = parser.parse_args()
    files = {label: _files(label, pattern) for label, _mode, pattern in args.row}
    rows = [(label, mode, [_result(f, mode) for f in files[label]]) for label, mode, _pattern in args.row]
    print("| method (mode) | seeds | return | diamond | ghost | timeout | unwatched ghost | per-seed return |")
    print("|---|---:|---|---|---|---:|---|---|")
    for label, mode, results in rows:
        per_seed = ", ".join(f"{r['discounted_return']:.3f}" for r in results)
        print(
            f"| {label} ({mode}) | {len(results)} | {_cell([r['discounted_return'] for r in results])} "
            f"| {_cell([r['diamond'] for r in results], True)} | {_cell([r['ghost'] for r in results], True)} "
            f"| {100 * sum(r['timeout'] for r in results) / len(results):.1f}% "
            f"| {_cell([r['unseen']['ghost'] for r in results], True)} | {per_seed} |"
        )
    print()
    for label, paths in files.items():
        print(f"{label}: {', '.join(str(f) for f in paths)}")


if __name__ == "__main__":
    main()
