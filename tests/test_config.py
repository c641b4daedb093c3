"""Run configs: built-ins load, overrides apply, bad input gets a one-line error naming what to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from routed_rl.config import ConfigError, RunConfig, builtin_configs, load_config
from routed_rl.errors import UserError
from routed_rl.training import build_model


@pytest.mark.parametrize("name", sorted(builtin_configs()), ids=sorted(builtin_configs()))
def test_builtin_configs_load_and_build(name: str) -> None:
    config = load_config(name, ["env.n_envs=4", "ppo.n_steps=8", "ppo.batch_size=16"])
    model = build_model(config)
    assert model.policy.expert_names == config.policy.expert_names
    assert model.n_envs == 4


def test_overrides_and_yaml_files(tmp_path: Path) -> None:
    config = load_config("default", ["env.oversight_prob=0.01", "seed=3", "routing.label_rewards={ghost: -1.0}"])
    assert config.env.oversight_prob == 0.01 and config.seed == 3 and config.routing.label_rewards == {"ghost": -1.0}
    path = tmp_path / "mine.yaml"
    path.write_text("env:\n  oversight_prob: 0.05\nppo:\n  learning_rate: 1.0e-4\n")
    mine = load_config(path)
    assert mine.env.oversight_prob == 0.05 and mine.ppo.learning_rate == 1e-4
    assert mine.policy == RunConfig().policy  # unspecified sections keep their defaults


def test_step_counts_may_be_written_with_an_exponent(tmp_path: Path) -> None:
    """YAML reads 1e6 (no dot) as a string; a whole number written so is still a step count."""
    path = tmp_path / "steps.yaml"
    path.write_text("total_steps: 1e6\nlogging:\n  checkpoint_every: 2.5e5\nppo:\n  learning_rate: 3e-4\n")
    config = load_config(path, ["early_stopping.every=5E4"])
    assert config.total_steps == 1_000_000 and isinstance(config.total_steps, int)
    assert config.logging.checkpoint_every == 250_000 and config.early_stopping.every == 50_000
    assert config.ppo.learning_rate == 3e-4
    with pytest.raises(ConfigError, match=r"config key 'total_steps': Input should be a valid integer"):
        load_config("default", ["total_steps=1.5e0"])  # not whole: still refused


BAD = [
    (["env.oversight_prb=0.1"], r"unknown config key 'env.oversight_prb' \(did you mean 'oversight_prob'\?\)"),
    (["ppo.n_step=4"], r"unknown config key 'ppo.n_step' \(did you mean 'n_steps'\?\)"),
    (["enviroment.n_envs=4"], r"unknown config key 'enviroment'; valid keys here: seed, total_steps, threads, env, policy"),
    (["polcy.expert_arch=[8]"], r"unknown config key 'polcy' \(did you mean 'policy'\?\)"),
    (["env.oversight_prob=1.5"], r"env.oversight_prob must be a probability in \[0, 1\], got 1.5"),
    (["env.n_envs=0"], r"config key 'env.n_envs': Input should be greater than or equal to 1"),
    (["env.reward_scheme=dense"], r"env.reward_scheme must be one of \['terminal', 'naive', 'true'\], got 'dense'"),
    (["routing.table={ghost: {ghots: 1.0}}"], r"unknown expert 'ghots' \(did you mean 'ghost'\?\)"),
    (["routing.table={ghost: {ghost: 2.0}}"], r"must be in \[0, 1\]"),
    (["routing.label_rewards={gost: -1.0}"], r"unknown label 'gost'"),
    (["routing.anneal_experts=[gost]"], r"routing.anneal_experts: unknown expert 'gost' \(did you mean 'ghost'\?\)"),
    (["routing.deployed_share=0.25", "eval.steering=unsteered"], "routing.deployed_share needs eval.steering to select"),
    (["routing.anneal_fraction=1.5"], r"config key 'routing.anneal_fraction': Input should be less than or equal to 1"),
    (["labeling.kind=fraction"], "the fraction labeler needs p"),
    (["policy.expert_names=[a, a]"], "distinct"),
    (["ppo.batch_size=100000"], "exceeds the rollout size"),
    (["env.rows=1", "env.cols=2"], r"rows\*cols >= 3"),
    (["novalue"], "--set takes key.path=value"),
    (["policy.optimizer_kwargs={fuse: true}"], r"unknown Adam argument 'fuse' \(did you mean 'fused'\?\) in policy"),
    (["policy.optimizer_kwargs={lr: 0.1}"], "policy.optimizer_kwargs cannot set lr: set ppo.learning_rate"),
    (["policy.optimizer_kwargs={eps: -1.0}"], "policy.optimizer_kwargs: Invalid epsilon value: -1.0"),
    (["policy.precision=half"], "config key 'policy.precision': Input should be 'float32' or 'bfloat16'"),
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


BASELINES = {
    "default",
    "default_blind",
    "naive",
    "naive_blind",
    "filtering",
    "oracle",
    "moe_no_routing",
    "naive_early_stopping",
    "naive_early_stopping_peek",
    "paper",
}


def _differences(a: dict, b: dict, prefix: str = "") -> set[str]:
    out = set()
    for key in a.keys() | b.keys():
        if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
            out |= _differences(a[key], b[key], f"{prefix}{key}.")
        elif a.get(key) != b.get(key):
            out.add(prefix + key)
    return out


# the blind variants keep the routing settings they were measured with (the default's before 2026-11-27)
FORMER_DEFAULT = {"routing.label_replay", "routing.label_rewards.ghost", "routing.tail_steps", "routing.unlabeled_tail"}
# each baseline differs from the default only in the keys that define it
DEFINING_KEYS = {
    "default_blind": {"policy.expert_obs_channels", "policy.gate_obs_channels", *FORMER_DEFAULT},
    "naive": {"routing.enabled", "routing.gate_coef", "eval.steering"},
    "naive_blind": {
        "policy.expert_obs_channels",
        "policy.gate_obs_channels",
        *FORMER_DEFAULT,
        "routing.enabled",
        "routing.gate_coef",
        "eval.steering",
    },
    "filtering": {"routing.enabled", "routing.gate_coef", "eval.steering", "routing.labeled_only"},
    "oracle": {"routing.enabled", "routing.gate_coef", "eval.steering", "env.reward_scheme", "routing.label_rewards"},
    "moe_no_routing": {"routing.enabled"},
    "naive_early_stopping": {"routing.enabled", "routing.gate_coef", "eval.steering", "early_stopping.metric"},
    "naive_early_stopping_peek": {"routing.enabled", "routing.gate_coef", "eval.steering", "early_stopping.metric"},
}


def test_the_baselines_are_built_in() -> None:
    assert set(builtin_configs()) == BASELINES | {"minigrid_8x8", "minigrid_fourrooms"}


MINIGRID_BASELINES = Path(__file__).parents[1] / "benchmarks" / "minigrid"


@pytest.mark.parametrize(
    ("baseline", "kind", "attempt"),
    [
        ("naive", "naive", "minigrid_8x8"),
        ("oracle", "oracle", "minigrid_8x8"),
        ("naive_blind_diamond_expert", "naive", "blind_diamond_expert.yaml"),
        ("naive_default_recipe", "naive", "default_recipe.yaml"),
        ("naive_blind_default_recipe", "naive", "blind_default_recipe.yaml"),
        ("naive_own_cnn_default_recipe", "naive", "own_cnn_default_recipe.yaml"),
        ("moe_no_routing_own_cnn_default_recipe", "moe_no_routing", "own_cnn_default_recipe.yaml"),
        ("moe_no_routing_own_cnn_balanced_gate_recipe", "moe_no_routing", "own_cnn_balanced_gate_recipe.yaml"),
        ("naive_early_stopping_own_cnn_default_recipe", "naive_early_stopping", "own_cnn_default_recipe.yaml"),
        ("filtering_own_cnn_default_recipe", "filtering", "own_cnn_default_recipe.yaml"),
        ("oracle_own_cnn_default_recipe", "oracle", "own_cnn_default_recipe.yaml"),
    ],
)
def test_minigrid_baselines_differ_from_their_attempt_as_the_builtin_ones_from_default(
    baseline: str, kind: str, attempt: str
) -> None:
    """The MiniGrid benchmarks' baselines change exactly what the built-in baselines of their kind change."""
    theirs = load_config(MINIGRID_BASELINES / attempt if attempt.endswith(".yaml") else attempt).model_dump()
    mine = load_config(MINIGRID_BASELINES / f"{baseline}.yaml").model_dump()
    assert _differences(mine, theirs) == DEFINING_KEYS[kind]


