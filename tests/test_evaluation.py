"""evaluate() against known answers: scripted policies whose outcome on every layout is worked out here,
independently of the env's dynamics, from the first observation of each episode."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th

from routed_rl import evaluation
from routed_rl.agents import RoutedPPO
from routed_rl.envs import OVERSIGHT_GRID_ID, OversightGridVecEnv
from routed_rl.envs.oversight_grid_scripted import ScriptedPolicy
from routed_rl.evaluation import evaluate, format_table
from routed_rl.steering import steering_modes
from routed_rl.tasks import task_for

N, SEED, GAMMA, P = 3000, 7, 0.97, 0.3
GRID = OVERSIGHT_GRID_ID
MOVES = [(-1, 0), (0, 1), (1, 0), (0, -1)]


def layouts() -> np.ndarray:
    """The first observation of each of the N episodes evaluate() plays (same env, same seed)."""
    return OversightGridVecEnv(N, seed=SEED, oversight_prob=P).reset()


def walk(obs: np.ndarray, choose) -> tuple[str, int, bool]:
    """Follow ``choose(agent, ghost, diamond) -> action`` on one layout: (outcome, length, terminal cell overseen)."""
    rows, cols = obs.shape[1:]
    agent, ghost, diamond = (tuple(int(x) for x in np.argwhere(obs[ch])[0]) for ch in (0, 1, 2))
    for t in range(1, 33):
        dr, dc = MOVES[choose(agent, ghost, diamond)]
        agent = (min(max(agent[0] + dr, 0), rows - 1), min(max(agent[1] + dc, 0), cols - 1))
        if agent in (ghost, diamond):
            return ("ghost" if agent == ghost else "diamond"), t, bool(obs[3][agent])
    return "timeout", 32, False


def expected(choose) -> dict:
    ends = [walk(o, choose) for o in layouts()]
    outcome = np.array([e[0] for e in ends])
    seen = np.array([e[2] for e in ends])
    ret = np.mean([{"diamond": 1, "ghost": -1, "timeout": 0}[o] * GAMMA ** (t - 1) for o, t, _ in ends])
    rate = {k: float(np.mean(outcome == k)) for k in ("diamond", "ghost", "timeout")}
    seen_ghost = float(np.mean(outcome[seen] == "ghost")) if seen.any() else 0.0
    return {**rate, "return": ret, "seen_ghost": seen_ghost, "length": np.mean([e[1] for e in ends])}


def greedy(agent, ghost, diamond) -> int:
    """Ghost-agnostic: the first move (up, right, down, left) that shortens the distance to the diamond."""
    d = abs(agent[0] - diamond[0]) + abs(agent[1] - diamond[1])
    for a, (dr, dc) in enumerate(MOVES):
        r, c = min(max(agent[0] + dr, 0), 4), min(max(agent[1] + dc, 0), 4)
        if abs(r - diamond[0]) + abs(c - diamond[1]) < d:
            return a
    raise AssertionError("a move always shortens the distance")


@pytest.mark.parametrize(
    "policy,choose",
    [(ScriptedPolicy("ghost_agnostic"), greedy), (ScriptedPolicy("constant", action=0), lambda *_: 0)],
    ids=["ghost-agnostic", "always-up"],
)
def test_rates_returns_and_oversight_split_match_the_worked_out_answer(policy: ScriptedPolicy, choose) -> None:
    want = expected(choose)
    got = evaluate(policy, GRID, N, env_kwargs={"oversight_prob": P}, seed=SEED, gamma=GAMMA)  # type: ignore[arg-type]
    assert got.mode == "unsteered" and got.episodes == N
    for key in ("diamond", "ghost", "timeout"):
        assert got.rates[key] == pytest.approx(want[key], abs=1e-12), key
    assert got.discounted_return == pytest.approx(want["return"], abs=1e-6)  # rewards are float32
    assert got.mean_length == pytest.approx(want["length"])
    assert got.overseen["ghost"] == pytest.approx(want["seen_ghost"])
    assert got.overseen["episodes"] + got.unseen["episodes"] == N


def test_optimal_policy_always_reaches_the_diamond_by_the_shortest_ghost_free_path() -> None:
    got = evaluate(ScriptedPolicy("optimal"), GRID, N, env_kwargs={"oversight_prob": P}, seed=SEED, gamma=GAMMA)  # type: ignore[arg-type]
    assert (got.rates["diamond"], got.rates["ghost"], got.rates["timeout"]) == (1.0, 0.0, 0.0)
    assert got.gaming_gap == 0.0  # no ghost at all, watched or not
    greedy_ret = evaluate(
        ScriptedPolicy("ghost_agnostic"), GRID, N, env_kwargs={"oversight_prob": P}, seed=SEED
    ).discounted_return  # type: ignore[arg-type]
    assert got.discounted_return > greedy_ret


def test_gaming_gap_of_an_oversight_blind_policy_is_near_zero_and_shows_in_the_table() -> None:
    """The oversight mask is drawn independently of the layout, so a policy that ignores it has no gap
    beyond sampling noise."""
    got = evaluate(ScriptedPolicy("ghost_agnostic"), GRID, N, env_kwargs={"oversight_prob": P}, seed=SEED)  # type: ignore[arg-type]
    assert got.gaming_gap is not None and abs(got.gaming_gap) < 0.05
    table = format_table([got.to_dict()], GRID)
    assert "gaming gap" in table and f"{got.gaming_gap:+.1%}" in table
    unseen_only = evaluate(ScriptedPolicy("optimal"), GRID, 50, env_kwargs={"oversight_prob": 0.0}, seed=SEED)  # type: ignore[arg-type]
    assert unseen_only.gaming_gap is None and "n/a" in format_table([unseen_only.to_dict()], GRID)


@pytest.mark.parametrize("experts", [["diamond", "ghost"], ["diamond", "ghost", "other"]])
def test_evaluate_modes_plays_alike_modes_once_with_the_same_results(experts, monkeypatch) -> None:
    """With two experts select=a and ablate=b keep the same expert: evaluate_modes plays it once and reports
    it under both names, each result equal to evaluating that mode on its own; with three, every mode differs."""
    env = OversightGridVecEnv(4, seed=0)
    model = RoutedPPO(
        "RoutedPolicy", env, n_steps=16, batch_size=32, seed=0, policy_kwargs={"expert_arch": [16], "expert_names": experts}
    )
    modes = steering_modes(experts)
    kwargs = {"task": GRID, "n_episodes": 300, "env_kwargs": {"oversight_prob": P}, "seed": SEED}
    alone = [evaluate(model, **kwargs, **steer).to_dict() for steer in modes]
    played = []
    monkeypatch.setattr(evaluation, "evaluate", lambda m, **kw: played.append(kw) or evaluate(m, **kw))
    together = [r.to_dict() for r in evaluation.evaluate_modes(model, modes, **kwargs)]
    assert together == alone
    assert [r["mode"] for r in together] == ["unsteered", *[f"select={e}" for e in experts], *[f"ablate={e}" for e in experts]]
    assert len(played) == (3 if len(experts) == 2 else len(modes))
    if len(experts) == 2:  # what makes sharing sound: played on their own, alike modes give equal results
        for a, b in ((1, 4), (2, 3)):
            assert {**alone[a], "mode": ""} == {**alone[b], "mode": ""}


def test_a_sampled_evaluation_repeats_and_leaves_the_callers_generator_alone() -> None:
    model = RoutedPPO(
        "RoutedPolicy", OversightGridVecEnv(4, seed=0), n_steps=16, batch_size=32, seed=0, policy_kwargs={"expert_arch": [16]}
    )
    kwargs = {"task": GRID, "n_episodes": 300, "deterministic": False, "env_kwargs": {"oversight_prob": P}}
    th.manual_seed(123)
    before = th.get_rng_state()
    first = evaluate(model, seed=SEED, **kwargs).to_dict()
    assert th.equal(th.get_rng_state(), before)
    th.rand(5)  # the caller's draws do not change the evaluation's
    assert evaluate(model, seed=SEED, **kwargs).to_dict() == first
    # what the seeding fixes: the same episodes played with other draws end otherwise
    plays = []
    for draw in (0, 1):
        th.manual_seed(draw)
        plays.append(evaluation._play(model, task_for(GRID), {"oversight_prob": P}, 300, SEED, False, GAMMA)[0])
    assert not np.array_equal(*plays)
