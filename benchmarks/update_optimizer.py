"""Time of a RoutedPPO update and of its Adam steps, plain Adam against torch's fused Adam, in this process.

Loads a trained model (e.g. a late checkpoint of a 1% run, whose label-replay store is full), then, for each
round and each optimizer in turn: collects a fresh rollout, restores the same parameters and optimizer state,
and times ``train()`` and, inside it, the optimizer's ``step`` calls. The figure to trust on a noisy machine is
the comparison within a round. Used for benchmarks/README.md's "where the rest of the 10 minutes goes".
Usage: ``python benchmarks/update_optimizer.py MODEL.zip [--config NAME] [--rounds R] [--threads T]``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from typing import Any

import torch as th

from routed_rl.agents import RoutedPPO
from routed_rl.config import load_config, optimizer_kwargs
from routed_rl.training import make_env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", help="a RoutedPPO .zip (checkpoint or model.zip)")
    parser.add_argument("--config", default="default", help="the config whose env the model was trained on")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    config = load_config(args.config, [])
    model = RoutedPPO.load(args.model, env=make_env(config))
    model.learn(model.n_steps * model.n_envs, reset_num_timesteps=False)  # sets up the logger and callbacks
    callback = model._init_callback(None)
    callback.on_training_start(locals(), globals())
    params = copy.deepcopy(model.policy.state_dict())
    opt_state = copy.deepcopy(model.policy.optimizer.state_dict())
    lr = model.policy.optimizer.param_groups[0]["lr"]
    times: dict[str, list[tuple[float, float]]] = {"plain": [], "fused": []}
    for _ in range(args.rounds):
        for name in times:
            model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
            model.policy.load_state_dict(params)
            kwargs = optimizer_kwargs({"fused": name == "fused"})
            optimizer = th.optim.Adam(model.policy.parameters(), lr=lr, **kwargs)
            optimizer.load_state_dict(opt_state)
            in_step = [0.0]
            step = optimizer.step

            def timed_step(*a: Any, _step: Any = step, _in: list[float] = in_step, **k: Any) -> Any:
                start = time.perf_counter()
                out = _step(*a, **k)
                _in[0] += time.perf_counter() - start
                return out

            optimizer.step = timed_step  # type: ignore[method-assign]
            model.policy.optimizer = optimizer
            start = time.perf_counter()
            model.train()
            times[name].append((time.perf_counter() - start, in_step[0]))
    print(f"{args.rounds} rounds, {args.threads} threads; replay store {len(model.label_replay):,} labeled steps")
    print("optimizer | update s (each round) | median | Adam steps in it, ms (median)")
    for name, rows in times.items():
        updates = [u for u, _ in rows]
        adam = statistics.median(a for _, a in rows) * 1e3
        print(f"{name:9} | {' '.join(f'{u:.3f}' for u in updates)} | {statistics.median(updates):.3f} | {adam:.0f}")


if __name__ == "__main__":
    main()
