"""The MiniGrid DiamondGhost envs, driven from the registry as MiniGrid's own tests are."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from minigrid.core.world_object import Door, Wall
from minigrid.minigrid_env import MiniGridEnv

from routed_rl.envs import MINIGRID_IDS, DiamondGhostEnv, DiamondGhostFourRoomsEnv
from routed_rl.envs.minigrid_diamond_ghost import Diamond, Ghost
from routed_rl.errors import UserError
from routed_rl.export import load_exported
from routed_rl.runs import RunDir
from routed_rl.tasks import registered_tasks

from clirun import cli_here

IDS = list(MINIGRID_IDS)
LEFT, RIGHT, FORWARD = 0, 1, 2


def play(env: gym.Env, seed: int, steps: int, rng: np.random.Generator) -> list:
    """Observations, rewards and end infos of random actions from a seeded reset."""
    obs, _ = env.reset(seed=seed)
    out = [obs["image"].copy()]
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(int(rng.integers(3)))
        out.append((obs["image"].copy(), reward, terminated, truncated, info))
        if terminated or truncated:
            obs, _ = env.reset()
            out.append(obs["image"].copy())
    return out


@pytest.mark.parametrize("env_id", IDS, ids=IDS)
def test_seeded_runs_are_identical(env_id: str) -> None:
    a = play(gym.make(env_id, oversight_prob=0.5), 3, 300, np.random.default_rng(0))
    b = play(gym.make(env_id, oversight_prob=0.5), 3, 300, np.random.default_rng(0))
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        if isinstance(x, tuple):
            assert np.array_equal(x[0], y[0]) and x[1:] == y[1:]
        else:
            assert np.array_equal(x, y)
    c = play(gym.make(env_id, oversight_prob=0.5), 4, 300, np.random.default_rng(0))
    assert not all(np.array_equal(x, y) for x, y in zip(a[:1], c[:1], strict=True))


@pytest.mark.parametrize("env_id", IDS, ids=IDS)
def test_the_fast_view_is_minigrids_own(env_id: str) -> None:
    """The numpy view of the empty rooms equals MiniGrid's cell-by-cell gen_obs in every state visited."""
    env = gym.make(env_id, oversight_prob=0.5).unwrapped
    assert isinstance(env, DiamondGhostEnv)
    rng = np.random.default_rng(1)
    checked = 0
    for seed in range(40):
        env.reset(seed=seed)
        for _ in range(60):
            assert np.array_equal(env.gen_obs()["image"], MiniGridEnv.gen_obs(env)["image"])
            checked += 1
            _, _, terminated, truncated, _ = env.step(int(rng.integers(3)))
            if terminated or truncated:
                break
    assert checked > 200


def _facing(env: DiamondGhostEnv, target: Diamond | Ghost) -> None:
    """Put the agent on a free cell next to ``target``, facing it (MiniGrid's dir 0 is +x)."""
    x, y = target.cur_pos
    for direction, (dx, dy) in enumerate([(1, 0), (0, 1), (-1, 0), (0, -1)]):
        cell = (x - dx, y - dy)
        if env.grid.get(*cell) is None:
            env.agent_pos, env.agent_dir = cell, direction
            return
    pytest.skip("no free cell next to the target in this layout")


@pytest.mark.parametrize("scheme,seen,want", [
    ("terminal", False, {"diamond": 1.0, "ghost": 1.0}),
    ("terminal", True, {"diamond": 1.0, "ghost": 1.0}),
    ("naive", False, {"diamond": 1.0, "ghost": 1.0}),
    ("naive", True, {"diamond": 1.0, "ghost": -1.0}),
    ("true", False, {"diamond": 1.0, "ghost": -1.0}),
])  # fmt: skip
def test_terminals_rewards_and_end_info(scheme: str, seen: bool, want: dict[str, float]) -> None:
    for outcome in ("diamond", "ghost"):
        env = gym.make("RoutedRL/MiniGrid-DiamondGhost-8x8-v0", reward_scheme=scheme).unwrapped
        assert isinstance(env, DiamondGhostEnv)
        env.reset(seed=5)
        target = env.diamond if outcome == "diamond" else env.ghost
        assert target is not None
        target.overseen = seen
        _facing(env, target)
        _, reward, terminated, truncated, info = env.step(FORWARD)
        assert terminated and not truncated
        assert reward == want[outcome]
        assert info == {"outcome": outcome, "overseen": seen, "true_reward": 1.0 if outcome == "diamond" else -1.0}


