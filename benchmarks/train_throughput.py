"""Training throughput: RoutedPPO (default config) against SB3's PPO("MlpPolicy") of the same widths.

Both train on the batched OversightGrid with the same n_envs, n_steps, batch size and epochs, in this
process, alternating over rounds; the figure to trust on a noisy machine is the ratio. Peak RSS is read
after the first RoutedPPO run, before SB3's PPO has run.
Usage: ``python benchmarks/train_throughput.py [--steps N] [--rounds R] [--config NAME] [--set key=value ...]
[--experts auto|batched|each]`` (e.g. ``--set "policy.expert_names=[a, b, c, d]"`` for four experts; SB3's PPO
keeps one actor of the same widths; ``--experts`` forces how the mixture evaluates its experts: one batched
product per layer, or one expert at a time; ``auto`` is the package's choice by device; ``--minibatch-rounds
0`` skips the second part; ``--compile`` also trains RoutedPPO with its rollout and update paths through
``torch.compile`` each round, and adds the plain architectures and the routed update path compiled to the second
part).

With ``--set policy.precision=bfloat16`` (mixed precision: RoutedPPO's rollouts and updates under
``torch.autocast``) each round also trains SB3's PPO the same way (its ``forward`` and ``evaluate_actions`` under
autocast, its heads' outputs in float32), so the ratio is printed against SB3 as it ships (float32) and against
SB3 in the same precision.

Second part: the cost of one minibatch's forward and backward pass (the update is most of the training
time), alternating over rounds, for the two policies above and for their architectures written as plain
PyTorch modules: SB3's two MLPs (actor, critic) against N expert MLPs mixed by a softmax gate plus the critic,
with no routing, steering or SB3 code around them. The plain pair's ratio is what the mixture itself costs on
this machine, whatever the package does; the package's ratio can only approach it.
"""

from __future__ import annotations

import argparse
import logging
import resource
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch as th
from stable_baselines3 import PPO
from torch import nn

from routed_rl.agents import RoutedActorCriticPolicy
from routed_rl.config import load_config
from routed_rl.moe import mlp
from routed_rl.training import build_model, make_env, training_device


def _rate(model: PPO, steps: int) -> float:
    start = time.perf_counter()
    model.learn(steps)
    return model.num_timesteps / (time.perf_counter() - start)


def _ms(step: Callable[[], None], repeats: int = 10) -> float:
    """Milliseconds per call of ``step`` (after one warm-up call)."""
    step()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats * 1e3


def _autocast_sb3(model: PPO) -> PPO:
    """SB3's PPO with the rollout and update paths in bfloat16 under autocast, as RoutedPPO's ``precision``."""
    policy = model.policy

    def under_autocast(method: Callable[..., object]) -> Callable[..., object]:
        def run(*args: object, **kwargs: object) -> object:
            with th.autocast(policy.device.type, dtype=th.bfloat16):
                return method(*args, **kwargs)

        return run

    policy.forward = under_autocast(policy.forward)  # type: ignore[method-assign]
    policy.evaluate_actions = under_autocast(policy.evaluate_actions)  # type: ignore[method-assign]
    for head in (policy.action_net, policy.value_net):
        head.register_forward_hook(lambda module, inputs, output: output.float())
    return model


