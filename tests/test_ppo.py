"""RoutedPPO: exactly SB3's PPO without routing and gate loss, or with one expert; routed updates touch only their
experts; the gate loss, label rewards and labeled-only training do what they say."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch as th
from experts import per_expert
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback

from routed_rl.agents import RoutedActorCriticPolicy, RoutedPPO
from routed_rl.config import load_config
from routed_rl.envs import OversightGridVecEnv
from routed_rl.training import build_model

PPO_KWARGS = {"n_steps": 16, "batch_size": 32, "n_epochs": 3, "learning_rate": 1e-3, "ent_coef": 0.01}


def _params(model: PPO) -> dict[str, th.Tensor]:
    return per_expert({k: v.detach().clone() for k, v in model.policy.state_dict().items()})


@pytest.mark.parametrize(
    "experts,routing_enabled",
    [(["diamond", "ghost"], False), (["only"], True)],
    ids=["two-experts-routing-off", "one-expert-routing-on"],
)
def test_matches_sb3_ppo_update_for_update(experts: list[str], routing_enabled: bool) -> None:
    policy_kwargs = {"expert_names": experts, "expert_arch": [32, 32], "value_arch": [32], "gate_arch": []}
    # with one expert, every terminal episode is labeled "only": routing is on and fires
    routing = {"diamond": {"only": 1.0}, "ghost": {"only": 1.0}} if experts == ["only"] else None

    def env() -> OversightGridVecEnv:
        return OversightGridVecEnv(8, oversight_prob=1.0, seed=5)

    def snapshots(model: PPO) -> list[dict[str, th.Tensor]]:
        out = [_params(model)]
        for _ in range(3):  # three rollouts and updates, compared after each
            model.learn(8 * 16, reset_num_timesteps=False)
            out.append(_params(model))
        return out

    # each model is built (which seeds the global RNGs) and trained before the next is built
    ours = RoutedPPO(
        RoutedActorCriticPolicy,
        env(),
        routing=routing,
        routing_enabled=routing_enabled,
        gate_coef=1.0 if routing_enabled else 0.0,  # routing off and no gate loss: plain PPO
        seed=5,
        policy_kwargs=policy_kwargs,
        **PPO_KWARGS,
    )
    ours_snaps = snapshots(ours)
    ref_snaps = snapshots(PPO(RoutedActorCriticPolicy, env(), seed=5, policy_kwargs=policy_kwargs, **PPO_KWARGS))
    for p_ours, p_ref in zip(ours_snaps, ref_snaps, strict=True):
        assert p_ours.keys() == p_ref.keys()
        for k in p_ref:
            assert th.allclose(p_ours[k], p_ref[k], rtol=1e-6, atol=1e-7), k
    assert any(not th.equal(ours_snaps[-1][k], ours_snaps[0][k]) for k in ours_snaps[0])  # it did train
    if routing_enabled:
        assert ours.labeler.labels_spent > 10


class _LabelEverything(BaseCallback):
    """Overwrites the rollout's labels with one label before the update, so every sample is routed."""

    def __init__(self, label: str) -> None:
        super().__init__()
        self.label = label

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        model: RoutedPPO = self.model  # type: ignore[assignment]
        model.rollout_buffer.labels[:] = model.routing_table.label_id(self.label)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
@pytest.mark.parametrize("label,trained,frozen", [("diamond", 0, 1), ("ghost", 1, 0)], ids=["diamond", "ghost"])
def test_routed_update_leaves_other_experts_and_gate_untouched(label: str, trained: int, frozen: int, precision: str) -> None:
    env = OversightGridVecEnv(8, seed=0)
    policy_kwargs = {"expert_arch": [16], "value_arch": [16], "precision": precision}
    model = RoutedPPO("RoutedPolicy", env, seed=0, gate_coef=0.0, policy_kwargs=policy_kwargs, **PPO_KWARGS)
    before = _params(model)
    model.learn(8 * 16, callback=_LabelEverything(label))
    after = _params(model)
    moved = {k for k in after if not th.equal(after[k], before[k])}
    prefix = "mlp_extractor.actor."
    assert any(k.startswith(f"{prefix}experts.{trained}.") for k in moved)
    assert not any(k.startswith(f"{prefix}experts.{frozen}.") for k in moved), "a masked-out expert moved"
    assert not any(k.startswith(f"{prefix}gate.") for k in moved), "the gate moved on labeled data"
    assert any(k.startswith("mlp_extractor.critic.") for k in moved)  # the value net is not routed


