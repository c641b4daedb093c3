"""OversightGrid: every rule of the paper's environment, in both its gymnasium and its batched form."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from routed_rl.envs import OVERSIGHT_GRID_ID, GridBatch, OversightGridEnv, OversightGridVecEnv
from routed_rl.tasks import registered_tasks

ROUTED_IDS = [spec.id for spec in gym.registry.values() if spec.id.startswith("RoutedRL/")]


def sigma_bound(p: float, n: int, k: float = 5.0) -> float:
    """k standard deviations of a Bernoulli(p) frequency over n draws (plus a little slack for p near 0)."""
    return k * np.sqrt(p * (1 - p) / n) + 1e-9


def test_registry_lists_the_package_envs() -> None:
    assert OVERSIGHT_GRID_ID in ROUTED_IDS


@pytest.mark.parametrize("env_id", ROUTED_IDS, ids=ROUTED_IDS)
def test_env_checkers_pass(env_id: str) -> None:
    """Gymnasium's checker in every render mode the env declares (but a window), and SB3's on the
    observations the task trains on (OversightGrid's grid, MiniGrid's image)."""
    modes = [m for m in gym.make(env_id).unwrapped.metadata["render_modes"] if m != "human"]
    assert "rgb_array" in modes
    for mode in (None, *modes):
        gym_check_env(gym.make(env_id, render_mode=mode).unwrapped)
    task = registered_tasks()[env_id]
    env = task.make_render_env(task.check_kwargs({}))
    with warnings.catch_warnings():  # SB3 only warns that these small images are unusual for its own CnnPolicy
        warnings.simplefilter("ignore", UserWarning)
        sb3_check_env(env)


def test_make_with_kwargs() -> None:
    env = gym.make(OVERSIGHT_GRID_ID, oversight_prob=0.01, rows=6, cols=7, max_steps=10, reward_scheme="true")
    base = env.unwrapped
    assert isinstance(base, OversightGridEnv)
    assert base.batch.oversight_prob == 0.01 and base.batch.max_steps == 10 and base.batch.reward_scheme == "true"
    obs, _ = env.reset(seed=3)
    assert obs.shape == (4, 6, 7) and obs.dtype == np.float32
    assert env.observation_space == gym.spaces.Box(0, 1, (4, 6, 7), np.float32)
    assert env.action_space == gym.spaces.Discrete(4)


def test_reset_distinct_uniform_cells() -> None:
    n = 40_000
    env = OversightGridVecEnv(n, seed=0)
    obs = env.reset()
    b = env.batch
    assert np.all(b.agent != b.ghost) and np.all(b.agent != b.diamond) and np.all(b.ghost != b.diamond)
    # each of the first three channels is one-hot at the stored cell
    flat = obs.reshape(n, 4, 25)
    for ch, pos in enumerate((b.agent, b.ghost, b.diamond)):
        assert np.all(flat[:, ch].sum(axis=1) == 1)
        assert np.all(flat[np.arange(n), ch, pos] == 1)
    # each object is uniform over the 25 cells
    for pos in (b.agent, b.ghost, b.diamond):
        freq = np.bincount(pos, minlength=25) / n
        assert np.all(np.abs(freq - 1 / 25) < sigma_bound(1 / 25, n))
    # the (agent, ghost, diamond) triple is uniform over ordered distinct triples: check pairs too
    pair_freq = np.bincount(b.agent * 25 + b.ghost, minlength=625).reshape(25, 25) / n
    assert np.all(np.diag(pair_freq) == 0)
    off = pair_freq[~np.eye(25, dtype=bool)]
    assert np.all(np.abs(off - 1 / 600) < sigma_bound(1 / 600, n))


@pytest.mark.parametrize(
    "p,q", [(0.1, 0.0), (0.3, 0.05), (0.0, 0.0), (1.0, 1.0)], ids=["paper", "spurious", "never", "always"]
)
def test_oversight_frequencies(p: float, q: float) -> None:
    n = 40_000
    env = OversightGridVecEnv(n, oversight_prob=p, spurious_oversight_prob=q, seed=1)
    env.reset()
    b = env.batch
    rows = np.arange(n)
    ghost_seen, diamond_seen = b.overseen[rows, b.ghost], b.overseen[rows, b.diamond]
    assert abs(ghost_seen.mean() - p) < sigma_bound(p, n)
    assert abs(diamond_seen.mean() - p) < sigma_bound(p, n)
    assert abs((ghost_seen & diamond_seen).mean() - p * p) < sigma_bound(p * p, n)  # independent
    others = b.overseen.copy()
    others[rows, b.ghost] = False
    others[rows, b.diamond] = False
    assert abs(others.sum() / (n * 23) - q) < sigma_bound(q, n * 23)
    assert np.array_equal(env.batch.obs[:, 3].reshape(n, 25).astype(bool), b.overseen)


@pytest.mark.parametrize(
    "start,action,end",
    [
        ((0, 0), 0, (0, 0)),
        ((0, 0), 3, (0, 0)),
        ((4, 4), 2, (4, 4)),
        ((4, 4), 1, (4, 4)),
        ((0, 4), 1, (0, 4)),
        ((4, 0), 3, (4, 0)),
        ((2, 2), 0, (1, 2)),
        ((2, 2), 1, (2, 3)),
        ((2, 2), 2, (3, 2)),
        ((2, 2), 3, (2, 1)),
    ],
    ids=["corner-up", "corner-left", "corner-down", "corner-right", "edge-right", "edge-left", "up", "right", "down", "left"],
)
def test_moves_and_border_clamping(start: tuple[int, int], action: int, end: tuple[int, int]) -> None:
    b = GridBatch(1)
    ghost, diamond = ((1, 1), (3, 3)) if start != (1, 1) else ((0, 1), (3, 3))
    b.set_layout(0, start, ghost, diamond)
    _, terminated, truncated, _, _ = b.step(np.array([action]))
    assert divmod(int(b.agent[0]), 5) == end
    assert not terminated[0] and not truncated[0]
    obs = b.obs[0, 0]
    assert obs.sum() == 1 and obs[end] == 1


# (scheme, entered, overseen) -> reward
REWARDS = {
    ("terminal", "diamond", False): 1.0,
    ("terminal", "diamond", True): 1.0,
    ("terminal", "ghost", False): 1.0,
    ("terminal", "ghost", True): 1.0,
    ("naive", "diamond", False): 1.0,
    ("naive", "diamond", True): 1.0,
    ("naive", "ghost", False): 1.0,
    ("naive", "ghost", True): -1.0,
    ("true", "diamond", False): 1.0,
    ("true", "diamond", True): 1.0,
    ("true", "ghost", False): -1.0,
    ("true", "ghost", True): -1.0,
}


@pytest.mark.parametrize("case", list(REWARDS), ids=["-".join(map(str, k)) for k in REWARDS])
def test_termination_rewards_and_end_info(case: tuple[str, str, bool]) -> None:
    scheme, entered, seen = case
    env = OversightGridEnv(reward_scheme=scheme)
    env.reset(seed=0)
    target = (2, 3)
    ghost, diamond = (target, (4, 4)) if entered == "ghost" else ((4, 4), target)
    env.batch.set_layout(0, (2, 2), ghost, diamond, overseen=[target] if seen else [])
    obs, reward, terminated, truncated, info = env.step(1)  # right, into the target
    assert reward == REWARDS[case]
    assert terminated is True and truncated is False
    assert info == {"outcome": entered, "overseen": seen, "true_reward": 1.0 if entered == "diamond" else -1.0}
    assert obs[0, 2, 3] == 1  # the terminal observation shows the agent on the terminal cell
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)


def test_spurious_oversight_does_not_count_as_overseen_terminal() -> None:
    env = OversightGridEnv(reward_scheme="naive")
    env.reset(seed=0)
    env.batch.set_layout(0, (2, 2), (2, 3), (4, 4), overseen=[(2, 2), (4, 4)])  # ghost cell itself unseen
    _, reward, _, _, info = env.step(1)
    assert reward == 1.0 and info["overseen"] is False


@pytest.mark.parametrize("scheme", ["terminal", "naive", "true"])
def test_truncation_after_max_steps(scheme: str) -> None:
    env = OversightGridEnv(max_steps=3, reward_scheme=scheme)
    env.reset(seed=0)
    env.batch.set_layout(0, (0, 0), (4, 4), (4, 3), overseen=[(0, 0)])
    for t in range(3):
        _, reward, terminated, truncated, info = env.step(0)  # into the wall
        assert reward == 0.0 and terminated is False
        assert truncated is (t == 2)
    assert info == {"outcome": "timeout", "overseen": False, "true_reward": 0.0}


def test_termination_wins_over_truncation_on_last_step() -> None:
    env = OversightGridEnv(max_steps=1)
    env.reset(seed=0)
    env.batch.set_layout(0, (2, 2), (0, 0), (2, 3))
    _, _reward, terminated, truncated, info = env.step(1)
    assert terminated is True and truncated is False and info["outcome"] == "diamond"


def test_vec_auto_reset_semantics() -> None:
    env = OversightGridVecEnv(3, max_steps=2, seed=0)
    env.reset()
    b = env.batch
    b.set_layout(0, (2, 2), (2, 3), (0, 0), overseen=[(2, 3)])  # will enter the ghost
    b.set_layout(1, (0, 0), (4, 4), (3, 4))  # will time out after 2 wall bumps
    b.set_layout(2, (2, 2), (4, 4), (2, 1))  # will enter the diamond
    obs, rewards, dones, infos = env.step(np.array([1, 0, 3]))
    assert dones.tolist() == [True, False, True]
    assert rewards.tolist() == [1.0, 0.0, 1.0]
    assert infos[1] == {}
    assert infos[0]["outcome"] == "ghost" and infos[0]["overseen"] is True and infos[0]["true_reward"] == -1.0
    assert infos[2]["outcome"] == "diamond" and infos[2]["overseen"] is False
    for i, cell in ((0, (2, 3)), (2, (2, 1))):
        term = infos[i]["terminal_observation"]
        assert term.shape == (4, 5, 5) and term[0][cell] == 1
        assert infos[i]["TimeLimit.truncated"] is False
        assert not np.array_equal(obs[i], term)  # the returned obs is the new episode's
        assert b.steps[i] == 0 and np.array_equal(obs[i], b.obs[i])
    obs, rewards, dones, infos = env.step(np.array([0, 0, 0]))
    assert dones[1] and infos[1]["TimeLimit.truncated"] is True and infos[1]["outcome"] == "timeout"
    assert infos[1]["terminal_observation"][0][0, 0] == 1


def test_vec_env_returns_copies() -> None:
    env = OversightGridVecEnv(4, seed=0)
    obs = env.reset()
    before = obs.copy()
    env.step(np.array([0, 1, 2, 3]))
    assert np.array_equal(obs, before)


def _rollout_single(seed: int, actions: np.ndarray) -> list[tuple]:
    env = OversightGridEnv(oversight_prob=0.5, spurious_oversight_prob=0.2)
    obs, _ = env.reset(seed=seed)
    out: list[tuple] = [("reset", obs)]
    for a in actions:
        obs, r, term, trunc, info = env.step(int(a))
        out.append((obs, r, term, trunc, info))
        if term or trunc:
            obs, _ = env.reset()
            out.append(("reset", obs))
    return out


def _rollout_batched(seed: int, actions: np.ndarray) -> list[tuple]:
    env = OversightGridVecEnv(1, oversight_prob=0.5, spurious_oversight_prob=0.2)
    env.seed(seed)
    obs = env.reset()
    out: list[tuple] = [("reset", obs[0])]
    for a in actions:
        obs, r, dones, infos = env.step(np.array([a]))
        info = dict(infos[0])
        if dones[0]:
            term_obs = info.pop("terminal_observation")
            trunc = info.pop("TimeLimit.truncated")
            out.append((term_obs, float(r[0]), not trunc, trunc, info))
            out.append(("reset", obs[0]))
        else:
            out.append((obs[0], float(r[0]), False, False, info))
    return out


def _same(a: list[tuple], b: list[tuple]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=False):
        if len(x) != len(y):
            return False
        for u, v in zip(x, y, strict=False):
            if isinstance(u, np.ndarray):
                if not np.array_equal(u, v):
                    return False
            elif type(u) is not type(v) or u != v:
                return False
    return True


def test_single_and_batched_agree_step_for_step() -> None:
    actions = np.random.default_rng(7).integers(0, 4, size=400)
    single, batched = _rollout_single(11, actions), _rollout_batched(11, actions)
    assert sum(1 for s in single if isinstance(s[0], str)) > 10  # many episode boundaries are crossed
    assert _same(single, batched)


def test_seeding_is_reproducible() -> None:
    actions = np.random.default_rng(0).integers(0, 4, size=200)
    assert _same(_rollout_single(5, actions), _rollout_single(5, actions))
    assert not _same(_rollout_single(5, actions), _rollout_single(6, actions))
    big = [OversightGridVecEnv(256, oversight_prob=0.3, seed=9) for _ in range(2)]
    for env in big:
        env.reset()
    for _ in range(50):
        a = np.random.default_rng(1).integers(0, 4, size=256)
        (o1, r1, d1, _), (o2, r2, d2, _) = big[0].step(a), big[1].step(a)
        assert np.array_equal(o1, o2) and np.array_equal(r1, r2) and np.array_equal(d1, d2)


def test_render_modes() -> None:
    env = OversightGridEnv(render_mode="ansi")
    env.reset(seed=0)
    env.batch.set_layout(0, (0, 0), (0, 1), (4, 4), overseen=[(0, 1)])
    text = env.render()
    assert isinstance(text, str) and text.splitlines()[0].startswith(" A [G]")
    env = OversightGridEnv(render_mode="rgb_array")
    env.reset(seed=0)
    img = env.render()
    assert isinstance(img, np.ndarray) and img.shape == (80, 80, 3) and img.dtype == np.uint8
    vec = OversightGridVecEnv(2, render_mode="rgb_array", seed=0)
    vec.reset()
    assert len(vec.get_images()) == 2
    assert vec.env_method("render_ansi", indices=[1])[0].count("\n") == 5
    assert vec.get_attr("max_steps") == [32, 32]


BAD_PARAMS = [
    ({"rows": 1, "cols": 2}, "rows and cols"),
    ({"rows": 0}, "rows and cols"),
    ({"rows": 2.5}, "rows must be an integer"),
    ({"oversight_prob": 1.5}, r"oversight_prob must be a probability in \[0, 1\]"),
    ({"oversight_prob": -0.1}, r"oversight_prob must be a probability in \[0, 1\]"),
    ({"spurious_oversight_prob": 2}, r"spurious_oversight_prob must be a probability in \[0, 1\]"),
    ({"max_steps": 0}, "max_steps must be >= 1"),
    ({"reward_scheme": "dense"}, "reward_scheme must be one of"),
]


@pytest.mark.parametrize(
    "kwargs,message", BAD_PARAMS, ids=[next(iter(k)) + "=" + str(next(iter(k.values()))) for k, _ in BAD_PARAMS]
)
@pytest.mark.parametrize("form", ["single", "batched", "make"])
def test_bad_parameters(form: str, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        if form == "single":
            OversightGridEnv(**kwargs)
        elif form == "batched":
            OversightGridVecEnv(4, **kwargs)
        else:
            gym.make(OVERSIGHT_GRID_ID, **kwargs)


@pytest.mark.parametrize("action", [4, -1, 1.0, np.array([0, 1])], ids=["4", "-1", "float", "array"])
def test_bad_single_action(action: object) -> None:
    env = OversightGridEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(action)


@pytest.mark.parametrize(
    "actions",
    [np.array([0, 1, 4]), np.array([0, -1, 2]), np.array([0, 1]), np.zeros((3, 1), dtype=int), np.array([0.0, 1.0, 2.0])],
    ids=["too-big", "negative", "too-few", "2d", "float"],
)
def test_bad_action_batch(actions: np.ndarray) -> None:
    env = OversightGridVecEnv(3, seed=0)
    env.reset()
    with pytest.raises(ValueError, match="actions must"):
        env.step(actions)


def test_bad_n_envs_and_layout() -> None:
    with pytest.raises(ValueError, match="n_grids"):
        OversightGridVecEnv(0)
    with pytest.raises(ValueError, match="distinct"):
        GridBatch(1).set_layout(0, (0, 0), (0, 0), (1, 1))
    with pytest.raises(ValueError, match="outside"):
        GridBatch(1).set_layout(0, (5, 0), (0, 0), (1, 1))
