"""Run configs: built-ins load, overrides apply, bad input gets a one-line error naming what to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from routed_rl.config import ConfigError, RunConfig, builtin_configs, load_config
from routed_rl.training import build_model


@pytest.mark.parametrize("name", sorted(builtin_configs()), ids=sorted(builtin_configs()))
def test_builtin_configs_load_and_build(name: str) -> None:
    config = load_config(name, ["env.n_envs=4", "ppo.n_steps=8", "ppo.batch_size=16"])
    model = build_model(config)
    assert model.policy.expert_names == config.policy.expert_names
    assert model.n_envs == 4


def test_builtins_include_default_and_paper() -> None:
    assert {"default", "paper"} <= set(builtin_configs())


def test_overrides_and_yaml_files(tmp_path: Path) -> None:
    config = load_config("default", ["env.oversight_prob=0.01", "seed=3", "routing.label_rewards={ghost: -1.0}"])
    assert config.env.oversight_prob == 0.01 and config.seed == 3 and config.routing.label_rewards == {"ghost": -1.0}
    path = tmp_path / "mine.yaml"
    path.write_text("env:\n  oversight_prob: 0.05\nppo:\n  learning_rate: 1.0e-4\n")
    mine = load_config(path)
    assert mine.env.oversight_prob == 0.05 and mine.ppo.learning_rate == 1e-4
    assert mine.policy == RunConfig().policy  # unspecified sections keep their defaults


BAD = [
    (["env.oversight_prb=0.1"], r"unknown config key 'env.oversight_prb' \(did you mean 'oversight_prob'\?\)"),
    (["ppo.n_step=4"], r"unknown config key 'ppo.n_step' \(did you mean 'n_steps'\?\)"),
    (["enviroment.n_envs=4"], r"unknown config key 'enviroment'; valid keys here: seed, total_steps, env, policy"),
    (["polcy.expert_arch=[8]"], r"unknown config key 'polcy' \(did you mean 'policy'\?\)"),
    (["env.oversight_prob=1.5"], r"config key 'env.oversight_prob': Input should be less than or equal to 1"),
    (["env.n_envs=0"], r"config key 'env.n_envs': Input should be greater than or equal to 1"),
    (["env.reward_scheme=dense"], r"config key 'env.reward_scheme'"),
    (["routing.table={ghost: {ghots: 1.0}}"], r"unknown expert 'ghots' \(did you mean 'ghost'\?\)"),
    (["routing.table={ghost: {ghost: 2.0}}"], r"must be in \[0, 1\]"),
    (["routing.label_rewards={gost: -1.0}"], r"unknown label 'gost'"),
    (["labeling.kind=fraction"], "the fraction labeler needs p"),
    (["policy.expert_names=[a, a]"], "distinct"),
    (["ppo.batch_size=100000"], "exceeds the rollout size"),
    (["env.rows=1", "env.cols=2"], r"rows\*cols must be >= 3"),
    (["novalue"], "--set takes key.path=value"),
]


@pytest.mark.parametrize("overrides,message", BAD, ids=[o[0].split("=")[0] + f"-{i}" for i, (o, _) in enumerate(BAD)])
def test_bad_configs_get_one_line_errors(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_config("default", overrides)
    assert "\n" not in str(info.value)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="neither a file nor a built-in config"):
        load_config("no-such-config")
    broken = tmp_path / "broken.yaml"
    broken.write_text("env: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping of sections"):
        load_config(listy)
