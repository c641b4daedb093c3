"""Training throughput: RoutedPPO (default config) against SB3's PPO("MlpPolicy") of the same widths.

Both train on the batched OversightGrid with the same n_envs, n_steps, batch size and epochs, in this
process, alternating over rounds; the figure to trust on a noisy machine is the ratio. Peak RSS is read
after the first RoutedPPO run, before SB3's PPO has run.
Usage: ``python benchmarks/train_throughput.py [--steps N] [--rounds R] [--config NAME] [--set key=value ...]
[--experts auto|batched|each]`` (e.g. ``--set "policy.expert_names=[a, b, c, d]"`` for four experts; SB3's PPO
keeps one actor of the same widths; ``--experts`` forces how the mixture evaluates its experts: one batched
product per layer, or one expert at a time; ``auto`` is the package's choice by device).
"""

from __future__ import annotations

import argparse
import resource
import time

from stable_baselines3 import PPO
from torch import nn

from routed_rl.config import load_config
from routed_rl.training import build_model, make_env, training_device


def _rate(model: PPO, steps: int) -> float:
    start = time.perf_counter()
    model.learn(steps)
    return model.num_timesteps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=300_000, help="env steps per run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--config", default="default")
    parser.add_argument("--set", action="append", default=[], help="config override key.path=value (repeatable)")
    parser.add_argument("--experts", choices=["auto", "batched", "each"], default="auto",
                        help="evaluate the experts batched, one at a time, or by device (auto)")  # fmt: skip
    args = parser.parse_args()
    config = load_config(args.config, args.set)
    widths = config.policy.expert_arch
    shared = config.ppo.model_dump(exclude={"device"})
    device = training_device(config)
    print(
        f"config {args.config!r}: n_envs={config.env.n_envs} n_steps={config.ppo.n_steps} batch_size={config.ppo.batch_size} "
        f"n_epochs={config.ppo.n_epochs}; device {device};\n"
        f"  experts {config.policy.expert_names} x {widths} ({args.experts}), value {config.policy.value_arch}"
    )
    routed, ref, peak_rss = [], [], 0.0
    for round_ in range(args.rounds):
        model = build_model(config)
        model.policy.moe.experts.batched = {"auto": None, "batched": True, "each": False}[args.experts]
        routed.append(_rate(model, args.steps))
        if round_ == 0:
            peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB -> GiB
        sb3 = PPO(
            "MlpPolicy",
            make_env(config),
            policy_kwargs={"net_arch": {"pi": widths, "vf": config.policy.value_arch}, "activation_fn": nn.ReLU},
            seed=config.seed,
            device=device,
            **shared,
        )
        ref.append(_rate(sb3, args.steps))
        print(f"round {round_ + 1}: RoutedPPO {routed[-1]:,.0f} steps/s, SB3 PPO {ref[-1]:,.0f} steps/s")
    r, p = max(routed), max(ref)
    print(f"\n{'':>10} | {'env steps/s (best round)':>24}")
    print(f"{'RoutedPPO':>10} | {r:>24,.0f}")
    print(f"{'SB3 PPO':>10} | {p:>24,.0f}")
    print(f"ratio RoutedPPO / SB3 PPO: {r / p:.2f}x   peak RSS of RoutedPPO: {peak_rss:.2f} GiB")


if __name__ == "__main__":
    main()