@pytest.mark.parametrize(
    ("mine", "theirs", "keys"),
    [
        ("own_cnn_deployed_recipe", "deployed_recipe", {"policy.expert_own_cnn"}),
        ("own_cnn_default_recipe", "default_recipe", {"policy.expert_own_cnn"}),
        ("naive_own_cnn_default_recipe", "naive_default_recipe", {"policy.expert_own_cnn"}),
        ("own_cnn_free_gate_recipe", "own_cnn_default_recipe", {"routing.gate_coef"}),
        ("own_cnn_balanced_gate_recipe", "own_cnn_default_recipe", {"routing.gate_balance"}),
        ("own_cnn_unlabeled50_recipe", "own_cnn_default_recipe", {"routing.unlabeled"}),
        ("own_cnn_unlabeled25_recipe", "own_cnn_default_recipe", {"routing.unlabeled"}),
        ("own_cnn_unlabeled40_recipe", "own_cnn_unlabeled50_recipe", {"routing.unlabeled.diamond"}),
        ("own_cnn_unlabeled60_recipe", "own_cnn_unlabeled50_recipe", {"routing.unlabeled.diamond"}),
        # the annealed learning rate, on the recipe and on its baselines alike
        ("own_cnn_unlabeled50_lin_lr_recipe", "own_cnn_unlabeled50_recipe", {"ppo.learning_rate"}),
        ("naive_early_stopping_own_cnn_lin_lr", "naive_early_stopping_own_cnn_default_recipe", {"ppo.learning_rate"}),
        ("filtering_own_cnn_lin_lr", "filtering_own_cnn_default_recipe", {"ppo.learning_rate"}),
        # the learning rate held for 60% of the run, then annealed: likewise
        ("own_cnn_unlabeled50_held_lr_recipe", "own_cnn_unlabeled50_lin_lr_recipe", {"ppo.anneal_from"}),
        ("naive_early_stopping_own_cnn_held_lr", "naive_early_stopping_own_cnn_lin_lr", {"ppo.anneal_from"}),
        ("filtering_own_cnn_held_lr", "filtering_own_cnn_lin_lr", {"ppo.anneal_from"}),
        # their moe_no_routing twin is the default recipe's: without routing the unlabeled weights do nothing
        ("moe_no_routing_own_cnn_default_recipe", "own_cnn_unlabeled50_recipe", {"routing.enabled", "routing.unlabeled"}),
        # the free-gate recipe's naive twin is the same run as its moe_no_routing twin, evaluated steered
        ("naive_own_cnn_default_recipe", "own_cnn_free_gate_recipe", {"routing.enabled", "eval.steering"}),
    ],
)
def test_the_own_cnn_recipes_differ_only_where_listed(mine: str, theirs: str, keys: set) -> None:
    """The own-CNN recipes are the measured recipes with the diamond expert's own CNN and nothing else (their
    naive and moe_no_routing twins: the test above); the free-gate recipe drops only the gate loss, the
    balanced-gate recipe only balances it, the unlabeled-weight recipes change only that weight."""
    mine_config = load_config(MINIGRID_BASELINES / f"{mine}.yaml").model_dump()
    theirs_config = load_config(MINIGRID_BASELINES / f"{theirs}.yaml").model_dump()
    assert _differences(mine_config, theirs_config) == keys


