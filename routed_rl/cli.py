"""The ``routed-rl`` command line: ``train``, ``eval``, ``export``, ``sweep``, ``report`` and ``configs``.

Bad input (a wrong config key, an out-of-range value, an unknown expert, a missing or corrupt model file)
prints one line starting with ``error:`` and exits with code 2, without a traceback.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from routed_rl import __version__
from routed_rl.errors import UserError

app = typer.Typer(
    help="routed-rl: train PPO agents whose behaviours live in removable experts (gradient routing).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"routed-rl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
) -> None:
    """routed-rl: train PPO agents whose behaviours live in removable experts (gradient routing)."""


@app.command()
def configs() -> None:
    """List the built-in configs."""
    from routed_rl.config import builtin_configs

    found = sorted(builtin_configs().items())
    width = max(len(name) for name, _ in found)
    for name, path in found:
        first = next((line.lstrip("# ").strip() for line in path.read_text().splitlines() if line.startswith("#")), "")
        typer.echo(f"{name:<{width}}  {first}")


@app.command()
def envs() -> None:
    """List routed-rl's envs (config ``env.id``): their outcomes with ground-truth rewards, the experts named after
    them when ``policy.expert_names`` is not given, and their parameters.

    Any other gymnasium env works too, given ``env.outcomes`` and, if it does not report
    ``info["outcome"]``, an ``env.outcome`` function (see the README, "Any gymnasium env")."""
    from routed_rl.tasks import registered_tasks

    for env_id, task in registered_tasks().items():
        outcomes = ", ".join(f"{o} {r:+g}" for o, r in task.outcomes.items())
        params = ", ".join(f"{k}={v}" for k, v in (task.defaults or {}).items())
        typer.echo(f"{env_id}\n  outcomes: {outcomes}\n  experts: {', '.join(task.experts)}\n  parameters: {params}")


@app.command()
def train(
    config: Annotated[
        str | None, typer.Argument(help="A built-in config name (see `routed-rl configs`) or a YAML path.")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a config key: key.path=value (repeatable).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (envs, model and labeler).")] = None,
    run_dir: Annotated[Path | None, typer.Option(help="Run folder (default: runs/<env>__<config>__<seed>__<time>).")] = None,
    total_steps: Annotated[int | None, typer.Option(help="Env steps to train for (overrides the config).")] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue the run in this folder from its latest checkpoint.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar; only final lines.")] = False,
) -> None:
    """Train a routed agent into a run folder. Ctrl-C or SIGTERM checkpoints and exits 0.

    --resume loads the run's pickled checkpoint, which runs code from it: resume only runs you trust. A labeler
    given by import path (labeling.kind: package.module:Class) imports, and so runs, that module."""
    from routed_rl.experiment import run_training

    overrides = list(set_ or [])
    if seed is not None:
        overrides.append(f"seed={seed}")
    if total_steps is not None:
        overrides.append(f"total_steps={total_steps}")
    command = shlex.join(["routed-rl", *sys.argv[1:]])
    run_training(config, overrides, run_dir, resume, quiet, command)


def _modes(select: str | None, ablate: list[str] | None, expert_names: list[str]) -> list[dict[str, Any]]:
    """The steering modes to evaluate: the one asked for, else every mode."""
    from routed_rl.steering import steer_kwargs, steering_modes

    asked = steer_kwargs(select, ablate)
    return [asked] if asked else steering_modes(expert_names)


@app.command("eval")
def eval_(
    run: Annotated[Path, typer.Argument(help="The run folder.")],
    select: Annotated[str | None, typer.Option(help="Evaluate with this expert alone.")] = None,
    ablate: Annotated[list[str] | None, typer.Option(help="Evaluate with these experts removed (repeatable).")] = None,
    episodes: Annotated[int, typer.Option(min=1, max=1_000_000, help="Episodes per steering mode.")] = 2000,
    stochastic: Annotated[
        bool, typer.Option("--stochastic", help="Sample actions instead of taking the most likely.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    checkpoint: Annotated[str | None, typer.Option(help=CHECKPOINT_HELP)] = None,
) -> None:
    """Evaluate a run on the ground truth: unsteered, each expert selected and each ablated (or the mode given).

    A run folder's model files are pickled: loading one runs code from it, so evaluate only runs you trust."""
    from routed_rl.evaluation import evaluate_modes, format_table
    from routed_rl.runs import RunDir
    from routed_rl.steering import mode_file_stem

    rd = RunDir(run)
    config = rd.load_config()
    model = _load_finished_model(rd, checkpoint)
    task = config.env.task()
    modes = _modes(select, ablate, model.policy.expert_names)
    results = [
        r.to_dict()
        for r in evaluate_modes(
            model,
            modes,
            task=task,
            n_episodes=episodes,
            deterministic=not stochastic,
            env_kwargs=config.env.env_kwargs(),
            seed=config.eval.seed,
            gamma=config.eval.gamma,
        )
    ]
    typer.echo(json.dumps(results, indent=2) if as_json else format_table(results, task))
    # the training's own eval.json stays as it is; this evaluation goes beside it
    name = "all" if len(results) > 1 else mode_file_stem(results[0]["mode"])
    at = "" if checkpoint is None else f"_step{model.num_timesteps}"
    out = rd.root / f"eval_{name}_{episodes}ep{'_stochastic' if stochastic else ''}{at}.json"
    try:
        out.write_text(json.dumps(results, indent=2))
    except OSError as e:
        typer.echo(f"warning: results not saved to {out} ({e.strerror})", err=True)


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="The run folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the deployable policy to.")],
    select: Annotated[str | None, typer.Option(help="Keep this expert alone.")] = None,
    ablate: Annotated[list[str] | None, typer.Option(help="Remove these experts (repeatable).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an export already in --out.")] = False,
    checkpoint: Annotated[str | None, typer.Option(help=CHECKPOINT_HELP)] = None,
) -> None:
    """Export a steered policy without pickle: policy.safetensors plus policy.json, removed experts left out.

    Without --select or --ablate, the run's deployed steering (its config's eval.steering) is exported. The run
    folder's model files are pickled: loading one runs code from it, so export only runs you trust; the export
    itself holds no code."""
    from routed_rl.export import export_policy
    from routed_rl.runs import RunDir
    from routed_rl.steering import parse_mode, steer_kwargs

    rd = RunDir(run)
    steer = steer_kwargs(select, ablate) or parse_mode(rd.load_config().eval.steering)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the export")
    if out.resolve() == rd.root.resolve() or (out / "config.yaml").exists():
        raise UserError(f"--out {out} is a run folder; export into a folder of its own")
    if (out / "policy.json").exists() and not force:
        raise UserError(f"--out {out} already holds an export; add --force to replace it")
    model = _load_finished_model(rd, checkpoint)
    folder = export_policy(model.policy, out, **steer)
    kept = json.loads((folder / "policy.json").read_text())["experts"]
    typer.echo(f"exported {folder} (experts kept: {', '.join(kept)}); load it with routed_rl.export.load_exported")


