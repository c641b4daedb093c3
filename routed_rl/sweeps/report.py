"""The sweep report (``routed-rl report SWEEP_DIR``): does routing help, with seeds and intervals shown.

Writes into the sweep folder:

- ``results.csv``: one row per finished trial and evaluated steering mode;
- ``report.md``: per method x oversight level (x other axes), in each method's deployed steering mode
  (its config's ``eval.steering``), the point estimate and 95% interval of the ground-truth return and
  the rate of each of the task's outcomes (OversightGrid: diamond, ghost, timeout), then each method
  against the sweep's first method;
- ``return_vs_oversight.png``: ground-truth return against oversight level, one line and band per method;
- ``gaming_gap.png``: the unwanted outcome's rate (the ghost) on overseen vs unseen episodes per method and
  oversight level;
- ``curves.csv``, ``learning_curves.png`` and a table in ``report.md``: the deployed mode's outcome rates at
  each periodic evaluation during training (:mod:`routed_rl.sweeps.curves`), unfinished trials included.

A sweep run in pieces (some trials on another machine, or in a folder since cleaned up) is reported as one:
``routed-rl report SWEEP_DIR --include OTHER`` adds the finished trials of another sweep folder, or the rows of
a ``results.csv`` that an earlier report wrote (the final evaluations only: no learning curves from it).

Intervals are rliable's percentile bootstrap over seeds (one task, so the stratified bootstrap is a plain
one) of the mean, or of the interquartile mean (IQM) when every group has at least
:data:`IQM_MIN_SEEDS` seeds. With 3 seeds a bootstrap interval is narrow and somewhat optimistic: it
cannot be wider than the seeds' range.
"""

from __future__ import annotations

import csv
import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from routed_rl.errors import UserError
from routed_rl.runs import RunDir
from routed_rl.steering import mode_name, parse_mode
from routed_rl.sweeps.runner import TRIAL_FILE, read_folder_spec, trial_status
from routed_rl.sweeps.spec import method_label
from routed_rl.tasks import Task

__all__ = [
    "IQM_MIN_SEEDS",
    "Interval",
    "collect_rows",
    "csv_columns",
    "gather_rows",
    "interval",
    "read_results_csv",
    "summarize",
    "unwanted_name",
    "write_report",
]

#: Seeds needed in every group before the report aggregates by the IQM instead of the mean.
IQM_MIN_SEEDS = 5
#: Bootstrap resamples (fixed seed: the same folder always gives the same report).
BOOTSTRAP_REPS = 5_000


def unwanted_name(task: Task) -> str:
    """The name the report gives the task's unwanted outcomes: the outcome itself when there is one."""
    return task.unwanted[0] if len(task.unwanted) == 1 else "unwanted"


#: The columns of ``results.csv`` before the outcome rates.
_CSV_HEAD = ("trial", "method", "oversight_prob", "seed", "axes", "mode", "deployed", "env_steps", "wall_s",
             "labels_spent", "episodes")  # fmt: skip


def _csv_tail(unwanted: str) -> list[str]:
    """The columns of ``results.csv`` after the outcome rates."""
    return ["overseen_episodes", f"{unwanted}_overseen", f"{unwanted}_unseen", "gaming_gap", "return"]


def csv_columns(task: Task) -> list[str]:
    """The columns of ``results.csv`` for a sweep over ``task`` (one per outcome)."""
    return [*_CSV_HEAD, *task.outcomes, *_csv_tail(unwanted_name(task))]


def _unwanted_share(rates: dict[str, float], task: Task) -> float | None:
    """Unwanted share of the episodes that ended with a rewarded outcome (``None`` when none did)."""
    ended = sum(rates[o] for o in task.rewarded)
    return sum(rates[o] for o in task.unwanted) / ended if ended > 0 else None


def _done_trials(sweep_dir: Path) -> list[Path]:
    return [p for p in sorted(sweep_dir.iterdir()) if (p / TRIAL_FILE).is_file() and trial_status(p) == "done"]


