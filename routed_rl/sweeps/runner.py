"""Run a sweep's trials: a local process pool, or Ray tasks on a cluster; resumable and interruptible.

Each trial is ``routed-rl train`` in a child process writing an ordinary run folder
``<sweep folder>/<trial name>``, with ``trial.json`` beside its files (status ``done``, ``interrupted`` or
``failed`` with the error, wall time, host, torch version). A rerun skips done trials, resumes
interrupted ones from their checkpoints and retries failed ones. A sweep whose ``total_steps`` has grown
extends its finished trials from their last checkpoints (``routed-rl train --resume --total-steps``). A
finished trial whose config otherwise differs from the sweep's is an error, not silently reused. Ctrl-C (or
SIGTERM) stops the sweep: every running trial checkpoints, and the rerun goes on from there.

With Ray, each trial is a task that needs ``threads`` CPUs: the driver sends the trial's folder (empty, or
the checkpoints of an interrupted run) to the worker, which trains in a scratch folder and sends the whole
run folder back; results always land in the sweep folder on the machine that launched the sweep.
"""

from __future__ import annotations

import io
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, NamedTuple

import yaml

from routed_rl.errors import UserError
from routed_rl.runs import RunDir
from routed_rl.sweeps.spec import RESULT_NEUTRAL_SECTIONS, SweepSpec, Trial, method_label

__all__ = ["SweepProgress", "code_version", "run_sweep", "trial_status"]

TRIAL_FILE = "trial.json"


def trial_status(root: Path, total_steps: int | None = None) -> str:
    """``done``, ``interrupted`` (has a checkpoint to resume from), ``failed`` or ``new``.

    A trial recorded as finished and evaluated is ``done`` even without its ``model.zip`` (a model left on the
    machine it ran on, where only the small files could come back): a rerun skips it rather than retraining
    it over its results, and the report reads its evaluation.

    :param total_steps: the sweep's step count: a finished trial trained for fewer steps is ``interrupted``
        (to be extended from its checkpoint)
    """
    record = _read_record(root)
    run = RunDir(root)
    if record.get("status") == "done" and run.eval.is_file():
        return "interrupted" if total_steps is not None and _extendable(run, total_steps) else "done"
    if run.latest_checkpoint() is not None:
        return "interrupted"
    return "failed" if record.get("status") == "failed" else "new"


