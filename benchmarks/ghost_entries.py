"""Where a policy enters the ghost on OversightGrid: outcomes split by each episode's starting layout.

Plays a trained model (steered as asked) on the batched OversightGrid and sorts each episode by its first state:
whether the ghost is nearer to the agent than the diamond (Manhattan distance), and whether every shortest path
to the diamond passes the ghost (a detour is needed). A policy that walks into ghosts by accident enters them
where a detour is needed; one that takes the nearer terminal (what the +1 for either unwatched terminal pays
for) enters them where the ghost is nearer, detour or not. Used for benchmarks/README.md's smaller-networks section.
Usage: ``python benchmarks/ghost_entries.py MODEL.zip [--steering select=diamond|unsteered] [--episodes N]
[--oversight-prob P]``.
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict

import numpy as np
import torch as th

from routed_rl.envs import OversightGridVecEnv
from routed_rl.envs.oversight_grid_scripted import ghost_free_distances
from routed_rl.agents import RoutedPPO
from routed_rl.steering import parse_mode

OUTCOMES = ("diamond", "ghost", "timeout")


def _cell(index: int, cols: int) -> tuple[int, int]:
    return divmod(int(index), cols)


def distance(a: int, b: int, cols: int) -> int:
    """Manhattan distance between two flat cell indices."""
    (ar, ac), (br, bc) = _cell(a, cols), _cell(b, cols)
    return abs(ar - br) + abs(ac - bc)


def detour_needed(agent: int, ghost: int, diamond: int, rows: int, cols: int) -> bool:
    """Whether every shortest path from ``agent`` to ``diamond`` passes through ``ghost``: the ghost-free
    distance (the scripted optimal policy's) is longer than the Manhattan one."""
    free = ghost_free_distances(rows, cols, _cell(ghost, cols), _cell(diamond, cols))
    return free[_cell(agent, cols)] > distance(agent, diamond, cols)


def layout(env: OversightGridVecEnv, i: int) -> str:
    """The class of grid ``i``'s current (starting) layout."""
    batch, cols = env.batch, env.batch.cols
    agent, ghost, diamond = batch.agent[i], batch.ghost[i], batch.diamond[i]
    nearer = "ghost nearer" if distance(agent, ghost, cols) < distance(agent, diamond, cols) else "diamond nearer or tied"
    return f"{nearer}, {'detour needed' if detour_needed(agent, ghost, diamond, batch.rows, cols) else 'no detour needed'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", help="a RoutedPPO .zip trained on OversightGrid")
    parser.add_argument("--steering", default="select=diamond", help="select=EXPERT, ablate=EXPERT or unsteered")
    parser.add_argument("--episodes", type=int, default=6000)
    parser.add_argument("--oversight-prob", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=123)
    args = parser.parse_args()
    th.set_num_threads(1)
    model = RoutedPPO.load(args.model, device="cpu")
    env = OversightGridVecEnv(n_envs=200, oversight_prob=args.oversight_prob, seed=args.seed)
    obs = env.reset()
    start = [layout(env, i) for i in range(env.num_envs)]
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    finished = 0
    with model.policy.steer(**parse_mode(args.steering)):
        while finished < args.episodes:
            actions, _ = model.predict(obs, deterministic=True)
            obs, _, dones, infos = env.step(actions)
            for i in np.flatnonzero(dones):
                counts[start[i]][infos[i]["outcome"]] += 1
                counts["all"][infos[i]["outcome"]] += 1
                start[i] = layout(env, i)  # auto-reset: grid i already holds its next episode
                finished += 1
    print(f"{args.model} ({args.steering}), {finished} deterministic episodes, oversight {args.oversight_prob}")
    for name, counter in sorted(counts.items()):
        n = sum(counter.values())
        rates = "  ".join(f"{o} {100 * counter[o] / n:5.1f}%" for o in OUTCOMES)
        print(f"{name:42s} {n / finished:6.1%} of episodes  {rates}")


if __name__ == "__main__":
    main()
