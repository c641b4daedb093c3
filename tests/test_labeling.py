"""Labelers and label propagation over whole episodes, across auto-resets and rollout boundaries."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback

from routed_rl.agents import LabeledRolloutBuffer, RoutedPPO
from routed_rl.envs import OversightGridVecEnv
from routed_rl.labeling import BudgetLabeler, EpisodeLabelTracker, FractionLabeler, OversightLabeler, make_labeler

OUTCOMES = ["diamond", "ghost", "timeout"]


def _infos(n: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return [{"outcome": OUTCOMES[rng.integers(3)], "overseen": bool(rng.random() < 0.2)} for _ in range(n)]


def test_oversight_labeler_uses_the_env_oversight() -> None:
    labeler = OversightLabeler(labels=["diamond", "ghost"])
    assert labeler({"outcome": "ghost", "overseen": True}, 3, 0) == "ghost"
    assert labeler({"outcome": "diamond", "overseen": False}, 3, 0) is None
    assert labeler({"outcome": "timeout", "overseen": True}, 3, 0) is None  # not a known label
    assert labeler({}, 3, 0) is None
    assert labeler.n_episodes == 4 and labeler.labels_spent == 1 and labeler.label_fraction == 0.25
    assert labeler.spent_by_label == {"ghost": 1}


@pytest.mark.parametrize("p", [0.0, 0.03, 0.5, 1.0])
def test_fraction_labeler_hits_its_fraction(p: float) -> None:
    n = 20_000
    labeler = FractionLabeler(p, labels=["diamond", "ghost"], seed=1)
    infos = [{"outcome": ["diamond", "ghost"][i % 2]} for i in range(n)]
    labels = [labeler(info, 5, 0) for info in infos]
    frac = sum(lab is not None for lab in labels) / n
    assert abs(frac - p) <= 5 * np.sqrt(p * (1 - p) / n) + 1e-12
    assert all(lab is None or lab == info["outcome"] for lab, info in zip(labels, infos, strict=True))
    assert labeler.label_fraction == frac


def test_fraction_labeler_is_seeded() -> None:
    infos = _infos(500)

    def run(seed: int) -> list[str | None]:
        labeler = FractionLabeler(0.3, seed=seed)
        return [labeler(info, 1, 0) for info in infos]

    assert run(4) == run(4)
    assert run(4) != run(5)
    assert any(label is not None for label in run(4))


@pytest.mark.parametrize("budget,p", [(0, 1.0), (50, 1.0), (50, 0.3), (10_000, 0.5)])
def test_budget_is_never_exceeded(budget: int, p: float) -> None:
    labeler = BudgetLabeler(budget, p=p, labels=["diamond", "ghost"], seed=0)
    given = [labeler(info, 2, 0) for info in _infos(5_000)]
    spent = sum(g is not None for g in given)
    assert spent == labeler.labels_spent <= budget
    if budget == 50:
        assert spent == 50  # the budget is used up
        last = max(i for i, g in enumerate(given) if g is not None)
        assert all(g is None for g in given[last + 1 :])


def test_make_labeler_builtins_and_import_path() -> None:
    assert isinstance(make_labeler("fraction", p=0.2), FractionLabeler)
    user = make_labeler("user_labelers:EvenEnvLabeler", labels=["diamond"])
    assert user({"outcome": "diamond"}, 1, 2) == "diamond" and user({"outcome": "diamond"}, 1, 3) is None


@pytest.mark.parametrize(
    "kind,kwargs,message",
    [
        ("oracle", {}, "unknown labeler 'oracle'"),
        ("fraction", {"p": 1.5}, r"p must be a probability in \[0, 1\]"),
        ("fraction", {}, "labeler 'fraction'"),
        ("budget", {"budget": -1}, "budget must be >= 0"),
        ("no_such_module:X", {}, "cannot import labeler"),
        ("routed_rl.labeling:EpisodeLabelTracker", {}, "must be a subclass"),
    ],
    ids=["unknown", "p-range", "missing-p", "negative-budget", "bad-import", "not-a-labeler"],
)
def test_bad_labelers(kind: str, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_labeler(kind, **kwargs)


def test_tracker_labels_whole_episodes_within_and_across_rollouts() -> None:
    written: list[tuple[list[int], int, int]] = []
    labeler = OversightLabeler(labels=["diamond", "ghost"])
    tracker = EpisodeLabelTracker(2, labeler, ["diamond", "ghost"].index, lambda r, e, k: written.append((r.tolist(), e, k)))
    seen = {"outcome": "ghost", "overseen": True}
    tracker.start_rollout()
    no, env0, env1 = np.array([False, False]), np.array([True, False]), np.array([False, True])
    steps = [(0, no, [{}, {}]), (1, env0, [seen, {}]), (2, no, [{}, {}]), (3, no, [{}, {}])]
    for t, dones, infos in steps:
        tracker.on_step(t, dones, infos)
    assert written == [([0, 1], 0, 1)]  # env 0's episode: rows 0-1
    tracker.start_rollout()  # env 1's episode has run 4 steps in the previous rollout
    tracker.on_step(0, no, [{}, {}])
    tracker.on_step(1, env1, [{}, {"outcome": "diamond", "overseen": True}])
    assert written[-1] == ([0, 1], 1, 0)
    assert tracker.leaked_steps == 4 and tracker.labeled_steps == 4
    assert tracker.drain_events() == [(0, "ghost"), (1, "diamond")] and tracker.drain_events() == []


class _Recorder(BaseCallback):
    """Records every step's dones and infos and, at each rollout end, the expected and the stored labels."""

    def __init__(self) -> None:
        super().__init__()
        self.rollouts: list[tuple[np.ndarray, np.ndarray]] = []
        self.start = np.zeros(0, dtype=int)
        self.length = np.zeros(0, dtype=int)  # steps of each env's running episode, across rollouts
        self.leaked = 0  # steps of labeled episodes that fell in an earlier rollout

    def _on_rollout_start(self) -> None:
        buffer: LabeledRolloutBuffer = self.model.rollout_buffer  # type: ignore[assignment]
        self.expected = np.full((buffer.buffer_size, buffer.n_envs), -1)
        if self.start.size == 0:
            self.start = np.zeros(buffer.n_envs, dtype=int)
            self.length = np.zeros(buffer.n_envs, dtype=int)
        self.start[:] = 0

    def _on_step(self) -> bool:
        t = self.model.rollout_buffer.pos
        self.length += 1
        for i in np.flatnonzero(self.locals["dones"]):
            info = self.locals["infos"][i]
            if info["overseen"] and info["outcome"] in ("diamond", "ghost"):
                self.expected[self.start[i] : t + 1, i] = ["diamond", "ghost"].index(info["outcome"])
                self.leaked += self.length[i] - (t + 1 - self.start[i])
            self.start[i] = t + 1
            self.length[i] = 0
        return True

    def _on_rollout_end(self) -> None:
        labels = self.model.rollout_buffer.labels.copy()  # type: ignore[attr-defined]
        self.rollouts.append((self.expected.copy(), labels))


