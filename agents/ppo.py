"""RoutedPPO: PPO whose labeled episodes train only their matching experts (arXiv 2410.04332, §4.3).

RoutedPPO is SB3's ``PPO`` with three changes, each through SB3's hooks:

* ``rollout_buffer_class`` is :class:`~routed_rl.agents.buffers.LabeledRolloutBuffer`;
* an internal callback (added in ``_init_callback``) asks the labeler about every finished episode and
  writes the label on all of the episode's steps in the current rollout, across SB3's auto-resets (and,
  if ``label_rewards`` are set, replaces the reward of a labeled episode's last step before it is stored);
* ``train()`` mirrors SB3 2.9's ``PPO.train`` but evaluates the policy with routed gradients and adds a
  supervised gate loss (and optionally an expert-alone surrogate) on labeled steps. Ratios, clipping,
  entropy and the value loss are SB3's; ``labeled_only`` averages every term over labeled steps alone
  (the filtering baseline).

With ``routing_enabled=False`` and ``gate_coef=0``, or with one expert, it is exactly SB3's PPO (a test
checks this).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.save_util import load_from_zip_file
from stable_baselines3.common.type_aliases import MaybeCallback
from stable_baselines3.common.utils import explained_variance
from torch.nn import functional as F

from routed_rl.agents.buffers import LabeledRolloutBuffer, LabeledRolloutBufferSamples, LabelReplay, ReplaySamples
from routed_rl.agents.policies import RoutedActorCriticPolicy
from routed_rl.errors import UserError
from routed_rl.labeling import EpisodeLabelTracker, Labeler, make_labeler
from routed_rl.routing import RoutingTable
from routed_rl.steering import resolve_steering
from routed_rl.tasks import env_outcomes, expert_names_for
from routed_rl.type_aliases import RoutingSpec

__all__ = ["RoutedPPO"]


class _LabelingCallback(BaseCallback):
    """Feeds finished episodes to the labeler and writes labels into the buffer (runs before ``add``)."""

    model: RoutedPPO

    def _on_rollout_start(self) -> None:
        self.model.label_tracker.start_rollout()
        self.model._anneal_mixture()

    def _on_step(self) -> bool:
        model = self.model
        buffer = model.rollout_buffer
        model.label_tracker.on_step(buffer.pos, self.locals["dones"], self.locals["infos"])
        events = model.label_tracker.drain_events()
        if model.label_rewards:
            rewards = self.locals["rewards"]  # collect_rollouts adds this very array to the buffer after on_step
            for env_index, label in events:
                if label in model.label_rewards:
                    rewards[env_index] = model.label_rewards[label]
        model.step_labels = events
        model.label_log.extend((model.num_timesteps, env_index, label) for env_index, label in events)
        return True

    def _on_rollout_end(self) -> None:
        model = self.model
        if model.routing_enabled and model.expert_loss_coef > 0:
            model._store_owner_log_probs()
        labeler, tracker = model.labeler, model.label_tracker
        self.logger.record("routing/labels_spent", labeler.labels_spent)
        self.logger.record("routing/label_fraction", labeler.label_fraction)
        self.logger.record("routing/leaked_steps", tracker.leaked_steps)
        labels = model.rollout_buffer.labels
        self.logger.record("routing/labeled_step_fraction", float((labels >= 0).mean()))
        self._log_gate_weights(labels)

    def _log_gate_weights(self, labels: np.ndarray) -> None:
        """Mean gate weight on each expert, over this rollout's steps of each label."""
        model = self.model
        if not isinstance(model.policy, RoutedActorCriticPolicy) or model.routing_table.n_experts < 2:
            return
        rows, envs = np.nonzero(labels >= 0)
        if len(rows) == 0:
            return
        obs = th.as_tensor(model.rollout_buffer.observations[rows, envs], device=model.device)
        weights = model.policy.mixture_weights(obs).cpu().numpy()
        ids = labels[rows, envs]
        for label_id, label in enumerate(model.routing_table.labels):
            selected = ids == label_id
            if selected.any():
                for k, expert in enumerate(model.routing_table.expert_names):
                    self.logger.record(f"routing/gate_weight/{label}/{expert}", float(weights[selected, k].mean()))


