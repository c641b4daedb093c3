"""Sweeps: the sweep file's checks, tiny trials through the local pool and a local Ray instance, skip / resume /
failure handling, and the report's statistics on a synthetic sweep folder with known answers."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch as th
import yaml

from routed_rl.cli import _optional_ray_address
from routed_rl.config import load_config
from routed_rl.errors import UserError
from routed_rl.runs import RunDir
from routed_rl.sweeps import load_sweep
from routed_rl.sweeps.report import collect_rows, interval, write_report
from routed_rl.sweeps.runner import (
    RunningTrial,
    SweepProgress,
    _record_result,
    code_version,
    finished_since,
    prepare,
    trial_status,
)
from routed_rl.sweeps.spec import RESULT_NEUTRAL_SECTIONS

from clirun import cli, cli_here

TINY = {
    "env.n_envs": 16,
    "ppo.batch_size": 128,
    "policy.expert_arch": [32, 32],
    "policy.value_arch": [32],
    "logging.checkpoint_every": 512,
    "logging.eval_every": 100000,
    "eval.episodes": 50,
    "logging.tensorboard": False,
    "logging.figures": False,
    "routing.label_replay": 2,  # 8 rollouts of labels at 50% oversight would make each update ~5x the work
}


def write_sweep(folder: Path, **changes: Any) -> Path:
    data = {"methods": ["default", "naive"], "oversight_probs": [0.5], "seeds": [0], "total_steps": 1024, "overrides": TINY}
    data.update(changes)
    path = folder / "sweep.yml"
    path.write_text(yaml.safe_dump(data))
    return path


# -- the sweep file ----------------------------------------------------------------------------------------


def test_builtin_sweeps_load_and_have_the_documented_grids() -> None:
    sizes = {}
    for name in ("quick", "standard", "paper"):
        spec, trials, loaded = load_sweep(name)
        assert loaded == name
        sizes[name] = len(trials)
    assert sizes == {"quick": 12, "standard": 45, "paper": 150}
    spec, trials, _ = load_sweep("standard")
    assert spec.oversight_probs == [0.01, 0.03, 0.1] and spec.total_steps == 5_000_000 == load_config("default").total_steps
    assert trials[0].name == "default__p0.01__s0"


def test_trial_config_is_the_method_with_the_grid_point_applied(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, axes={"ppo.learning_rate": [1e-4, 3e-4]}, seeds=[3])
    spec, trials, _ = load_sweep(path, ["threads=2", "ppo.n_epochs=7"])
    assert len(trials) == 4
    trial = next(t for t in trials if t.method == "naive" and dict(t.axes)["ppo.learning_rate"] == 1e-4)
    assert trial.name == "naive__p0.5__ppo.learning_rate=0.0001__s3"
    config = spec.trial_config(trial)
    tiny = [f"{k}={json.dumps(v)}" for k, v in TINY.items()]  # the sweep file's overrides
    expected = load_config("naive", [*tiny, "env.oversight_prob=0.5", "seed=3", "total_steps=1024", "threads=2"])
    assert config.env.oversight_prob == 0.5 and config.seed == 3 and config.threads == 2
    assert config.ppo.learning_rate == 1e-4 and config.ppo.n_epochs == 7  # an axis and a --set config key
    assert config.routing == expected.routing and config.eval.steering == expected.eval.steering  # the method's own


def test_sweep_step_counts_may_be_written_with_an_exponent() -> None:
    spec, trials, _ = load_sweep("standard", ["total_steps=3e5"])
    assert spec.total_steps == 300_000 and spec.trial_config(trials[0]).total_steps == 300_000


def test_a_method_given_as_a_yaml_file_is_found_next_to_the_sweep(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text("base: default\nppo:\n  n_epochs: 2\n")
    spec, trials, _ = load_sweep(write_sweep(tmp_path, methods=["mine.yaml", "naive"]))
    assert trials[0].method == "mine" and trials[0].name == "mine__p0.5__s0"
    assert spec.trial_config(trials[0]).ppo.n_epochs == 2


def test_a_trial_counts_as_finished_only_with_an_evaluation_written_in_its_stretch(tmp_path: Path) -> None:
    """An extended trial stopped midway keeps the model and evaluation of its earlier, shorter run: those do
    not make it done."""
    run = RunDir(tmp_path / "trial")
    run.root.mkdir()
    assert not finished_since(run, 0.0)
    run.model.write_bytes(b"model")
    run.eval.write_text("[]")
    written = run.eval.stat().st_mtime
    assert finished_since(run, written)  # written in this stretch
    assert not finished_since(run, written + 60.0)  # from an earlier stretch
    os.utime(run.eval, (written + 120.0, written + 120.0))  # written again when the extension finished
    assert finished_since(run, written + 60.0)


BENCHMARK_SWEEPS = sorted(
    p
    for p in (Path(__file__).parents[1] / "benchmarks").glob("*/*.yaml")
    if "methods" in (yaml.safe_load(p.read_text()) or {})
)


@pytest.mark.parametrize("path", BENCHMARK_SWEEPS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_benchmark_sweep_file_loads_and_builds_its_trials(path: Path) -> None:
    spec, trials, _ = load_sweep(path)
    for trial in trials:
        config = spec.trial_config(trial)
        assert config.env.oversight_prob == trial.oversight_prob and config.seed == trial.seed


@pytest.mark.parametrize(
    ("changes", "sets", "message"),
    [
        ({"methods": ["defualt"]}, [], "unknown method 'defualt' (did you mean 'default'?)"),
        ({"methods": []}, [], "sweep key 'methods'"),
        ({"seeds": []}, [], "sweep key 'seeds'"),
        ({"oversight_probs": [0.01, 1.5]}, [], "oversight levels must be probabilities in [0, 1], got 1.5"),
        ({"seeds": [0, 0]}, [], "seeds lists 0 twice"),
        ({"sedes": [0]}, [], "unknown sweep key 'sedes' (did you mean 'seeds'?)"),
        ({"axes": {"ppo.learning_rate": []}}, [], "axis 'ppo.learning_rate' has no values"),
        ({}, ["ppo.learning_rat=0.1"], "unknown config key 'ppo.learning_rat'"),
        ({}, ["total_steps=0"], "sweep key 'total_steps'"),
        ({"overrides": {"ppo.gamma": 2}}, [], "trial default__p0.5__s0: config key 'ppo.gamma'"),
    ],
)
def test_bad_sweeps_are_one_line_errors(tmp_path: Path, changes: dict, sets: list[str], message: str) -> None:
    with pytest.raises(UserError) as err:
        load_sweep(write_sweep(tmp_path, **changes), sets)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_sweep_cli_bad_input_exits_2_with_one_line(tmp_path: Path) -> None:
    for args, message in (
        (["sweep", "stanard"], "error: sweep 'stanard' is neither a file nor a built-in sweep (did you mean 'standard'?)"),
        (["sweep", "quick", "--set", "oversight_probs=[-0.1]"], "error: sweep key 'oversight_probs'"),
        (["sweep", "quick", "--workers", "999"], "oversubscribes"),
        (["report", str(tmp_path)], "error: "),
    ):
        out = ["--out", str(tmp_path / "o")] if args[0] == "sweep" else []
        result = cli_here(*args, *out, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_ray_flag_takes_an_optional_address() -> None:
    assert _optional_ray_address(["sweep", "quick", "--ray"]) == ["sweep", "quick", "--ray", "local"]
    assert _optional_ray_address(["sweep", "--ray", "quick"]) == ["sweep", "--ray", "local", "quick"]
    assert _optional_ray_address(["sweep", "quick", "--ray", "--workers", "2"])[3] == "local"
    assert _optional_ray_address(["sweep", "quick", "--ray", "auto"]) == ["sweep", "quick", "--ray", "auto"]
    assert _optional_ray_address(["sweep", "quick", "--ray", "ray://h:10001"])[3] == "ray://h:10001"


def test_ray_missing_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from routed_rl.sweeps import ray_backend

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(UserError, match=r"pip install 'routed-rl\[ray\]'"):
        ray_backend._import_ray()


def test_logging_never_changes_what_a_run_learns(tmp_path: Path) -> None:
    """Why a finished trial may differ from the sweep in the `logging` section and still count as the same."""
    assert RESULT_NEUTRAL_SECTIONS == ("logging",)
    fast = [f"{k}={json.dumps(v)}" for k, v in TINY.items() if not k.startswith("logging.")]
    for name, logging in (("a", ["logging.tensorboard=true", "logging.eval_every=512", "logging.eval_episodes=10"]),
                          ("b", ["logging.tensorboard=false", "logging.checkpoint_every=100000"])):  # fmt: skip
        sets = [a for s in [*fast, *logging, "threads=1"] for a in ("--set", s)]
        result = cli_here("train", "default", *sets, "--total-steps", "2048", "--run-dir", name, "-q", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    a, b = (RunDir(tmp_path / n).load_model().policy.state_dict() for n in "ab")
    assert all(th.equal(a[k], b[k]) for k in a)


# -- running trials ----------------------------------------------------------------------------------------


def test_local_pool_runs_trials_as_run_folders_and_a_rerun_skips_them(tmp_path: Path) -> None:
    path = write_sweep(tmp_path)
    result = cli("sweep", str(path), "--out", "sw", "--workers", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "2 trials (0 done already)" in result.stdout and "[2/2 done, 0 running, 0 failed]" in result.stdout
    out = tmp_path / "sw"
    for name in ("default__p0.5__s0", "naive__p0.5__s0"):
        run = RunDir(out / name)
        assert trial_status(run.root) == "done" and run.model.is_file() and run.eval.is_file()
        record = json.loads((run.root / "trial.json").read_text())
        assert record["status"] == "done" and record["sessions"][0]["torch"] == th.__version__
        assert record["sessions"][0]["code"] == code_version()
        assert run.load_model().num_timesteps == 1024
    assert cli_here("eval", "sw/naive__p0.5__s0", "--select", "diamond", "--episodes", "20", cwd=tmp_path).returncode == 0
    stamp = (out / "default__p0.5__s0" / "model.zip").stat().st_mtime_ns
    again = cli_here("sweep", str(path), "--out", "sw", cwd=tmp_path)
    assert again.returncode == 0 and "2 trials (2 done already)" in again.stdout
    assert (out / "default__p0.5__s0" / "model.zip").stat().st_mtime_ns == stamp
    # more seeds: only the new trials run; other settings in the same folder: refused, nothing touched
    more = cli_here("sweep", str(path), "--out", "sw", "--set", "seeds=[0, 1]", cwd=tmp_path)
    assert more.returncode == 0 and "4 trials (2 done already)" in more.stdout
    changed = cli_here("sweep", str(path), "--out", "sw", "--set", "ppo.n_epochs=1", cwd=tmp_path)
    assert changed.returncode == 2 and "was trained with other settings" in changed.stderr
    assert "ppo.n_epochs: 4 there, 1 here" in changed.stderr
    report = cli_here("report", "sw", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 4 * 5  # trials x evaluated steering modes


def test_a_longer_sweep_extends_its_finished_trials_from_their_checkpoints(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, methods=["naive"])
    assert cli_here("sweep", str(path), "--out", "sw", cwd=tmp_path).returncode == 0
    run = RunDir(tmp_path / "sw" / "naive__p0.5__s0")
    assert trial_status(run.root, 1024) == "done" and trial_status(run.root, 2048) == "interrupted"
    longer = cli_here("sweep", str(path), "--out", "sw", "--set", "total_steps=2048", cwd=tmp_path)
    assert longer.returncode == 0, longer.stderr
    assert "1 trials (0 done already)" in longer.stdout and "[1/1 done, 0 running, 0 failed]" in longer.stdout
    assert run.load_model().num_timesteps == 2048 and run.load_config().total_steps == 2048
    assert "--resume" in run.command.read_text().splitlines()[-1]
    record = json.loads((run.root / "trial.json").read_text())
    assert record["total_steps"] == 2048 and [s["status"] for s in record["sessions"]] == ["done", "done"]
    shorter = cli_here("sweep", str(path), "--out", "sw", cwd=tmp_path)  # 1024 steps: the folder holds a longer run
    assert shorter.returncode == 2 and "total_steps: 2048 there, 1024 here" in shorter.stderr


def test_a_failing_trial_is_recorded_and_the_others_go_on(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("base: default\nlabeling:\n  kind: user_labelers:BrokenLabeler\n")
    path = write_sweep(tmp_path, methods=["broken.yaml", "naive"])
    result = cli("sweep", str(path), "--out", "sw", cwd=tmp_path)  # the trials can import this folder's labelers
    assert result.returncode == 1
    assert "broken__p0.5__s0: FAILED: RuntimeError: a bug in the labeler" in result.stdout
    assert "1 trial failed" in result.stderr
    assert trial_status(tmp_path / "sw" / "naive__p0.5__s0") == "done"
    record = json.loads((tmp_path / "sw" / "broken__p0.5__s0" / "trial.json").read_text())
    assert record["status"] == "failed" and "a bug in the labeler" in record["error"]


def test_an_interrupted_sweep_checkpoints_and_resumes(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, methods=["default"], total_steps=40_960)
    exe = Path(sys.executable).with_name("routed-rl")
    proc = subprocess.Popen([str(exe), "sweep", str(path), "--out", "sw"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    run = RunDir(tmp_path / "sw" / "default__p0.5__s0")
    deadline = time.time() + 120
    while run.latest_checkpoint() is None and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "interrupted (rerun to resume)" in out and "stopped: rerun the same command to resume" in out
    assert trial_status(run.root) == "interrupted" and not run.model.exists()
    stopped = int(run.latest_checkpoint().stem.split("_")[1])  # type: ignore[union-attr]
    assert 0 < stopped < 40_960
    result = cli_here("sweep", str(path), "--out", "sw", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert trial_status(run.root) == "done" and run.load_model().num_timesteps == 40_960
    sessions = json.loads((run.root / "trial.json").read_text())["sessions"]
    assert [s["status"] for s in sessions] == ["interrupted", "done"]
    assert "--resume" in run.command.read_text().splitlines()[-1]


def test_ray_runs_trials_into_the_sweep_folder(tmp_path: Path) -> None:
    """A local Ray instance (the dev extra installs Ray): about 40 s on 2 cores, so it stays in `make test`."""
    path = write_sweep(tmp_path)
    result = cli("sweep", str(path), "--out", "sw", "--ray", cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "on Ray (local)" in result.stdout and "[2/2 done, 0 running, 0 failed]" in result.stdout
    for name in ("default__p0.5__s0", "naive__p0.5__s0"):
        run = RunDir(tmp_path / "sw" / name)
        assert trial_status(run.root) == "done" and run.load_model().num_timesteps == 1024
    again = cli("sweep", str(path), "--out", "sw", "--ray", cwd=tmp_path, timeout=600)
    assert again.returncode == 0 and "2 trials (2 done already)" in again.stdout


# -- the report --------------------------------------------------------------------------------------------


def _fake_trial(out: Path, method: str, prob: float, seed: int, ret: float, ghost: float) -> None:
    """A finished trial folder with a known evaluation (no training)."""
    name = f"{method}__p{prob:g}__s{seed}"
    run = RunDir(out / name)
    config = load_config(method, [f"env.oversight_prob={prob}", f"seed={seed}", "total_steps=1000"])
    run.write_config(config, "test")
    run.model.write_bytes(b"")
    run.labels.write_text('{"step": 1}\n' * (seed + 1))
    deployed = config.eval.steering if config.eval.steering != "unsteered" else "unsteered"
    result = {"mode": deployed, "episodes": 100, "diamond": 1 - ghost, "ghost": ghost, "timeout": 0.0,
              "discounted_return": ret, "mean_length": 5.0, "gaming_gap": 0.1,
              "overseen": {"episodes": 10.0, "diamond": 1.0, "ghost": 0.0, "timeout": 0.0},
              "unseen": {"episodes": 90.0, "diamond": 1 - ghost, "ghost": ghost, "timeout": 0.0}}  # fmt: skip
    other = {**result, "mode": "select=ghost", "discounted_return": -1.0}
    run.eval.write_text(json.dumps([result, other]))
    record = {"trial": name, "method": method, "oversight_prob": prob, "seed": seed, "axes": {}, "total_steps": 1000,
              "status": "done", "wall_s": 10.0}  # fmt: skip
    (run.root / "trial.json").write_text(json.dumps(record))


def test_report_on_a_synthetic_sweep_gives_known_means_and_intervals(tmp_path: Path) -> None:
    out = tmp_path / "sw"
    out.mkdir()
    spec = {"name": "synthetic", "methods": ["default", "naive"], "total_steps": 1000}
    (out / "sweep.yaml").write_text(yaml.safe_dump(spec))
    for seed, ret in enumerate([0.0, 0.0, 1.0]):  # default at 1%: mean 1/3
        _fake_trial(out, "default", 0.01, seed, ret, ghost=0.1 * seed)
    for seed in range(3):
        _fake_trial(out, "naive", 0.01, seed, -0.5, ghost=0.5)
        _fake_trial(out, "default", 0.1, seed, 0.9, ghost=0.0)
        _fake_trial(out, "naive", 0.1, seed, 0.1, ghost=0.3)
    paths = write_report(out)
    assert [p.name for p in paths] == ["results.csv", "report.md", "return_vs_oversight.png", "gaming_gap.png"]
    assert all(p.stat().st_size > 0 for p in paths)
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 12 * 2
    deployed = [r for r in rows if r["deployed"] == "True"]
    assert {r["mode"] for r in deployed if r["method"] == "default"} == {"select=diamond"}
    assert {r["labels_spent"] for r in deployed if r["seed"] == "2"} == {"3"}
    # the bootstrap of the mean of {0, 0, 1}: it reaches 1 with probability 1/27 > 2.5%, never goes below 0
    text = (out / "report.md").read_text()
    assert "| 1.0% | default (select=diamond) | 3 | **0.333 [0.000, 1.000]** |" in text
    assert "| 10.0% | default (select=diamond) | 3 | **0.900 [0.900, 0.900]** |" in text
    assert "ghost seen / unseen" in text and "| 0.0% / 10.0% |" in text  # seed mean of 0, 0.1, 0.2 unseen
    assert "10.0%: default (select=diamond) 0.900 [0.900, 0.900] vs naive (unsteered) 0.100 [0.100, 0.100]: **above" in text
    assert "1.0%: default (select=diamond) 0.333 [0.000, 1.000] vs naive (unsteered) -0.500 [-0.500, -0.500]: **above" in text


def test_a_finished_trial_whose_model_stayed_where_it_ran_counts_as_done(tmp_path: Path) -> None:
    out = tmp_path / "sw"
    out.mkdir()
    (out / "sweep.yaml").write_text(yaml.safe_dump({"name": "away", "methods": ["default"], "total_steps": 1000}))
    for seed in range(2):
        _fake_trial(out, "default", 0.01, seed, 0.5, ghost=0.1)
    (out / "default__p0.01__s1" / "model.zip").unlink()  # evaluated, model left behind
    _fake_trial(out, "default", 0.01, 2, 0.9, ghost=0.0)
    (out / "default__p0.01__s2" / "eval.json").unlink()  # not evaluated: left out
    assert trial_status(out / "default__p0.01__s1") == "done"  # a rerun skips it instead of retraining over it
    rows, _ = collect_rows(out)
    assert sorted({r["seed"] for r in rows}) == [0, 1]


def test_report_does_not_compare_single_seeds(tmp_path: Path) -> None:
    out = tmp_path / "sw"
    out.mkdir()
    (out / "sweep.yaml").write_text(yaml.safe_dump({"name": "one", "methods": ["default", "naive"], "total_steps": 1000}))
    _fake_trial(out, "default", 0.01, 0, 0.9, ghost=0.0)
    for seed in range(2):
        _fake_trial(out, "naive", 0.01, seed, 0.1, ghost=0.3)
    write_report(out)
    assert "**one seed: no interval to compare**" in (out / "report.md").read_text()


def _sweep_folder(folder: Path, trials: list[tuple[str, int, float]]) -> Path:
    """A synthetic sweep folder holding the given (method, seed, return) trials at 1% oversight."""
    folder.mkdir()
    spec = {"name": "pieces", "methods": ["default", "naive"], "total_steps": 1000}
    (folder / "sweep.yaml").write_text(yaml.safe_dump(spec))
    for method, seed, ret in trials:
        _fake_trial(folder, method, 0.01, seed, ret, ghost=0.05 * seed)
    return folder


def test_a_sweep_run_in_pieces_reports_as_one(tmp_path: Path) -> None:
    trials = [(m, seed, ret + 0.1 * seed) for m, ret in (("default", 0.5), ("naive", 0.2)) for seed in range(5)]
    whole = _sweep_folder(tmp_path / "whole", trials)
    write_report(whole)
    part = _sweep_folder(tmp_path / "part", [t for t in trials if t[1] in (0, 1)])
    other = _sweep_folder(tmp_path / "other", [t for t in trials if t[1] == 2])
    gone = _sweep_folder(tmp_path / "gone", [t for t in trials if t[1] in (3, 4)])
    write_report(gone)
    for trial in [p for p in gone.iterdir() if p.is_dir()]:  # its trial folders cleaned up: its results.csv remains
        for file in sorted(trial.rglob("*"), reverse=True):
            file.unlink() if file.is_file() else file.rmdir()
        trial.rmdir()
    write_report(part, [other, gone / "results.csv"])
    assert (part / "report.md").read_text() == (whole / "report.md").read_text()
    rows = sorted(csv.DictReader((part / "results.csv").open()), key=lambda r: r["trial"] + r["mode"])
    assert rows == sorted(csv.DictReader((whole / "results.csv").open()), key=lambda r: r["trial"] + r["mode"])
    # 5 seeds a group: the IQM of 0.5 + 0.1 * {0..4} is the middle three's mean
    assert "| 1.0% | default (select=diamond) | 5 | **0.700 [" in (part / "report.md").read_text()


def test_joining_a_trial_twice_or_a_file_that_is_not_a_report_is_a_one_line_error(tmp_path: Path) -> None:
    one = _sweep_folder(tmp_path / "one", [("default", 0, 0.5), ("default", 1, 0.6)])
    two = _sweep_folder(tmp_path / "two", [("default", 1, 0.6)])
    write_report(two)
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    broken = tmp_path / "broken.csv"
    lines = (two / "results.csv").read_text().splitlines()
    broken.write_text("\n".join([lines[0], lines[1].replace("default__p0.01__s1", "other").replace(",0.6", ",six")]) + "\n")
    for include, message in (
        ([two], "trial default__p0.01__s1 is in both"),
        ([two / "results.csv"], "trial default__p0.01__s1 is in both"),
        ([bad], "is not a results.csv written by `routed-rl report`"),
        ([tmp_path / "missing.csv"], "does not exist"),
        ([broken], "broken.csv, line 2: not a row `routed-rl report` wrote"),
    ):
        with pytest.raises(UserError) as err:
            write_report(one, include)
        assert message in str(err.value) and "\n" not in str(err.value)
    result = cli_here("report", str(one), "--include", str(bad), cwd=tmp_path)
    assert result.returncode == 2 and "is not a results.csv" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_interval_uses_the_iqm_with_enough_seeds() -> None:
    assert interval([0, 1, 2, 3, 100], iqm=True).point == pytest.approx(2.0)  # the middle half: 1, 2, 3
    assert interval([0, 1, 2, 3, 100]).point == pytest.approx(21.2)
    single = interval([0.5])
    assert (single.point, single.low, single.high, single.text()) == (0.5, 0.5, 0.5, "0.500 (1 seed)")
    spread = interval(list(np.linspace(0, 1, 20)))
    assert spread.low < 0.5 < spread.high and spread.high - spread.low < 0.4


def test_interval_is_the_same_whatever_numpys_global_generator_holds() -> None:
    # rliable resamples with numpy's global generator: five seeds (the IQM) gave other intervals run to run
    values = [0.5, 0.6, 0.7, 0.8, 0.9]
    np.random.seed(1)
    first = interval(values, iqm=True)
    after = np.random.random()
    draws = set()
    for state in range(8):
        np.random.seed(state)
        draws.add(interval(values, iqm=True))
    assert draws == {first}
    np.random.seed(1)
    interval(values, iqm=True)
    assert np.random.random() == after  # the caller's draws are left as they were


def test_learning_curves_read_the_periodic_evaluations_back_from_tensorboard(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    out = tmp_path / "sw"
    out.mkdir()
    (out / "sweep.yaml").write_text(yaml.safe_dump({"name": "curves", "methods": ["default"], "total_steps": 1000}))
    for seed, (first, second) in enumerate([(0.2, 0.6), (0.4, 0.8)]):
        _fake_trial(out, "default", 0.01, seed, 0.5, ghost=0.1)
        run = RunDir(out / f"default__p0.01__s{seed}")
        config = load_config(run.load_config().model_dump(mode="json"), ["logging.eval_every=500", "logging.eval_episodes=50"])
        run.write_config(config, "test")
        writer = SummaryWriter(str(run.tensorboard / "routed_ppo_1"))
        for step, diamond in ((512 + seed * 8, first), (1024 + seed * 8, second)):  # steps land past eval_every's multiples
            for key, value in (("diamond", diamond), ("ghost", 1 - diamond), ("timeout", 0.0), ("discounted_return", 0.0)):
                writer.add_scalar(f"eval/select=diamond/{key}", value, step)
        writer.close()
    paths = write_report(out)
    assert [p.name for p in paths][-2:] == ["curves.csv", "learning_curves.png"]
    rows = list(csv.DictReader((out / "curves.csv").open()))
    assert len(rows) == 4 and {r["round"] for r in rows} == {"1", "2"}
    text = (out / "report.md").read_text()
    assert "| default (select=diamond) | 1.0% | 30% / 70% | 70% / 30% |" in text  # means over the two seeds
    # an earlier report's results.csv brings the curves.csv beside it; without one, the report says so
    later = tmp_path / "later"
    later.mkdir()
    (later / "sweep.yaml").write_text((out / "sweep.yaml").read_text())
    _fake_trial(later, "default", 0.01, 2, 0.5, ghost=0.1)
    write_report(later, [out / "results.csv"])
    assert list(csv.DictReader((later / "curves.csv").open())) == rows
    assert "30% / 70% | 70% / 30% |" in (later / "report.md").read_text()
    assert "Only the trials whose folders" not in (later / "report.md").read_text()
    (out / "curves.csv").write_text("trial,step\nx,1\n")
    with pytest.raises(UserError, match=r"curves.csv is not a curves.csv of this task written by `routed-rl report`"):
        write_report(later, [out / "results.csv"])


def test_a_sweep_into_a_folder_joins_the_folders_sweep_file(tmp_path: Path) -> None:
    first = write_sweep(tmp_path, methods=["default", "naive"], seeds=[0])
    spec, trials, name = load_sweep(first)
    prepare(spec, trials, tmp_path / "sw", name)
    other = tmp_path / "other"
    other.mkdir()
    (other / "naive.yaml").write_text("base: naive\n")
    second = write_sweep(other, methods=["oracle", "naive.yaml"], oversight_probs=[0.1], seeds=[2], total_steps=2048)
    spec, trials, _ = load_sweep(second)
    prepare(spec, trials, tmp_path / "sw", "second")
    data = yaml.safe_load((tmp_path / "sw" / "sweep.yaml").read_text())
    # the first sweep's name and methods first (the report compares with the first); one entry per method label
    assert data["name"] == "sweep" and data["methods"] == ["default", "naive", "oracle"]
    assert data["oversight_probs"] == [0.1, 0.5] and data["seeds"] == [0, 2] and data["total_steps"] == 2048
    (tmp_path / "sw" / "sweep.yaml").write_text("methods: [default\n")
    with pytest.raises(UserError, match=r"sweep\.yaml is not valid YAML: fix or remove it"):
        prepare(spec, trials, tmp_path / "sw", "second")


def test_seed_table_gives_the_mean_over_the_files_of_each_row(tmp_path: Path) -> None:
    """benchmarks/seed_table.py (figures benchmarks/README.md assembles from runs outside one sweep): known means, the
    report's interval, the mode asked for, and one-line errors."""

    def result(mode: str, ret: float, diamond: float) -> dict[str, Any]:
        rates = {"diamond": diamond, "ghost": 1 - diamond, "timeout": 0.0}
        return {"mode": mode, "discounted_return": ret, **rates, "unseen": rates}

    for seed, (ret, diamond) in enumerate([(0.2, 0.5), (0.4, 0.7)]):
        files = [result("unsteered", -1.0, 0.0), result("select=diamond", ret, diamond)]
        (tmp_path / f"r_s{seed}.json").write_text(json.dumps(files))
    script = [sys.executable, str(Path(__file__).parents[1] / "benchmarks" / "seed_table.py")]
    out = subprocess.run(
        [*script, "--row", "r", "select=diamond", str(tmp_path / "r_s*.json")], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    row = out.stdout.splitlines()[2]
    iv = interval([0.2, 0.4]).text()
    assert row.startswith(f"| r (select=diamond) | 2 | {iv} | 60.0% [") and iv.startswith("0.300 [")
    assert row.endswith("| 0.200, 0.400 |")
    one = subprocess.run([*script, "--row", "r", "unsteered", str(tmp_path / "r_s0.json")], capture_output=True, text=True)
    assert "| r (unsteered) | 1 | -1.000 (1 seed) | 0.0% (1 seed) |" in one.stdout
    for row_args, message in (
        (["select=x", str(tmp_path / "r_s0.json")], "has no mode 'select=x'"),
        (["unsteered", "none*"], "no file matches"),
    ):
        bad = subprocess.run([*script, "--row", "r", *row_args], capture_output=True, text=True)
        assert bad.returncode == 2 and bad.stderr.startswith("error: ") and message in bad.stderr and bad.stdout == ""


def test_code_version_is_the_git_commit_of_the_source_or_none() -> None:
    root = Path(__file__).parents[1]
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        assert code_version() is None  # not a git checkout
    else:
        assert (code_version() or "").removesuffix("+dirty") == head.stdout.strip()


def test_eta_shares_the_queue_among_the_workers() -> None:
    # 4 trials, 2 workers: the first took 100 s and its neighbour has run as long, so both queued trials start now
    # side by side and the sweep ends in 100 s (not 3 x 100 s, the time per finished trial times the trials left)
    progress = SweepProgress(total=4, done=1, started=0.0, workers=2, durations=[100.0], in_flight={"s3": RunningTrial(0.0)})
    assert progress.eta_s(now=100.0) == 100.0
    # one worker: the running trial needs 40 s more, then the two queued ones 100 s each
    progress.workers, progress.in_flight = 1, {"s3": RunningTrial(60.0)}
    assert progress.eta_s(now=120.0) == 240.0
    # more workers than trials left: the last one's own duration, however many workers idle
    progress = SweepProgress(total=2, done=1, started=0.0, workers=8, durations=[100.0])
    assert progress.eta_s(now=100.0) == 100.0
    # nothing finished yet: no estimate; on Ray (workers unknown): time per finished trial times trials left
    assert SweepProgress(total=3, workers=2).eta_s(now=5.0) is None
    assert SweepProgress(total=4, done=2, started=0.0, durations=[50.0, 50.0]).eta_s(now=100.0) == 100.0


def test_sweep_progress_times_each_trial_from_its_start() -> None:
    lines: list[str] = []
    progress = SweepProgress(total=2, out=lines.append, workers=1)
    progress.trial_started("a")
    assert lines == ["a: started  [0/2 done, 1 running, 0 failed]"]
    _record_result(progress, {"trial": "a", "status": "done", "wall_s": 0.0})
    assert progress.running == 0 and progress.in_flight == {} and len(progress.durations) == 1
    assert lines[-1].startswith("a: done in 0 s  [1/2 done, 0 running, 0 failed, ETA ")


def test_eta_leaves_out_trials_that_went_on_from_a_checkpoint() -> None:
    # a resumed trial trains only what was left: its short duration would make the queued trials look short
    lines: list[str] = []
    progress = SweepProgress(total=3, out=lines.append, workers=1)
    progress.trial_started("a", resumed=True)
    assert lines == ["a: resumed  [0/3 done, 1 running, 0 failed]"]
    _record_result(progress, {"trial": "a", "status": "done", "wall_s": 1.0})
    assert progress.done == 1 and progress.durations == [] and progress.finished_this_run == 1
    assert progress.in_flight == {} and progress.eta_s(now=progress.started + 10.0) is None
    assert "ETA" not in lines[-1]
    # a trial from scratch then sets the mean: 100 s for the one left
    progress.trial_started("b")
    progress.trial_ended("b", done=True)
    progress.durations = [100.0]
    assert progress.eta_s(now=0.0) == 100.0
    # on Ray (workers unknown) every finished trial counts towards the time per trial
    ray = SweepProgress(total=4, done=2, started=0.0, durations=[50.0], resumed_finished=1)
    assert ray.eta_s(now=100.0) == 100.0
    # an interrupted or failed trial adds no duration, resumed or not
    progress.trial_started("c", resumed=True)
    progress.trial_ended("c", done=False)
    assert progress.durations == [100.0] and progress.resumed_finished == 1 and progress.in_flight == {}