@app.command()
def sweep(
    sweep: Annotated[str, typer.Argument(help="A built-in sweep (quick, standard, paper) or a sweep YAML file.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Sweep folder (default: sweeps/<name>).")] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Trials at once (default: the cores / the sweep's threads per trial).")
    ] = None,
    ray: Annotated[
        str | None,
        typer.Option(
            help="Run the trials as Ray tasks: --ray alone starts a local Ray instance; --ray auto or --ray "
            "ray://HOST:10001 joins a cluster. Needs the ray extra: pip install 'routed-rl\\[ray]'.",
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a sweep key (seeds=[0,1]) or set a config key in every trial (repeatable)."),
    ] = None,
) -> None:
    """Train a grid of methods x oversight levels x seeds, each trial an ordinary run folder in the sweep folder.

    A rerun skips finished trials and resumes interrupted ones; Ctrl-C checkpoints every running trial. Then
    `routed-rl report SWEEP_DIR` writes the table and figures."""
    from routed_rl.sweeps.runner import run_sweep
    from routed_rl.sweeps.spec import load_sweep

    spec, trials, name = load_sweep(sweep, set_)
    if ray is not None and workers is not None:
        raise UserError("--workers is for the local pool; with --ray the cluster's CPUs decide")
    progress = run_sweep(spec, trials, out or Path("sweeps") / name, name, workers=workers, ray_address=ray)
    if progress.failed:
        failed = f"{progress.failed} trial{'s' if progress.failed != 1 else ''} failed"
        typer.echo(f"{failed}: the errors are in each trial's trial.json and trial.log; a rerun retries them", err=True)
        raise typer.Exit(1)


@app.command()
def report(
    sweep_dir: Annotated[Path, typer.Argument(help="A sweep folder (written by `routed-rl sweep`).")],
    include: Annotated[
        list[Path] | None,
        typer.Option(
            "--include",
            help="Another sweep folder, or the results.csv of an earlier report, whose trials join this report "
            "(a sweep run in pieces; repeatable); the curves.csv beside a results.csv joins the learning curves.",
        ),
    ] = None,
) -> None:
    """Write results.csv, report.md, return_vs_oversight.png and gaming_gap.png into a sweep folder."""
    from routed_rl.sweeps.report import write_report

    for path in write_report(sweep_dir, include or []):
        typer.echo(f"wrote {path}")


CHECKPOINT_HELP = "Use the run's checkpoint at this env step (or 'last', the newest) instead of its model.zip."


def _load_finished_model(rd: Any, checkpoint: str | None = None) -> Any:
    """The checkpoint named, else the run's ``model.zip``, or, saying so, its latest checkpoint when training
    has not finished."""
    if checkpoint is not None:
        return rd.load_model(checkpoint=checkpoint)
    model = rd.load_model()
    if not rd.model.is_file():
        typer.echo(
            f"warning: {rd.root} has no model.zip (training has not finished); using its checkpoint at step "
            f"{model.num_timesteps:,}",
            err=True,
        )
    return model


def main() -> None:
    """Entry point of the ``routed-rl`` console script: user errors (:class:`~routed_rl.errors.UserError`)
    become one line and exit code 2."""
    try:
        app(args=_optional_ray_address(sys.argv[1:]))
    except UserError as e:  # only the user's mistakes: any other exception is a bug and keeps its traceback
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        _print_error(message)
        sys.exit(2)
    except KeyboardInterrupt:  # outside training (which checkpoints and exits 0 itself)
        _print_error("interrupted")
        sys.exit(130)


def _optional_ray_address(args: list[str]) -> list[str]:
    """``--ray`` may come without an address (a local Ray instance): give it the value ``local`` then."""
    out = list(args)
    for i, arg in enumerate(out):
        if arg == "--ray":
            following = out[i + 1] if i + 1 < len(out) else None
            if following is None or following.startswith("-") or not _looks_like_address(following):
                out.insert(i + 1, "local")
            break
    return out


def _looks_like_address(text: str) -> bool:
    return text in ("auto", "local") or ":" in text


def _print_error(message: str) -> None:
    typer.echo(f"error: {message}", err=True)


if __name__ == "__main__":
    main()