def collect_rows(sweep_dir: Path) -> tuple[list[dict[str, Any]], Task | None]:
    """One row per finished trial and evaluated steering mode (the columns of ``results.csv``), and the task
    of the sweep (``None`` when no trial is finished).

    :raises UserError: when the trials are not all on envs with the same outcomes
    """
    rows: list[dict[str, Any]] = []
    task: Task | None = None
    for root in _done_trials(sweep_dir):
        trial = json.loads((root / TRIAL_FILE).read_text())
        run = RunDir(root)
        config = run.load_config()
        mine = config.env.task()
        if task is None:
            task = mine
        elif dict(mine.outcomes) != dict(task.outcomes):
            raise UserError(f"{root.name} has outcomes {list(mine.outcomes)}, other trials {list(task.outcomes)}: "
                            "report sweeps over one kind of env")  # fmt: skip
        u = unwanted_name(task)
        deployed = mode_name(config.policy.expert_names, **parse_mode(config.eval.steering))
        labels = sum(1 for _ in run.labels.open()) if run.labels.is_file() else 0
        for result in json.loads(run.eval.read_text()):
            rows.append({
                "trial": trial["trial"],
                "method": trial["method"],
                "oversight_prob": trial["oversight_prob"],
                "seed": trial["seed"],
                "axes": json.dumps(trial.get("axes", {}), sort_keys=True),
                "mode": result["mode"],
                "deployed": result["mode"] == deployed,
                "env_steps": trial["total_steps"],
                "wall_s": trial["wall_s"],
                "labels_spent": labels,
                "episodes": result["episodes"],
                **{o: result[o] for o in task.outcomes},
                "overseen_episodes": int(result["overseen"]["episodes"]),
                f"{u}_overseen": _unwanted_share(result["overseen"], task),
                f"{u}_unseen": _unwanted_share(result["unseen"], task),
                "gaming_gap": result["gaming_gap"],
                "return": result["discounted_return"],
            })  # fmt: skip
    return rows, task


#: ``results.csv`` columns that are not floats, and how to read them back (the outcome rates and the rest are floats).
_CSV_TYPES: dict[str, Callable[[str], Any]] = {
    "trial": str, "method": str, "seed": int, "axes": str, "mode": str, "deployed": lambda v: v == "True",
    "env_steps": int, "labels_spent": int, "episodes": int, "overseen_episodes": int,
}  # fmt: skip


