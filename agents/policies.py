"""The mixture-of-experts actor-critic policy for stable-baselines3.

:class:`RoutedActorCriticPolicy` is an SB3 ``ActorCriticPolicy`` whose ``mlp_extractor`` is a
:class:`RoutedExtractor`: a :class:`~routed_rl.moe.MixtureOfExperts` actor (its mixed latent feeds SB3's
shared linear action head) and a separate, unrouted value network. Steering lives in the mixture, so every
inference path (``forward``, ``evaluate_actions``, ``predict``, ``predict_values``) sees it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor
from stable_baselines3.common.type_aliases import PyTorchObs
from torch import nn

from routed_rl.errors import UserError, check_expert_name
from routed_rl.moe import MixtureOfExperts, StackedMLP, mlp, upgrade_per_module_keys
from routed_rl.steering import Steering, resolve_steering
from routed_rl.type_aliases import PRECISIONS, Precision

__all__ = ["GridCNN", "RoutedActorCriticPolicy", "RoutedExtractor", "SteeringHandle"]


def _to_float32(module: nn.Module, inputs: Any, output: th.Tensor) -> th.Tensor:
    """Forward hook: a head's output in float32 whatever precision computed it (distributions, the buffer)."""
    return output.float()


def _grid_cnn(channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels, 16, 2),
        nn.ReLU(),
        nn.Conv2d(16, 32, 2),
        nn.ReLU(),
        nn.Conv2d(32, 64, 2),
        nn.ReLU(),
        nn.Flatten(),
    )


class GridCNN(BaseFeaturesExtractor):
    """A small CNN for channel-first image observations: three 2x2 convolutions (MiniGrid's SB3 recipe), then a linear layer.

    With ``blind_channels`` it has two views: the CNN above, and a second CNN of its own that sees the image
    with those channels zeroed; the features are both, the full view's first. An expert given only the
    second half (``expert_hidden_channels`` with this extractor) cannot see those channels in any path.
    An empty ``blind_channels`` gives a second view that hides nothing: a copy of the CNN for the experts
    that see the image through a CNN of their own (``expert_own_cnn``).

    :param observation_space: a Box of shape (C, H, W)
    :param features_dim: output size of each view
    :param blind_channels: image channels the second view does not see (None: one view; empty: a second view
        that sees every channel)
    """

    def __init__(
        self, observation_space: spaces.Box, features_dim: int = 128, blind_channels: Sequence[int] | None = None
    ) -> None:
        views = 1 if blind_channels is None else 2
        super().__init__(observation_space, features_dim * views)
        channels = observation_space.shape[0]
        self.view_dim = features_dim
        self.cnn = _grid_cnn(channels)
        with th.no_grad():
            n_flat = self.cnn(th.as_tensor(observation_space.sample()[None]).float()).shape[1]
        self.linear = nn.Sequential(nn.Linear(n_flat, features_dim), nn.ReLU())
        self.blind_channels = None if blind_channels is None else sorted(set(int(c) for c in blind_channels))
        if self.blind_channels is not None:
            if not all(0 <= c < channels for c in self.blind_channels):
                raise UserError(f"blind channels must be channel indices in [0, {channels}), got {blind_channels}")
            mask = th.ones(1, channels, 1, 1)
            mask[:, self.blind_channels] = 0.0
            self.register_buffer("blind_mask", mask)
            self.blind_cnn = _grid_cnn(channels)
            self.blind_linear = nn.Sequential(nn.Linear(n_flat, features_dim), nn.ReLU())

    def forward(self, observations: th.Tensor) -> th.Tensor:
        seeing = self.linear(self.cnn(observations))
        if self.blind_channels is None:
            return seeing
        mask: th.Tensor = self.blind_mask  # type: ignore[assignment]
        # an empty blind_channels (a CNN of the experts' own) hides nothing: no mask to multiply by
        blind = self.blind_linear(self.blind_cnn(observations * mask if self.blind_channels else observations))
        return th.cat([seeing, blind], dim=1)