def test_first_minibatch_ratio_is_one_with_routing() -> None:
    """Routing must not change forward values: on the first minibatch the PPO ratio is exactly 1."""
    env = OversightGridVecEnv(8, oversight_prob=0.5, seed=2)
    model = RoutedPPO("RoutedPolicy", env, seed=2, n_steps=16, batch_size=128, n_epochs=1, policy_kwargs={"expert_arch": [16]})
    model.learn(8 * 16)
    assert model.logger.name_to_value["train/approx_kl"] == pytest.approx(0.0, abs=1e-6)
    assert model.logger.name_to_value["train/clip_fraction"] == 0.0


@pytest.mark.parametrize("routing_enabled", [True, False], ids=["routed", "moe-no-routing"])
def test_gate_learns_from_labels(routing_enabled: bool) -> None:
    """Every step labeled "ghost": the gate loss moves the gate's weight on the ghost expert from 0.5 towards 1,
    with routing (the gate's policy gradient stopped on labeled steps) or without it."""
    env = OversightGridVecEnv(8, seed=0)
    model = RoutedPPO(
        "RoutedPolicy",
        env,
        seed=0,
        gate_coef=1.0,
        routing_enabled=routing_enabled,
        policy_kwargs={"expert_arch": [16]},
        **{**PPO_KWARGS, "learning_rate": 1e-2},
    )
    obs = th.as_tensor(OversightGridVecEnv(256, seed=9).reset())
    before = model.policy.mixture_weights(obs)[:, 1].mean().item()
    model.learn(8 * 16 * 5, callback=_LabelEverything("ghost"))
    after = model.policy.mixture_weights(obs)[:, 1].mean().item()
    assert abs(before - 0.5) < 0.1 and after > 0.8, (before, after)
    assert model.logger.name_to_value["train/gate_loss"] > 0


@pytest.mark.parametrize("routing_enabled", [True, False], ids=["routed", "moe-no-routing"])
def test_without_policy_gradient_into_the_gate_it_stays_as_initialised(routing_enabled: bool) -> None:
    """gate_policy_gradient=False and gate_coef=0: labeled and unlabeled steps, fresh and replayed, train the
    experts and the value net and leave the gate exactly as it was."""
    env = OversightGridVecEnv(8, oversight_prob=0.5, seed=1)
    model = RoutedPPO("RoutedPolicy", env, seed=1, gate_coef=0.0, gate_policy_gradient=False, label_replay=2,
                      routing_enabled=routing_enabled, policy_kwargs={"expert_arch": [16]}, **PPO_KWARGS)  # fmt: skip
    before = _params(model)
    model.learn(8 * 16 * 3)
    assert model.label_replay.sample(1), "nothing was replayed"
    moved = {k for k, v in _params(model).items() if not th.equal(v, before[k])}
    assert {k for k in moved if ".gate." in k} == set()
    assert any(".experts.0." in k for k in moved) and any(".experts.1." in k for k in moved)
    assert any(k.startswith("mlp_extractor.critic.") for k in moved)


def test_without_policy_gradient_into_the_gate_the_gate_loss_still_trains_it() -> None:
    env = OversightGridVecEnv(8, seed=0)
    model = RoutedPPO("RoutedPolicy", env, seed=0, gate_policy_gradient=False, policy_kwargs={"expert_arch": [16]},
                      **{**PPO_KWARGS, "learning_rate": 1e-2})  # fmt: skip
    obs = th.as_tensor(OversightGridVecEnv(256, seed=9).reset())
    model.learn(8 * 16 * 5, callback=_LabelEverything("ghost"))
    assert model.policy.mixture_weights(obs)[:, 1].mean().item() > 0.8


@pytest.mark.parametrize("balance", [False, True], ids=["mean-over-steps", "balanced"])
def test_gate_loss_averages_over_steps_or_over_labels(balance: bool) -> None:
    """Known answer: three diamond-labeled steps, one ghost-labeled step and one unlabeled step with fixed gate
    logits. The plain loss is the mean cross-entropy of the four labeled steps; ``gate_balance`` gives the ghost
    step as much weight as the three diamond steps together; with only one label present they agree."""
    model = RoutedPPO("RoutedPolicy", OversightGridVecEnv(2, seed=0), seed=0, gate_balance=balance, **PPO_KWARGS)
    table = model.routing_table
    diamond, ghost = table.label_id("diamond"), table.label_id("ghost")
    labels = th.tensor([diamond, diamond, diamond, ghost, -1])
    logits = th.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, -1.0], [0.5, 0.0], [3.0, 3.0]])
    log_p = th.log_softmax(logits, dim=-1)
    ce = th.stack([-log_p[0, 0], -log_p[1, 0], -log_p[2, 0], -log_p[3, 1]])
    expected = (ce[:3].mean() + ce[3]) / 2 if balance else ce.mean()

    def samples(labels: th.Tensor) -> SimpleNamespace:
        return SimpleNamespace(labels=labels, label_mask=labels >= 0)

    assert th.allclose(model._gate_loss(samples(labels), logits), expected)  # type: ignore[arg-type]
    only_diamond = th.tensor([diamond, diamond, diamond, -1, -1])
    assert th.allclose(model._gate_loss(samples(only_diamond), logits), ce[:3].mean())  # type: ignore[arg-type]


