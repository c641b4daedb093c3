"""The task interface: routed-rl's own envs, and any gymnasium env given an outcome function."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

from routed_rl.config import ConfigError, load_config
from routed_rl.errors import UserError
from routed_rl.evaluation import evaluate, format_table
from routed_rl.agents import RoutedPPO
from routed_rl.envs import OversightGridVecEnv
from routed_rl.tasks import OutcomeWrapper, env_outcomes, expert_names_for, registered_tasks, task_for
from clirun import cli, cli_here
from user_outcomes import CORRIDOR_ID, Corridor, cliff_or_home

OUTCOMES = {"home": 1.0, "cliff": -1.0}


class Always:
    """A policy that always takes one action (any SB3-like ``predict``)."""

    def __init__(self, action: int) -> None:
        self.action, self.policy = action, object()

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> tuple[np.ndarray, None]:
        return np.full(len(obs), self.action), None


def test_outcome_wrapper_names_each_episode_end() -> None:
    env = OutcomeWrapper(Corridor(length=3), cliff_or_home, {**OUTCOMES, "none": 0.0})
    env.reset(seed=0)
    env.unwrapped.pos = 1  # type: ignore[attr-defined]
    _, reward, terminated, _, info = env.step(1)
    assert not terminated and info == {}
    _, reward, terminated, _, info = env.step(1)
    assert terminated and reward == 1.0 and info == {"outcome": "home", "overseen": False, "true_reward": 1.0}
    env.reset(seed=0)
    env.unwrapped.pos = 0  # type: ignore[attr-defined]
    assert env.step(0)[4]["outcome"] == "cliff"


def test_outcome_wrapper_refuses_a_name_it_was_not_given() -> None:
    env = OutcomeWrapper(Corridor(length=2), lambda info, obs: "moon", OUTCOMES)
    env.reset(seed=0)
    with pytest.raises(UserError, match=r"env.outcome returned 'moon'; it must return one of"):
        for _ in range(3):
            env.step(1)


def test_a_user_env_is_a_task_from_the_config() -> None:
    task = task_for(CORRIDOR_ID, outcome="user_outcomes:cliff_or_home", outcomes=OUTCOMES)
    assert dict(task.outcomes) == {**OUTCOMES, "none": 0.0} and task.wanted == ("home",) and task.unwanted == ("cliff",)
    assert task.check_kwargs({"length": 4}) == {"length": 4, "max_steps": 20}
    with pytest.raises(UserError, match=r"unknown config key 'env.lenght' \(did you mean 'length'\?\)"):
        task.check_kwargs({"lenght": 4})
    # known answers: always right reaches home from every start, always left falls off the cliff
    right = evaluate(Always(1), task, 300, env_kwargs={"length": 4}, seed=0, gamma=1.0)  # type: ignore[arg-type]
    left = evaluate(Always(0), task, 300, env_kwargs={"length": 4}, seed=0, gamma=1.0)  # type: ignore[arg-type]
    assert right.rates == {"home": 1.0, "cliff": 0.0, "none": 0.0} and right.discounted_return == 1.0
    assert left.rates == {"home": 0.0, "cliff": 1.0, "none": 0.0} and left.discounted_return == -1.0
    assert 1.0 < right.mean_length < 4.0 and right.gaming_gap is None  # never overseen
    assert "home" in format_table([right.to_dict()], task)
    stuck = evaluate(Always(1), task, 10, env_kwargs={"length": 50, "max_steps": 5}, seed=0)  # type: ignore[arg-type]
    assert stuck.rates["none"] > 0.5 and stuck.mean_length <= 5


def test_evaluation_plays_one_episode_per_env_in_chunks() -> None:
    task = task_for(CORRIDOR_ID, outcome="user_outcomes:cliff_or_home", outcomes=OUTCOMES)
    venv = task.make_env({"length": 4, "max_steps": 20}, 3, 7)
    assert isinstance(venv, DummyVecEnv)
    many = evaluate(Always(1), task, 1234, env_kwargs={"length": 4}, seed=0)  # type: ignore[arg-type]
    assert many.episodes == 1234 and many.rates["home"] == 1.0


@pytest.mark.parametrize("sets,message", [
    (["env.id=NoSuch-v0"], "env.id 'NoSuch-v0' is not a registered gymnasium env"),
    ([f"env.id={CORRIDOR_ID}"], "is not a routed-rl env"),
    ([f"env.id={CORRIDOR_ID}", "env.outcomes={home: 1}", "env.outcome=user_outcomes:nothing"], "env.outcome: cannot import"),
    ([f"env.id={CORRIDOR_ID}", "env.outcomes={home: 1}", "env.outcome=no_colon"], "must be an import path"),
    ([f"env.id={CORRIDOR_ID}", "env.outcomes={home: 1}", "env.wrappers=[nosuchpkg:Wrap]"], "env.wrappers: cannot import"),
    (["env.outcomes={home: 1}"], "reports its own outcomes"),
    ([f"env.id={CORRIDOR_ID}", "env.outcomes={home: 1}", "env.length=0"], f"env {CORRIDOR_ID}: length must be >= 2, got 0"),
])  # fmt: skip
def test_bad_env_sections_are_one_line_errors(sets: list[str], message: str) -> None:
    base = {"env": {"id": "RoutedRL/OversightGrid-v0"}}
    with pytest.raises(ConfigError, match=message) as info:
        load_config(base, sets)
    assert "\n" not in str(info.value)


def test_every_routed_env_has_a_task() -> None:
    tasks = registered_tasks()
    assert "RoutedRL/OversightGrid-v0" in tasks and "RoutedRL/MiniGrid-DiamondGhost-8x8-v0" in tasks
    for task in tasks.values():
        assert task.wanted and task.unwanted and task.defaults is not None


def test_user_env_trains_evaluates_and_exports_through_the_cli(tmp_path: Path) -> None:
    (tmp_path / "corridor.yaml").write_text(f"""
