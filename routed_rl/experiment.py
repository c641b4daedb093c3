"""One training run in its run folder, what ``routed-rl train`` (and ``make demo``) does: set up a new run
folder or reopen one to resume, train with checkpoints, periodic evaluation and early stopping, then save,
evaluate every steering mode and draw the figures. Building the env and the model is
:mod:`routed_rl.training`'s."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch as th

from routed_rl.agents import RoutedPPO
from routed_rl.config import RunConfig, load_config
from routed_rl.errors import UserError
from routed_rl.runs import RunDir, atomic_save
from routed_rl.steering import first_alike, mode_file_stem, mode_name, parse_mode, steering_modes
from routed_rl.training import build_model, make_env, training_device

__all__ = ["run_training"]


def _log_figures(model: RoutedPPO, run: RunDir, config: RunConfig) -> None:
    """The task's maps (if it draws any) and an episode GIF per steering mode into ``figures/``, and the
    images to TensorBoard."""
    from stable_baselines3.common.logger import Image

    from routed_rl.figures import episode_frames, save_gif, save_png

    task = config.env.task()
    prob = config.env.oversight_prob
    context = f"run {run.root.name}, step {model.num_timesteps:,}" + (f", oversight {prob:.1%}" if prob is not None else "")
    images = task.maps(model, config.env.env_kwargs(), context) if task.maps is not None else {}
    for title, image in images.items():
        save_png(image, run.figures / f"{mode_file_stem(title)}.png")
        model.logger.record(f"figures/{title}", Image(image, "HWC"), exclude=("stdout", "log", "json", "csv"))
    names = model.policy.expert_names
    modes = steering_modes(names) if task.make_render_env is not None else []
    played: dict[int, tuple[list[Any], dict[str, Any]]] = {}  # modes that act alike play the same episode
    for steer, first in zip(modes, first_alike(names, modes), strict=True):
        if first not in played:
            played[first] = episode_frames(model, task, config.env.env_kwargs(), seed=config.eval.seed, **steer)
        frames, info = played[first]
        name = mode_name(names, **steer)
        caption = [f"one episode, {name}, step {{step}}", f"run {run.root.name}", f"outcome: {info.get('outcome', '?')}"]
        save_gif(frames, run.figures / f"episode_{mode_file_stem(name)}.gif", caption=caption, legend=task.legend)
    model.logger.dump(model.num_timesteps)


def _set_threads(config: RunConfig) -> None:
    if config.threads is not None:
        th.set_num_threads(config.threads)


def _evaluate_kwargs(config: RunConfig) -> dict[str, Any]:
    """:func:`~routed_rl.evaluation.evaluate` keyword arguments from the ``eval`` and ``env`` sections."""
    e = config.eval
    return {
        "task": config.env.task(),
        "n_episodes": e.episodes,
        "deterministic": e.deterministic,
        "env_kwargs": config.env.env_kwargs(),
        "seed": e.seed,
        "gamma": e.gamma,
    }


def _new_run(
    config_name: str, overrides: list[str], run_dir: Path | None, command: str
) -> tuple[RunDir, RunConfig, RoutedPPO]:
    """Check the config and the run folder, build the model, then (only then) write the run folder."""
    config = load_config(config_name, overrides)
    run = RunDir(run_dir) if run_dir is not None else RunDir.default(config, config_name)
    if run.root.exists() and not run.root.is_dir():
        raise UserError(f"--run-dir {run.root} is a file; give a folder")
    if run.model.exists() or run.latest_checkpoint() is not None:
        raise UserError(f"{run.root} already holds a trained run; use --resume {run.root} or another --run-dir")
    if run.root.is_dir() and any(run.root.iterdir()) and not run.config.exists():
        raise UserError(f"--run-dir {run.root} is a folder with other files in it; give a new or empty folder")
    _set_threads(config)
    # built before anything is written, so a config that cannot be built leaves no run folder behind
    model = build_model(config, tensorboard_log=str(run.tensorboard) if config.logging.tensorboard else None)
    try:
        run.write_config(config, command)
    except OSError as e:
        raise UserError(f"cannot write the run folder {run.root} ({e.strerror})") from None
    return run, config, model


def _reopen_run(run: RunDir, overrides: list[str], command: str) -> tuple[RunDir, RunConfig, RoutedPPO]:
    """The run's config (``total_steps`` overridden to extend it) and the model of its newest good checkpoint,
    with the label log cut back to that checkpoint's step."""
    config = run.load_config()
    extended = load_config(config.model_dump(mode="json"), overrides) if overrides else config
    if extended != config:  # only --total-steps changes the run's config; a plain resume leaves it as it is
        run.write_config(extended, command)
    else:
        run.append_command(command)
    config = extended
    _set_threads(config)
    run.remove_stale_temporaries()
    model, skipped = run.resumable_model(device=training_device(config))
    # the saved model remembers where it was first trained; a run folder may have moved since (a sweep trial
    # shipped back from Ray or another machine), so TensorBoard goes on in this folder
    model.tensorboard_log = str(run.tensorboard) if config.logging.tensorboard else None
    for reason in skipped:
        print(f"warning: passed over a checkpoint: {reason}", file=sys.stderr)
    dropped = run.truncate_labels(model.num_timesteps)
    if dropped:
        print(
            f"warning: dropped {dropped} label-log lines after step {model.num_timesteps:,} (never trained on)",
            file=sys.stderr,
        )
    model.set_env(make_env(config, seed=config.seed + model.num_timesteps))
    return run, config, model


