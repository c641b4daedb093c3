"""Sweep trials as Ray tasks (``routed-rl sweep ... --ray [ADDRESS]``); Ray is the optional extra ``[ray]``.

Each task asks for ``threads`` CPUs, receives the trial's run folder (empty, or an interrupted run's
checkpoints), trains it with :func:`~routed_rl.sweeps.runner.execute_trial` in a scratch folder on the
worker, and returns the whole folder, which the driver unpacks into the sweep folder. Workers need
routed-rl installed (the same version as the driver). A stop (Ctrl-C) sets a flag held by a small actor;
tasks poll it, checkpoint their trial and send the folder back as usual.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Any

from routed_rl.errors import UserError
from routed_rl.sweeps.runner import SweepProgress, _record_result, execute_trial, pack_folder, resumes, unpack_folder
from routed_rl.sweeps.spec import SweepSpec, Trial

__all__ = ["run_on_ray"]

INSTALL_HINT = "--ray needs Ray: pip install 'routed-rl[ray]'"


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return ray


class _Flag:
    """A boolean shared by the driver and the tasks."""

    def __init__(self) -> None:
        self.value = False

    def set(self) -> None:
        self.value = True

    def get(self) -> bool:
        return self.value


def _train_remote(spec_json: dict[str, Any], trial: Trial, folder: bytes, flag: Any) -> tuple[dict[str, Any], bytes]:
    """Body of the Ray task: unpack the folder, train, pack it back."""
    import time

    import ray

    spec = SweepSpec.model_validate(spec_json)
    last_poll, stopped = 0.0, False

    def should_stop() -> bool:
        nonlocal last_poll, stopped
        if not stopped and time.monotonic() - last_poll > 2.0:
            last_poll = time.monotonic()
            stopped = bool(ray.get(flag.get.remote()))
        return stopped

    if ray.get(flag.get.remote()):  # the sweep was stopped before this task started
        return {**trial.record(), "status": "not started"}, b""
    with tempfile.TemporaryDirectory(prefix="routed-rl-trial-") as scratch:
        root = Path(scratch) / trial.name
        unpack_folder(folder, root)
        record = execute_trial(spec, trial, root, should_stop)
        return record, pack_folder(root)


def run_on_ray(
    spec: SweepSpec, todo: list[Trial], out: Path, address: str, stop: threading.Event, progress: SweepProgress
) -> None:
    """Run ``todo`` as Ray tasks and unpack each finished trial's folder into ``out``."""
    ray = _import_ray()
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        ray.init(**kwargs) if address == "local" else ray.init(address=address, **kwargs)
    flag = ray.remote(num_cpus=0)(_Flag).remote()
    task = ray.remote(num_cpus=spec.threads, max_retries=0)(_train_remote)
    spec_json = spec.model_dump(mode="json")
    running: dict[Any, Trial] = {}
    for trial in todo:
        ref = task.remote(spec_json, trial, pack_folder(out / trial.name), flag)
        running[ref] = trial
        progress.trial_started(trial.name, resumes(out / trial.name), announce=False)  # announced together below
    progress.event(f"{len(todo)} trials submitted to Ray ({ray.cluster_resources().get('CPU', 0):g} CPUs)")
    flagged = False
    while running:
        if stop.is_set() and not flagged:
            ray.get(flag.set.remote())
            flagged = True
        finished, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
        for ref in finished:
            trial = running.pop(ref)
            try:
                record, folder = ray.get(ref)
                if record["status"] != "not started":
                    unpack_folder(folder, out / trial.name)
            except Exception as e:  # the task died (worker lost, out of memory): record it, keep the others
                record = {**trial.record(), "status": "failed", "error": f"{type(e).__name__}: {str(e).splitlines()[0]}"}
            _record_result(progress, record)