def test_label_rewards_replace_the_env_reward_on_labeled_episodes() -> None:
    """The buffer itself holds the label reward at a labeled episode's last step, and the env's elsewhere."""
    env = OversightGridVecEnv(8, oversight_prob=0.5, seed=0)
    checked: dict[str, int] = {"labeled": 0, "unlabeled": 0}

    class _Check(BaseCallback):
        def _on_rollout_start(self) -> None:
            self.ends: list[tuple[int, int, bool, str]] = []

        def _on_step(self) -> bool:
            for i in np.flatnonzero(self.locals["dones"]):
                info = self.locals["infos"][i]
                if info["outcome"] != "timeout":  # the row about to be added, the env, overseen, outcome
                    self.ends.append((self.model.rollout_buffer.pos, i, info["overseen"], info["outcome"]))
            return True

        def _on_rollout_end(self) -> None:
            stored = self.model.rollout_buffer.rewards
            for row, i, overseen, outcome in self.ends:
                expected = {"ghost": -1.0, "diamond": 2.0}[outcome] if overseen else 1.0
                assert stored[row, i] == expected, (row, i, overseen, outcome, stored[row, i])
                checked["labeled" if overseen else "unlabeled"] += 1

    model = RoutedPPO("RoutedPolicy", env, seed=0, n_steps=16, batch_size=64, label_rewards={"ghost": -1.0, "diamond": 2.0},
                      n_epochs=1, policy_kwargs={"expert_arch": [16], "value_arch": [16]})  # fmt: skip
    model.learn(8 * 16 * 4, callback=_Check())
    assert checked["labeled"] > 3 and checked["unlabeled"] > 3, checked
    with pytest.raises(ValueError, match="unknown label 'gost'"):
        RoutedPPO("RoutedPolicy", env, label_rewards={"gost": -1.0})


def test_labeled_only_trains_nothing_without_labels_and_only_on_labeled_steps() -> None:
    """Filtering: with no label in a rollout no parameter moves; the loss is the labeled steps' alone."""
    env = OversightGridVecEnv(8, oversight_prob=0.0, seed=0)
    kwargs = {"policy_kwargs": {"expert_arch": [16], "value_arch": [16]}, "routing_enabled": False, "gate_coef": 0.0}
    model = RoutedPPO("RoutedPolicy", env, seed=0, labeled_only=True, **kwargs, **PPO_KWARGS)
    before = _params(model)
    model.learn(8 * 16)
    assert model.labeler.labels_spent == 0
    assert all(th.equal(v, before[k]) for k, v in _params(model).items())

    # every step labeled: the same as plain training on the same data
    def trained(labeled_only: bool) -> dict[str, th.Tensor]:
        m = RoutedPPO(
            "RoutedPolicy", OversightGridVecEnv(8, seed=3), seed=3, labeled_only=labeled_only, **kwargs, **PPO_KWARGS
        )
        m.learn(8 * 16, callback=_LabelEverything("diamond"))
        return _params(m)

    ours, plain = trained(True), trained(False)
    for k in plain:
        assert th.allclose(ours[k], plain[k], rtol=1e-5, atol=1e-6), k


def test_bad_arguments() -> None:
    env = OversightGridVecEnv(2, seed=0)
    with pytest.raises(ValueError, match="routing needs a RoutedActorCriticPolicy"):
        RoutedPPO("MlpPolicy", env)
    RoutedPPO("MlpPolicy", env, routing_enabled=False, n_steps=8, batch_size=16).learn(16)
    with pytest.raises(ValueError, match="gate_coef"):
        RoutedPPO("RoutedPolicy", env, gate_coef=-1)
    with pytest.raises(ValueError, match="unknown expert 'ghots'"):
        RoutedPPO("RoutedPolicy", env, routing={"ghost": {"ghots": 1.0}})