def read_results_csv(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows of a ``results.csv`` written by :func:`write_report`, typed as :func:`collect_rows` gives them,
    and the outcome names its columns name.

    :raises UserError: for a missing file or one whose columns are not a report's
    """
    if not path.is_file():
        raise UserError(f"{path} does not exist: give a sweep folder or the results.csv of an earlier report")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        n, tail = len(_CSV_HEAD), header[-5:]
        if header[:n] != list(_CSV_HEAD) or len(header) < n + 6 or tail != _csv_tail(tail[1].removesuffix("_overseen")):
            raise UserError(f"{path} is not a results.csv written by `routed-rl report` (its columns are {header})")
        rows = []
        for row in reader:
            try:
                rows.append(
                    {k: _CSV_TYPES[k](v) if k in _CSV_TYPES else None if v == "" else float(v) for k, v in row.items()}
                )
            except (TypeError, ValueError) as err:  # a short row leaves None; a bad number or count fails to parse
                raise UserError(f"{path}, line {reader.line_num}: not a row `routed-rl report` wrote ({err})") from None
    return rows, header[n:-5]


def gather_rows(sweep_dir: Path, include: Sequence[Path] = ()) -> tuple[list[dict[str, Any]], Task | None]:
    """:func:`collect_rows` of ``sweep_dir`` joined with those of each included sweep folder or ``results.csv``.

    :raises UserError: when a trial comes from two places, or the places disagree on the task's outcomes
    """
    rows, task = collect_rows(sweep_dir)
    source = dict.fromkeys((r["trial"] for r in rows), str(sweep_dir))
    for path in include:
        if path.is_dir():
            more, their_task = collect_rows(path)
            outcomes = list(their_task.outcomes) if their_task is not None else None
            task = task or their_task
        else:
            more, outcomes = read_results_csv(path)
        if outcomes is not None and task is not None and outcomes != list(task.outcomes):
            raise UserError(f"{path} has outcomes {outcomes}, {sweep_dir} {list(task.outcomes)}: report one kind of env")
        for trial in dict.fromkeys(r["trial"] for r in more):
            if trial in source:
                raise UserError(f"trial {trial} is in both {source[trial]} and {path}: include each trial once")
            source[trial] = str(path)
        rows += more
    return rows, task


@dataclass(frozen=True)
class Interval:
    """A point estimate over seeds and its 95% bootstrap interval."""

    point: float
    low: float
    high: float
    n: int

    def text(self, fmt: str = ".3f") -> str:
        if self.n < 2:
            return f"{self.point:{fmt}} (1 seed)"
        return f"{self.point:{fmt}} [{self.low:{fmt}}, {self.high:{fmt}}]"


def interval(values: Sequence[float], iqm: bool = False, seed: int = 0) -> Interval:
    """The mean (or IQM) of ``values`` over seeds and rliable's 95% percentile-bootstrap interval of it."""
    from rliable import library as rly
    from rliable import metrics

    scores = np.asarray(values, dtype=float).reshape(-1, 1)  # (runs, tasks): one task
    if len(scores) < 2:
        v = float(scores.mean())
        return Interval(v, v, v, len(scores))
    aggregate: Callable[[np.ndarray], float] = metrics.aggregate_iqm if iqm else metrics.aggregate_mean
    # rliable's StratifiedBootstrap draws its resamples from numpy's global generator, not the random_state it is
    # given (rliable 1.2.0, update_indices): seed that generator for the call and give the caller's state back
    outer = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():  # arch deprecates the RandomState that rliable passes it
            warnings.simplefilter("ignore", FutureWarning)
            points, cis = rly.get_interval_estimates(
                {"x": scores},
                lambda s: np.array([aggregate(s)]),
                reps=BOOTSTRAP_REPS,
                random_state=np.random.RandomState(seed),
            )
    finally:
        np.random.set_state(outer)
    return Interval(float(points["x"][0]), float(cis["x"][0, 0]), float(cis["x"][1, 0]), len(scores))


def _group_label(method: str, axes: str, mode: str) -> str:
    extra = " ".join(f"{k}={v}" for k, v in json.loads(axes).items())
    return f"{method}{' ' + extra if extra else ''} ({mode})"


@dataclass
class Group:
    """The deployed-mode rows of one method x oversight level x axes, aggregated over seeds."""

    method: str
    oversight_prob: float
    label: str
    rows: list[dict[str, Any]]
    stats: dict[str, Interval]


def summarize(
    rows: list[dict[str, Any]], outcomes: Sequence[str], methods: Sequence[str] | None = None
) -> tuple[list[Group], bool]:
    """Aggregate the deployed-mode rows over seeds (the return and each outcome's rate); return the groups (in
    the sweep's method order, then by oversight level) and whether the IQM was used."""
    deployed = [r for r in rows if r["deployed"]]
    order = list(methods or [])

    def rank(key: tuple[str, str, str, float]) -> tuple[int, str, str, float]:
        return (order.index(key[0]) if key[0] in order else len(order), key[0], key[1], key[3])

    keys = sorted({(r["method"], r["axes"], r["mode"], r["oversight_prob"]) for r in deployed}, key=rank)
    grouped = [(key, [r for r in deployed if (r["method"], r["axes"], r["mode"], r["oversight_prob"]) == key]) for key in keys]
    iqm = bool(grouped) and min(len(g) for _, g in grouped) >= IQM_MIN_SEEDS
    out = []
    for (method, axes, mode, prob), members in grouped:
        members = sorted(members, key=lambda r: r["seed"])
        stats = {key: interval([r[key] for r in members], iqm) for key in ("return", *outcomes)}
        out.append(Group(method, prob, _group_label(method, axes, mode), members, stats))
    return out, iqm


def _mean(values: list[Any]) -> float | None:
    present = [v for v in values if v is not None and v == v]
    return float(np.mean(present)) if present else None


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _comparisons(groups: list[Group]) -> list[str]:
    """Each group against the group of the first method at the same oversight level."""
    lines = []
    first = groups[0].method if groups else None
    for prob in sorted({g.oversight_prob for g in groups}):
        at = [g for g in groups if g.oversight_prob == prob]
        refs = [g for g in at if g.method == first]
        for ref in refs:
            for other in at:
                if other.method == first:
                    continue
                a, b = ref.stats["return"], other.stats["return"]
                verdict = (
                    "one seed: no interval to compare"
                    if min(a.n, b.n) < 2
                    else "above, intervals do not overlap"
                    if a.low > b.high
                    else "below, intervals do not overlap"
                    if a.high < b.low
                    else "intervals overlap: not separated"
                )
                lines.append(f"- {prob:.1%}: {ref.label} {a.text()} vs {other.label} {b.text()}: **{verdict}**")
    return lines


def report_markdown(groups: list[Group], iqm: bool, spec: dict[str, Any], task: Task) -> str:
    """The table and the comparisons as markdown."""
    stat = "IQM" if iqm else "mean"
    u = unwanted_name(task)
    rewards = ", ".join(f"{task.outcomes[o]:+g} {o}" for o in task.rewarded)
    head = [
        f"# Sweep `{spec.get('name', '?')}`",
        "",
        f"{spec.get('total_steps', '?'):,} env steps per trial on {task.env_id}; each method in its deployed steering "
        f"mode; ground-truth evaluation (deterministic, the config's eval episodes); return = true reward ({rewards}) "
        f"discounted by the config's eval.gamma. Cells: {stat} over seeds [95% percentile-bootstrap interval, rliable]. "
        f"{u.capitalize()} seen/unseen: {u} share of the episodes that ended with a rewarded outcome, on overseen vs "
        "unseen episodes (few overseen episodes at low oversight: noisy).",
        "",
        f"| oversight | method (mode) | seeds | return | {' | '.join(task.outcomes)} | {u} seen / unseen | labels "
        "| per-seed return |",
        "|---|---|---:|---|" + "---|" * len(task.outcomes) + "---|---:|---|",
    ]
    lines = []
    for g in groups:
        r = g.rows
        seen, unseen = _mean([x[f"{u}_overseen"] for x in r]), _mean([x[f"{u}_unseen"] for x in r])
        per_seed = ", ".join(f"s{x['seed']}: {x['return']:.3f}" for x in r)
        rates = " | ".join(g.stats[o].text(".1%") if o in task.rewarded else f"{g.stats[o].point:.1%}" for o in task.outcomes)
        lines.append(
            f"| {g.oversight_prob:.1%} | {g.label} | {len(r)} | **{g.stats['return'].text()}** | {rates} "
            f"| {_pct(seen)} / {_pct(unseen)} | {_mean([x['labels_spent'] for x in r]):,.0f} | {per_seed} |"
        )
    comparisons = _comparisons(groups)
    tail = ["", f"## Against `{groups[0].method}` (ground-truth return)", "", *comparisons] if comparisons else []
    return "\n".join([*head, *lines, *tail]) + "\n"


def write_report(sweep_dir: Path, include: Sequence[Path] = ()) -> list[Path]:
    """Write ``results.csv``, ``report.md`` and the two figures into ``sweep_dir``; return their paths.

    :param include: other sweep folders, or ``results.csv`` files of earlier reports, whose trials join this
        folder's (:func:`gather_rows`); their learning curves come from the folders and from the ``curves.csv``
        beside each ``results.csv``
    :raises UserError: for a folder that is not a sweep or holds no finished trial
    """
    if not sweep_dir.is_dir():
        raise UserError(f"sweep folder {sweep_dir} does not exist")
    if not (sweep_dir / "sweep.yaml").is_file():
        raise UserError(f"{sweep_dir} has no sweep.yaml: not a sweep folder (run `routed-rl sweep` first)")
    spec = read_folder_spec(sweep_dir) or {}
    rows, task = gather_rows(sweep_dir, include)
    if not rows or task is None:
        raise UserError(f"{sweep_dir} has no finished trial yet")
    csv_path = sweep_dir / "results.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=csv_columns(task))
        writer.writeheader()
        writer.writerows(rows)
    methods = [method_label(m) for m in spec.get("methods", [])]
    groups, iqm = summarize(rows, list(task.outcomes), methods)
    from routed_rl.figures import gaming_gap_figure, return_vs_oversight_figure
    from routed_rl.sweeps.curves import write_curves

    title = f"sweep {spec.get('name', sweep_dir.name)}, {spec.get('total_steps', 0):,} env steps per trial"
    figures = [
        return_vs_oversight_figure(groups, iqm, title, sweep_dir / "return_vs_oversight.png"),
        gaming_gap_figure(groups, title, sweep_dir / "gaming_gap.png", unwanted_name(task)),
    ]
    folders = [sweep_dir, *(p for p in include if p.is_dir())]
    earlier = [p.parent / "curves.csv" for p in include if not p.is_dir() and (p.parent / "curves.csv").is_file()]
    curve_files, curve_lines = write_curves(sweep_dir, task, methods, title, folders, earlier)
    if curve_lines and len(folders) + len(earlier) < 1 + len(include):  # say so on the "Mean over ..." line
        curve_lines[2] += " Only the trials whose folders, or a curves.csv beside their results.csv, were given."
    md_path = sweep_dir / "report.md"
    md_path.write_text(
        report_markdown(groups, iqm, spec, task) + ("\n" + "\n".join(curve_lines) + "\n" if curve_lines else "")
    )
    return [csv_path, md_path, *figures, *curve_files]