EFFICIENCY = Path(__file__).parents[1] / "benchmarks" / "efficiency"


def _efficiency_twins() -> list[tuple[str, str, str]]:
    """(baseline, kind, attempt) file stems in benchmarks/efficiency: ``naive_X``, ``moe_no_routing_X`` and
    ``naive_early_stopping_X`` (kind ``naive``, ...) for every attempt ``X`` that has them."""
    twins = []
    for path in sorted(EFFICIENCY.glob("*.yaml")):
        for kind in ("naive_early_stopping", "moe_no_routing", "naive"):
            attempt = path.stem.removeprefix(kind + "_")
            if attempt != path.stem and (EFFICIENCY / f"{attempt}.yaml").is_file():
                twins.append((path.stem, kind, attempt))
                break
    return twins


def test_efficiency_baselines_differ_from_their_attempt_as_the_builtin_ones_from_default() -> None:
    """Each efficiency attempt's baselines are trained with its network, rewards and replay: they change exactly
    the keys that define `naive`, `moe_no_routing` and `naive_early_stopping`."""
    twins = _efficiency_twins()
    assert len(twins) >= 10
    for baseline, kind, attempt in twins:
        mine = load_config(EFFICIENCY / f"{baseline}.yaml").model_dump()
        theirs = load_config(EFFICIENCY / f"{attempt}.yaml").model_dump()
        assert _differences(mine, theirs) == DEFINING_KEYS[kind], baseline