def test_expert_loss_trains_only_the_owner_expert() -> None:
    env = OversightGridVecEnv(8, seed=0)
    model = RoutedPPO(
        "RoutedPolicy",
        env,
        seed=0,
        gate_coef=0.0,
        expert_loss_coef=1.0,
        routing={"diamond": {"diamond": 1.0}, "ghost": {"diamond": 1.0}},
        policy_kwargs={"expert_arch": [16], "value_arch": [16]},
        **PPO_KWARGS,
    )
    recorded: dict[str, np.ndarray] = {}

    class _Relabel(_LabelEverything):
        def _on_rollout_end(self) -> None:
            super()._on_rollout_end()
            self.model._store_owner_log_probs()  # type: ignore[attr-defined]
            buffer = self.model.rollout_buffer
            recorded["owner"] = buffer.owner_log_probs.copy()  # type: ignore[attr-defined]
            obs = th.as_tensor(buffer.observations.reshape(-1, 4, 5, 5))
            actions = th.as_tensor(buffer.actions.reshape(-1)).long()
            with th.no_grad():
                recorded["expected"] = self.model.policy.expert_log_prob(obs, actions, 0).numpy().reshape(16, 8)  # type: ignore[attr-defined]

    before = _params(model)
    model.learn(8 * 16, callback=_Relabel("ghost"))  # "ghost" labels are owned by the diamond expert here
    np.testing.assert_allclose(recorded["owner"], recorded["expected"], rtol=1e-5, atol=1e-6)
    moved = {k for k, v in _params(model).items() if not th.equal(v, before[k])}
    assert any(k.startswith("mlp_extractor.actor.experts.0.") for k in moved)
    assert not any(k.startswith(("mlp_extractor.actor.experts.1.", "mlp_extractor.actor.gate.")) for k in moved)
    assert "train/expert_loss" in model.logger.name_to_value


def test_routing_scalars_are_logged() -> None:
    from stable_baselines3.common.logger import KVWriter, Logger

    logged: dict[str, object] = {}

    class _Capture(KVWriter):
        def write(self, key_values: dict, key_excluded: dict, step: int = 0) -> None:
            logged.update(key_values)

    model = RoutedPPO("RoutedPolicy", OversightGridVecEnv(16, oversight_prob=0.5, seed=0), n_steps=16, batch_size=64, seed=0,
                      n_epochs=2, policy_kwargs={"expert_arch": [16], "value_arch": [16]})  # fmt: skip
    model.set_logger(Logger(None, [_Capture()]))
    model.learn(16 * 16 * 3)
    assert logged["routing/labels_spent"] == model.labeler.labels_spent > 0
    assert 0 < float(logged["routing/label_fraction"]) <= 1  # type: ignore[arg-type]
    for label in ("diamond", "ghost"):
        total = sum(float(logged[f"routing/gate_weight/{label}/{e}"]) for e in ("diamond", "ghost"))  # type: ignore[arg-type]
        assert abs(total - 1) < 1e-5
    assert "train/gate_loss" in logged and "train/policy_gradient_loss" in logged


def test_label_replay_keeps_the_labeled_steps_of_the_last_rollouts() -> None:
    from routed_rl.agents.buffers import LabelReplay

    model = RoutedPPO("RoutedPolicy", OversightGridVecEnv(8, oversight_prob=1.0, seed=1), seed=1, label_replay=2,
                      policy_kwargs={"expert_arch": [16]}, **PPO_KWARGS)  # fmt: skip
    counts = []
    for _ in range(3):
        model.learn(8 * 16, reset_num_timesteps=False)
        counts.append(int((model.rollout_buffer.labels >= 0).sum()))
    # after the third update the store holds the second and third rollouts' labeled steps, nothing else
    assert len(model.label_replay) == counts[1] + counts[2] > 0
    kept = model.label_replay._store[-1]
    assert (kept.labels >= 0).all() and len(kept.labels) == counts[2]
    parts = model.label_replay.sample(3)
    assert len(parts) == 3 and sum(len(p.labels) for p in parts) == len(model.label_replay)
    assert len(LabelReplay(0)) == 0 and LabelReplay(0).sample(4) == []