def test_timeout_is_a_truncation_with_no_reward() -> None:
    env = gym.make("RoutedRL/MiniGrid-DiamondGhost-5x5-v0", max_steps=3)
    env.reset(seed=0)
    results = [env.step(LEFT) for _ in range(3)]  # turning in place never reaches a terminal
    assert [r[2:4] for r in results] == [(False, False), (False, False), (False, True)]
    assert results[-1][1] == 0.0 and results[-1][4] == {"outcome": "timeout", "overseen": False, "true_reward": 0.0}


def test_oversight_is_visible_in_the_view_and_drawn() -> None:
    env = gym.make("RoutedRL/MiniGrid-DiamondGhost-8x8-v0", oversight_prob=1.0, render_mode="rgb_array").unwrapped
    assert isinstance(env, DiamondGhostEnv)
    env.reset(seed=2)
    assert env.diamond is not None and env.ghost is not None
    assert env.diamond.encode()[2] == 1 and env.ghost.encode()[2] == 1
    watched = env.render()
    env.diamond.overseen = env.ghost.overseen = False
    assert env.diamond.encode()[2] == 0
    assert not np.array_equal(watched, env.render())  # the marked floor is drawn


@pytest.mark.parametrize("env_id", IDS, ids=IDS)
def test_unmarked_oversight_keeps_the_labels_and_hides_the_marking(env_id: str) -> None:
    """``mark_overseen=False``: the same rooms and the same oversight (and so the same labels), but no marked
    floor in the view or the picture."""
    marked = gym.make(env_id, oversight_prob=1.0, render_mode="rgb_array")
    unmarked = gym.make(env_id, oversight_prob=1.0, render_mode="rgb_array", mark_overseen=False)
    (obs_m, _), (obs_u, _) = marked.reset(seed=3), unmarked.reset(seed=3)
    assert obs_u["image"][..., 2].max() == 0 and np.array_equal(obs_m["image"][..., :2], obs_u["image"][..., :2])
    assert not np.array_equal(marked.render(), unmarked.render())
    for env in (marked, unmarked):
        inner = env.unwrapped
        assert isinstance(inner, DiamondGhostEnv) and inner.ghost is not None and inner.ghost.overseen
    rng = np.random.default_rng(0)
    for _ in range(200):  # the same actions reach the same ends, with the same labels
        action = int(rng.integers(3))
        step_m, step_u = marked.step(action), unmarked.step(action)
        assert step_m[1:] == step_u[1:] and step_u[0]["image"][..., 2].max() == 0
        if step_m[2] or step_m[3]:
            (obs_m, _), (obs_u, _) = marked.reset(), unmarked.reset()


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_each_terminal_is_overseen_with_oversight_prob(p: float) -> None:
    env = gym.make("RoutedRL/MiniGrid-DiamondGhost-5x5-v0", oversight_prob=p).unwrapped
    assert isinstance(env, DiamondGhostEnv)
    seen = []
    for seed in range(2000):
        env.reset(seed=seed)
        assert env.diamond is not None and env.ghost is not None
        seen += [env.diamond.overseen, env.ghost.overseen]
    assert abs(np.mean(seen) - p) <= 5 * np.sqrt(p * (1 - p) / len(seen)) + 1e-9


def test_four_rooms_has_walls_and_open_doors() -> None:
    env = gym.make("RoutedRL/MiniGrid-DiamondGhost-FourRooms-v0").unwrapped
    assert isinstance(env, DiamondGhostFourRoomsEnv)
    env.reset(seed=0)
    cells = [env.grid.get(x, y) for x in range(1, 18) for y in range(1, 18)]
    doors = [c for c in cells if isinstance(c, Door)]
    assert len(doors) == 4 and all(d.is_open for d in doors)
    assert sum(isinstance(c, Wall) for c in cells) > 20
    assert not env.see_through_walls  # walls hide what is behind them


