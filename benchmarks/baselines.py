"""Routing against its baselines under identical settings: methods x oversight levels x seeds.

Each trial is an ordinary run folder, trained and evaluated by the CLI (``routed-rl train METHOD --set
env.oversight_prob=P --seed S --total-steps N --set threads=1``), so ``routed-rl eval`` and ``export`` work
on it. Trials run in a pool of ``--workers`` processes with one torch thread each. A rerun skips finished
trials and resumes interrupted ones from their checkpoints, so the grid can be split between machines and
the folders merged. Each method is reported in its deployed steering mode (its config's ``eval.steering``:
``select=diamond`` for routing, unsteered for the baselines); ``moe_no_routing`` also unsteered.

Usage::

    python benchmarks/baselines.py [--methods default naive ...] [--probs 0.01 0.1] [--seeds 0 1 2]
        [--steps 3000000] [--workers 2] [--out benchmarks/runs/baselines] [--summary-only] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from routed_rl.config import load_config
from routed_rl.runs import RunDir
from routed_rl.steering import mode_name, parse_mode

METHODS = ["default", "naive", "filtering", "oracle", "naive_early_stopping"]


def trial_name(method: str, prob: float, seed: int) -> str:
    return f"{method}__p{prob:g}__s{seed}"


def run_trial(out: Path, method: str, prob: float, seed: int, steps: int) -> str:
    """Train (or resume, or skip) one trial; returns a one-line status."""
    run = RunDir(out / trial_name(method, prob, seed))
    if run.model.is_file() and run.eval.is_file():
        return f"{run.root.name}: done already"
    exe = [sys.executable, "-m", "routed_rl.cli", "train"]
    if run.latest_checkpoint() is not None:
        args = [*exe, "--resume", str(run.root), "-q"]
    else:
        sets = [f"env.oversight_prob={prob}", "threads=1", "logging.tensorboard=false"]
        args = [*exe, method, "--seed", str(seed), "--total-steps", str(steps), "--run-dir", str(run.root), "-q"]
        args += [a for s in sets for a in ("--set", s)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    start = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    run.root.mkdir(parents=True, exist_ok=True)
    (run.root / "trial.log").write_text(result.stdout + result.stderr)
    if result.returncode == 0 and run.model.is_file():
        previous = json.loads((run.root / "trial.json").read_text())["wall_s"] if (run.root / "trial.json").is_file() else 0
        info = {"method": method, "oversight_prob": prob, "seed": seed, "steps": steps, "wall_s": wall + previous}
        (run.root / "trial.json").write_text(json.dumps(info))
        return f"{run.root.name}: trained in {wall:.0f} s"
    return f"{run.root.name}: FAILED (exit {result.returncode}): {(result.stderr.strip().splitlines() or ['?'])[-1]}"


def collect(out: Path, methods: list[str], probs: list[float], seeds: list[int]) -> list[dict]:
    """One row per finished trial and reported steering mode."""
    rows = []
    for method in methods:
        for prob in probs:
            for seed in seeds:
                run = RunDir(out / trial_name(method, prob, seed))
                if not (run.eval.is_file() and (run.root / "trial.json").is_file()):
                    continue
                config = run.load_config()
                trial = json.loads((run.root / "trial.json").read_text())
                deployed = mode_name(config.policy.expert_names, **parse_mode(config.eval.steering))
                wanted = {deployed} | ({"unsteered"} if method == "moe_no_routing" else set())
                labels = len(run.labels.read_text().splitlines()) if run.labels.is_file() else 0
                for result in json.loads(run.eval.read_text()):
                    if result["mode"] in wanted:
                        rows.append({**trial, "method": method, "labels": labels, **result})
    return rows


def summarize(rows: list[dict], methods: list[str], probs: list[float]) -> str:
    """A markdown table: per method, oversight level and mode, the mean over seeds and each seed's return."""
    lines = [
        "| oversight | method | mode | seeds | return: mean [min, max] | diamond | ghost | timeout | ghost seen / unseen "
        "| gaming gap | per-seed return |",
        "|---|---|---|---:|---|---:|---:|---:|---|---:|---|",
    ]
    for prob in probs:
        for method in methods:
            modes = sorted({r["mode"] for r in rows if r["method"] == method and r["oversight_prob"] == prob})
            for mode in modes:
                sel = sorted(
                    (r for r in rows if r["method"] == method and r["oversight_prob"] == prob and r["mode"] == mode),
                    key=lambda r: r["seed"],
                )
                ret = np.array([r["discounted_return"] for r in sel])

                def mean(key: str, sel: list[dict] = sel) -> float:
                    return float(np.mean([r[key] for r in sel]))

                seen = np.mean([r["overseen"]["ghost"] for r in sel])
                unseen = np.mean([r["unseen"]["ghost"] for r in sel])
                gaps = [r["gaming_gap"] for r in sel if r.get("gaming_gap") is not None]
                per_seed = ", ".join(f"s{r['seed']}: {r['discounted_return']:.3f}" for r in sel)
                lines.append(
                    f"| {prob:.0%} | {method} | {mode} | {len(sel)} | **{ret.mean():.3f}** [{ret.min():.3f}, {ret.max():.3f}] "
                    f"| {mean('diamond'):.1%} | {mean('ghost'):.1%} | {mean('timeout'):.1%} | {seen:.1%} / {unseen:.1%} "
                    f"| {np.mean(gaps):+.1%} | {per_seed} |"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--probs", type=float, nargs="+", default=[0.01, 0.1])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=3_000_000)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2)))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/runs/baselines"))
    parser.add_argument("--summary-only", action="store_true", help="only summarize the finished trials")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the summary table here")
    args = parser.parse_args()
    for method in args.methods:
        load_config(method)  # an unknown method fails here, before anything runs
    if not args.summary_only:
        grid = [(m, p, s) for p in args.probs for m in args.methods for s in args.seeds]
        print(
            f"{len(grid)} trials, {args.steps:,} env steps each, {args.workers} workers x 1 thread -> {args.out}", flush=True
        )
        with ThreadPoolExecutor(args.workers) as pool:
            for status in pool.map(lambda t: run_trial(args.out, *t, args.steps), grid):
                print(status, flush=True)
    rows = collect(args.out, args.methods, args.probs, args.seeds)
    table = summarize(rows, args.methods, args.probs)
    print(table)
    if args.markdown:
        args.markdown.write_text(
            f"Measured by `python benchmarks/baselines.py {' '.join(sys.argv[1:])}`\n"
            f"({args.steps:,} env steps per trial; 2,000 deterministic evaluation episodes of the true-reward env; "
            "return = true reward discounted by 0.97)\n\n" + table + "\n"
        )


if __name__ == "__main__":
    main()