class RoutedPPO(PPO):
    """PPO with gradient routing into a mixture-of-experts policy.

    :param policy: ``"RoutedPolicy"`` (:class:`RoutedActorCriticPolicy`) or a subclass; SB3's policies also
        work when ``routing_enabled=False``
    :param env: the environment; its episode-end ``info`` must carry what the labeler reads
    :param routing: label -> {expert: weight} table (default: each expert's name routes into it alone)
    :param unlabeled_routing: per-expert gradient weights of unlabeled steps (default: 1 for every expert)
    :param tail_steps: how many of an episode's last steps are its tail (0: off); an unlabeled episode's tail
        steps are routed by ``unlabeled_tail`` instead of ``unlabeled_routing``, where that episode ends within
        the rollout
    :param unlabeled_tail: per-expert gradient weights of those tail steps (experts missing: their
        ``unlabeled_routing`` weight), e.g. ``{"diamond": 0}``: the expert kept at deployment never learns
        how an unwatched episode ended from its last steps, where the outcome is chosen
    :param routing_enabled: False: no gradient masking, every step trains every expert and the gate (labels
        are still collected and counted, and still give ``label_rewards`` and the gate loss)
    :param labeler: a :class:`~routed_rl.labeling.Labeler`, or a built-in name / import path for
        :func:`~routed_rl.labeling.make_labeler`
    :param labeler_kwargs: keyword arguments for the labeler when ``labeler`` is a name
    :param gate_coef: weight of the gate's cross-entropy against the label, on labeled steps (with a
        mixture of two or more experts, routed or not)
    :param gate_balance: average the gate loss per target expert, then over the experts present in the
        minibatch (each label counts equally however rare its steps), instead of over labeled steps
    :param gate_policy_gradient: False: no policy gradient reaches the gate (routed or not, replay included),
        so it learns from the gate loss alone; with ``gate_coef=0`` too its mixture weights stay as initialised
    :param expert_loss_coef: weight of an extra clipped surrogate on labeled steps, evaluated with the expert
        each label routes into acting alone (its owner) against that expert's own pre-update log-probability,
        so a labeled episode trains that expert as a stand-alone policy whatever the gate weighed it at;
        0 disables it. The main loss is unchanged.
    :param label_rewards: optional label -> reward given at the last step of a labeled episode instead of
        the env's reward (e.g. the true reward on the episodes the overseer saw)
    :param labeled_only: train on labeled steps only (the filtering baseline): the surrogate, entropy,
        value and gate losses are averaged over each minibatch's labeled steps; a minibatch without any
        is skipped
    :param label_replay: reuse the labeled steps of this many past rollouts in every update (0: off): each
        minibatch adds a clipped surrogate, routed by label, over a share of the kept steps, with the ratio
        taken against the policy that collected them; each kept step weighs as much as a fresh step
    :param label_replay_steps: keep at most this many labeled steps for replay, dropping the oldest rollouts
        first (None: no limit): bounds the replay's cost per update where labels are plentiful
    :param label_replay_coef: weight of that replay surrogate
    :param label_replay_anchor: what the replay's ratio is taken against: ``"behaviour"``, the policy that
        collected the step (a stale step stops pulling once the policy has moved past the clip range from it);
        ``"current"``, the policy at the start of each update, with the step's surrogate weighted by the
        importance ratio of that policy to the behaviour policy, truncated at 1 (as in V-trace), so a kept
        label keeps pulling in every update, by the clip range at most, as far as the current policy still
        takes its action (in the manner of GePPO, Queeney et al., 2021)
    :param anneal_experts: experts whose mixture weight is scaled down linearly while training (renormalised
        over the others), from 1 at the start to 0 at ``anneal_fraction`` of ``total_timesteps`` and after, so
        that by then the experts kept at deployment act alone, as they will when deployed; the scale is set
        at the start of each rollout and kept through its update (the ratios stay consistent) and lifted
        when ``learn`` returns. Empty: off
    :param anneal_fraction: the share of training, in (0, 1], over which those weights reach 0
    :param deployed_share: share of the envs (rounded to whole envs; the last ones) that act, while
        collecting rollouts, with ``deployed_steering`` instead of the whole mixture, so that the deployed
        policy is trained on its own behaviour; their steps are evaluated in the update (and in label replay)
        with the same steering, so the PPO ratios compare like with like. 0: off
    :param deployed_steering: the deployed steering as ``policy.steer`` keyword arguments (``{"select":
        "diamond"}`` or ``{"ablate": [...]}``); needed when ``deployed_share`` > 0
    :param kwargs: SB3 ``PPO`` arguments (``n_steps``, ``batch_size``, ``ent_coef``, ``policy_kwargs``, ...)
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {**PPO.policy_aliases, "RoutedPolicy": RoutedActorCriticPolicy}
    rollout_buffer: LabeledRolloutBuffer
    labeler: Labeler
    policy: RoutedActorCriticPolicy

    def __init__(
        self,
        policy: str | type[RoutedActorCriticPolicy] = "RoutedPolicy",
        env: Any = None,
        routing: RoutingSpec | None = None,
        routing_enabled: bool = True,
        unlabeled_routing: Mapping[str, float] | None = None,
        tail_steps: int = 0,
        unlabeled_tail: Mapping[str, float] | None = None,
        labeler: Labeler | str = "oversight",
        labeler_kwargs: Mapping[str, Any] | None = None,
        gate_coef: float = 1.0,
        gate_balance: bool = False,
        gate_policy_gradient: bool = True,
        expert_loss_coef: float = 0.0,
        label_rewards: Mapping[str, float] | None = None,
        labeled_only: bool = False,
        label_replay: int = 0,
        label_replay_steps: int | None = None,
        label_replay_coef: float = 1.0,
        label_replay_anchor: str = "behaviour",
        anneal_experts: Sequence[str] = (),
        anneal_fraction: float = 1.0,
        deployed_share: float = 0.0,
        deployed_steering: Mapping[str, Any] | None = None,
        _init_setup_model: bool = True,
        **kwargs: Any,
    ) -> None:
        if env is None and _init_setup_model:
            raise UserError("RoutedPPO needs an env")
        kwargs.setdefault("rollout_buffer_class", LabeledRolloutBuffer)
        if not issubclass(kwargs["rollout_buffer_class"], LabeledRolloutBuffer):
            raise UserError("RoutedPPO needs a LabeledRolloutBuffer (or subclass) as rollout_buffer_class")
        if gate_coef < 0:
            raise UserError(f"gate_coef must be >= 0, got {gate_coef}")
        super().__init__(policy, env, _init_setup_model=False, **kwargs)
        self.routing_spec = None if routing is None else {k: dict(v) for k, v in routing.items()}
        self.routing_enabled = routing_enabled
        self.unlabeled_routing = None if unlabeled_routing is None else dict(unlabeled_routing)
        if tail_steps < 0:
            raise UserError(f"tail_steps must be >= 0, got {tail_steps}")
        self.tail_steps = int(tail_steps)
        self.unlabeled_tail = None if unlabeled_tail is None else dict(unlabeled_tail)
        self.labeler_spec: Labeler | str = labeler
        self.labeler_kwargs = dict(labeler_kwargs or {})
        self.gate_coef = float(gate_coef)
        self.gate_balance = bool(gate_balance)
        self.gate_policy_gradient = bool(gate_policy_gradient)
        if expert_loss_coef < 0:
            raise UserError(f"expert_loss_coef must be >= 0, got {expert_loss_coef}")
        self.expert_loss_coef = float(expert_loss_coef)
        self.label_rewards = dict(label_rewards or {})
        self.labeled_only = bool(labeled_only)
        if label_replay < 0 or label_replay_coef < 0:
            raise UserError(f"label_replay and label_replay_coef must be >= 0, got {label_replay}, {label_replay_coef}")
        if label_replay_steps is not None and label_replay_steps < 1:
            raise UserError(f"label_replay_steps must be >= 1 (or None: no limit), got {label_replay_steps}")
        self.label_replay = LabelReplay(int(label_replay), label_replay_steps)
        self.label_replay_coef = float(label_replay_coef)
        if label_replay_anchor not in ("behaviour", "current"):
            raise UserError(f"label_replay_anchor must be 'behaviour' or 'current', got {label_replay_anchor!r}")
        self.label_replay_anchor = label_replay_anchor
        if not 0.0 < anneal_fraction <= 1.0:
            raise UserError(f"anneal_fraction must be in (0, 1], got {anneal_fraction}")
        self.anneal_experts = [anneal_experts] if isinstance(anneal_experts, str) else list(anneal_experts)
        self.anneal_fraction = float(anneal_fraction)
        if not 0.0 <= deployed_share <= 1.0:
            raise UserError(f"deployed_share must be in [0, 1], got {deployed_share}")
        self.deployed_share = float(deployed_share)
        self.deployed_steering = None if deployed_steering is None else dict(deployed_steering)
        self.label_log: list[tuple[int, int, str]] = []  # (global step, env index, label), for run folders
        self.step_labels: list[tuple[int, str]] = []  # (env index, label) of the labels given at the current step
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        if issubclass(self.policy_class, RoutedActorCriticPolicy) and "expert_names" not in self.policy_kwargs:
            self.policy_kwargs = {**self.policy_kwargs, "expert_names": self._default_expert_names()}
        super()._setup_model()
        expert_names = getattr(self.policy, "expert_names", None)
        if expert_names is None:
            if self.routing_enabled:
                raise UserError("routing needs a RoutedActorCriticPolicy; set routing_enabled=False for other policies")
            expert_names = ["policy"]
        self.routing_table = RoutingTable(expert_names, self.routing_spec, self.unlabeled_routing, self.unlabeled_tail)
        self.rollout_buffer.tail_steps = self.tail_steps
        for label in self.label_rewards:
            self.routing_table.label_id(label)  # unknown labels are an error
        if self.anneal_experts:
            if not isinstance(self.policy, RoutedActorCriticPolicy):
                raise UserError("anneal_experts needs a RoutedActorCriticPolicy")
            try:  # known, distinct, not every expert
                resolve_steering(expert_names, ablate=self.anneal_experts)
            except ValueError as e:
                raise UserError(f"anneal_experts: {e}") from None
        self._setup_deployed_envs(expert_names)
        if getattr(self, "labeler", None) is None:  # a loaded model keeps its labeler, counts and generator included
            if isinstance(self.labeler_spec, Labeler):
                self.labeler = self.labeler_spec
            else:
                self.labeler = make_labeler(
                    self.labeler_spec, labels=self.routing_table.labels, seed=self.seed, **self.labeler_kwargs
                )
        if not hasattr(self, "label_log"):
            self.label_log = []
        self.step_labels = []
        self.label_tracker = EpisodeLabelTracker(
            self.n_envs, self.labeler, self.routing_table.label_id, self.rollout_buffer.set_labels
        )

    def _init_callback(self, callback: MaybeCallback, progress_bar: bool = False) -> BaseCallback:
        user = super()._init_callback(callback, progress_bar)
        full = CallbackList([_LabelingCallback(), user])
        full.init_callback(self)
        return full

    def _excluded_save_params(self) -> list[str]:  # the label replay store is saved: a resumed run replays it too
        # the tracker holds bound methods of the buffer; it is rebuilt by _setup_model on load
        return [*super()._excluded_save_params(), "label_tracker", "label_log", "step_labels", "_deployed_keep"]

    def train(self) -> None:
        """Update the policy from the rollout buffer (mirrors SB3 2.9.2 ``PPO.train``, plus routing and gate loss)."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        clip_range = self.clip_range(self._current_progress_remaining)  # type: ignore[operator]
        clip_range_vf = None
        if self.clip_range_vf is not None:
            clip_range_vf = self.clip_range_vf(self._current_progress_remaining)  # type: ignore[operator]

        entropy_losses, pg_losses, value_losses, clip_fractions = [], [], [], []
        routing_losses: dict[str, list[float]] = {}
        routed = self.routing_enabled
        gated = self.gate_coef > 0 and self.routing_table.n_experts > 1 and isinstance(self.policy, RoutedActorCriticPolicy)
        continue_training = True
        loss = th.zeros(())
        n_minibatches = -(-self.rollout_buffer.buffer_size * self.rollout_buffer.n_envs // self.batch_size)
        reanchor = self._reanchor if getattr(self, "label_replay_anchor", "behaviour") == "current" else None
        replay_epochs = self.label_replay.epochs(self.n_epochs, n_minibatches, reanchor=reanchor)  # past rollouts only
        self._keep_for_replay()
        for epoch in range(self.n_epochs):
            approx_kl_divs = []
            replay = iter(replay_epochs[epoch])
            for rollout_data in self.rollout_buffer.get(self.batch_size):
                data: LabeledRolloutBufferSamples = rollout_data  # type: ignore[assignment]
                # per-step weights of every loss term: None = a plain mean (SB3's), else the labeled steps alone
                step_weight = data.label_mask.float() if self.labeled_only else None
                if step_weight is not None and not bool(data.label_mask.any()):
                    continue
                actions = data.actions
                if isinstance(self.action_space, spaces.Discrete):
                    actions = data.actions.long().flatten()

                values, log_prob, entropy, gate_logits = self._evaluate(data, actions, routed, gated)
                values = values.flatten()
                advantages = self._advantages(data, step_weight)

                ratio = th.exp(log_prob - data.old_log_prob)
                policy_loss_1 = advantages * ratio
                policy_loss_2 = advantages * th.clamp(ratio, 1 - clip_range, 1 + clip_range)
                policy_loss = -_mean(th.min(policy_loss_1, policy_loss_2), step_weight)
                pg_losses.append(policy_loss.item())
                clip_fractions.append(_mean((th.abs(ratio - 1) > clip_range).float(), step_weight).item())

                value_loss = self._value_loss(data, values, clip_range_vf, step_weight)
                value_losses.append(value_loss.item())

                entropy_loss = -_mean(-log_prob if entropy is None else entropy, step_weight)
                entropy_losses.append(entropy_loss.item())

                loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss
                if gate_logits is not None:
                    extra = self._routing_losses(data, actions, advantages, gate_logits, clip_range, gated)
                    for name, value in extra.items():
                        routing_losses.setdefault(name, []).append(value.item())
                        loss = loss + value
                replayed = next(replay, None)
                if replayed is not None and self.label_replay_coef > 0:
                    replay_loss = self.label_replay_coef * self._replay_loss(replayed, clip_range, routed)
                    routing_losses.setdefault("replay_loss", []).append(replay_loss.item())
                    loss = loss + replay_loss

                with th.no_grad():
                    log_ratio = log_prob - data.old_log_prob
                    approx_kl_div = _mean((th.exp(log_ratio) - 1) - log_ratio, step_weight).cpu().numpy()
                    approx_kl_divs.append(approx_kl_div)

                if self.target_kl is not None and approx_kl_div > 1.5 * self.target_kl:
                    continue_training = False
                    if self.verbose >= 1:
                        print(f"Early stopping at step {epoch} due to reaching max kl: {approx_kl_div:.2f}")
                    break

                self.policy.optimizer.zero_grad()
                loss.backward()
                th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()

            self._n_updates += 1
            if not continue_training:
                break

        explained_var = explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten())
        if pg_losses:  # (labeled_only: every minibatch may have been skipped)
            self.logger.record("train/entropy_loss", np.mean(entropy_losses))
            self.logger.record("train/policy_gradient_loss", np.mean(pg_losses))
            self.logger.record("train/value_loss", np.mean(value_losses))
            self.logger.record("train/approx_kl", np.mean(approx_kl_divs))
            self.logger.record("train/clip_fraction", np.mean(clip_fractions))
        self.logger.record("train/loss", loss.item())
        self.logger.record("train/explained_variance", explained_var)
        for name, recorded in routing_losses.items():
            self.logger.record(f"train/{name}", np.mean(recorded))
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/clip_range", clip_range)
        if self.clip_range_vf is not None:
            self.logger.record("train/clip_range_vf", clip_range_vf)

    def _evaluate(
        self, data: LabeledRolloutBufferSamples, actions: th.Tensor, routed: bool, gated: bool
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor | None, th.Tensor | None]:
        """Values, log-probabilities, entropy and (when routed or gated) the gate logits of a minibatch."""
        keep = self._keep(data.deployed)
        gate_weight = self._gate_weight(data.label_mask, routed)
        if not (routed or gated or keep is not None or gate_weight is not None):
            return (*self.policy.evaluate_actions(data.observations, actions), None)
        route_weight = self.routing_table.weights(data.labels).to(self.device) if routed else None
        return self.policy.evaluate_actions_routed(data.observations, actions, route_weight, gate_weight, keep)

    def _gate_weight(self, label_mask: th.Tensor, routed: bool) -> th.Tensor | None:
        """Per-step gradient weight of the gate in the policy loss: 0 everywhere with ``gate_policy_gradient``
        off (a mixture policy); routed, 1 on unlabeled steps only (labeled ones are not the gate's, as in the
        paper); else None (every step)."""
        if not self.gate_policy_gradient and isinstance(self.policy, RoutedActorCriticPolicy):
            return th.zeros(len(label_mask), device=self.device)
        return (~label_mask).float().to(self.device) if routed else None

    def _value_loss(
        self, data: LabeledRolloutBufferSamples, values: th.Tensor, clip_range_vf: float | None, step_weight: th.Tensor | None
    ) -> th.Tensor:
        """SB3's (optionally clipped) value loss; over the labeled steps alone with ``labeled_only``."""
        if clip_range_vf is None:
            values_pred = values
        else:
            values_pred = data.old_values + th.clamp(values - data.old_values, -clip_range_vf, clip_range_vf)
        if step_weight is None:
            return F.mse_loss(data.returns, values_pred)
        return _mean((data.returns - values_pred) ** 2, step_weight)

    def _advantages(self, data: LabeledRolloutBufferSamples, step_weight: th.Tensor | None) -> th.Tensor:
        """The minibatch's advantages, normalised as SB3 does (over the labeled steps alone with ``labeled_only``)."""
        advantages = data.advantages
        if not self.normalize_advantage or len(advantages) <= 1:
            return advantages
        if step_weight is None:
            return (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        labeled = advantages[data.label_mask]
        spread = labeled.std() if len(labeled) > 1 else th.ones((), device=advantages.device)
        return (advantages - labeled.mean()) / (spread + 1e-8)

    def _keep_for_replay(self) -> None:
        """Keep this rollout's labeled steps for the next updates' replay (and log how many are kept)."""
        self.label_replay.add(self.rollout_buffer)
        if self.label_replay.rollouts > 0:
            self.logger.record("routing/replay_steps", len(self.label_replay))

    def _replay_log_prob(self, replayed: ReplaySamples, routed: bool) -> th.Tensor:
        """Log-probability of kept steps' actions under the current policy, routed by label, steered as they acted."""
        obs = replayed.observations.to(self.device)
        actions = replayed.actions.to(self.device)
        if isinstance(self.action_space, spaces.Discrete):
            actions = actions.long().flatten()
        keep = None if replayed.deployed is None else self._keep(replayed.deployed)
        gate_weight = self._gate_weight(th.ones(len(obs), dtype=th.bool), routed)  # every kept step is labeled
        if routed or keep is not None or gate_weight is not None:
            route_weight = self.routing_table.weights(replayed.labels).to(self.device) if routed else None
            return self.policy.log_prob_routed(obs, actions, route_weight, gate_weight, keep)
        return self.policy.evaluate_actions(obs, actions)[1]

    def _reanchor(self, joined: ReplaySamples) -> ReplaySamples:
        """``label_replay_anchor="current"``: the kept steps' ratios taken against the policy at the start of
        this update, each step weighted by min(1, current / behaviour probability of its action)."""
        with th.no_grad():
            log_prob = self._replay_log_prob(joined, routed=False).cpu()  # routing changes gradients only
        weight = th.exp(log_prob - joined.old_log_prob).clamp(max=1.0)
        return joined._replace(old_log_prob=log_prob, weight=weight)

    def _replay_loss(self, replayed: ReplaySamples, clip_range: float, routed: bool) -> th.Tensor:
        """Clipped surrogate of kept labeled steps against their anchor (the behaviour policy, or the policy at
        the start of this update, see ``label_replay_anchor``), routed by label; summed and divided by the
        batch size, so each kept step weighs as much as a fresh one."""
        log_prob = self._replay_log_prob(replayed, routed)
        advantages = replayed.advantages.to(self.device)
        if self.normalize_advantage and len(advantages) > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        ratio = th.exp(log_prob - replayed.old_log_prob.to(self.device))
        surrogate = th.min(advantages * ratio, advantages * th.clamp(ratio, 1 - clip_range, 1 + clip_range))
        if replayed.weight is not None:
            surrogate = surrogate * replayed.weight.to(self.device)
        return -surrogate.sum() / self.batch_size

    def _routing_losses(
        self,
        data: LabeledRolloutBufferSamples,
        actions: th.Tensor,
        advantages: th.Tensor,
        gate_logits: th.Tensor,
        clip_range: float,
        gated: bool,
    ) -> dict[str, th.Tensor]:
        """The weighted extra loss terms on labeled steps: ``gate_loss`` and ``expert_loss`` (when enabled)."""
        if not bool(data.label_mask.any()):
            return {}
        out = {}
        if gated:
            out["gate_loss"] = self.gate_coef * self._gate_loss(data, gate_logits)
        if self.routing_enabled and self.expert_loss_coef > 0:
            out["expert_loss"] = self.expert_loss_coef * self._expert_loss(data, actions, advantages, clip_range)
        return out

    def _gate_loss(self, data: LabeledRolloutBufferSamples, gate_logits: th.Tensor) -> th.Tensor:
        """Cross-entropy of the gate against each labeled step's target expert(s): the mean over labeled steps,
        or with ``gate_balance`` the mean over the target experts present of each one's mean."""
        mask = data.label_mask
        targets = self.routing_table.gate_targets(data.labels[mask]).to(self.device)
        cross_entropy = -(targets * th.log_softmax(gate_logits[mask], dim=-1)).sum(dim=-1)
        if not self.gate_balance:
            return cross_entropy.mean()
        per_target = targets.sum(dim=0)  # (n_experts,) labeled steps aiming at each expert (soft targets split)
        present = per_target > 0
        return ((targets[:, present] / per_target[present]) * cross_entropy[:, None]).sum() / present.sum()

    def _store_owner_log_probs(self) -> None:
        """Before the update, record each labeled step's action log-probability under its owner expert alone."""
        buffer = self.rollout_buffer
        rows, envs = np.nonzero(buffer.labels >= 0)
        if len(rows) == 0:
            return
        obs = th.as_tensor(buffer.observations[rows, envs], device=self.device)
        actions = th.as_tensor(buffer.actions[rows, envs], device=self.device).long().flatten()
        owners = self.routing_table.owners(buffer.labels[rows, envs])
        out = th.zeros(len(rows), device=self.device)
        with th.no_grad():
            for k in th.unique(owners).tolist():
                idx = owners == k
                out[idx] = self.policy.expert_log_prob(obs[idx], actions[idx], int(k))
        buffer.owner_log_probs[rows, envs] = out.cpu().numpy()

    def _expert_loss(
        self, data: LabeledRolloutBufferSamples, actions: th.Tensor, advantages: th.Tensor, clip_range: float
    ) -> th.Tensor:
        """Clipped surrogate of labeled steps under their owner expert acting alone (mean over labeled steps).

        The ratio is taken against the owner expert's own log-probability before this update (not the
        mixture's), so it starts at 1 and clipping bounds how far one update moves the expert."""
        labeled = th.nonzero(data.label_mask).squeeze(1)
        owners = self.routing_table.owners(data.labels[labeled])
        total = th.zeros((), device=self.device)
        for k in th.unique(owners).tolist():
            idx = labeled[owners == k]
            ratio = th.exp(
                self.policy.expert_log_prob(data.observations[idx], actions[idx], int(k)) - data.owner_log_prob[idx]
            )
            adv = advantages[idx]
            total = total - th.min(adv * ratio, adv * th.clamp(ratio, 1 - clip_range, 1 + clip_range)).sum()
        return total / len(labeled)

    def _default_expert_names(self) -> list[str]:
        """One expert per outcome of the env that carries a reward (:func:`~routed_rl.tasks.env_outcomes`); for
        a model saved before its policy kept the names, those of its saved routing table."""
        saved = getattr(self, "routing_table", None)
        if saved is not None:
            return list(saved.expert_names)
        outcomes = None if self.env is None else env_outcomes(self.env)
        if outcomes is None:
            raise UserError(
                "name the experts, e.g. policy_kwargs={'expert_names': ['goal', 'lava']}: the env is not a routed-rl "
                "env and has no OutcomeWrapper, so its outcomes cannot name them"
            )
        return expert_names_for(outcomes)

    def _setup_deployed_envs(self, expert_names: list[str]) -> None:
        """Which envs act with the deployed steering (``deployed_share``), in the buffer and for the policy."""
        self._deployed_keep: th.Tensor | None = None
        share = self.deployed_share
        if share <= 0:
            return
        if not isinstance(self.policy, RoutedActorCriticPolicy):
            raise UserError("deployed_share needs a RoutedActorCriticPolicy")
        try:
            steering = resolve_steering(expert_names, **(self.deployed_steering or {}))
        except (TypeError, ValueError) as e:
            raise UserError(f"deployed_steering: {e}") from None
        if steering is None or steering.fixed_weights is not None:
            raise UserError("deployed_share needs deployed_steering to select or ablate experts, e.g. {'select': 'diamond'}")
        n_deployed = round(share * self.n_envs)
        if n_deployed == 0:
            raise UserError(f"deployed_share {share} of {self.n_envs} envs is no env; use at least {1 / self.n_envs:g}")
        envs = np.arange(self.n_envs) >= self.n_envs - n_deployed
        self.rollout_buffer.deployed_envs = envs
        self._deployed_keep = th.tensor(steering.keep)

    def _keep(self, deployed: th.Tensor) -> th.Tensor | None:
        """(batch, n_experts) experts each step acted with: the deployed steering's on deployed steps, all elsewhere."""
        if self._deployed_keep is None:
            return None
        keep = self._deployed_keep.to(deployed.device)
        return th.where(deployed.to(th.bool).unsqueeze(1), keep, th.ones_like(keep))

    def _anneal_mixture(self) -> None:
        """Scale the annealed experts' mixture weights for the coming rollout and its update."""
        if not self.anneal_experts:
            return
        done = self.num_timesteps / max(self._total_timesteps, 1)
        scale = max(0.0, 1.0 - done / self.anneal_fraction)
        names = self.routing_table.expert_names
        self.policy.moe.weight_scale = th.tensor([scale if e in self.anneal_experts else 1.0 for e in names])
        self.logger.record("routing/anneal_scale", scale)

    def set_parameters(self, load_path_or_dict: Any, exact_match: bool = True, device: th.device | str = "auto") -> None:
        """SB3's ``set_parameters``; a model saved with one module per expert is converted to stacked experts."""
        params = load_path_or_dict
        if not isinstance(params, dict):
            _, params, _ = load_from_zip_file(load_path_or_dict, device=device, load_data=False)
        if isinstance(self.policy, RoutedActorCriticPolicy):
            self.policy.upgrade_saved_params(params)
        super().set_parameters(params, exact_match=exact_match, device=device)

    def learn(self, *args: Any, **kwargs: Any) -> RoutedPPO:
        """SB3's ``learn``; a steering set on the policy is lifted while training and restored after; the
        deployed envs' steering (``deployed_share``) and the annealing scale hold while training only."""
        if not isinstance(self.policy, RoutedActorCriticPolicy):
            return super().learn(*args, **kwargs)
        keep = self._deployed_keep
        self.policy.rollout_keep = None if keep is None else self._keep(th.as_tensor(self.rollout_buffer.deployed_envs))
        try:
            with self.policy.steer():
                return super().learn(*args, **kwargs)
        finally:
            self.policy.moe.weight_scale = None
            self.policy.rollout_keep = None


def _mean(x: th.Tensor, weight: th.Tensor | None) -> th.Tensor:
    """``x.mean()``, or its ``weight``-weighted mean."""
    return x.mean() if weight is None else (x * weight).sum() / weight.sum()
