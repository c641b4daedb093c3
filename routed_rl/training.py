"""Build the env and the RoutedPPO model a :class:`~routed_rl.config.RunConfig` describes."""

from __future__ import annotations

from typing import Any

import torch as th
from stable_baselines3.common.vec_env import VecEnv, VecMonitor
from torch import nn

from routed_rl.agents import GridCNN, RoutedPPO
from routed_rl.config import RunConfig, optimizer_kwargs
from routed_rl.errors import UserError
from routed_rl.steering import parse_mode

__all__ = ["build_model", "make_env", "policy_kwargs", "training_device"]

_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh}


def make_env(config: RunConfig, seed: int | None = None) -> VecEnv:
    """The training env: ``env.n_envs`` copies from the task (with ``VecMonitor`` for SB3's episode statistics)."""
    env = config.env.task().make_env(config.env.env_kwargs(), config.env.n_envs, config.seed if seed is None else seed)
    return VecMonitor(env)


def policy_kwargs(config: RunConfig) -> dict[str, Any]:
    """``policy_kwargs`` for :class:`~routed_rl.agents.RoutedActorCriticPolicy` from the ``policy`` section."""
    p = config.policy
    kwargs: dict[str, Any] = {
        "expert_names": p.expert_names,
        "expert_arch": p.expert_arch,
        "gate_arch": p.gate_arch,
        "value_arch": p.value_arch,
        "activation_fn": _ACTIVATIONS[p.activation],
        "expert_obs_channels": p.expert_obs_channels,
        "gate_obs_channels": p.gate_obs_channels,
        "expert_hidden_channels": p.expert_hidden_channels,
        "expert_own_cnn": p.expert_own_cnn,
        "precision": p.precision,
        "ortho_init": p.ortho_init,
        "normalize_images": p.normalize_images,
        "optimizer_kwargs": optimizer_kwargs(p.optimizer_kwargs),
    }
    if p.features_extractor == "cnn":
        kwargs["features_extractor_class"] = GridCNN
    return kwargs


def build_model(config: RunConfig, env: VecEnv | None = None, tensorboard_log: str | None = None) -> RoutedPPO:
    """A fresh :class:`~routed_rl.agents.RoutedPPO` for ``config`` (``env`` defaults to :func:`make_env`)."""
    r = config.routing
    return RoutedPPO(
        "RoutedPolicy",
        env if env is not None else make_env(config),
        routing=r.table,
        routing_enabled=r.enabled,
        unlabeled_routing=r.unlabeled,
        tail_steps=r.tail_steps,
        unlabeled_tail=r.unlabeled_tail,
        labeler=config.labeling.kind,
        labeler_kwargs=config.labeling.labeler_kwargs(),
        gate_coef=r.gate_coef,
        gate_balance=r.gate_balance,
        gate_policy_gradient=r.gate_policy_gradient,
        expert_loss_coef=r.expert_loss_coef,
        label_rewards=r.label_rewards,
        labeled_only=r.labeled_only,
        label_replay=r.label_replay,
        label_replay_steps=r.label_replay_steps,
        label_replay_coef=r.label_replay_coef,
        label_replay_anchor=r.label_replay_anchor,
        anneal_experts=r.anneal_experts or (),
        anneal_fraction=r.anneal_fraction,
        deployed_share=r.deployed_share,
        deployed_steering=parse_mode(config.eval.steering) if r.deployed_share > 0 else None,
        policy_kwargs=policy_kwargs(config),
        seed=config.seed,
        tensorboard_log=tensorboard_log,
        verbose=config.logging.verbose,
        **config.ppo.sb3_kwargs(),
        device=training_device(config),
    )


def training_device(config: RunConfig) -> str:
    """``ppo.device``, checked against this machine: a CUDA device that is not there is a one-line error."""
    device = config.ppo.device
    if device.startswith("cuda"):
        count = th.cuda.device_count() if th.cuda.is_available() else 0
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= count:
            raise UserError(
                f"ppo.device {device}: this machine has {count} CUDA device(s) visible to torch {th.__version__}; "
                "use ppo.device=cpu or auto"
            )
    return device
