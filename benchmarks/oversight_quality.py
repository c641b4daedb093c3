"""Oversight quality: train a routed config (``default`` unless ``--config``) at several oversight levels and
seeds, then evaluate the policy in its deployed steering mode (the config's ``eval.steering``, e.g. the
diamond expert alone; deterministic actions) on the ground truth.

For each run it reports diamond, ghost and timeout rates, the mean ground-truth discounted return
(gamma 0.97), the labels spent, and the env steps and wall time used. Reference rows from the same
evaluation code are printed first: the ghost-agnostic and the optimal policies (see
``shared/RESEARCH-NOTES.md``). Usage:
``python benchmarks/oversight_quality.py [--probs 0.01 0.03 0.1] [--seeds 0 1 2] [--steps N] [--episodes N] [--config NAME]``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from routed_rl.config import load_config
from routed_rl.envs.oversight_grid_scripted import ScriptedPolicy
from routed_rl.evaluation import evaluate
from routed_rl.steering import parse_mode
from routed_rl.training import build_model


def _row(name: str, r: dict, steps: str = "", wall: str = "", labels: str = "") -> str:
    return (
        f"{name:<28} | {r['diamond']:>7.1%} | {r['ghost']:>6.1%} | {r['timeout']:>7.1%} | {r['discounted_return']:>7.3f} "
        f"| {labels:>6} | {steps:>6} | {wall:>6}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--probs", type=float, nargs="+", default=[0.01, 0.03, 0.1])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="env steps per run (default: the config's total_steps)")
    parser.add_argument("--episodes", type=int, default=2000)
    parser.add_argument("--config", default="default")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    base = load_config(args.config)
    steps = args.steps or base.total_steps
    print(f"config {args.config!r}, {steps:,} env steps per run, {args.episodes} evaluation episodes, deterministic actions")
    cols = ("diamond", 7), ("ghost", 6), ("timeout", 7), ("return", 7), ("labels", 6), ("steps", 6), ("wall", 6)
    header = f"{'run':<28} | " + " | ".join(f"{name:>{width}}" for name, width in cols)
    print(header)
    print("-" * len(header))
    for name, kind in (("reference: ghost-agnostic", "ghost_agnostic"), ("reference: optimal", "optimal")):
        ref = evaluate(ScriptedPolicy(kind), base.env.task(), args.episodes, seed=base.eval.seed)  # type: ignore[arg-type]
        print(_row(name, ref.to_dict()), flush=True)
    results = []
    for p in args.probs:
        for seed in args.seeds:
            config = load_config(args.config, [f"env.oversight_prob={p}", f"seed={seed}", f"total_steps={steps}"])
            start = time.perf_counter()
            model = build_model(config)
            model.learn(config.total_steps)
            wall = time.perf_counter() - start
            res = evaluate(
                model,
                config.env.task(),
                args.episodes,
                env_kwargs=config.env.env_kwargs(),
                seed=config.eval.seed,
                gamma=config.eval.gamma,
                **parse_mode(config.eval.steering),
            ).to_dict()
            res.update(
                oversight_prob=p, seed=seed, env_steps=model.num_timesteps, wall_s=wall, labels=model.labeler.labels_spent
            )
            results.append(res)
            print(
                _row(
                    f"p={p:g} seed={seed} {config.eval.steering}",
                    res,
                    f"{model.num_timesteps / 1e6:.1f}M",
                    f"{wall:.0f}s",
                    str(res["labels"]),
                ),
                flush=True,
            )
    for p in args.probs:
        rows = [r for r in results if r["oversight_prob"] == p]
        mean = {k: float(np.mean([r[k] for r in rows])) for k in ("diamond", "ghost", "timeout", "discounted_return")}
        print(_row(f"p={p:g} mean of {len(rows)} seeds", mean))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
