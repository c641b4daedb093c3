"""``make demo``: the whole user path, end to end, on the default config.

1. trains the default routed agent into ``demo_out/run`` (the same code as ``routed-rl train``: run
   folder, checkpoints, TensorBoard, evaluation of every steering mode, figures) for the config's env steps
   (the default's 5M, the budget its figures in benchmarks/README.md are measured at) with two torch threads, one draw (seed 0)
   of the spread benchmarks/README.md reports; a rerun reuses a finished run instead of training again;
2. exports the policy in its deployed steering (the ghost expert removed, pickle-free) and checks that the
   exported policy acts exactly like the steered model;
3. writes ``demo_out/report.md``.

Usage: ``python -m routed_rl.demo [--out DIR] [--config NAME] [--steps N] [--threads N]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from routed_rl.export import export_policy, load_exported
from routed_rl.runs import RunDir
from routed_rl.steering import parse_mode
from routed_rl.experiment import run_training


def _table(rows: list[dict], outcomes: list[str]) -> str:
    lines = [f"| mode | {' | '.join(outcomes)} | discounted return | mean length |", "|---" * (len(outcomes) + 3) + "|"]
    for r in rows:
        rates = " | ".join(f"{r[o]:.1%}" for o in outcomes)
        lines.append(f"| {r['mode']} | {rates} | {r['discounted_return']:.3f} | {r['mean_length']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo_out"))
    parser.add_argument("--config", default="default")
    parser.add_argument("--steps", type=int, default=None, help="env steps (default: the config's total_steps)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the same count reproduces the same bits)")
    args = parser.parse_args()
    run = RunDir(args.out / "run")
    if run.model.is_file() and run.eval.is_file():
        print(f"{run.root} already holds a finished run: reusing it (delete it to train again)")
    else:
        if run.root.exists() and run.latest_checkpoint() is not None:
            run_training(None, [], None, run.root, False, "make demo (resumed)")
        else:
            overrides = [f"threads={args.threads}"] + ([f"total_steps={args.steps}"] if args.steps else [])
            run_training(args.config, overrides, run.root, None, False, "make demo")
    model = run.load_model()
    config = run.load_config()
    results = json.loads(run.eval.read_text())

    steer = parse_mode(config.eval.steering)
    deploy = export_policy(model.policy, args.out / "deploy", **steer)
    deployed = load_exported(deploy)
    task = config.env.task()
    obs = np.asarray(task.make_env(config.env.env_kwargs(), 2000 if task.batched else 200, config.eval.seed).reset())
    with model.policy.steer(**steer):
        expected, _ = model.predict(obs, deterministic=True)
    same = float(np.mean(deployed.predict(obs) == expected))
    print(
        f"exported {deploy} ({config.eval.steering}); it matches the steered model on {same:.1%} of {len(obs):,} observations"
    )

    figures = sorted(p.name for p in run.figures.iterdir()) if run.figures.is_dir() else []
    report = (
        f"# routed-rl demo report\n\nConfig `{args.config}`: {model.num_timesteps:,} env steps of {config.env.id} at "
        f"oversight {config.env.oversight_prob}; {model.labeler.labels_spent} labels spent "
        f"({model.labeler.label_fraction:.2%} of episodes).\n\n"
        f"Ground-truth evaluation, {config.eval.episodes} episodes per steering mode, deterministic actions "
        f"(return: true reward discounted by {config.eval.gamma}; deployed mode: {config.eval.steering}):\n\n"
        f"{_table(results, list(task.outcomes))}\n\nThis is one seed. Seeds vary a lot at 1% oversight: the "
        "baselines table in benchmarks/README.md "
        "gives the spread over three seeds of the same config and step count, beside naive training, filtering, "
        "early stopping and the oracle.\n\n"
        f"Export: `{deploy}` (pickle-free, {config.eval.steering}) acts like the steered model on {same:.1%} of "
        f"{len(obs):,} observations.\n\nRun folder `{run.root}`: `model.zip`, `eval.json`, `labels.jsonl`, `tensorboard/` "
        f"(`tensorboard --logdir {run.tensorboard}`), figures: {', '.join(figures)}.\n"
    )
    (args.out / "report.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