def test_labels_in_the_buffer_follow_episodes_across_auto_reset_and_rollouts() -> None:
    env = OversightGridVecEnv(6, oversight_prob=0.5, seed=3)
    model = RoutedPPO(
        "RoutedPolicy",
        env,
        n_steps=16,
        batch_size=48,
        n_epochs=1,
        seed=3,
        policy_kwargs={"expert_arch": [8], "value_arch": [8]},
    )
    recorder = _Recorder()
    model.learn(6 * 16 * 4, callback=recorder)
    assert len(recorder.rollouts) == 4
    n_labeled = 0
    for expected, stored in recorder.rollouts:
        assert np.array_equal(expected, stored)
        n_labeled += int((stored >= 0).sum())
    assert n_labeled > 20 and model.labeler.labels_spent > 5
    assert model.label_tracker.leaked_steps == recorder.leaked > 0


def test_buffer_flattens_labels_env_major_with_their_observations() -> None:
    """Each sample's label must stay with its own (row, env) observation; a time-major reshape would not."""
    n_steps, n_envs = 4, 3
    obs_space, act_space = spaces.Box(0, 100, (1,), np.float32), spaces.Discrete(4)
    buffer = LabeledRolloutBuffer(n_steps, obs_space, act_space, n_envs=n_envs)
    for t in range(n_steps):
        obs = np.array([[10 * t + e] for e in range(n_envs)], dtype=np.float32)  # names its (row, env)
        buffer.add(obs, np.zeros((n_envs, 1)), np.zeros(n_envs), np.zeros(n_envs), th.zeros(n_envs), th.zeros(n_envs))
        buffer.set_labels(np.array([t]), t % n_envs, 10 * t + t % n_envs)  # label = the obs it belongs to
    batches = list(buffer.get(batch_size=5))
    obs = np.concatenate([b.observations.numpy()[:, 0] for b in batches])
    labels = np.concatenate([b.labels.numpy() for b in batches])
    mask = np.concatenate([b.label_mask.numpy() for b in batches])
    assert sorted(obs.tolist()) == sorted(10 * t + e for t in range(n_steps) for e in range(n_envs))
    assert np.array_equal(labels[mask], obs[mask]) and mask.sum() == n_steps
    assert np.all(labels[~mask] == -1)
    with pytest.raises(RuntimeError, match="before the buffer is flattened"):
        buffer.set_labels(np.array([0]), 0, 1)