def _minibatch_costs(routed: RoutedActorCriticPolicy, ref: PPO, batch: int, rounds: int, compiled: bool = False) -> None:
    """Print the median ms of one minibatch's forward and backward pass: the two policies, and their
    architectures as plain PyTorch modules (SB3's two MLPs against the gated mixture plus the critic), and with
    ``compiled`` the plain ones and the routed policy's ``evaluate_actions_routed`` also through ``torch.compile``."""
    obs = th.as_tensor(np.stack([routed.observation_space.sample() for _ in range(batch)]), device=routed.device)
    obs = obs.float()
    actions = th.randint(0, int(routed.action_space.n), (batch,), device=routed.device)  # type: ignore[attr-defined]
    route_weight = th.ones(batch, routed.moe.n_experts, device=routed.device)
    route_weight[: batch // 20, 1:] = 0.0  # a few labeled steps routed into the first expert alone

    def routed_backward(evaluate: Callable[..., tuple[th.Tensor, ...]]) -> Callable[[], None]:
        def step() -> None:
            values, log_prob, entropy, gate_logits = evaluate(obs, actions, route_weight)
            (values.sum() + log_prob.sum() + entropy.sum() + gate_logits.sum()).backward()

        return step

    routed_step = routed_backward(routed.evaluate_actions_routed)

    def ref_step() -> None:
        values, log_prob, entropy = ref.policy.evaluate_actions(obs, actions)
        assert entropy is not None
        (values.sum() + log_prob.sum() + entropy.sum()).backward()

    x = routed.extract_features(obs).detach()  # the flattened observation both policies' networks read
    n, widths, width = routed.moe.n_experts, routed.expert_arch, routed.expert_arch[-1]
    n_actions = int(routed.action_space.n)  # type: ignore[attr-defined]
    experts = [mlp(x.shape[1], widths) for _ in range(n)]
    actor, critic = mlp(x.shape[1], widths), mlp(x.shape[1], routed.value_arch)
    gate, head, value_head = nn.Linear(x.shape[1], n), nn.Linear(width, n_actions), nn.Linear(routed.value_arch[-1], 1)
    for module in (*experts, actor, critic, gate, head, value_head):
        module.to(routed.device)

    def two_loss(x: th.Tensor) -> th.Tensor:
        logits, value = head(actor(x)), value_head(critic(x))
        return th.log_softmax(logits, dim=-1).sum() + value.sum()

    def mixture_loss(x: th.Tensor) -> th.Tensor:
        weights = th.softmax(gate(x), dim=-1)
        latent = sum(weights[:, k : k + 1] * expert(x) for k, expert in enumerate(experts))
        logits, value = head(latent), value_head(critic(x))
        return th.log_softmax(logits, dim=-1).sum() + value.sum()

    def backward_of(loss: Callable[[th.Tensor], th.Tensor]) -> Callable[[], None]:
        return lambda: loss(x).backward()

    steps = {"RoutedPPO policy": routed_step, "SB3 PPO policy": ref_step,
             "plain mixture": backward_of(mixture_loss), "plain two MLPs": backward_of(two_loss)}  # fmt: skip
    if compiled:  # torch.compile (inductor) may fuse the elementwise work that makes the mixture cost more
        start = time.perf_counter()
        steps["plain mixture, compiled"] = backward_of(th.compile(mixture_loss))
        steps["plain two MLPs, compiled"] = backward_of(th.compile(two_loss))
        steps["RoutedPPO policy, compiled"] = routed_backward(th.compile(routed.evaluate_actions_routed))
        for name in [name for name in steps if name.endswith("compiled")]:
            steps[name]()
        print(f"\ntorch.compile of the plain losses and the routed policy's update path: {time.perf_counter() - start:.0f} s")
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            times[name].append(_ms(step))
    ms = {name: statistics.median(t) for name, t in times.items()}
    print(f"\none minibatch ({batch}) forward + backward, median ms over {rounds} rounds:")
    print(f"  package: RoutedPPO {ms['RoutedPPO policy']:.2f} / SB3 PPO {ms['SB3 PPO policy']:.2f} = "
          f"{ms['RoutedPPO policy'] / ms['SB3 PPO policy']:.2f}x the time")  # fmt: skip
    plain, two = ms["plain mixture"], ms["plain two MLPs"]
    print(f"  plain PyTorch: {n} experts + gate + critic {plain:.2f} / actor + critic {two:.2f} = "
          f"{plain / two:.2f}x the time (the mixture's own cost)")  # fmt: skip
    if compiled:
        plain_c, two_c = ms["plain mixture, compiled"], ms["plain two MLPs, compiled"]
        routed_c = ms["RoutedPPO policy, compiled"]
        print(f"  compiled: RoutedPPO {routed_c:.2f} / SB3 PPO (eager) {ms['SB3 PPO policy']:.2f} = "
              f"{routed_c / ms['SB3 PPO policy']:.2f}x the time; plain mixture {plain_c:.2f} / actor + critic "
              f"{two_c:.2f} = {plain_c / two_c:.2f}x; compiled mixture / eager actor + critic "
              f"{plain_c / two:.2f}x")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=300_000, help="env steps per run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--config", default="default")
    parser.add_argument("--set", action="append", default=[], help="config override key.path=value (repeatable)")
    parser.add_argument("--minibatch-rounds", type=int, default=15, help="rounds of the minibatch comparison (0: skip)")
    parser.add_argument("--experts", choices=["auto", "batched", "each"], default="auto",
                        help="evaluate the experts batched, one at a time, or by device (auto)")  # fmt: skip
    parser.add_argument("--compile", action="store_true",
                        help="also train RoutedPPO, and time the minibatches, through torch.compile")  # fmt: skip
    args = parser.parse_args()
    if args.compile:  # one warning per graph break (the mixture's data-dependent choices) is noise here
        th._logging.set_logs(dynamo=logging.ERROR)
    config = load_config(args.config, args.set)
    widths = config.policy.expert_arch
    shared = config.ppo.sb3_kwargs()
    device = training_device(config)
    print(
        f"config {args.config!r}: n_envs={config.env.n_envs} n_steps={config.ppo.n_steps} batch_size={config.ppo.batch_size} "
        f"n_epochs={config.ppo.n_epochs}; device {device};\n"
        f"  experts {config.policy.expert_names} x {widths} ({args.experts}), value {config.policy.value_arch}"
    )
    half = config.policy.precision == "bfloat16"
    print(f"  precision {config.policy.precision}" + ("; SB3 PPO in float32 and in bfloat16 (autocast)" if half else ""))

    def sb3() -> PPO:
        return PPO(
            "MlpPolicy",
            make_env(config),
            policy_kwargs={"net_arch": {"pi": widths, "vf": config.policy.value_arch}, "activation_fn": nn.ReLU},
            seed=config.seed,
            device=device,
            **shared,
        )

    def routed_ppo(compiled: bool = False) -> PPO:
        model = build_model(config)
        model.policy.moe.experts.batched = {"auto": None, "batched": True, "each": False}[args.experts]
        if compiled:  # the rollout and update paths through torch.compile (its compile time counts in round 1)
            model.policy.forward = th.compile(model.policy.forward)  # type: ignore[method-assign]
            model.policy.evaluate_actions_routed = th.compile(model.policy.evaluate_actions_routed)  # type: ignore[method-assign]
        return model

    ours = ["RoutedPPO"] + (["RoutedPPO compiled"] if args.compile else [])
    refs = ["SB3 PPO"] + (["SB3 PPO bf16"] if half else [])
    rates: dict[str, list[float]] = {name: [] for name in ours + refs}
    peak_rss = 0.0
    for round_ in range(args.rounds):
        model = routed_ppo()
        rates["RoutedPPO"].append(_rate(model, args.steps))
        if round_ == 0:
            peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB -> GiB
        if args.compile:
            rates["RoutedPPO compiled"].append(_rate(routed_ppo(compiled=True), args.steps))
        ref = sb3()
        rates["SB3 PPO"].append(_rate(ref, args.steps))
        if half:
            rates["SB3 PPO bf16"].append(_rate(_autocast_sb3(sb3()), args.steps))
        print(f"round {round_ + 1}: " + ", ".join(f"{name} {r[-1]:,.0f} steps/s" for name, r in rates.items()), end="")
        print("; ratio " + ", ".join(f"{a} / {b} {rates[a][-1] / rates[b][-1]:.2f}x" for a in ours for b in refs))
    best = {name: max(r) for name, r in rates.items()}
    print(f"\n{'':>18} | {'env steps/s (best round)':>24}")
    for name, rate in best.items():
        print(f"{name:>18} | {rate:>24,.0f}")
    for a in ours:
        for b in refs:
            print(f"ratio {a} / {b}: {best[a] / best[b]:.2f}x (best rounds)")
    print(f"peak RSS of RoutedPPO: {peak_rss:.2f} GiB")
    if args.minibatch_rounds > 0:
        assert isinstance(model.policy, RoutedActorCriticPolicy)
        _minibatch_costs(model.policy, ref, config.ppo.batch_size, args.minibatch_rounds, args.compile)


if __name__ == "__main__":
    main()
