"""Learning curves of a sweep: each trial's periodic evaluations (``logging.eval_every``), read back from its
TensorBoard events, in each method's deployed steering mode.

They cover finished and unfinished trials alike (an interrupted trial shows how far it got). Each point is
one periodic evaluation of ``logging.eval_episodes`` episodes (fewer than the final evaluation's, so
noisier); points are grouped by evaluation round (``round(step / eval_every)``) and averaged over seeds.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from routed_rl.errors import UserError
from routed_rl.runs import RunDir
from routed_rl.steering import mode_name, parse_mode
from routed_rl.sweeps.runner import TRIAL_FILE
from routed_rl.tasks import Task

__all__ = ["collect_curves", "curves_markdown", "learning_curves_figure", "read_curves_csv", "write_curves"]


def _scalars(tensorboard: Path, prefix: str) -> dict[str, dict[int, float]]:
    """Every scalar under ``prefix`` in the event files below ``tensorboard``: tag -> step -> value (the
    latest file wins where a resumed run logged a step twice)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, dict[int, float]] = defaultdict(dict)
    for events in sorted(tensorboard.rglob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags().get("scalars", []):
            if tag.startswith(prefix):
                for event in accumulator.Scalars(tag):
                    out[tag][int(event.step)] = float(event.value)
    return out


def collect_curves(sweep_dir: Path | Sequence[Path], task: Task) -> list[dict[str, Any]]:
    """One row per trial and periodic evaluation: its step, evaluation round, and the deployed mode's outcome
    rates and discounted return (``curves.csv``).

    :param sweep_dir: a sweep folder, or several whose trials are reported together
    """
    folders = [sweep_dir] if isinstance(sweep_dir, Path) else list(sweep_dir)
    rows = []
    for root in sorted(p for folder in folders for p in folder.iterdir() if (p / TRIAL_FILE).is_file()):
        trial = json.loads((root / TRIAL_FILE).read_text())
        run = RunDir(root)
        if not run.config.is_file() or not run.tensorboard.is_dir():
            continue
        config = run.load_config()
        mode = mode_name(config.policy.expert_names, **parse_mode(config.eval.steering))
        scalars = _scalars(run.tensorboard, f"eval/{mode}/")
        returns = scalars.get(f"eval/{mode}/discounted_return", {})
        for step in sorted(returns):
            row = {
                "trial": trial["trial"],
                "method": trial["method"],
                "oversight_prob": trial["oversight_prob"],
                "seed": trial["seed"],
                "mode": mode,
                "step": step,
                "round": round(step / config.logging.eval_every),
                "episodes": config.logging.eval_episodes,
            }
            row.update({o: scalars.get(f"eval/{mode}/{o}", {}).get(step, float("nan")) for o in task.outcomes})
            row["return"] = returns[step]
            rows.append(row)
    return rows


#: The columns of ``curves.csv`` before the outcome rates, with their types; ``return`` comes last.
_CURVE_HEAD: dict[str, type] = {
    "trial": str, "method": str, "oversight_prob": float, "seed": int, "mode": str, "step": int, "round": int, "episodes": int
}  # fmt: skip


def read_curves_csv(path: Path, task: Task) -> list[dict[str, Any]]:
    """The rows of a ``curves.csv`` written by an earlier report, typed as :func:`collect_curves` gives them.

    :raises UserError: when its columns are not a report's curves for ``task``'s outcomes
    """
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        expected = [*_CURVE_HEAD, *task.outcomes, "return"]
        if list(reader.fieldnames or []) != expected:
            raise UserError(
                f"{path} is not a curves.csv of this task written by `routed-rl report` (columns {reader.fieldnames})"
            )
        try:
            return [{k: _CURVE_HEAD.get(k, float)(v) for k, v in row.items()} for row in reader]  # type: ignore[operator]
        except (TypeError, ValueError) as err:
            raise UserError(f"{path}, line {reader.line_num}: not a row `routed-rl report` wrote ({err})") from None


def _groups(rows: list[dict[str, Any]], methods: Sequence[str]) -> dict[tuple[str, float], list[dict[str, Any]]]:
    groups: dict[tuple[str, float], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["method"], r["oversight_prob"])].append(r)
    order = list(methods)
    return dict(sorted(groups.items(), key=lambda kv: (order.index(kv[0][0]) if kv[0][0] in order else len(order), kv[0])))


