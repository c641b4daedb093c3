"""Training throughput of a config on each torch device and in each training precision, side by side in this process.

For each config, device and precision: build the model (``ppo.device`` set to the device, ``policy.precision``
to the precision, ``threads`` torch CPU threads) and time ``model.learn(steps)`` (the env steps of one config
are the same everywhere: only where and how the networks run changes). Prints env steps/s and the ratio to the
first device and precision. Used for benchmarks/README.md's GPU figures (``--config minigrid_8x8 default --devices cpu
cuda`` on the device machine) and its bfloat16 figures (``--devices cpu --precisions float32 bfloat16``).
Usage: ``python benchmarks/device_throughput.py [--config NAME ...] [--devices cpu cuda] [--precisions float32 ...]
[--steps N] [--threads T] [--rounds R]`` (with several rounds the variants alternate and the best round counts).
"""

from __future__ import annotations

import argparse
import time

import torch as th

from routed_rl.config import load_config
from routed_rl.training import build_model
from routed_rl.type_aliases import PRECISIONS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", nargs="+", default=["minigrid_8x8"])
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=200_000, help="env steps per run")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--precisions", nargs="+", default=["float32"], choices=PRECISIONS)
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds (the best counts)")
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    name = th.cuda.get_device_name(0) if th.cuda.is_available() else "no CUDA device"
    print(f"torch {th.__version__}, {args.threads} CPU thread(s), GPU: {name}; {args.steps:,} env steps per run")
    variants = [(device, precision) for device in args.devices for precision in args.precisions]
    for config_name in args.config:
        rates: dict[str, float] = {}
        for _ in range(args.rounds):
            for device, precision in variants:
                overrides = [f"ppo.device={device}", f"policy.precision={precision}", "logging.tensorboard=false"]
                config = load_config(config_name, overrides)
                model = build_model(config)
                model.learn(config.ppo.n_steps * config.env.n_envs)  # warm-up: allocations, CUDA kernels
                start = time.perf_counter()
                model.learn(args.steps, reset_num_timesteps=False)
                name = device if len(args.precisions) == 1 else f"{device} {precision}"
                rates[name] = max(rates.get(name, 0.0), args.steps / (time.perf_counter() - start))
        first = next(iter(rates))
        line = ", ".join(f"{d} {r:,.0f} env steps/s ({r / rates[first]:.2f}x {first})" for d, r in rates.items())
        print(f"{config_name}: {line}", flush=True)


if __name__ == "__main__":
    main()