seed: 0
total_steps: 1024
env: {{id: "user_outcomes:{CORRIDOR_ID}", n_envs: 8, outcome: "user_outcomes:cliff_or_home",
       outcomes: {{home: 1.0, cliff: -1.0}}, length: 4}}
policy: {{expert_names: [home, cliff], expert_arch: [16], value_arch: [16]}}
ppo: {{n_steps: 32, batch_size: 64}}
routing: {{table: {{home: {{home: 1.0}}, cliff: {{home: 1.0}}}}, label_rewards: {{home: 2.0, cliff: -1.0}}}}
labeling: {{kind: fraction, p: 0.5}}
eval: {{steering: select=home, episodes: 50}}
logging: {{tensorboard: false, eval_every: 512, eval_episodes: 20}}
""")
    result = cli("train", "corridor.yaml", "--run-dir", "run", "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "select=home" in result.stdout and "cliff" in result.stdout
    figures = tmp_path / "run" / "figures"
    assert not figures.exists() or not any(figures.iterdir())  # the corridor cannot render: no GIF, no map
    result = cli_here("eval", "run", "--episodes", "30", "--json", cwd=tmp_path)
    assert result.returncode == 0 and '"home"' in result.stdout, result.stderr
    result = cli_here("export", "run", "--out", "deploy", cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_the_readme_example_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    """examples/lava_gap.yaml (a stock MiniGrid env and a user outcome function) loads, and its outcome
    function names a lava episode and a goal episode."""
    examples = Path(__file__).parents[1] / "examples"
    monkeypatch.syspath_prepend(str(examples))
    config = load_config(examples / "lava_gap.yaml")
    task = config.env.task()
    assert dict(task.outcomes) == {"goal": 1.0, "lava": -1.0, "none": 0.0}
    assert config.policy.expert_names == ["goal", "lava"]  # not in the file: named after the rewarded outcomes
    from lava_outcome import lava_or_goal

    assert lava_or_goal({"terminated": True, "reward": 0.7}, None) == "goal"
    assert lava_or_goal({"terminated": True, "reward": 0.0}, None) == "lava"
    assert lava_or_goal({"terminated": False, "reward": 0.0}, None) is None


def test_the_envs_command_lists_every_routed_env(tmp_path: Path) -> None:
    result = cli_here("envs", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for env_id in registered_tasks():
        assert env_id in result.stdout
    assert "outcomes: diamond +1, ghost -1, timeout +0\n  experts: diamond, ghost\n" in result.stdout
    assert "oversight_prob=0.1" in result.stdout


def test_config_wrappers_go_around_a_routed_env_s_own_wrappers() -> None:
    """env.wrappers on a MiniGrid task keep its image observation (ImgObsWrapper) and add theirs outside it."""
    task = task_for("RoutedRL/MiniGrid-DiamondGhost-8x8-v0", wrappers=["gymnasium.wrappers:RecordEpisodeStatistics"])
    venv = task.make_env(task.check_kwargs({}), 2, 0)
    assert venv.reset().shape == (2, 7, 7, 3)
    assert type(venv.envs[0]).__name__ == "RecordEpisodeStatistics"  # type: ignore[attr-defined]
    assert task.make_render_env is not None
    obs, _ = task.make_render_env(task.check_kwargs({})).reset(seed=0)
    assert obs.shape == (7, 7, 3)


def test_expert_names_default_to_the_rewarded_outcomes_wanted_first() -> None:
    assert expert_names_for({"none": 0.0, "trap": -1.0, "gold": 0.5, "pit": -2.0}) == ["gold", "trap", "pit"]
    with pytest.raises(UserError, match=r"no outcome has a nonzero reward .*: name the experts"):
        expert_names_for({"none": 0.0})
    for env_id, task in registered_tasks().items():
        assert load_config({"env": {"id": env_id}}).policy.expert_names == ["diamond", "ghost"] == task.experts
    corridor = {"env": {"id": CORRIDOR_ID, "outcome": "user_outcomes:cliff_or_home", "outcomes": OUTCOMES}}
    assert load_config(corridor).policy.expert_names == ["home", "cliff"]
    assert load_config(corridor, ["policy.expert_names=[a, home, cliff]"]).policy.expert_names == ["a", "home", "cliff"]
    flat = {"env": {**corridor["env"], "outcomes": {"home": 0.0, "cliff": 0.0}}}
    with pytest.raises(ConfigError, match=r"policy.expert_names: no outcome has a nonzero reward"):
        load_config(flat)


def test_routed_ppo_names_its_experts_after_the_env_s_outcomes() -> None:
    """The Python API without ``expert_names``: the env's routed-rl task (found by its gymnasium id, through
    SB3's wrappers too) or its OutcomeWrapper names the experts; any other env is a one-line error."""
    grid = OversightGridVecEnv(2, seed=0)
    assert env_outcomes(grid) == {"diamond": 1.0, "ghost": -1.0, "timeout": 0.0}
    minigrid = task_for("RoutedRL/MiniGrid-DiamondGhost-5x5-v0").make_env({}, 1, 0)
    assert env_outcomes(VecMonitor(minigrid)) == env_outcomes(grid)
    corridor = DummyVecEnv([lambda: OutcomeWrapper(Corridor(), cliff_or_home, OUTCOMES)])
    assert env_outcomes(corridor) == OUTCOMES and env_outcomes(DummyVecEnv([Corridor])) is None
    small = {"expert_arch": [8], "value_arch": [8]}
    assert RoutedPPO("RoutedPolicy", grid, policy_kwargs=small).policy.expert_names == ["diamond", "ghost"]
    model = RoutedPPO("RoutedPolicy", corridor, policy_kwargs=small)
    assert model.policy.expert_names == ["home", "cliff"] == model.routing_table.expert_names
    assert small == {"expert_arch": [8], "value_arch": [8]}  # the caller's policy_kwargs are not changed
    with pytest.raises(UserError, match=r"^name the experts, e.g. policy_kwargs=\{'expert_names'"):
        RoutedPPO("RoutedPolicy", DummyVecEnv([Corridor]))
    named = RoutedPPO("RoutedPolicy", DummyVecEnv([Corridor]), policy_kwargs={"expert_names": ["l", "r"], **small})
    assert named.policy.expert_names == ["l", "r"]
