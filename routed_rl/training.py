"""Build the env and the RoutedPPO model a :class:`~routed_rl.config.RunConfig` describes."""

from __future__ import annotations

from typing import Any

from stable_baselines3.common.vec_env import VecEnv, VecMonitor
from torch import nn

from routed_rl.agents import GridCNN, RoutedPPO
from routed_rl.config import RunConfig
from routed_rl.envs import OversightGridVecEnv

__all__ = ["build_model", "make_env", "policy_kwargs"]

_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh}


def make_env(config: RunConfig, seed: int | None = None) -> VecEnv:
    """The batched training env (with ``VecMonitor`` for SB3's episode statistics)."""
    env = OversightGridVecEnv(config.env.n_envs, seed=config.seed if seed is None else seed, **config.env.env_kwargs())
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
        "ortho_init": p.ortho_init,
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
        labeler=config.labeling.kind,
        labeler_kwargs=config.labeling.labeler_kwargs(),
        gate_coef=r.gate_coef,
        expert_loss_coef=r.expert_loss_coef,
        label_rewards=r.label_rewards,
        policy_kwargs=policy_kwargs(config),
        seed=config.seed,
        tensorboard_log=tensorboard_log,
        verbose=config.logging.verbose,
        device="cpu",
        **config.ppo.model_dump(),
    )