def _read_record(root: Path) -> dict[str, Any]:
    try:
        return json.loads((root / TRIAL_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _extendable(run: RunDir, total_steps: int) -> bool:
    """Whether the run was trained (or is being trained) to fewer than ``total_steps`` and has a checkpoint
    to go on from: a sweep with that many steps extends it."""
    return run.latest_checkpoint() is not None and run.load_config().total_steps < total_steps


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in RESULT_NEUTRAL_SECTIONS}


def check_trial_matches(spec: SweepSpec, trial: Trial, root: Path) -> None:
    """Raise a one-line error when the folder holds a run trained with settings other than the trial's (a run
    trained for fewer steps than the sweep's matches: the sweep extends it)."""
    run = RunDir(root)
    if not run.config.is_file():
        return
    stored = _comparable(run.load_config().model_dump(mode="json"))
    wanted = _comparable(spec.trial_config(trial).model_dump(mode="json"))
    if _extendable(run, wanted["total_steps"]):
        stored["total_steps"] = wanted["total_steps"]
    if stored != wanted:
        diff = next(_differences(wanted, stored))
        raise UserError(
            f"{root} was trained with other settings than this sweep's ({diff}); use another --out or remove the folder"
        )


def _differences(wanted: Any, stored: Any, path: str = "") -> Any:
    if isinstance(wanted, dict) and isinstance(stored, dict):
        for key in sorted(set(wanted) | set(stored)):
            yield from _differences(wanted.get(key), stored.get(key), f"{path}.{key}" if path else key)
    elif wanted != stored:
        yield f"{path}: {stored!r} there, {wanted!r} here"


def finished_since(run: RunDir, since: float) -> bool:
    """Whether the run finished training at or after ``since`` (a ``time.time()``): its model and an evaluation
    written since then. A run being extended keeps its earlier model and evaluation until it finishes again, so
    one stopped midway (exit code 0 after its checkpoint) has not finished."""
    return run.model.is_file() and run.eval.is_file() and run.eval.stat().st_mtime >= since - 1.0


def resumes(root: Path) -> bool:
    """Whether the trial in ``root`` goes on from a checkpoint (rather than starting from scratch)."""
    return RunDir(root).latest_checkpoint() is not None


def train_command(spec: SweepSpec, trial: Trial, root: Path) -> list[str]:
    """The ``routed-rl train`` command line for a trial: a fresh start, or a resume of its checkpoints (to the
    sweep's step count, which extends a trial trained for fewer steps)."""
    exe = [sys.executable, "-m", "routed_rl.cli", "train"]
    if resumes(root):
        return [*exe, "--resume", str(root), "-q", "--total-steps", str(spec.total_steps)]
    sets = [a for s in trial.overrides(spec) for a in ("--set", s)]
    return [*exe, trial.source, "--run-dir", str(root), "-q", *sets]


def execute_trial(
    spec: SweepSpec, trial: Trial, root: Path, should_stop: Callable[[], bool] = lambda: False
) -> dict[str, Any]:
    """Train (or resume) one trial in a child process into ``root`` and write its ``trial.json``.

    :param should_stop: polled every half second; when it turns true the child gets SIGTERM and checkpoints
    :return: the trial record
    """
    run = RunDir(root)
    if not resumes(root) and root.exists():
        shutil.rmtree(root)  # a failed start leaves no checkpoint: start it afresh
    previous = _read_record(root)
    command = train_command(spec, trial, root)
    threads = str(spec.threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "CUDA_VISIBLE_DEVICES": ""}
    start, started_at = time.perf_counter(), time.time()
    with tempfile.TemporaryFile("w+") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, text=True, start_new_session=True)
        signalled = False
        while child.poll() is None:
            if should_stop() and not signalled:
                child.send_signal(signal.SIGTERM)
                signalled = True
            time.sleep(0.5)
        log.seek(0)
        output = log.read()
    wall = time.perf_counter() - start
    root.mkdir(parents=True, exist_ok=True)
    with (root / "trial.log").open("a") as f:
        f.write(output)
    if child.returncode == 0 and finished_since(run, started_at):
        status, error = "done", None
    elif child.returncode == 0:
        status, error = "interrupted", None
    elif signalled:  # stopped by the sweep (before its first checkpoint, the rerun starts it afresh)
        status, error = "interrupted", None
    else:
        status = "failed"
        lines = [line for line in output.strip().splitlines() if line.strip()]
        error = lines[-1] if lines else f"exit code {child.returncode}"
    record = {
        **trial.record(),
        "total_steps": spec.total_steps,
        "threads": spec.threads,
        "status": status,
        "error": error,
        "wall_s": round(wall + float(previous.get("wall_s", 0.0)), 1),
        # one entry per stretch of training: a trial resumed elsewhere (another machine, torch build) says so
        "sessions": [
            *previous.get("sessions", []),
            {"host": platform.node(), "python": platform.python_version(), "torch": _torch_version(),
             "code": code_version(), "wall_s": round(wall, 1), "status": status},
        ],
    }  # fmt: skip
    (root / TRIAL_FILE).write_text(json.dumps(record, indent=2))
    return record


def code_version() -> str | None:
    """The git commit of the routed-rl source this process runs, ``+dirty`` when tracked files have uncommitted
    changes; ``None`` when that source is not a git checkout (an installed wheel). A trial's ``sessions`` record
    it, so a rerun that does not match tells whether the code differed."""
    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != root:
            return None  # installed inside some other repository (e.g. a virtual environment in one)
        return git("rev-parse", "HEAD") + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _torch_version() -> str:
    import torch

    return str(torch.__version__)


class RunningTrial(NamedTuple):
    """A trial of a sweep in progress: when it started (``time.perf_counter``) and whether from a checkpoint."""

    since: float
    resumed: bool = False