def _mean_by_round(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float], list[int]]:
    """Per evaluation round: mean step, mean ``key`` over seeds, and how many seeds reached it."""
    rounds: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        rounds[r["round"]].append(r)
    steps, values, seeds = [], [], []
    for k in sorted(rounds):
        steps.append(float(np.mean([r["step"] for r in rounds[k]])))
        values.append(float(np.nanmean([r[key] for r in rounds[k]])))
        seeds.append(len(rounds[k]))
    return steps, values, seeds


def curves_markdown(rows: list[dict[str, Any]], task: Task, methods: Sequence[str]) -> list[str]:
    """A table: per method, the deployed mode's wanted / unwanted rates at each evaluation round (mean over
    the seeds that reached it)."""
    if not rows:
        return []
    wanted, unwanted = task.wanted[0], task.unwanted[0]
    rounds = sorted({r["round"] for r in rows})
    every = {r["step"] / max(r["round"], 1) for r in rows if r["round"] > 0}
    step_of = {k: k * float(np.median(list(every))) if every else 0.0 for k in rounds}
    lines = [
        f"## During training: {wanted} / {unwanted} rate of the deployed mode at each periodic evaluation",
        "",
        f"Mean over the seeds that reached the step ({rows[0]['episodes']} episodes per evaluation, so noisier than the "
        "final evaluation; unfinished trials included).",
        "",
        "| method (mode) | oversight | " + " | ".join(f"{step_of[k] / 1e6:.1f}M" for k in rounds) + " |",
        "|---|---|" + "---|" * len(rounds),
    ]
    for (method, prob), members in _groups(rows, methods).items():
        by_round = {k: [r for r in members if r["round"] == k] for k in rounds}
        cells = []
        for k in rounds:
            at = by_round[k]
            if not at:
                cells.append("")
                continue
            w, u = np.nanmean([r[wanted] for r in at]), np.nanmean([r[unwanted] for r in at])
            cells.append(f"{w:.0%} / {u:.0%}" + (f" ({len(at)})" if len(at) != len({r["seed"] for r in members}) else ""))
        lines.append(f"| {method} ({members[0]['mode']}) | {prob:.1%} | " + " | ".join(cells) + " |")
    return lines


def learning_curves_figure(rows: list[dict[str, Any]], task: Task, methods: Sequence[str], title: str, path: Path) -> Path:
    """Wanted (solid) and unwanted (dashed) outcome rate of each method's deployed mode against env steps,
    mean over seeds, each seed's points faint."""
    from routed_rl.figures import new_figure, save_figure

    wanted, unwanted = task.wanted[0], task.unwanted[0]
    fig = new_figure((7.5, 4.6))
    ax = fig.subplots()
    for (method, prob), members in _groups(rows, methods).items():
        label = f"{method} ({members[0]['mode']}), {prob:.1%}"
        steps, values, _ = _mean_by_round(members, wanted)
        (line,) = ax.plot(steps, values, marker="o", label=f"{label}: {wanted}")
        steps_u, values_u, _ = _mean_by_round(members, unwanted)
        ax.plot(steps_u, values_u, marker="x", linestyle="--", color=line.get_color(), label=f"{label}: {unwanted}")
        ax.plot([r["step"] for r in members], [r[wanted] for r in members], ".", color=line.get_color(), alpha=0.3)
    ax.set_xlabel("env steps")
    ax.set_ylabel("share of evaluation episodes")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(f"{wanted} (solid) and {unwanted} (dashed) rate during training, deployed mode, mean over seeds "
                 f"(dots: one seed's {wanted} rate)\n{title}", fontsize=8)  # fmt: skip
    ax.legend(fontsize=7, loc="center right")
    return save_figure(fig, path)


def write_curves(
    sweep_dir: Path,
    task: Task,
    methods: Sequence[str],
    title: str,
    folders: Sequence[Path] | None = None,
    earlier: Sequence[Path] = (),
) -> tuple[list[Path], list[str]]:
    """Write ``curves.csv`` and ``learning_curves.png`` into ``sweep_dir`` when the trials logged periodic
    evaluations; return the files and the markdown section for ``report.md``.

    :param folders: the sweep folders whose trials to read (default: ``sweep_dir`` alone)
    :param earlier: ``curves.csv`` files of earlier reports whose rows join them
    """
    rows = collect_curves(folders or sweep_dir, task)
    for path in earlier:
        rows += read_curves_csv(path, task)
    if not rows:
        return [], []
    csv_path = sweep_dir / "curves.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    figure = learning_curves_figure(rows, task, methods, title, sweep_dir / "learning_curves.png")
    return [csv_path, figure], curves_markdown(rows, task, methods)
