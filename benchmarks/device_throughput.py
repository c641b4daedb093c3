"""Training throughput of a config on each torch device, side by side in this process.

For each config and device: build the model (``ppo.device`` set to the device, ``threads`` torch CPU threads)
and time ``model.learn(steps)`` (the env steps of one config are the same on every device: only where the
networks run changes). Prints env steps/s and the ratio to the first device. Used for the README's GPU
figures (``--config minigrid_8x8 default --devices cpu cuda`` on the device machine).
Usage: ``python benchmarks/device_throughput.py [--config NAME ...] [--devices cpu cuda] [--steps N] [--threads T]``.
"""

from __future__ import annotations

import argparse
import time

import torch as th

from routed_rl.config import load_config
from routed_rl.training import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", nargs="+", default=["minigrid_8x8"])
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=200_000, help="env steps per run")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    name = th.cuda.get_device_name(0) if th.cuda.is_available() else "no CUDA device"
    print(f"torch {th.__version__}, {args.threads} CPU thread(s), GPU: {name}; {args.steps:,} env steps per run")
    for config_name in args.config:
        rates = {}
        for device in args.devices:
            config = load_config(config_name, [f"ppo.device={device}", "logging.tensorboard=false"])
            model = build_model(config)
            model.learn(config.ppo.n_steps * config.env.n_envs)  # warm-up: allocations, CUDA kernels
            start = time.perf_counter()
            model.learn(args.steps, reset_num_timesteps=False)
            rates[device] = args.steps / (time.perf_counter() - start)
        first = args.devices[0]
        line = ", ".join(f"{d} {r:,.0f} env steps/s ({r / rates[first]:.2f}x {first})" for d, r in rates.items())
        print(f"{config_name}: {line}", flush=True)


if __name__ == "__main__":
    main()