class RoutedExtractor(nn.Module):
    """SB3's ``MlpExtractor`` contract: a mixture-of-experts actor and an unrouted value MLP.

    :param features_dim: input size
    :param value_arch: hidden widths of the value network
    :param value_features: the block of features the value network sees (default: all)
    :param moe_kwargs: passed to :class:`~routed_rl.moe.MixtureOfExperts`
    """

    def __init__(
        self,
        features_dim: int,
        value_arch: Sequence[int],
        activation_fn: type[nn.Module],
        value_features: slice | None = None,
        **moe_kwargs: Any,
    ) -> None:
        super().__init__()
        self.actor = MixtureOfExperts(features_dim, activation_fn=activation_fn, **moe_kwargs)
        self.value_features = value_features
        value_in = features_dim if value_features is None else len(range(features_dim)[value_features])
        self.critic = mlp(value_in, value_arch, activation_fn)
        self.latent_dim_pi = self.actor.latent_dim
        self.latent_dim_vf = int(value_arch[-1]) if value_arch else value_in

    def forward(self, features: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        return self.forward_actor(features), self.forward_critic(features)

    def forward_actor(self, features: th.Tensor) -> th.Tensor:
        return self.actor(features)[0]

    def forward_critic(self, features: th.Tensor) -> th.Tensor:
        return self.critic(features if self.value_features is None else features[:, self.value_features])


class SteeringHandle:
    """Returned by :meth:`RoutedActorCriticPolicy.steer`: the steering is already on; as a context manager it
    puts the previous steering back on exit."""

    def __init__(self, moe: MixtureOfExperts, steering: Steering | None) -> None:
        self._moe = moe
        self._previous = moe.steering
        moe.steering = steering

    def __enter__(self) -> SteeringHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self._moe.steering = self._previous


def channel_feature_index(observation_space: spaces.Space, channels: Sequence[int], name: str = "channels") -> list[int]:
    """Indices, in the flattened observation, of the given channels of a (C, ...) Box observation."""
    if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) < 2:
        raise UserError(f"{name} needs a Box observation of shape (C, ...)")
    n_channels = observation_space.shape[0]
    per_channel = int(np.prod(observation_space.shape[1:]))
    bad = [c for c in channels if not 0 <= c < n_channels]
    if bad or not channels:
        raise UserError(f"{name} must be non-empty channel indices in [0, {n_channels}), got {list(channels)}")
    return [c * per_channel + j for c in sorted(set(channels)) for j in range(per_channel)]