def test_label_replay_steps_drops_the_oldest_rollouts_beyond_the_limit() -> None:
    """A store limited to ``max_steps`` labeled steps drops whole rollouts, oldest first, and keeps the newest
    whole even when it alone is over the limit."""
    from types import SimpleNamespace

    from routed_rl.agents.buffers import LabelReplay

    def rollout(n_labeled: int, tag: float) -> SimpleNamespace:
        labels = np.full((4, 8), -1)
        labels.flat[:n_labeled] = 0
        return SimpleNamespace(observations=np.full((4, 8, 2), tag, dtype=np.float32), actions=np.zeros((4, 8, 1)),
                               log_probs=np.zeros((4, 8)), advantages=np.zeros((4, 8)), labels=labels,
                               deployed=np.zeros((4, 8), dtype=bool))  # fmt: skip

    replay = LabelReplay(rollouts=8, max_steps=10)
    for n, tag in [(4, 1.0), (4, 2.0), (4, 3.0)]:
        replay.add(rollout(n, tag))  # type: ignore[arg-type]
    assert len(replay) == 8 and [float(s.observations[0, 0]) for s in replay._store] == [2.0, 3.0]
    replay.add(rollout(12, 4.0))  # type: ignore[arg-type]
    assert len(replay) == 12 and [float(s.observations[0, 0]) for s in replay._store] == [4.0]
    unlimited = LabelReplay(rollouts=8)
    for n, tag in [(4, 1.0), (4, 2.0), (4, 3.0)]:
        unlimited.add(rollout(n, tag))  # type: ignore[arg-type]
    assert len(unlimited) == 12


def test_label_replay_steps_is_checked() -> None:
    with pytest.raises(ValueError, match="label_replay_steps must be >= 1"):
        RoutedPPO("RoutedPolicy", OversightGridVecEnv(2, seed=0), label_replay=4, label_replay_steps=0)


def test_replayed_steps_train_only_the_experts_their_label_routes_into() -> None:
    model = RoutedPPO("RoutedPolicy", OversightGridVecEnv(8, oversight_prob=1.0, seed=2), seed=2, label_replay=4,
                      policy_kwargs={"expert_arch": [16]}, **PPO_KWARGS)  # fmt: skip
    model.learn(8 * 16)
    (replayed,) = model.label_replay.sample(1)
    ghost = replayed.labels == model.routing_table.label_id("ghost")
    assert ghost.any()
    only_ghost = type(replayed)(*(None if field is None else field[ghost] for field in replayed))
    model.policy.zero_grad()
    model._replay_loss(only_ghost, clip_range=0.2, routed=True).backward()
    grads = per_expert({name: p.grad for name, p in model.policy.named_parameters()})
    diamond = [g for n, g in grads.items() if ".experts.0." in n]
    ghost_expert = [g for n, g in grads.items() if ".experts.1." in n]
    gate = [g for n, g in grads.items() if ".gate." in n]
    assert all(g is None or th.count_nonzero(g) == 0 for g in diamond + gate)  # exactly zero
    assert any(g is not None and th.count_nonzero(g) > 0 for g in ghost_expert)


def test_label_replay_off_is_the_plain_update() -> None:
    """label_replay=0 draws nothing from the RNG and adds no loss: the same weights as without the option."""

    def train(**kwargs: int) -> dict[str, th.Tensor]:
        model = RoutedPPO("RoutedPolicy", OversightGridVecEnv(8, oversight_prob=0.5, seed=3), seed=3,
                          policy_kwargs={"expert_arch": [16]}, **PPO_KWARGS, **kwargs)  # fmt: skip
        model.learn(8 * 16 * 2)
        return _params(model)

    plain, off = train(), train(label_replay=0)
    assert all(th.equal(plain[k], off[k]) for k in plain)
    replayed = train(label_replay=4)
    assert any(not th.equal(plain[k], replayed[k]) for k in plain)