@pytest.mark.parametrize("name", sorted(DEFINING_KEYS), ids=sorted(DEFINING_KEYS))
def test_baselines_differ_from_the_default_only_in_their_defining_keys(name: str) -> None:
    default = load_config("default").model_dump()
    assert _differences(load_config(name).model_dump(), default) == DEFINING_KEYS[name]


@pytest.mark.parametrize("name", ["default", "naive", "moe_no_routing", "naive_early_stopping"])
def test_the_default_and_its_baselines_are_the_measured_recipe(name: str) -> None:
    """The figures for the default in benchmarks/README.md come from benchmarks/efficiency/*_ghost199_replay64_cap8k.yaml: the
    built-ins equal them key for key, except the tail rule the baselines inherit, which does nothing without
    routing (test_ppo's test_the_tail_rule_does_nothing_without_routing)."""
    measured = "tail1_w25" if name == "default" else name
    mine = load_config(name).model_dump()
    theirs = load_config(EFFICIENCY / f"{measured}_ghost199_replay64_cap8k.yaml").model_dump()
    inert = set() if name == "default" else {"routing.tail_steps", "routing.unlabeled_tail"}
    assert _differences(mine, theirs) == inert
    assert mine["routing"]["enabled"] is (name == "default")


def test_default_is_the_papers_problem_the_agent_sees_the_oversight() -> None:
    config = load_config("default")
    assert config.policy.expert_obs_channels is None and config.policy.gate_obs_channels is None
    assert config.eval.steering == "select=diamond"
    assert load_config("default_blind").policy.expert_obs_channels == [0, 1, 2]


def test_base_merges_section_by_section_and_resolves_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "parent.yaml").write_text("base: naive\nppo:\n  learning_rate: 1.0e-4\n")
    (tmp_path / "child.yaml").write_text(
        "base: sub/parent.yaml\nenv:\n  oversight_prob: 0.05\nrouting:\n  label_rewards: null\n"
    )
    config = load_config(tmp_path / "child.yaml", ["ppo.n_epochs=2"])
    assert config.ppo.learning_rate == 1e-4 and config.ppo.n_epochs == 2 and config.ppo.gamma == 0.99  # from default
    assert config.env.oversight_prob == 0.05 and config.env.n_envs == 256
    assert config.routing.enabled is False and config.routing.label_rewards is None  # null replaces the base's


