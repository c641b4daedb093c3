"""The routed-rl CLI in a temporary folder: a short run, interrupt and resume, export, and bad input (one line,
exit code 2, no traceback). What depends on the process (signals, exit codes, tracebacks, start-up) runs the
installed script as a subprocess; the rest calls its ``main`` in this process, which is the same code."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch as th

from routed_rl.agents import RoutedPPO
from routed_rl.config import builtin_configs, load_config
from routed_rl.runs import RunDir
from routed_rl.steering import mode_name, parse_mode

from clirun import cli, cli_here

FAST = [
    "--set", "env.n_envs=16",
    "--set", "ppo.batch_size=128",
    "--set", "policy.expert_arch=[32, 32]",
    "--set", "policy.value_arch=[32]",
    "--set", "logging.checkpoint_every=512",
    "--set", "logging.eval_every=1024",
    "--set", "logging.eval_episodes=20",
    "--set", "eval.episodes=50",
    "--set", "env.oversight_prob=0.5",
    "--set", "logging.figures=false",  # drawn and checked in the `trained` run only
]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("cli")
    figures = ["--set", "logging.figures=true"]
    result = cli(
        "train", "default", *FAST, *figures, "--total-steps", "2048", "--seed", "1", "--run-dir", "runs/p", "-q", cwd=cwd
    )
    assert result.returncode == 0, result.stderr
    return cwd


def test_train_writes_the_run_folder(trained: Path) -> None:
    run = RunDir(trained / "runs/p")
    for path in (run.config, run.command, run.model, run.eval, run.labels):
        assert path.is_file(), path
    assert "routed-rl train default" in run.command.read_text()
    assert run.load_config().seed == 1 and run.load_config().env.n_envs == 16
    assert sorted(p.name for p in run.checkpoints.iterdir())[-1] == "step_000000002048.zip"
    assert any(run.tensorboard.rglob("events.out.tfevents.*"))
    figures = {p.name for p in run.figures.iterdir()}
    assert {"policy_map_select_diamond.png", "gate_map_diamond.png", "episode_unsteered.gif"} <= figures
    modes = [r["mode"] for r in json.loads(run.eval.read_text())]
    assert modes == ["unsteered", "select=diamond", "select=ghost", "ablate=diamond", "ablate=ghost"]
    labels = [json.loads(line) for line in run.labels.read_text().splitlines()]
    assert labels and all(row["label"] in ("diamond", "ghost") and row["labeler"] == "oversight" for row in labels)
    assert all(0 <= row["env"] < 16 and 0 < row["step"] <= 2048 for row in labels)


def test_eval_and_export(trained: Path) -> None:
    result = cli_here("eval", "runs/p", "--select", "diamond", "--episodes", "30", "--json", cwd=trained)
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert row["mode"] == "select=diamond" and row["episodes"] == 30
    assert abs(row["diamond"] + row["ghost"] + row["timeout"] - 1) < 1e-9
    table = cli_here("eval", "runs/p", "--episodes", "20", cwd=trained)
    assert table.returncode == 0 and "ablate=ghost" in table.stdout

    result = cli_here("export", "runs/p", "--ablate", "ghost", "-o", "deploy", cwd=trained)
    assert result.returncode == 0, result.stderr
    from safetensors.torch import load_file

    from routed_rl.export import load_exported
    from routed_rl.runs import RunDir

    names = list(load_file(str(trained / "deploy/policy.safetensors")))
    assert names and not any("ghost" in n for n in names)
    deployed = load_exported(trained / "deploy")
    model = RunDir(trained / "runs/p").load_model()
    from routed_rl.envs import OversightGridVecEnv

    obs = OversightGridVecEnv(200, seed=4).reset()
    with model.policy.steer(ablate=["ghost"]):
        expected, _ = model.predict(obs, deterministic=True)
    assert np.array_equal(deployed.predict(obs), expected)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_then_resume(tmp_path: Path, sig: signal.Signals) -> None:
    exe = Path(sys.executable).with_name("routed-rl")
    args = [str(exe), "train", "default", *FAST, "--total-steps", "200000", "--run-dir", "runs/r", "-q"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = RunDir(tmp_path / "runs/r")
    deadline = time.time() + 120
    while run.latest_checkpoint() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert f"{sig.name}: stopped; checkpoint" in out and "resume with: routed-rl train --resume runs/r" in out
    assert "Traceback" not in err
    stopped = run.latest_checkpoint()
    assert stopped is not None and not run.model.exists()
    stopped_step = int(stopped.stem.split("_")[1])
    assert 0 < stopped_step < 200_000
    labels_before = len(run.labels.read_text().splitlines()) if run.labels.exists() else 0

    result = cli_here("train", "--resume", "runs/r", "--total-steps", str(stopped_step + 1024), "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    model = run.load_model()
    assert model.num_timesteps == stopped_step + 1024
    assert model.labeler.labels_spent >= labels_before
    assert len(run.labels.read_text().splitlines()) == model.labeler.labels_spent
    assert len(list(run.tensorboard.iterdir())) == 1  # TensorBoard carries on in the same run
    assert stopped_step % 512 == 0  # the cut rollout (16 envs x 32 steps) was forgotten, not half counted
    steps = [json.loads(line)["step"] for line in run.labels.read_text().splitlines()]
    assert steps == sorted(steps)


def _small_run(cwd: Path, steps: int = 2048, name: str = "runs/s") -> subprocess.CompletedProcess:
    return cli_here("train", "default", *FAST, "--total-steps", str(steps), "--run-dir", name, "-q", cwd=cwd)


def test_resume_with_no_steps_left_finishes_the_run(tmp_path: Path) -> None:
    """A finished run, and one whose model.zip is missing (stopped in its last rollout), resume cleanly."""
    assert _small_run(tmp_path, 1024).returncode == 0
    run = RunDir(tmp_path / "runs/s")
    written = run.config.stat().st_mtime_ns
    result = cli_here("train", "--resume", "runs/s", "-q", cwd=tmp_path)
    assert run.config.stat().st_mtime_ns == written  # a plain resume leaves the run's config as it is
    assert run.command.read_text().splitlines()[-1] == "routed-rl train --resume runs/s -q"
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and run.load_model().num_timesteps == 1024
    for path in (run.model, run.eval):
        path.unlink()
    result = cli_here("train", "--resume", "runs/s", "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert run.model.is_file() and run.eval.is_file() and run.load_model().num_timesteps == 1024


def test_a_moved_run_folder_resumes_logging_into_itself(tmp_path: Path) -> None:
    """A run folder shipped from elsewhere (a sweep trial back from Ray or another machine) keeps its
    TensorBoard events in the folder, not at the path where it was first trained."""
    assert _small_run(tmp_path, 1024, name="first/s").returncode == 0
    (tmp_path / "first" / "s").rename(tmp_path / "moved")
    (tmp_path / "first").rmdir()
    result = cli_here("train", "--resume", "moved", "--total-steps", "2048", "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "first").exists()
    events = sorted((tmp_path / "moved" / "tensorboard").rglob("events.out.tfevents.*"))
    assert len(events) == 2 and len({e.parent for e in events}) == 1  # the same TensorBoard run, continued


def test_resume_after_a_crash_trains_every_rollout_and_keeps_the_label_log_exact(tmp_path: Path) -> None:
    """kill -9 after a checkpoint: labels logged after it are dropped, the newest corrupt checkpoint and stale
    temporary files are passed over, and the resumed run ends at exactly its step count."""
    assert _small_run(tmp_path, 2048).returncode == 0
    run = RunDir(tmp_path / "runs/s")
    checkpoints = sorted(run.checkpoints.glob("step_*.zip"))
    assert [p.name for p in checkpoints][-2:] == ["step_000000001536.zip", "step_000000002048.zip"]
    model_at_1536 = RoutedPPO.load(checkpoints[-2])
    run.model.unlink()
    checkpoints[-1].write_bytes(b"half a zip")  # the crash hit the newest checkpoint
    (run.checkpoints / ".step_000000002560.tmp.zip").write_bytes(b"partial")
    result = cli_here("train", "--resume", "runs/s", "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "passed over a checkpoint" in result.stderr and "step_000000002048.zip" in result.stderr
    assert "dropped" in result.stderr and "label-log lines after step 1,536" in result.stderr
    assert not list(run.checkpoints.glob(".*.tmp.zip"))
    model = run.load_model()
    assert model.num_timesteps == 2048
    labels = [json.loads(line) for line in run.labels.read_text().splitlines()]
    assert len(labels) == model.labeler.labels_spent
    assert sum(row["step"] <= 1536 for row in labels) == model_at_1536.labeler.labels_spent


@pytest.mark.parametrize(("anneal_from", "at_half", "at_three_quarters"), [(0.0, 0.5, 0.25), (0.5, 1.0, 0.5)])
def test_linear_schedules_anneal_to_zero_at_the_run_end_and_carry_on_when_resumed(
    tmp_path: Path, anneal_from: float, at_half: float, at_three_quarters: float
) -> None:
    """``lin_<x>`` (rl-zoo3's form): update k of K trains at x (1 - k/K), or with ``ppo.anneal_from`` f at x
    until f of the run has passed and at x (1 - k/K) / (1 - f) after; a run resumed from a checkpoint carries
    on along the same line, not a new one over its remaining steps."""
    schedules = ["--set", "ppo.learning_rate=lin_1e-3", "--set", "ppo.clip_range=lin_0.2"]
    schedules += ["--set", f"ppo.anneal_from={anneal_from}"]
    args = ("train", "default", *FAST, *schedules, "--total-steps", "2048", "--run-dir", "runs/s", "-q")
    assert cli_here(*args, cwd=tmp_path).returncode == 0  # 4 rollouts of 512 steps
    run = RunDir(tmp_path / "runs/s")

    def lr(path: Path) -> float:
        return RoutedPPO.load(path).policy.optimizer.param_groups[0]["lr"]

    assert lr(run.checkpoints / "step_000000001024.zip") == pytest.approx(1e-3 * at_half)
    assert lr(run.model) == 0.0
    assert run.load_model().clip_range(0.25) == pytest.approx(0.2 * at_three_quarters)  # saved with the model
    for path in [run.model, *(p for p in run.checkpoints.glob("step_*.zip") if p.name > "step_000000001024.zip")]:
        path.unlink()
    assert cli_here("train", "--resume", "runs/s", "-q", cwd=tmp_path).returncode == 0
    assert lr(run.checkpoints / "step_000000001536.zip") == pytest.approx(1e-3 * at_three_quarters)
    assert lr(run.model) == 0.0 and run.load_model().num_timesteps == 2048


def test_eval_keeps_the_training_results_and_says_when_training_has_not_finished(tmp_path: Path) -> None:
    assert _small_run(tmp_path, 1024).returncode == 0
    run = RunDir(tmp_path / "runs/s")
    training_eval = run.eval.read_text()
    result = cli_here("eval", "runs/s", "--select", "diamond", "--episodes", "20", cwd=tmp_path)
    assert result.returncode == 0 and result.stderr == ""
    assert run.eval.read_text() == training_eval
    assert json.loads((run.root / "eval_select_diamond_20ep.json").read_text())[0]["episodes"] == 20
    (run.root / "eval_all_20ep.json").mkdir()  # where the results would go cannot be written
    result = cli_here("eval", "runs/s", "--episodes", "20", cwd=tmp_path)
    assert result.returncode == 0 and "ablate=ghost" in result.stdout  # printed before the write failed
    assert "warning: results not saved to" in result.stderr
    run.model.unlink()
    result = cli_here("eval", "runs/s", "--episodes", "20", cwd=tmp_path)
    assert result.returncode == 0
    assert "has no model.zip (training has not finished); using its checkpoint at step 1,024" in result.stderr


BAD_INPUTS = [
    (
        ["train", "default", "--set", "env.oversight_prb=0.1"],
        "unknown config key 'env.oversight_prb' (did you mean 'oversight_prob'?)",
    ),
    (["train", "default", "--set", "env.oversight_prob=1.5"], "env.oversight_prob must be a probability in [0, 1], got 1.5"),
    (["train", "default", "--set", "env.n_envs=0"], "config key 'env.n_envs'"),
    (["train", "default", "--set", "ppo.learning_rate=lin3e-4"], "config key 'ppo.learning_rate': must be a positive number"),
    (["train", "default", "--set", "routing.table={ghost: {ghots: 1.0}}"], "unknown expert 'ghots'"),
    (["train", "default", "--set", "labeling.kind=oracle"], "unknown labeler 'oracle'"),
    (["train", "default", "--set", "labeling.p=2"], "config key 'labeling.p'"),
    (["train", "no-such-config"], "neither a file nor a built-in config"),
    (["train", "broken.yaml"], "not valid YAML"),
    (["train", "default", "--set", "novalue"], "--set takes key.path=value"),
    (["train"], "train needs CONFIG"),
    (["train", "--resume", "missing"], "no config.yaml"),
    (["eval", "missing"], "no config.yaml"),
    (["eval", "norun"], "no model.zip and no checkpoint"),
    (["eval", "corrupt", "--select", "diamond"], "is corrupt"),
    (["eval", "truncated"], "cannot be loaded"),
    (["eval", "good", "--select", "diamnd"], "unknown expert 'diamnd' (did you mean 'diamond'?)"),
    (["eval", "good", "--select", "diamond", "--ablate", "ghost"], "either select (--select) or ablate (--ablate)"),
    (["export", "good", "--select", "diamond", "--ablate", "ghost", "-o", "out"], "either select (--select) or ablate"),
    (["eval", "good", "--ablate", "diamond", "--ablate", "diamond"], "ablate names an expert twice"),
    (["train", "default", "--set", "eval.steering=select=diamnd"], "unknown expert 'diamnd' (did you mean 'diamond'?)"),
    (["train", "default", "--set", "ppo.learning_rate=.inf"], "config key 'ppo.learning_rate'"),
    (["train", "default", "--set", "ppo.clip_range=.inf"], "config key 'ppo.clip_range'"),
    (["train", "default", "--set", "routing.label_rewards={ghost: .nan}"], "config key 'routing.label_rewards.ghost'"),
    (["train", "default", "--set", "policy.expert_names=[x/../../ESCAPED, ghost]"], "expert names must be identifiers"),
    (["train", "default", "--set", "policy.expert_names=[dia.mond, ghost]"], "expert names must be identifiers"),
    (["train", "default", "--seed", "-1"], "config key 'seed'"),
    (["train", "default", "--set", "eval.seed=-5"], "config key 'eval.seed'"),
    (["train", "default", "--set", "eval.episodes=200000000"], "config key 'eval.episodes'"),
    (["train", "binary.yaml"], "is not a text YAML file"),
    (["train", "default", "--run-dir", "afile"], "--run-dir afile is a file"),
    (["train", "default", *FAST, "--run-dir", "afile/sub"], "cannot write the run folder afile/sub"),
    (["train", "default", "--run-dir", "notarun"], "--run-dir notarun is a folder with other files in it"),
    (["export", "good", "--select", "diamond", "-o", "afile"], "--out afile is a file"),
    (["export", "good", "--select", "diamond", "-o", "good"], "--out good is a run folder"),
    (["export", "good", "--select", "diamond", "-o", "exported"], "already holds an export; add --force"),
    (["train", "default", "--set", "labeling.kind=no_such_module:Labeler", "--run-dir", "orphan"], "cannot import labeler"),
    (["export", "good", "--ablate", "diamond", "--ablate", "ghost", "-o", "out"], "cannot ablate every expert"),
    (["train", "default", "--run-dir", "good"], "already holds a trained run"),
    (["eval", "good", "--checkpoint", "1000"], "has no checkpoint at step 1,000; its checkpoints are at 512"),
    (["eval", "good", "--checkpoint", "latest"], "checkpoint must be an env step count or 'last', got 'latest'"),
    (["export", "norun", "--checkpoint", "last", "-o", "out"], "norun has no checkpoint"),
]


@pytest.fixture(scope="module")
def bad_input_dir(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("bad")
    (cwd / "broken.yaml").write_text("env: [unclosed\n")
    (cwd / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    (cwd / "afile").write_text("not a folder")
    (cwd / "notarun").mkdir()
    (cwd / "notarun" / "notes.txt").write_text("my files")
    (cwd / "exported").mkdir()
    (cwd / "exported" / "policy.json").write_text("{}")
    good = trained / "runs/p"
    for name in ("norun", "corrupt", "truncated", "good"):
        (cwd / name).mkdir()
        (cwd / name / "config.yaml").write_text((good / "config.yaml").read_text())
    (cwd / "corrupt" / "model.zip").write_text("not a zip")
    data = (good / "model.zip").read_bytes()
    (cwd / "truncated" / "model.zip").write_bytes(data[: len(data) // 2] + data[-200:])
    (cwd / "good" / "model.zip").write_bytes(data)
    (cwd / "good" / "checkpoints").mkdir()
    (cwd / "good" / "checkpoints" / "step_000000000512.zip").write_bytes(
        (good / "checkpoints/step_000000000512.zip").read_bytes()
    )
    return cwd


def _assert_one_line_error(result: subprocess.CompletedProcess, message: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0]


@pytest.mark.parametrize("args,message", BAD_INPUTS, ids=[" ".join(a)[:40] for a, _ in BAD_INPUTS])
def test_bad_input_exits_2_with_one_line(bad_input_dir: Path, args: list[str], message: str) -> None:
    result = cli_here(*args, cwd=bad_input_dir)
    _assert_one_line_error(result, message)
    assert not (bad_input_dir / "orphan").exists()  # nothing written for a config that cannot be built
    assert (bad_input_dir / "notarun").iterdir() and sorted(p.name for p in (bad_input_dir / "notarun").iterdir()) == [
        "notes.txt"
    ]


# a config key, a corrupt model file, an unknown expert: through the installed script itself
SCRIPT_CASES = ("train default --set env.oversight_prb=0.1", "eval corrupt --select diamond", "eval good --select diamnd")
SCRIPT_BAD_INPUTS = [(args, message) for args, message in BAD_INPUTS if " ".join(args) in SCRIPT_CASES]


@pytest.mark.parametrize("args,message", SCRIPT_BAD_INPUTS, ids=[" ".join(a)[:40] for a, _ in SCRIPT_BAD_INPUTS])
def test_the_console_script_turns_bad_input_into_exit_code_2(bad_input_dir: Path, args: list[str], message: str) -> None:
    """The table above runs in this process; these run the installed ``routed-rl`` script itself."""
    _assert_one_line_error(cli(*args, cwd=bad_input_dir), message)


STOPPING = ["--set", "early_stopping.every=1024", "--set", "early_stopping.episodes=20"]


@pytest.mark.parametrize("name", sorted(builtin_configs()), ids=sorted(builtin_configs()))
def test_every_builtin_config_trains_evaluates_and_exports(tmp_path: Path, name: str) -> None:
    # an untrained MiniGrid agent plays every evaluation episode to its time-out: keep that short
    short = ["--set", "env.max_steps=20"] if load_config(name).env.id.startswith("RoutedRL/MiniGrid") else []
    args = [*FAST, *STOPPING, *short, "--total-steps", "2048", "--run-dir", "run", "-q"]
    trained = cli_here("train", name, *args, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    run = RunDir(tmp_path / "run")
    assert not run.figures.exists() or not any(run.figures.iterdir())
    config = run.load_config()
    deployed = mode_name(config.policy.expert_names, **parse_mode(config.eval.steering))
    assert deployed in {r["mode"] for r in json.loads(run.eval.read_text())}  # `routed-rl eval`: tests above
    result = cli_here("export", "run", "-o", "deploy", cwd=tmp_path)  # the run's deployed steering
    assert result.returncode == 0, result.stderr
    kept = json.loads((tmp_path / "deploy" / "policy.json").read_text())["experts"]
    assert kept == (["diamond"] if deployed == "select=diamond" else config.policy.expert_names)
    if config.early_stopping.metric != "none":
        record = json.loads(run.early_stopping.read_text())
        # with true_return the end of training also scores the model its last update made
        final = [2048] if config.early_stopping.metric == "true_return" else []
        assert [h["step"] for h in record["history"]] == [1024, 2048, *final]
        assert run.load_model().num_timesteps == record["best"]["step"]  # model.zip is the chosen checkpoint
        assert f"keeping the model of step {record['best']['step']:,}" in trained.stdout


def test_early_stopping_only_watches_so_its_last_checkpoint_is_the_naive_run(tmp_path: Path) -> None:
    """An early-stopped run trains exactly what the run without early stopping trains (same config, seed and
    thread count): its last checkpoint is that run's model, weight for weight, while its model.zip is an earlier
    one. So one early-stopped run gives both baselines (the MiniGrid benchmarks use that)."""
    common = [*FAST, "--set", "threads=1", "--seed", "3", "--total-steps", "3072", "-q"]
    stopping = ["--set", "early_stopping.every=1024"]
    assert cli_here("train", "naive", *common, "--run-dir", "naive", cwd=tmp_path).returncode == 0
    result = cli_here("train", "naive_early_stopping", *common, *stopping, "--run-dir", "stopped", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    naive, stopped = RunDir(tmp_path / "naive"), RunDir(tmp_path / "stopped")
    last = stopped.latest_checkpoint()
    assert last is not None and last.name == "step_000000003072.zip"
    weights = RoutedPPO.load(naive.model, device="cpu").policy.state_dict()
    kept = RoutedPPO.load(last, device="cpu").policy.state_dict()
    assert weights.keys() == kept.keys() and all(th.equal(weights[k], kept[k]) for k in weights)
    chosen = json.loads(stopped.early_stopping.read_text())["best"]["step"]
    assert stopped.load_model().num_timesteps == chosen
    if chosen != 3072:  # the early-stopped model is another one
        early = RoutedPPO.load(stopped.model, device="cpu").policy.state_dict()
        assert not all(th.equal(weights[k], early[k]) for k in weights)
    # `eval --checkpoint last` of the early-stopped run evaluates the naive run's model
    evals = [
        cli_here("eval", run, *checkpoint, "--episodes", "30", "--json", cwd=tmp_path)
        for run, checkpoint in (("naive", []), ("stopped", ["--checkpoint", "last"]))
    ]
    assert all(e.returncode == 0 and e.stderr == "" for e in evals), [e.stderr for e in evals]
    assert json.loads(evals[0].stdout) == json.loads(evals[1].stdout)
    assert (stopped.root / "eval_all_30ep_step3072.json").is_file()
    assert cli_here("eval", "stopped", "--checkpoint", "3,072", "--episodes", "30", cwd=tmp_path).returncode == 0


def test_configs_lists_every_builtin_with_what_it_is_for(tmp_path: Path) -> None:
    result = cli_here("configs", cwd=tmp_path)
    assert result.returncode == 0
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert set(lines) == set(builtin_configs())
    assert all(len(line.split(None, 1)[1]) > 20 for line in lines.values())  # a line saying what each is for
    assert "ghost" in lines["naive"] and "early" not in lines["oracle"]


def test_usage_errors_and_help(tmp_path: Path) -> None:
    result = cli("--help", cwd=tmp_path)
    assert result.returncode == 0 and "Usage" in result.stdout
    for args in (["train", "--help"], ["eval", "--help"], ["export", "--help"], ["configs", "--help"]):
        result = cli_here(*args, cwd=tmp_path)
        assert result.returncode == 0 and "Usage" in result.stdout
    result = cli_here("configs", cwd=tmp_path)
    assert "default" in result.stdout and "paper" in result.stdout
    result = cli_here("eval", "run", "--episodes", "0", cwd=tmp_path)
    assert result.returncode == 2  # click's own usage error
    result = cli_here("eval", "run", "--episodes", "200000000", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr


@pytest.mark.parametrize("labeler", ["BrokenLabeler", "BuggyValueLabeler"])
def test_a_bug_keeps_its_traceback_instead_of_passing_for_bad_input(tmp_path: Path, labeler: str) -> None:
    args = ["train", "default", *FAST, "--set", f"labeling.kind=user_labelers:{labeler}", "--total-steps", "512"]
    result = cli(*args, "--run-dir", "r", "-q", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" in result.stderr, result.stderr
    assert ("a bug in the labeler" if labeler == "BrokenLabeler" else "inside the labeler") in result.stderr
    assert "error: " not in result.stderr.splitlines()[-1]


def test_eval_of_a_plain_sb3_model_says_it_is_not_a_routed_model(tmp_path: Path, bad_input_dir: Path) -> None:
    from stable_baselines3 import PPO

    from routed_rl.envs import OversightGridVecEnv

    folder = tmp_path / "sb3run"
    folder.mkdir()
    (folder / "config.yaml").write_text((bad_input_dir / "good" / "config.yaml").read_text())
    PPO("MlpPolicy", OversightGridVecEnv(2, seed=0), n_steps=8, batch_size=16).save(folder / "model.zip")
    result = cli_here("eval", "sb3run", "--episodes", "10", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "is not a routed-rl model (its policy is not a mixture of experts)" in result.stderr
    assert "routing_enabled" not in result.stderr


def test_a_run_that_spends_no_label_says_so(tmp_path: Path) -> None:
    args = ["--set", "routing.table={}", "--set", "routing.label_rewards=null", "--total-steps", "512", "--run-dir", "r"]
    result = cli_here("train", "default", *FAST, *args, "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "warning: no label was spent" in result.stderr
