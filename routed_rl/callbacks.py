"""Training callbacks for run folders: checkpoints, the label log, steered evaluations, early stopping,
progress, stop signals."""

from __future__ import annotations

import copy
import json
import signal
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback

from routed_rl.errors import UserError
from routed_rl.evaluation import evaluate, evaluate_modes
from routed_rl.runs import RunDir, atomic_save
from routed_rl.tasks import Task

__all__ = ["EarlyStoppingCallback", "ProgressCallback", "RunCallback", "SteeredEvalCallback", "StopOnSignal"]


class StopOnSignal(BaseCallback):
    """Ends training cleanly at the next step after SIGINT or SIGTERM (the caller then checkpoints)."""

    def __init__(self) -> None:
        super().__init__()
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.signal_name = signal.Signals(signum).name

    def _on_training_start(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handler)

    def _on_training_end(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _on_step(self) -> bool:
        return self.signal_name is None


class _EveryNSteps(BaseCallback):
    """Base for callbacks that act at rollout ends, once every ``every`` env steps (counted across resumes)."""

    def __init__(self, every: int) -> None:
        super().__init__()
        self.every = every
        self._next = 0

    def _on_training_start(self) -> None:
        self._next = (self.num_timesteps // self.every + 1) * self.every

    def _on_step(self) -> bool:
        return True

    def due(self) -> bool:
        """True (and schedule the next time) when ``every`` steps have passed since the last time."""
        if self.num_timesteps < self._next:
            return False
        self._next = (self.num_timesteps // self.every + 1) * self.every
        return True


class RunCallback(_EveryNSteps):
    """Writes periodic atomic checkpoints and appends every label spent to ``labels.jsonl``.

    Checkpoints are written at a rollout's start, after the previous rollout's update, so every step a
    checkpoint counts has been trained on, and its labeler and label log stop at the same step. A stop
    signal mid-rollout is followed by :meth:`rollback`, which forgets the rollout that was cut short.

    :param run: the run folder
    :param checkpoint_every: env steps between checkpoints
    """

    def __init__(self, run: RunDir, checkpoint_every: int) -> None:
        super().__init__(checkpoint_every)
        self.run = run
        self._boundary: tuple[int, Any] | None = None

    def flush_labels(self) -> None:
        """Append the labels spent since the last flush to ``labels.jsonl``."""
        model: Any = self.model
        if not model.label_log:
            return
        kind = model.labeler_spec if isinstance(model.labeler_spec, str) else type(model.labeler_spec).__name__
        with self.run.labels.open("a") as f:
            for step, env_index, label in model.label_log:
                f.write(json.dumps({"step": step, "env": env_index, "label": label, "labeler": kind}) + "\n")
        model.label_log.clear()

    def checkpoint(self) -> Path:
        """Write a checkpoint now (and flush the label log)."""
        self.flush_labels()
        return atomic_save(self.model, self.run.checkpoint_path(self.model.num_timesteps))

    def _remember_boundary(self) -> None:
        model: Any = self.model
        self._boundary = (model.num_timesteps, copy.deepcopy(model.labeler))

    def _on_training_start(self) -> None:
        super()._on_training_start()
        self._remember_boundary()

    def _on_rollout_start(self) -> None:
        if self.due():  # the previous rollout has been trained on by now
            self.checkpoint()
        self._remember_boundary()

    def _on_rollout_end(self) -> None:
        self.flush_labels()

    def rollback(self) -> None:
        """Forget the rollout a stop signal cut short (its steps were never trained on): the step count, the
        labeler (counts and generator) and the unflushed labels go back to the rollout's start."""
        if self._boundary is None:
            return
        model: Any = self.model
        model.num_timesteps, model.labeler = self._boundary[0], self._boundary[1]
        model.label_tracker.labeler = model.labeler
        model.label_log.clear()  # flushed only at rollout ends: these are the cut rollout's labels


class SteeredEvalCallback(_EveryNSteps):
    """Every ``every`` env steps, evaluates each steering mode on the ground truth and logs its outcome rates.

    :param task: the env's task (its outcomes name the logged rates)
    :param modes: ``policy.steer`` keyword arguments, one dict per mode (``{}`` = unsteered)
    """

    def __init__(
        self, every: int, episodes: int, task: Task, env_kwargs: dict[str, Any], modes: list[dict[str, Any]], seed: int
    ) -> None:
        super().__init__(every)
        self.episodes, self.task, self.env_kwargs, self.modes, self.seed = episodes, task, env_kwargs, modes, seed

    def _on_rollout_end(self) -> None:
        if not self.due():
            return
        results = evaluate_modes(
            self.model, self.modes, task=self.task, n_episodes=self.episodes, env_kwargs=self.env_kwargs, seed=self.seed
        )
        for r in results:
            for outcome, rate in r.rates.items():
                self.logger.record(f"eval/{r.mode}/{outcome}", rate)
            self.logger.record(f"eval/{r.mode}/discounted_return", r.discounted_return)
            for outcome in self.task.unwanted:
                self.logger.record(f"eval/{r.mode}/{outcome}_overseen", r.overseen[outcome])
                self.logger.record(f"eval/{r.mode}/{outcome}_unseen", r.unseen[outcome])
            if r.gaming_gap is not None:
                self.logger.record(f"eval/{r.mode}/gaming_gap", r.gaming_gap)


class EarlyStoppingCallback(_EveryNSteps):
    """Scores the model every ``every`` env steps and keeps the best one in ``best.zip`` (the later on ties).

    The scores and the chosen step are in ``early_stopping.json``, which also carries the best score across
    a resume. Metrics (see :class:`~routed_rl.config.EarlyStoppingConfig`):

    * ``overseen_return``: the mean ``info["true_reward"]`` of the labeled training episodes that ended
      since the previous check, the only episodes an overseer has seen; no check is scored without one;
    * ``true_return``: the discounted ground-truth return of a deterministic evaluation of ``episodes``
      episodes, steered as ``steer``, on every episode (it peeks at what no overseer sees).

    :param run: the run folder
    :param metric: ``overseen_return`` or ``true_return``
    :param every: env steps between checks
    :param evaluate_kwargs: :func:`~routed_rl.evaluation.evaluate` keyword arguments for ``true_return``
    """

    def __init__(self, run: RunDir, metric: str, every: int, evaluate_kwargs: dict[str, Any]) -> None:
        super().__init__(every)
        if metric not in ("overseen_return", "true_return"):
            raise UserError(f"early stopping metric must be overseen_return or true_return, got {metric!r}")
        self.run, self.metric, self.evaluate_kwargs = run, metric, evaluate_kwargs
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        if run.early_stopping.is_file():  # a resumed run goes on from its record
            record = json.loads(run.early_stopping.read_text())
            self.history, self.best = record["history"], record["best"]
        self._sum, self._count = 0.0, 0

    def _on_step(self) -> bool:
        model: Any = self.model
        infos = self.locals["infos"]
        for env_index, _label in model.step_labels:
            self._sum += float(infos[env_index].get("true_reward", 0.0))
            self._count += 1
        return True

    def _on_rollout_end(self) -> None:
        if self.due():
            self.check()

    def score(self) -> tuple[float | None, int]:
        """The current model's score (``None`` when nothing could be scored) and how many episodes it rests on."""
        if self.metric == "overseen_return":
            score = self._sum / self._count if self._count else None
            count, self._sum, self._count = self._count, 0.0, 0
            return score, count
        result = evaluate(self.model, **self.evaluate_kwargs)
        return result.discounted_return, result.episodes

    def check(self) -> None:
        """Score the model now; save it as ``best.zip`` if it is the best so far.

        A check at the step of the previous one scores nothing new, except with ``true_return`` when the model
        has been updated since (training's end falls on a periodic check, which ran before the last update)."""
        model: Any = self.model
        step, updates = model.num_timesteps, model._n_updates
        if self.history and self.history[-1]["step"] == step:
            if self.metric == "overseen_return" or self.history[-1].get("updates") == updates:
                return  # the episodes of this step are scored, or this very model is
        score, episodes = self.score()
        entry = {"step": step, "updates": updates, "score": score, "episodes": episodes}
        self.history.append(entry)
        if score is not None and (self.best is None or score >= self.best["score"]):
            atomic_save(self.model, self.run.best_model)
            self.best = entry
        self.logger.record(f"early_stopping/{self.metric}", score if score is not None else float("nan"))
        record = {"metric": self.metric, "every": self.every, "best": self.best, "history": self.history}
        self.run.early_stopping.write_text(json.dumps(record, indent=2))


class ProgressCallback(BaseCallback):
    """A tqdm progress bar with ETA and the live rates of the task's rewarded outcomes in the last episodes.

    :param total: the step count at which training ends
    :param outcomes: the outcomes whose rates are shown (e.g. the task's wanted and unwanted ones)
    :param window: how many recent episodes the live rates cover
    """

    def __init__(self, total: int, outcomes: Sequence[str] = (), window: int = 2000) -> None:
        super().__init__()
        self.total = total
        self.outcomes = tuple(outcomes)
        self.recent: deque[str] = deque(maxlen=window)
        self.bar: Any = None

    def _on_training_start(self) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.total, initial=self.num_timesteps, unit="step", unit_scale=True, dynamic_ncols=True)
        self._last = self.num_timesteps

    def _on_step(self) -> bool:
        for info, done in zip(self.locals["infos"], self.locals["dones"], strict=True):
            if done and "outcome" in info:
                self.recent.append(info["outcome"])
        return True

    def _on_rollout_end(self) -> None:
        self.bar.update(self.num_timesteps - self._last)
        self._last = self.num_timesteps
        if self.recent:
            n = len(self.recent)
            self.bar.set_postfix({o: f"{self.recent.count(o) / n:.0%}" for o in self.outcomes})

    def _on_training_end(self) -> None:
        if self.bar is not None:
            self.bar.close()