def test_replay_anchored_on_the_current_policy_weighs_each_step_by_its_truncated_importance_ratio(tmp_path: Path) -> None:
    """``label_replay_anchor="current"``: the kept steps' ratios are taken against the policy as it is when the
    update starts (so the first minibatch's replay ratios are exactly 1), and each step's surrogate is weighted
    by min(1, current / behaviour probability of its action)."""
    model = RoutedPPO("RoutedPolicy", OversightGridVecEnv(8, oversight_prob=0.5, seed=6), seed=6, label_replay=4,
                      label_replay_anchor="current", policy_kwargs={"expert_arch": [16]}, **PPO_KWARGS)  # fmt: skip
    model.learn(8 * 16 * 3)
    (kept,) = model.label_replay.sample(1)
    assert kept.weight is None  # the store keeps the behaviour policy's log-probabilities
    anchored = model._reanchor(kept)
    with th.no_grad():
        current = model.policy.evaluate_actions(kept.observations, kept.actions.long().flatten())[1]
    assert th.allclose(anchored.old_log_prob, current, atol=1e-5)
    expected = th.exp(current - kept.old_log_prob).clamp(max=1.0)
    assert th.allclose(anchored.weight, expected, atol=1e-5)  # type: ignore[arg-type]
    assert bool((anchored.weight < 0.999).any()) and bool((anchored.weight <= 1.0).all())  # type: ignore[operator]
    # the ratio of the replay surrogate is 1 before any step: its gradient is weight x advantage x grad log-prob
    model.policy.zero_grad()
    model._replay_loss(anchored, clip_range=0.2, routed=False).backward()
    got = th.cat([p.grad.flatten() for p in model.policy.parameters() if p.grad is not None])
    model.policy.zero_grad()
    log_prob = model.policy.evaluate_actions(kept.observations, kept.actions.long().flatten())[1]
    advantages = (kept.advantages - kept.advantages.mean()) / (kept.advantages.std() + 1e-8)
    (-(anchored.weight * advantages * log_prob).sum() / model.batch_size).backward()  # type: ignore[operator]
    want = th.cat([p.grad.flatten() for p in model.policy.parameters() if p.grad is not None])
    assert th.allclose(got, want, atol=1e-6)
    model.save(tmp_path / "m.zip")
    assert RoutedPPO.load(tmp_path / "m.zip").label_replay_anchor == "current"
    with pytest.raises(ValueError, match="label_replay_anchor must be"):
        RoutedPPO("RoutedPolicy", OversightGridVecEnv(2, seed=0), label_replay=4, label_replay_anchor="latest")


def test_the_replay_anchor_changes_the_update() -> None:
    def train(anchor: str) -> dict[str, th.Tensor]:
        model = RoutedPPO("RoutedPolicy", OversightGridVecEnv(8, oversight_prob=0.5, seed=3), seed=3, label_replay=4,
                          label_replay_anchor=anchor, policy_kwargs={"expert_arch": [16]}, **PPO_KWARGS)  # fmt: skip
        model.learn(8 * 16 * 3)
        return _params(model)

    behaviour, current = train("behaviour"), train("current")
    assert any(not th.equal(behaviour[k], current[k]) for k in behaviour)


def test_the_tail_rule_does_nothing_without_routing() -> None:
    """With routing off (the baselines), marking the tails of unlabeled episodes changes no weight: the built-in
    baselines, which inherit the default's tail rule, compute what the baselines measured without it did."""

    def train(**kwargs: object) -> dict[str, th.Tensor]:
        kwargs = {"routing_enabled": False, **kwargs}
        model = RoutedPPO("RoutedPolicy", OversightGridVecEnv(8, oversight_prob=0.5, seed=5), seed=5, label_replay=4,
                          policy_kwargs={"expert_arch": [16]}, **PPO_KWARGS, **kwargs)  # fmt: skip
        model.learn(8 * 16 * 3)
        return _params(model)

    rule = {"tail_steps": 1, "unlabeled_tail": {"diamond": 0.25}}
    plain, tail = train(), train(**rule)
    assert all(th.equal(plain[k], tail[k]) for k in plain)
    routed, routed_tail = train(routing_enabled=True), train(routing_enabled=True, **rule)
    assert any(not th.equal(routed[k], routed_tail[k]) for k in routed)  # (where routing is on, it does)