@dataclass
class SweepProgress:
    """Counts of a running sweep, printed after every event with an ETA.

    With ``workers`` known (local runs), the ETA assumes each trial takes the mean duration of those that ran
    from scratch and finished (a trial that went on from a checkpoint is shorter and would bias it low): the
    running ones need that less what they have done, and the workers take the queued ones as they free up.
    Otherwise (Ray) it is the time per finished trial so far times the trials left.
    """

    total: int
    done: int = 0
    failed: int = 0
    started: float = field(default_factory=time.perf_counter)
    out: Callable[[str], None] = print
    workers: int | None = None
    #: wall seconds of each trial finished in this run that ran from scratch, in finishing order
    durations: list[float] = field(default_factory=list)
    #: trials finished in this run that went on from a checkpoint (not in ``durations``)
    resumed_finished: int = 0
    #: trials started (on Ray: submitted) and not finished yet -> when they started and whether from a checkpoint
    in_flight: dict[str, RunningTrial] = field(default_factory=dict)

    @property
    def running(self) -> int:
        return len(self.in_flight)

    @property
    def finished_this_run(self) -> int:
        return len(self.durations) + self.resumed_finished

    def eta_s(self, now: float) -> float | None:
        """Seconds until the sweep ends, ``None`` before any trial finished (or with none left)."""
        left = self.total - self.done - self.failed
        if not self.finished_this_run or not left:
            return None
        if self.workers is None:
            return (now - self.started) / self.finished_this_run * left
        if not self.durations:
            return None
        mean = sum(self.durations) / len(self.durations)
        # each worker's time until free: a running trial's mean duration less what it has done, then the queue
        free_in = [max(mean - (now - trial.since), 0.0) for trial in self.in_flight.values()]
        free_in += [0.0] * max(self.workers - len(free_in), 0)
        for _ in range(left - len(self.in_flight)):
            free_in[free_in.index(min(free_in))] += mean
        return max(free_in)

    def line(self) -> str:
        eta = self.eta_s(time.perf_counter())
        eta_text = "" if eta is None else f", ETA {_duration(eta)}"
        return f"[{self.done}/{self.total} done, {self.running} running, {self.failed} failed{eta_text}]"

    def event(self, message: str) -> None:
        self.out(f"{message}  {self.line()}")

    def trial_started(self, name: str, resumed: bool = False, announce: bool = True) -> None:
        """Record a trial's start; ``resumed``: it goes on from a checkpoint."""
        self.in_flight[name] = RunningTrial(time.perf_counter(), resumed)
        if announce:
            self.event(f"{name}: {'resumed' if resumed else 'started'}")

    def trial_ended(self, name: str, done: bool) -> None:
        """Record a trial's end; ``done``: it finished (its duration then counts towards the ETA)."""
        trial = self.in_flight.pop(name)
        if done:
            self.done += 1
            if trial.resumed:
                self.resumed_finished += 1
            else:
                self.durations.append(time.perf_counter() - trial.since)


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{int(seconds % 60):02d}s"


class _StopFlag:
    """Set by SIGINT/SIGTERM while the sweep runs; running trials are then checkpointed and no new one starts."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if not self.event.is_set():
            print(f"{signal.Signals(signum).name}: stopping; running trials checkpoint", flush=True)
        self.event.set()


def default_workers(threads: int) -> int:
    """As many trials as the cores allow at ``threads`` torch threads each."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // threads)


def prepare(spec: SweepSpec, trials: list[Trial], out: Path, name: str) -> list[Trial]:
    """Check the sweep folder against the sweep, write ``sweep.yaml``, and return the trials still to run."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the sweep")
    for trial in trials:
        check_trial_matches(spec, trial, out / trial.name)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.yaml").write_text(yaml.safe_dump(folder_spec(out, spec, name), sort_keys=False))
    return [t for t in trials if trial_status(out / t.name, spec.total_steps) != "done"]


def read_folder_spec(folder: Path) -> Any:
    """The sweep folder's ``sweep.yaml`` as loaded (None where it has none); bad YAML is a one-line error."""
    spec_file = folder / "sweep.yaml"
    try:
        return yaml.safe_load(spec_file.read_text()) if spec_file.is_file() else None
    except yaml.YAMLError:
        raise UserError(f"{spec_file} is not valid YAML: fix or remove it (it lists what the sweep folder holds)") from None


def folder_spec(folder: Path, spec: SweepSpec, name: str) -> dict[str, Any]:
    """What the sweep folder's ``sweep.yaml`` says after this sweep: the sweep itself, or, where the folder already
    has one (an earlier sweep, e.g. another ``--set "methods=[...]"`` slice), that one's name and its methods,
    levels and seeds joined with this sweep's (earlier methods first: the report compares with the first), so
    the report covers everything the folder holds; the other settings are this sweep's."""
    data: dict[str, Any] = {"name": name, **spec.model_dump(mode="json")}
    earlier = read_folder_spec(folder)
    if not isinstance(earlier, dict):
        return data
    data["name"] = earlier.get("name", name)
    methods: dict[str, str] = {}
    for method in [*earlier.get("methods", []), *data["methods"]]:
        methods.setdefault(method_label(method), method)
    data["methods"] = list(methods.values())
    for key in ("oversight_probs", "seeds"):
        data[key] = sorted(set(earlier.get(key, [])) | set(data[key]))
    return data