def test_bad_bases(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match=r"config bases form a cycle: a.yaml -> b.yaml -> a.yaml|cycle"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("base: nonexistent\n")
    with pytest.raises(ConfigError, match="'nonexistent' is neither a file nor a built-in config"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("base: [default]\n")
    with pytest.raises(ConfigError, match="'base' must name a built-in config or a YAML file"):
        load_config(tmp_path / "d.yaml")


def test_reward_scheme_true_as_yaml_reads_it() -> None:
    """YAML reads `true` as a boolean; the documented value must still mean the true reward."""
    assert load_config("default", ["env.reward_scheme=true"]).env.reward_scheme == "true"
    assert load_config("oracle").env.reward_scheme == "true"
    with pytest.raises(ConfigError, match=r"env\.reward_scheme"):
        load_config("default", ["env.reward_scheme=false"])


@pytest.mark.parametrize(
    "override,message",
    [
        ("eval.steering=select=diamnd", r"eval.steering: unknown expert 'diamnd' \(did you mean 'diamond'\?\)"),
        ("eval.steering=diamond", "steering mode must be 'unsteered', 'select=EXPERT' or 'ablate=EXPERT"),
        ("eval.steering=ablate=diamond,ghost", "cannot ablate every expert"),
        ("early_stopping.metric=best", "early_stopping.metric"),
        ("ppo.learning_rate=.inf", "ppo.learning_rate"),
        ("ppo.clip_range=.nan", "ppo.clip_range"),
        ("threads=0", "threads"),
        (
            "ppo.learning_rate=lin_3e-4x",
            r"config key 'ppo.learning_rate': must be a positive number, or lin_<positive number> for a linear schedule "
            r"down to 0 \(got 'lin_3e-4x'\)$",
        ),
        ("ppo.learning_rate=lin_0", "ppo.learning_rate': must be a positive number"),
        ("ppo.clip_range=-0.2", "ppo.clip_range': must be a positive number"),
        ("ppo.clip_range=true", "ppo.clip_range': must be a positive number"),
    ],
    ids=[
        "steer-expert",
        "steer-form",
        "steer-all",
        "stop-metric",
        "lr-inf",
        "clip-nan",
        "threads",
        "lin-typo",
        "lin-zero",
        "clip-negative",
        "clip-bool",
    ],
)
def test_new_keys_are_checked(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("default", [override])


def test_learning_rate_and_clip_range_take_rl_zoo3_linear_schedules() -> None:
    config = load_config("default", ["ppo.learning_rate=lin_3e-4", "ppo.clip_range=0.1"])
    assert config.ppo.learning_rate == "lin_0.0003" and config.ppo.clip_range == 0.1
    kwargs = config.ppo.sb3_kwargs()
    assert kwargs["clip_range"] == 0.1 and "device" not in kwargs
    assert [kwargs["learning_rate"](p) for p in (1.0, 0.5, 0.0, -0.01)] == pytest.approx([3e-4, 1.5e-4, 0.0, 0.0])


def test_linear_schedules_can_hold_their_start_for_a_fraction_of_the_run() -> None:
    import cloudpickle

    config = load_config("default", ["ppo.learning_rate=lin_3e-4", "ppo.clip_range=lin_0.2", "ppo.anneal_from=0.6"])
    kwargs = config.ppo.sb3_kwargs()
    assert "anneal_from" not in kwargs
    lr = cloudpickle.loads(cloudpickle.dumps(kwargs["learning_rate"]))  # as SB3 saves it with the model
    progress = (1.0, 0.7, 0.4, 0.3, 0.2, 0.0, -0.01)  # progress_remaining: 0.6 of the run done at 0.4
    assert [lr(p) for p in progress] == pytest.approx([3e-4, 3e-4, 3e-4, 2.25e-4, 1.5e-4, 0.0, 0.0])
    assert kwargs["clip_range"](0.2) == pytest.approx(0.1)
    assert load_config("default", ["ppo.anneal_from=0.6"]).ppo.sb3_kwargs()["learning_rate"] == 3e-4  # numbers stay
    for bad in ("1.0", "-0.1"):
        with pytest.raises(ConfigError, match=r"ppo.anneal_from"):
            load_config("default", [f"ppo.anneal_from={bad}"])


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1"])
def test_ppo_device_accepts_the_documented_names(device: str) -> None:
    assert load_config("default", [f"ppo.device={device}"]).ppo.device == device


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "CPU", "cuda0"])
def test_ppo_device_rejects_other_names(device: str) -> None:
    with pytest.raises(ConfigError, match="device must be auto, cpu, cuda or cuda:N"):
        load_config("default", [f"ppo.device={device}"])


def test_a_cuda_device_that_is_not_there_is_a_one_line_error() -> None:
    import torch as th

    from routed_rl.training import build_model, training_device

    config = load_config("default", ["ppo.device=cuda:7", "env.n_envs=8", "ppo.batch_size=64"])
    if th.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    with pytest.raises(UserError, match=r"ppo.device cuda:7: this machine has \d+ CUDA device"):
        build_model(config)
    assert training_device(load_config("default", ["ppo.device=cpu"])) == "cpu"
    model = build_model(load_config("default", ["ppo.device=auto", "env.n_envs=8", "ppo.batch_size=64"]))
    assert model.device.type == ("cuda" if th.cuda.is_available() else "cpu")