def run_training(
    config_name: str | None,
    overrides: list[str],
    run_dir: Path | None,
    resume: Path | None,
    quiet: bool,
    command: str,
) -> RunDir:
    """What ``routed-rl train`` does: set up or reopen the run folder, train, checkpoint, evaluate, draw figures.

    :raises UserError: for bad input, before anything is written
    """
    from routed_rl.callbacks import EarlyStoppingCallback, ProgressCallback, RunCallback, SteeredEvalCallback, StopOnSignal
    from routed_rl.evaluation import evaluate_modes, format_table

    if resume is not None:
        if config_name is not None or run_dir is not None or any(not o.startswith("total_steps=") for o in overrides):
            raise UserError(
                "--resume continues a run with its own config: give only --resume RUN (and --total-steps to extend)"
            )
        run, config, model = _reopen_run(RunDir(resume), overrides, command)
    else:
        if config_name is None:
            raise UserError("train needs CONFIG (a built-in name such as 'default', or a YAML path), or --resume RUN")
        run, config, model = _new_run(config_name, overrides, run_dir, command)
    remaining = config.total_steps - model.num_timesteps
    task = config.env.task()
    stop = StopOnSignal()
    saver = RunCallback(run, config.logging.checkpoint_every)
    modes = steering_modes(model.policy.expert_names)
    if (deployed := parse_mode(config.eval.steering)) not in modes:
        modes.append(deployed)
    log = config.logging
    callbacks: list[Any] = [
        stop,
        saver,
        SteeredEvalCallback(log.eval_every, log.eval_episodes, task, config.env.env_kwargs(), modes, config.eval.seed),
    ]
    stopping = config.early_stopping
    stopper = None
    if stopping.metric != "none":
        evaluate_kwargs = {**_evaluate_kwargs(config), "n_episodes": stopping.episodes, **deployed}
        stopper = EarlyStoppingCallback(run, stopping.metric, stopping.every, evaluate_kwargs)
        callbacks.append(stopper)
    if not quiet:
        callbacks.append(ProgressCallback(config.total_steps, [*task.wanted, *task.unwanted]))
        print(f"run folder {run.root}; training to {config.total_steps:,} env steps (tensorboard --logdir {run.tensorboard})")
    # with no steps left (a finished run, or one stopped in its last rollout) this still sets the model up
    # and runs no rollout, so the run is finished below as usual
    model.learn(max(remaining, 0), callback=callbacks, reset_num_timesteps=resume is None, tb_log_name="routed_ppo")
    if stop.signal_name is not None:
        saver.rollback()
        checkpoint = saver.checkpoint()
        print(f"{stop.signal_name}: stopped; checkpoint {checkpoint} at step {model.num_timesteps:,}")
        print(f"resume with: routed-rl train --resume {run.root}")
        return run
    saver.checkpoint()
    if stopper is not None:
        stopper.check()  # the last stretch of training is scored too
    trained = model
    if stopper is not None and stopper.best is not None:
        model = run.load_best_model(device=training_device(config))
        model.set_logger(trained.logger)
        best = stopper.best
        print(f"early stopping ({stopping.metric}): keeping the model of step {best['step']:,} (score {best['score']:.3f})")
    atomic_save(model, run.model)
    results = evaluate_modes(model, modes, **_evaluate_kwargs(config))
    run.eval.write_text(json.dumps([r.to_dict() for r in results], indent=2))
    if config.logging.figures:
        _log_figures(model, run, config)
    print(f"trained {trained.num_timesteps:,} env steps; {trained.labeler.labels_spent} labels spent; model {run.model}")
    if trained.labeler.labels_spent == 0:
        print(
            "warning: no label was spent: routing, label rewards and the gate loss never fired (check the labeler, "
            "the oversight level and routing.table)",
            file=sys.stderr,
        )
    print(format_table([r.to_dict() for r in results], task))
    return run