def run_sweep(
    spec: SweepSpec,
    trials: list[Trial],
    out: Path,
    name: str,
    workers: int | None = None,
    ray_address: str | None = None,
    echo: Callable[[str], None] = print,
) -> SweepProgress:
    """Run every trial that is not done yet; return the final counts.

    :param workers: trials at once (local pool; default :func:`default_workers`); more than the cores allow
        at ``spec.threads`` threads each is an error
    :param ray_address: run on Ray instead: ``"local"`` starts a local instance, anything else is passed to
        ``ray.init`` (``"auto"``, ``"ray://host:10001"``)
    """
    if ray_address is None:
        limit = default_workers(spec.threads)
        workers = workers or limit
        if workers < 1:
            raise UserError("--workers must be >= 1")
        if workers > limit:
            raise UserError(
                f"--workers {workers} x {spec.threads} torch threads per trial oversubscribes the {limit * spec.threads} "
                f"cores; use --workers {limit} or fewer"
            )
    todo = prepare(spec, trials, out, name)
    progress = SweepProgress(
        total=len(trials), done=len(trials) - len(todo), out=echo, workers=None if ray_address else int(workers or 1)
    )
    echo(
        f"sweep {name}: {len(trials)} trials ({progress.done} done already), {spec.total_steps:,} env steps each, "
        + (f"on Ray ({ray_address})" if ray_address else f"{workers} workers x {spec.threads} threads")
        + f" -> {out}"
    )
    if not todo:
        return progress
    with _StopFlag() as stop:
        if ray_address is None:
            _run_local(spec, todo, out, int(workers or 1), stop.event, progress)
        else:
            from routed_rl.sweeps.ray_backend import run_on_ray

            run_on_ray(spec, todo, out, ray_address, stop.event, progress)
    if stop.event.is_set():
        echo(f"stopped: rerun the same command to resume ({progress.total - progress.done} trials left)")
    return progress


def _record_result(progress: SweepProgress, record: dict[str, Any]) -> None:
    status = record["status"]
    progress.trial_ended(record["trial"], done=status == "done")
    if status == "done":
        progress.event(f"{record['trial']}: done in {record['wall_s']:.0f} s")
    elif status == "failed":
        progress.failed += 1
        progress.event(f"{record['trial']}: FAILED: {record['error']}")
    elif status == "interrupted":
        progress.event(f"{record['trial']}: interrupted (rerun to resume)")
    else:
        progress.event(f"{record['trial']}: {status}")


def _run_local(
    spec: SweepSpec, todo: list[Trial], out: Path, workers: int, stop: threading.Event, progress: SweepProgress
) -> None:
    pending = list(todo)
    running: dict[Future[dict[str, Any]], Trial] = {}
    with ThreadPoolExecutor(workers) as pool:
        while pending or running:
            while pending and len(running) < workers and not stop.is_set():
                trial = pending.pop(0)
                progress.trial_started(trial.name, resumes(out / trial.name))
                running[pool.submit(execute_trial, spec, trial, out / trial.name, stop.is_set)] = trial
            if not running:
                break
            finished, _ = wait(running, timeout=0.5, return_when=FIRST_COMPLETED)
            for future in finished:
                trial = running.pop(future)
                try:
                    record = future.result()
                except Exception as e:  # a bug in the runner itself: record it, keep the others going
                    record = {**trial.record(), "status": "failed", "error": f"{type(e).__name__}: {e}"}
                _record_result(progress, record)


def pack_folder(root: Path) -> bytes:
    """A run folder as gzipped tar bytes (empty bytes for a missing folder)."""
    if not root.is_dir():
        return b""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(root, arcname=".")
    return buffer.getvalue()


def unpack_folder(data: bytes, root: Path) -> None:
    """Replace ``root`` with the folder packed by :func:`pack_folder` (through a temporary folder and a rename)."""
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    if data:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            tar.extractall(tmp, filter="data")
    old = root.with_name(f".{root.name}.old")
    if root.exists():
        os.replace(root, old)
    os.replace(tmp, root)
    shutil.rmtree(old, ignore_errors=True)