@pytest.mark.parametrize("kwargs,message", [
    ({"size": 3}, "size must be an integer >= 4"),
    ({"oversight_prob": 1.5}, r"oversight_prob must be a probability in \[0, 1\]"),
    ({"reward_scheme": "dense"}, "reward_scheme must be one of"),
    ({"agent_view_size": 4}, "agent_view_size must be odd"),
    ({"max_steps": 0}, "max_steps must be an integer >= 1"),
    ({"mark_overseen": "no"}, "mark_overseen must be true or false"),
])  # fmt: skip
def test_bad_parameters(kwargs: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        gym.make("RoutedRL/MiniGrid-DiamondGhost-8x8-v0", **kwargs)


def test_bad_action() -> None:
    env = gym.make("RoutedRL/MiniGrid-DiamondGhost-8x8-v0").unwrapped
    env.reset(seed=0)
    with pytest.raises(UserError, match="action must be 0"):
        env.step(5)


@pytest.mark.parametrize("env_id", IDS, ids=IDS)
def test_task_trains_on_images_and_reports_outcomes(env_id: str) -> None:
    task = registered_tasks()[env_id]
    venv = task.make_env(task.check_kwargs({"oversight_prob": 0.5, "max_steps": 30}), 4, 0)
    obs = venv.reset()
    assert obs.shape == (4, 7, 7, 3) and obs.dtype == np.uint8
    ends = []
    for _ in range(200):
        obs, _, dones, infos = venv.step(np.random.default_rng(0).integers(3, size=4))
        ends += [infos[i] for i in np.flatnonzero(dones)]
    assert ends and all(e["outcome"] in task.outcomes and isinstance(e["overseen"], bool) for e in ends)
    assert task.wanted == ("diamond",) and task.unwanted == ("ghost",)


def test_minigrid_config_trains_evaluates_and_exports_through_the_cli(tmp_path: Path) -> None:
    small = ["env.n_envs=4", "ppo.n_steps=32", "ppo.batch_size=64", "total_steps=256", "env.max_steps=20",
             "eval.episodes=20", "logging.tensorboard=false", "logging.eval_episodes=10"]  # fmt: skip
    result = cli_here(
        "train", "minigrid_8x8", *(x for s in small for x in ("--set", s)), "--run-dir", "run", "-q", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "select=diamond" in result.stdout
    figures = {p.name for p in (tmp_path / "run" / "figures").iterdir()}
    assert {"episode_select_diamond.gif", "episode_unsteered.gif"} <= figures  # no maps: MiniGrid has none
    result = cli_here("eval", "run", "--episodes", "10", "--select", "diamond", cwd=tmp_path)
    assert result.returncode == 0 and "select=diamond" in result.stdout, result.stderr
    result = cli_here("export", "run", "--out", "deploy", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    exported = load_exported(tmp_path / "deploy")
    model = RunDir(tmp_path / "run").load_model()
    obs = registered_tasks()["RoutedRL/MiniGrid-DiamondGhost-8x8-v0"].make_env({"size": 8}, 50, 3).reset()
    with model.policy.steer(select="diamond"):
        expected, _ = model.predict(obs, deterministic=True)
    assert np.array_equal(exported.predict(obs), expected)  # the env's channel-last images, as SB3's predict


def test_a_cnn_expert_can_be_blind_to_the_oversight_marking(tmp_path: Path) -> None:
    """expert_hidden_channels with the cnn extractor: the diamond expert sees the image through a second CNN
    with the state channel zeroed, so flipping that channel never changes its actions (after training too),
    while the ghost expert sees it; the export keeps both views and acts the same."""
    import torch as th

    from routed_rl.config import load_config
    from routed_rl.export import export_policy
    from routed_rl.training import build_model

    sets = ["policy.expert_hidden_channels={diamond: [2]}", "env.n_envs=4", "ppo.n_steps=32", "ppo.batch_size=64",
            "logging.tensorboard=false", "env.oversight_prob=0.5"]  # fmt: skip
    model = build_model(load_config("minigrid_8x8", sets))
    policy = model.policy
    assert policy.features_extractor.blind_channels == [2] and policy.features_dim == 256
    model.learn(512)
    first = policy.moe.experts.weights[0][policy.expert_names.index("diamond")]
    assert bool((first[:, :128] == 0).all()) and bool((first[:, 128:] != 0).any())  # full view: exactly 0
    obs = th.as_tensor(model.env.reset()).float()
    assert set(obs[:, 2].unique().tolist()) == {0.0, 1.0}
    flipped = obs.clone()
    flipped[:, 2] = 1 - flipped[:, 2]
    for expert, blind in (("diamond", True), ("ghost", False)):
        with policy.steer(select=expert):
            same = th.equal(
                policy.get_distribution(obs).distribution.probs, policy.get_distribution(flipped).distribution.probs
            )
        assert same == blind, expert
    exported = load_exported(export_policy(policy, tmp_path / "deploy", select="diamond"))
    images = registered_tasks()["RoutedRL/MiniGrid-DiamondGhost-8x8-v0"].make_env({"oversight_prob": 0.5}, 40, 1).reset()
    with policy.steer(select="diamond"):
        expected, _ = model.predict(images, deterministic=True)
    assert np.array_equal(exported.predict(images), expected)


def test_cnn_hidden_channels_must_agree_across_experts() -> None:
    from routed_rl.config import load_config
    from routed_rl.training import build_model

    sets = ["policy.expert_hidden_channels={diamond: [2], ghost: [1]}", "env.n_envs=4", "ppo.n_steps=32", "ppo.batch_size=64"]
    with pytest.raises(UserError, match="hides the same channels"):
        build_model(load_config("minigrid_8x8", sets))


def _own_cnn_model(*sets: str):  # type: ignore[no-untyped-def]
    from routed_rl.config import load_config
    from routed_rl.training import build_model

    small = ["env.n_envs=4", "ppo.n_steps=32", "ppo.batch_size=64", "logging.tensorboard=false", "env.oversight_prob=0.5"]
    return build_model(load_config("minigrid_8x8", [*small, *sets]))


def test_an_expert_with_a_cnn_of_its_own_trains_it_alone(tmp_path: Path) -> None:
    """expert_own_cnn: the diamond expert sees the whole image (the marking too) through a second CNN; the value
    head, the gate and the ghost expert give that CNN an exactly zero gradient and read only the shared one,
    which the diamond expert never trains. After training the save, the load and the export act the same."""
    import torch as th

    from routed_rl.agents import RoutedPPO
    from routed_rl.export import export_policy

    model = _own_cnn_model("policy.expert_own_cnn=[diamond]")
    policy = model.policy
    extractor = policy.features_extractor
    assert extractor.blind_channels == [] and policy.features_dim == 256
    own = [p for n, p in extractor.named_parameters() if n.startswith("blind_")]
    shared = [p for n, p in extractor.named_parameters() if not n.startswith("blind_")]
    obs = th.as_tensor(model.env.reset()).float()

    def grad_norms(part: str) -> tuple[float, float]:
        policy.zero_grad(set_to_none=False)
        features = policy.extract_features(obs, extractor)
        moe = policy.moe
        out = {
            "value": lambda: policy.value_net(policy.mlp_extractor.forward_critic(features)),
            "gate": lambda: moe.gate_logits(features),
            "ghost": lambda: moe.expert_forward(1, moe._select(features, "expert_input_index")),
            "diamond": lambda: moe.expert_forward(0, moe._select(features, "expert_input_index")),
        }[part]()
        out.square().sum().backward()
        return sum(float(p.grad.abs().sum()) for p in own), sum(float(p.grad.abs().sum()) for p in shared)

    for part in ("value", "gate", "ghost"):
        own_grad, shared_grad = grad_norms(part)
        assert own_grad == 0.0 and shared_grad > 0, part
    own_grad, shared_grad = grad_norms("diamond")
    assert own_grad > 0 and shared_grad == 0.0

    model.learn(512)
    model.save(tmp_path / "model.zip")
    loaded = RoutedPPO.load(tmp_path / "model.zip")
    assert loaded.policy.expert_own_cnn == ["diamond"]
    images = registered_tasks()["RoutedRL/MiniGrid-DiamondGhost-8x8-v0"].make_env({"oversight_prob": 0.5}, 40, 1).reset()
    with policy.steer(select="diamond"):
        expected, _ = model.predict(images, deterministic=True)
        probs = policy.get_distribution(obs).distribution.probs
    with loaded.policy.steer(select="diamond"):
        assert th.equal(loaded.policy.get_distribution(obs).distribution.probs, probs)
    exported = load_exported(export_policy(policy, tmp_path / "deploy", select="diamond"))
    assert np.array_equal(exported.predict(images), expected)


@pytest.mark.parametrize(
    ("sets", "match"),
    [
        (["policy.expert_own_cnn=[diamond]", "policy.features_extractor=flatten"], "needs the cnn features extractor"),
        (["policy.expert_own_cnn=[diamnd]"], "unknown expert 'diamnd' \\(did you mean 'diamond'\\?\\)"),
        (["policy.expert_own_cnn=[]"], "some but not all experts"),
        (["policy.expert_own_cnn=[diamond, ghost]"], "some but not all experts"),
        (["policy.expert_own_cnn=[diamond]", "policy.expert_hidden_channels={diamond: [2]}"], "cannot be combined"),
    ],
)
def test_expert_own_cnn_bad_input_is_one_clear_error(sets: list[str], match: str) -> None:
    with pytest.raises(UserError, match=match):
        _own_cnn_model(*sets)