class RoutedActorCriticPolicy(ActorCriticPolicy):
    """Actor-critic policy whose actor is a mixture of named experts (gradient routing, arXiv 2410.04332).

    :param expert_names: one name per expert; :class:`~routed_rl.agents.RoutedPPO` names them after its env's
        outcomes when ``policy_kwargs`` does not (:func:`routed_rl.tasks.expert_names_for`)
    :param expert_arch: hidden widths of each expert (default 256, 256 as in the paper)
    :param gate_arch: hidden widths of the gate before its linear layer
    :param value_arch: hidden widths of the value network (not routed)
    :param expert_obs_channels: if set, the experts see only these observation channels (e.g. ``[0, 1, 2]``
        hides OversightGrid's oversight mask); needs the default ``FlattenExtractor``
    :param gate_obs_channels: likewise for the gate
    :param expert_hidden_channels: ``{expert: channels}`` that one expert alone cannot see (e.g.
        ``{"diamond": [3]}``: the diamond expert is blind to the oversight mask, the ghost expert and the gate
        are not); not with ``expert_obs_channels``
    :param expert_own_cnn: experts that see the whole image through a GridCNN of their own, which no other
        part of the network sees or trains (the other experts, the gate and the value network share the
        first); needs the GridCNN features extractor, not with the channel options above
    :param precision: ``float32``, or ``bfloat16``: the training paths (``forward``, which SB3's rollout
        collection calls, ``evaluate_actions`` and the routed variants the update calls) run their matrix
        products and convolutions in bfloat16 under ``torch.autocast`` (mixed precision: parameters, gradients,
        optimizer and every returned value stay float32); ``predict``, ``predict_values`` and so evaluation and
        export always run in float32
    :param kwargs: passed to SB3's ``ActorCriticPolicy`` (``activation_fn``, ``ortho_init``, ``features_extractor_class``, ...)
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Any,
        expert_names: Sequence[str],
        expert_arch: Sequence[int] = (256, 256),
        gate_arch: Sequence[int] = (),
        value_arch: Sequence[int] = (256, 256),
        expert_obs_channels: Sequence[int] | None = None,
        gate_obs_channels: Sequence[int] | None = None,
        expert_hidden_channels: Mapping[str, Sequence[int]] | None = None,
        expert_own_cnn: Sequence[str] | None = None,
        precision: Precision = "float32",
        activation_fn: type[nn.Module] = nn.ReLU,
        **kwargs: Any,
    ) -> None:
        if precision not in PRECISIONS:
            raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.precision = precision
        # set before super().__init__, which calls _build_mlp_extractor
        self.expert_names = list(expert_names)
        self.expert_arch = list(expert_arch)
        self.gate_arch = list(gate_arch)
        self.value_arch = list(value_arch)
        self.expert_obs_channels = None if expert_obs_channels is None else list(expert_obs_channels)
        self.gate_obs_channels = None if gate_obs_channels is None else list(gate_obs_channels)
        self.expert_hidden_channels = (
            None if expert_hidden_channels is None else {str(k): list(v) for k, v in expert_hidden_channels.items()}
        )
        if self.expert_hidden_channels and self.expert_obs_channels is not None:
            raise UserError("expert_hidden_channels and expert_obs_channels cannot be combined; use one of them")
        self.expert_own_cnn = None if expert_own_cnn is None else [str(name) for name in expert_own_cnn]
        extractor = kwargs.get("features_extractor_class", FlattenExtractor)
        selecting = any(x is not None for x in (self.expert_obs_channels, self.gate_obs_channels))
        if self.expert_own_cnn is not None:
            self._check_own_cnn(extractor, selecting)
            kwargs["features_extractor_kwargs"] = {**kwargs.get("features_extractor_kwargs", {}), "blind_channels": []}
        elif extractor is GridCNN and self.expert_hidden_channels:
            hidden = {tuple(sorted(set(v))) for v in self.expert_hidden_channels.values()}
            if len(hidden) != 1:
                raise UserError(
                    "with the cnn features extractor every expert in expert_hidden_channels hides the same channels"
                )
            kwargs["features_extractor_kwargs"] = {
                **kwargs.get("features_extractor_kwargs", {}),
                "blind_channels": list(hidden.pop()),
            }
        elif (selecting or self.expert_hidden_channels) and extractor is not FlattenExtractor:
            raise UserError(
                "expert/gate observation channels work with the flatten features extractor (and "
                "expert_hidden_channels with cnn too)"
            )
        super().__init__(observation_space, action_space, lr_schedule, activation_fn=activation_fn, **kwargs)
        if precision != "float32":
            for head in (self.action_net, self.value_net):
                head.register_forward_hook(_to_float32)
        #: (n_envs, n_experts) bool: while set, :meth:`forward` (SB3's rollout collection) lets env ``i`` act
        #: with the experts ``rollout_keep[i]`` alone (RoutedPPO's ``deployed_share``); not saved
        self.rollout_keep: th.Tensor | None = None

    def _check_own_cnn(self, extractor: type, selecting: bool) -> None:
        """``expert_own_cnn`` needs the GridCNN extractor, known experts, and none of the channel options."""
        if extractor is not GridCNN:
            raise UserError("expert_own_cnn needs the cnn features extractor (policy.features_extractor: cnn)")
        if selecting or self.expert_hidden_channels:
            raise UserError("expert_own_cnn cannot be combined with expert/gate observation or hidden channels")
        own = self.expert_own_cnn or []
        for name in own:
            check_expert_name(name, self.expert_names, "expert_own_cnn")
        if not own or len(set(own)) == len(self.expert_names):
            raise UserError(f"expert_own_cnn must name some but not all experts {self.expert_names}, got {own}")

    def _build_mlp_extractor(self) -> None:
        def index(channels: Any, name: str) -> list[int] | None:
            return None if channels is None else channel_feature_index(self.observation_space, channels, name)

        hidden_channels = self.expert_hidden_channels or {}
        hidden = {name: self._hidden_features(channels, name) for name, channels in hidden_channels.items()}
        gate_index, value_features = index(self.gate_obs_channels, "gate_obs_channels"), None
        if self.expert_own_cnn is not None:  # view 0 (shared by everything else) | view 1 (these experts' own)
            extractor = self.features_extractor
            assert isinstance(extractor, GridCNN)  # checked in __init__
            view = extractor.view_dim
            shared, own = list(range(view)), list(range(view, 2 * view))
            hidden = {name: shared if name in self.expert_own_cnn else own for name in self.expert_names}
            gate_index, value_features = shared, slice(0, view)
        self.mlp_extractor = RoutedExtractor(  # type: ignore[assignment]
            self.features_dim,
            value_arch=self.value_arch,
            activation_fn=self.activation_fn,
            value_features=value_features,
            expert_names=self.expert_names,
            expert_arch=self.expert_arch,
            gate_arch=self.gate_arch,
            expert_input_index=index(self.expert_obs_channels, "expert_obs_channels"),
            gate_input_index=gate_index,
            expert_hidden_index=hidden,
        )

    def _hidden_features(self, channels: Sequence[int], name: str) -> list[int]:
        """The features an expert that hides ``channels`` must not see: those channels of the flattened
        observation, or, with a two-view GridCNN, the whole full view (the expert keeps the blind view)."""
        extractor = self.features_extractor
        if isinstance(extractor, GridCNN):
            return list(range(extractor.view_dim))
        return channel_feature_index(self.observation_space, channels, f"expert_hidden_channels[{name!r}]")

    @staticmethod
    def init_weights(module: nn.Module, gain: float = 1) -> None:
        """SB3's orthogonal initialisation (``ortho_init``), extended to the stacked experts."""
        if isinstance(module, StackedMLP):
            module.orthogonal_(gain)
        else:
            ActorCriticPolicy.init_weights(module, gain)

    def upgrade_saved_params(self, params: dict[str, Any]) -> None:
        """Convert, in place, SB3 saved parameters (``{"policy": ..., "policy.optimizer": ...}``) of a policy
        saved with one module per expert into this policy's stacked experts, Adam's moments included, so
        runs saved before the experts were stacked load and resume as they were."""
        state = params.get("policy")
        if not isinstance(state, dict):
            return
        saved = list(state)
        replaced = upgrade_per_module_keys(state, "mlp_extractor.actor.experts.", self.moe.n_experts, len(self.expert_arch))
        optimizer = params.get("policy.optimizer")
        if not replaced or not isinstance(optimizer, dict) or len(optimizer.get("param_groups", [])) != 1:
            return
        names = [name for name, _ in self.named_parameters()]
        parts = dict(replaced)
        old_keys = {key for keys in parts.values() for key in keys}
        old_order = [key for key in saved if key in old_keys or (key in names and key not in parts)]
        group = optimizer["param_groups"][0]
        if len(group["params"]) != len(old_order):
            return  # not the optimizer this policy saved: let SB3's own check report it
        old_state = {key: optimizer["state"].get(i) for key, i in zip(old_order, group["params"], strict=True)}
        new_state: dict[int, dict[str, Any]] = {}
        for j, name in enumerate(names):
            pieces: list[dict[str, Any]] = [old_state[key] for key in parts.get(name, [name]) if old_state.get(key)]
            if len(pieces) != len(parts.get(name, [name])):
                continue  # no step taken for it yet
            new_state[j] = {
                key: th.stack([p[key] for p in pieces]) if name in parts and th.is_tensor(v) and v.dim() > 0 else v
                for key, v in pieces[0].items()
            }
        optimizer["state"] = new_state
        group["params"] = list(range(len(names)))

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            expert_names=self.expert_names,
            expert_arch=self.expert_arch,
            gate_arch=self.gate_arch,
            value_arch=self.value_arch,
            expert_obs_channels=self.expert_obs_channels,
            gate_obs_channels=self.gate_obs_channels,
            expert_hidden_channels=self.expert_hidden_channels,
            expert_own_cnn=self.expert_own_cnn,
            precision=self.precision,
        )
        return data

    def autocast(self) -> th.autocast:
        """The context the training paths run in: ``torch.autocast`` to bfloat16 with ``precision="bfloat16"``,
        else a context that changes nothing."""
        return th.autocast(self.device.type, dtype=th.bfloat16, enabled=self.precision == "bfloat16")

    @property
    def moe(self) -> MixtureOfExperts:
        """The mixture-of-experts actor."""
        return self.mlp_extractor.actor  # type: ignore[return-value]

    # -- steering ------------------------------------------------------------------------------------------
    def steer(
        self,
        select: str | None = None,
        ablate: str | Sequence[str] | None = None,
        weights: Mapping[str, float] | None = None,
    ) -> SteeringHandle:
        """Steer the policy: act with one expert (``select``), drop experts and renormalise the gate over the
        rest (``ablate``), or fix the mixture weights (``weights``). With no argument: unsteered.

        Used as ``with policy.steer(select="diamond"): ...`` it lasts for the block; called as a statement it
        stays until the next ``steer()``.
        """
        return SteeringHandle(self.moe, resolve_steering(self.expert_names, select, ablate, weights))

    @property
    def steering(self) -> Steering | None:
        """The steering now in force (``None``: unsteered)."""
        return self.moe.steering

    def forward(self, obs: th.Tensor, deterministic: bool = False) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """SB3's ``forward`` (the rollout-collection path); with :attr:`rollout_keep` set, each env of the batch
        acts with its own kept experts."""
        with self.autocast():
            if self.rollout_keep is None:
                return super().forward(obs, deterministic)
            self.moe.sample_keep = self.rollout_keep.to(self.device)
            try:
                return super().forward(obs, deterministic)
            finally:
                self.moe.sample_keep = None

    def evaluate_actions(self, obs: PyTorchObs, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor | None]:
        """SB3's ``evaluate_actions`` (the update's path when nothing is routed), in the training precision."""
        with self.autocast():
            return super().evaluate_actions(obs, actions)

    # -- routed training path ------------------------------------------------------------------------------
    def evaluate_actions_routed(
        self,
        obs: th.Tensor,
        actions: th.Tensor,
        route_weight: th.Tensor | None = None,
        gate_route_weight: th.Tensor | None = None,
        keep: th.Tensor | None = None,
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor | None, th.Tensor]:
        """``evaluate_actions`` with routed gradients; forward values are those of ``evaluate_actions``.

        :param route_weight: (batch, n_experts) float, 1 = the expert's gradient flows, 0 = none
        :param gate_route_weight: (batch,) float gradient weight of the gate in the policy loss
        :param keep: (batch, n_experts) bool, the experts each sample acts with (``None``: all)
        :return: values (batch, 1), log_prob (batch,), entropy (batch,), raw gate logits (batch, n_experts)
            (their gradient is not routed: use them for a gate loss)
        """
        with self.autocast():
            features = self.extract_features(obs)
            pi_features, vf_features = (features, features) if self.share_features_extractor else features
            distribution, gate_logits = self._routed_distribution(pi_features, route_weight, gate_route_weight, keep)  # type: ignore[arg-type]
            latent_vf = self.mlp_extractor.forward_critic(vf_features)  # type: ignore[arg-type]
            values = self.value_net(latent_vf)
        return values, distribution.log_prob(actions), distribution.entropy(), gate_logits.float()

    def log_prob_routed(
        self,
        obs: th.Tensor,
        actions: th.Tensor,
        route_weight: th.Tensor | None = None,
        gate_route_weight: th.Tensor | None = None,
        keep: th.Tensor | None = None,
    ) -> th.Tensor:
        """(batch,) the log-probabilities of :meth:`evaluate_actions_routed` alone, without evaluating the value
        network (for a loss that needs no value, such as label replay's surrogate)."""
        with self.autocast():
            features = BasePolicy.extract_features(self, obs, self.pi_features_extractor)
            distribution, _ = self._routed_distribution(features, route_weight, gate_route_weight, keep)
        return distribution.log_prob(actions)

    def _routed_distribution(
        self,
        pi_features: th.Tensor,
        route_weight: th.Tensor | None,
        gate_route_weight: th.Tensor | None,
        keep: th.Tensor | None,
    ) -> tuple[Distribution, th.Tensor]:
        """The action distribution from the routed mixture, and the raw gate logits."""
        latent_pi, gate_logits = self.moe(pi_features, route_weight, gate_route_weight, keep)
        return self._get_action_dist_from_latent(latent_pi), gate_logits

    def expert_log_prob(self, obs: th.Tensor, actions: th.Tensor, expert: int) -> th.Tensor:
        """(batch,) log-probability of ``actions`` under expert ``expert`` acting alone (as ``steer(select=...)``),
        in the training precision (the expert loss calls it)."""
        with self.autocast():
            features = self.extract_features(obs)
            pi_features = features if self.share_features_extractor else features[0]
            moe = self.moe
            latent = moe.expert_forward(expert, moe._select(pi_features, "expert_input_index"))  # type: ignore[arg-type]
            distribution = self._get_action_dist_from_latent(latent)
        return distribution.log_prob(actions)

    def mixture_weights(self, obs: th.Tensor) -> th.Tensor:
        """(batch, n_experts) mixture weights the gate gives (with steering applied)."""
        with th.no_grad():
            features = self.extract_features(obs)
            pi_features = features if self.share_features_extractor else features[0]
            return self.moe.mixture_weights(self.moe.gate_logits(pi_features))  # type: ignore[arg-type]
