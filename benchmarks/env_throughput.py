"""Random-action env steps/s: the batched OversightGridVecEnv against gymnasium's SyncVectorEnv.

Both run in this process, at the same grid counts, on the same machine, so the ratio is the figure to
trust on a noisy machine. Usage: ``python benchmarks/env_throughput.py [--seconds S]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np

from routed_rl.envs import OVERSIGHT_GRID_ID, OversightGridVecEnv

COUNTS = (1, 64, 1024, 4096)


def _rate(step: Callable[[np.ndarray], object], n: int, seconds: float, rng: np.random.Generator) -> float:
    """Steps/s of ``step`` fed uniform random actions, measured for at least ``seconds`` (after warm-up)."""
    for _ in range(3):
        step(rng.integers(0, 4, size=n))
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or calls < 5:
        step(rng.integers(0, 4, size=n))
        calls += 1
    return calls * n / elapsed


def batched_rate(n: int, seconds: float) -> float:
    env = OversightGridVecEnv(n, seed=0)
    env.reset()
    return _rate(env.step, n, seconds, np.random.default_rng(0))


def sync_rate(n: int, seconds: float) -> float:
    env = gym.vector.SyncVectorEnv([lambda: gym.make(OVERSIGHT_GRID_ID) for _ in range(n)])
    env.reset(seed=0)
    try:
        return _rate(env.step, n, seconds, np.random.default_rng(0))
    finally:
        env.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per cell of the table")
    args = parser.parse_args()
    print(f"{'grids':>6} | {'OversightGridVecEnv steps/s':>28} | {'SyncVectorEnv steps/s':>22} | {'ratio':>7}")
    print(f"{'-' * 6}-|-{'-' * 28}-|-{'-' * 22}-|-{'-' * 7}")
    for n in COUNTS:
        ours, ref = batched_rate(n, args.seconds), sync_rate(n, args.seconds)
        print(f"{n:>6} | {ours:>28,.0f} | {ref:>22,.0f} | {ours / ref:>6.1f}x")


if __name__ == "__main__":
    main()