def test_annealed_expert_weight_falls_linearly_to_zero_and_is_lifted_after_training() -> None:
    model = RoutedPPO("RoutedPolicy", OversightGridVecEnv(8, oversight_prob=0.5, seed=4), seed=4, anneal_experts=["ghost"],
                      anneal_fraction=0.5, policy_kwargs={"expert_arch": [16]}, **PPO_KWARGS)  # fmt: skip
    seen: list[list[float]] = []

    class Record(BaseCallback):
        def _on_rollout_end(self) -> None:  # the scale the rollout was collected with (and is updated with)
            scale = model.policy.moe.weight_scale
            assert scale is not None
            seen.append(scale.tolist())

        def _on_step(self) -> bool:
            return True

    model.learn(8 * 16 * 4, callback=Record())
    # four rollouts of a quarter of the run each, annealed over the first half: 1, 0.5, then 0 for good
    assert seen == [[1.0, 1.0], [1.0, 0.5], [1.0, 0.0], [1.0, 0.0]]
    assert model.policy.moe.weight_scale is None  # lifted: the trained mixture acts as it was trained to


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"anneal_experts": ["gost"]}, r"anneal_experts: unknown expert 'gost' \(did you mean 'ghost'\?\)"),
        ({"anneal_experts": ["diamond", "ghost"]}, "cannot ablate every expert"),
        ({"anneal_experts": ["ghost"], "anneal_fraction": 0.0}, r"anneal_fraction must be in \(0, 1\]"),
    ],
    ids=["unknown", "every-expert", "zero-fraction"],
)
def test_bad_anneal(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RoutedPPO("RoutedPolicy", OversightGridVecEnv(2, seed=0), policy_kwargs={"expert_arch": [8]}, **kwargs)


def _deployed_model(share: float = 0.25, **kwargs: object) -> RoutedPPO:
    return RoutedPPO("RoutedPolicy", OversightGridVecEnv(8, oversight_prob=0.5, seed=6), seed=6, deployed_share=share,
                     deployed_steering={"select": "diamond"}, label_replay=2, policy_kwargs={"expert_arch": [16]},
                     **PPO_KWARGS, **kwargs)  # fmt: skip


def test_deployed_envs_act_with_the_deployed_steering_and_the_others_with_the_mixture() -> None:
    model = _deployed_model()
    checked: list[bool] = []

    class Check(BaseCallback):
        def _on_rollout_end(self) -> None:  # before the update: the policy that collected the rollout
            buffer = model.rollout_buffer
            obs = th.as_tensor(buffer.observations.reshape(-1, *buffer.obs_shape))
            actions = th.as_tensor(buffer.actions.reshape(-1)).long()
            stored = th.as_tensor(buffer.log_probs.reshape(-1))
            deployed = th.as_tensor(buffer.deployed.reshape(-1))
            with th.no_grad():
                mixture = model.policy.evaluate_actions(obs, actions)[1]
                with model.policy.steer(select="diamond"):
                    alone = model.policy.evaluate_actions(obs, actions)[1]
            assert deployed.reshape(16, 8)[:, 6:].all() and not deployed.reshape(16, 8)[:, :6].any()  # the last 2 of 8
            assert th.allclose(stored[deployed], alone[deployed], atol=1e-6)
            assert th.allclose(stored[~deployed], mixture[~deployed], atol=1e-6)
            assert not th.allclose(stored[deployed], mixture[deployed], atol=1e-3)  # the two do differ
            checked.append(True)

        def _on_step(self) -> bool:
            return True

    model.learn(8 * 16 * 2, callback=Check())
    assert checked == [True, True]
    assert model.policy.rollout_keep is None  # lifted after training


def test_deployed_steps_train_the_deployed_expert_alone() -> None:
    model = _deployed_model()
    model.learn(8 * 16 * 2)
    data = next(model.rollout_buffer.get(8 * 16))  # the last rollout, whole
    deployed = th.nonzero(data.deployed).squeeze(1)
    sub = type(data)(*(field[deployed] for field in data))
    actions = sub.actions.long().flatten()
    for batch, replay in ((sub, False), (model.label_replay.sample(1)[0], True)):
        model.policy.zero_grad()
        if replay:
            assert batch.deployed is not None and batch.deployed.any() and not batch.deployed.all()
            model._replay_loss(batch, clip_range=0.2, routed=True).backward()
        else:
            _, log_prob, _, _ = model._evaluate(batch, actions, routed=True, gated=True)
            log_prob.sum().backward()
        grads = per_expert({name: p.grad for name, p in model.policy.named_parameters()})
        if not replay:  # deployed steps alone: nothing reaches the ghost expert or the gate
            assert all(g is None or th.count_nonzero(g) == 0 for n, g in grads.items() if ".experts.1." in n or ".gate." in n)
        assert any(g is not None and th.count_nonzero(g) > 0 for n, g in grads.items() if ".experts.0." in n)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"deployed_share": 1.5}, r"deployed_share must be in \[0, 1\]"),
        ({"deployed_share": 0.5}, "deployed_share needs deployed_steering to select or ablate"),
        ({"deployed_share": 0.5, "deployed_steering": {"select": "gost"}}, r"deployed_steering: unknown expert 'gost'"),
        ({"deployed_share": 0.1, "deployed_steering": {"select": "ghost"}}, r"is no env; use at least 0.5"),
    ],
    ids=["share", "no-steering", "unknown-expert", "no-env"],
)
def test_bad_deployed_share(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RoutedPPO("RoutedPolicy", OversightGridVecEnv(2, seed=0), policy_kwargs={"expert_arch": [8]}, **kwargs)


def test_a_label_replay_store_saved_before_deployed_steps_existed_still_replays() -> None:
    from routed_rl.agents.buffers import LabelReplay, ReplaySamples

    replay = LabelReplay(2)
    old = ReplaySamples(th.zeros(3, 4), th.zeros(3, 1), th.zeros(3), th.ones(3), th.zeros(3, dtype=th.long))
    assert old.deployed is None
    replay._store.append(old)
    (batch,) = replay.sample(1)
    assert batch.deployed is not None and batch.deployed.dtype == th.bool and not batch.deployed.any()


def test_unlabeled_tail_steps_are_marked_when_the_rollout_is_complete() -> None:
    """With tail_steps=2, the last two steps of every episode that ends in the rollout are -2 unless labeled; the
    steps of an episode that goes on past the rollout, and every labeled step, keep their id."""
    env = OversightGridVecEnv(8, oversight_prob=0.5, seed=0)
    seen = {"tail": 0, "labeled_ends": 0}

    class _Check(BaseCallback):
        def _on_rollout_start(self) -> None:
            self.start = np.zeros(8, dtype=int)  # row where each env's current episode began in this rollout
            self.tails: list[tuple[int, int]] = []

        def _on_step(self) -> bool:
            row = self.model.rollout_buffer.pos
            for i in np.flatnonzero(self.locals["dones"]):
                self.tails += [(r, i) for r in range(max(self.start[i], row - 1), row + 1)]
                self.start[i] = row + 1
            return True

        def _on_rollout_end(self) -> None:
            labels = self.model.rollout_buffer.labels
            expected = np.where(labels >= 0, labels, -1)
            for r, i in self.tails:
                if labels[r, i] < 0:
                    expected[r, i] = -2
                    seen["tail"] += 1
                else:
                    seen["labeled_ends"] += 1
            assert np.array_equal(labels, expected)

    model = RoutedPPO("RoutedPolicy", env, seed=0, tail_steps=2, policy_kwargs={"expert_arch": [16]}, **PPO_KWARGS)
    model.learn(8 * 16 * 3, callback=_Check())
    assert seen["tail"] > 10 and seen["labeled_ends"] > 3, seen


@pytest.mark.parametrize("tail_steps", [0, 1])
def test_tail_steps_train_only_the_experts_their_weights_name(tail_steps: int) -> None:
    """No labels; unlabeled steps skip the diamond expert and tail steps train it: it moves only with a tail."""
    env = OversightGridVecEnv(8, oversight_prob=0.0, seed=0)
    model = RoutedPPO("RoutedPolicy", env, seed=0, unlabeled_routing={"diamond": 0.0}, tail_steps=tail_steps,
                      unlabeled_tail={"diamond": 1.0}, policy_kwargs={"expert_arch": [16]}, **PPO_KWARGS)  # fmt: skip
    before = _params(model)
    model.learn(8 * 16 * 2)
    moved = {k for k, v in _params(model).items() if not th.equal(v, before[k])}
    assert any(".experts.1." in k for k in moved)
    assert any(".experts.0." in k for k in moved) == (tail_steps > 0)


def test_optimizer_kwargs_reach_adam_over_sb3s_eps_and_fused_adam_is_the_same_update_up_to_rounding(tmp_path: Path) -> None:
    """``policy.optimizer_kwargs`` are Adam's keyword arguments over SB3's ``eps=1e-5``; fused Adam trains what
    plain Adam trains, to float rounding, and a saved model keeps its optimizer's settings."""
    small = [
        "env.n_envs=8",
        "ppo.n_steps=16",
        "ppo.batch_size=32",
        "policy.expert_arch=[32, 32]",
        "policy.value_arch=[32]",
        "env.oversight_prob=0.5",
    ]

    def trained(changes: str, steps: int = 3 * 8 * 16) -> RoutedPPO:
        model = build_model(load_config("default", [*small, f"policy.optimizer_kwargs={changes}"]))
        if steps:
            model.learn(steps)
        return model

    plain, fused = trained("{fused: false}"), trained("{fused: true}")
    assert plain.policy.optimizer.defaults["eps"] == fused.policy.optimizer.defaults["eps"] == 1e-5
    assert fused.policy.optimizer.defaults["fused"] and not plain.policy.optimizer.defaults["fused"]
    start = trained("{}", steps=0)
    moved = False
    states = (plain.policy.state_dict(), fused.policy.state_dict(), start.policy.state_dict())
    for (name, a), b, c in zip(states[0].items(), states[1].values(), states[2].values(), strict=True):
        assert th.allclose(a, b, rtol=1e-4, atol=1e-5), name
        moved |= not th.equal(a, c)
    assert moved  # it did train
    fused.save(tmp_path / "m.zip")
    loaded = RoutedPPO.load(tmp_path / "m.zip")
    assert loaded.policy.optimizer.defaults["fused"] and loaded.policy.optimizer.defaults["eps"] == 1e-5
