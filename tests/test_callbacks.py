"""Run-folder callbacks: early stopping scores only what an overseer sees and keeps the best model."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from routed_rl.callbacks import EarlyStoppingCallback
from routed_rl.runs import RunDir


class _Model:
    """Stands in for RoutedPPO: the labels of the current step, and a save that records the step."""

    def __init__(self) -> None:
        self.step_labels: list[tuple[int, str]] = []
        self.num_timesteps = 0
        self._n_updates = 0
        self.logger = SimpleNamespace(record=lambda *a, **k: None)

    def save(self, path: Path) -> None:
        Path(path).write_text(str(self.num_timesteps))


def _callback(tmp_path: Path) -> tuple[EarlyStoppingCallback, _Model]:
    callback = EarlyStoppingCallback(RunDir(tmp_path), "overseen_return", every=100, evaluate_kwargs={})
    model = _Model()
    callback.model = model  # type: ignore[assignment]
    return callback, model


def _step(callback: EarlyStoppingCallback, model: _Model, labeled: dict[int, float], unlabeled: dict[int, float]) -> None:
    """One env step: episodes end in the envs given, with their true rewards; only ``labeled`` ones were seen."""
    infos = [{} for _ in range(8)]
    for env, reward in {**labeled, **unlabeled}.items():
        infos[env] = {"true_reward": reward, "outcome": "x"}
    model.step_labels = [(env, "label") for env in labeled]
    callback.locals = {"infos": infos}
    callback._on_step()


def test_overseen_return_reads_only_labeled_episodes_and_keeps_the_best(tmp_path: Path) -> None:
    callback, model = _callback(tmp_path)
    _step(callback, model, labeled={0: 1.0, 3: -1.0}, unlabeled={1: -1.0, 2: -1.0})
    _step(callback, model, labeled={5: 1.0}, unlabeled={6: -1.0})
    model.num_timesteps = 100
    callback.check()
    # the unseen -1s are ignored
    assert callback.history[-1] == {"step": 100, "updates": 0, "score": pytest.approx(1 / 3), "episodes": 3}
    assert (tmp_path / "best.zip").read_text() == "100"

    _step(callback, model, labeled={1: -1.0}, unlabeled={0: 1.0, 2: 1.0, 4: 1.0})  # better unseen, worse seen
    model.num_timesteps = 200
    callback.check()
    assert callback.history[-1]["score"] == -1.0 and callback.best["step"] == 100  # type: ignore[index]
    assert (tmp_path / "best.zip").read_text() == "100"

    model.num_timesteps = 300
    callback.check()  # no labeled episode ended: nothing to score
    assert callback.history[-1] == {"step": 300, "updates": 0, "score": None, "episodes": 0}
    model._n_updates = 4
    callback.check()  # the update after a check brings no new episode to score
    assert len(callback.history) == 3

    _step(callback, model, labeled={2: 1.0}, unlabeled={})
    model.num_timesteps = 400
    callback.check()  # ties go to the later model
    assert callback.best["step"] == 400 and (tmp_path / "best.zip").read_text() == "400"  # type: ignore[index]
    record = json.loads((tmp_path / "early_stopping.json").read_text())
    assert record["metric"] == "overseen_return" and record["best"]["step"] == 400 and len(record["history"]) == 4


def test_a_resumed_run_keeps_its_best_score(tmp_path: Path) -> None:
    callback, model = _callback(tmp_path)
    _step(callback, model, labeled={0: 1.0}, unlabeled={})
    model.num_timesteps = 100
    callback.check()
    resumed, model = _callback(tmp_path)
    assert resumed.best == {"step": 100, "updates": 0, "score": 1.0, "episodes": 1} and len(resumed.history) == 1
    _step(resumed, model, labeled={0: -1.0}, unlabeled={})
    model.num_timesteps = 200
    resumed.check()
    assert resumed.best["step"] == 100  # type: ignore[index]


def test_true_return_scores_the_model_updated_after_a_check_at_the_same_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Training's end falls on the periodic check of its last rollout, which runs before the last update: the
    check at the end scores the updated model (and keeps it if best), and no model is scored twice."""
    scores = {0: 0.5, 4: 0.75}  # the evaluation's return of the model after n updates
    monkeypatch.setattr(
        "routed_rl.callbacks.evaluate",
        lambda model, **kwargs: SimpleNamespace(discounted_return=scores[model._n_updates], episodes=10),
    )
    callback = EarlyStoppingCallback(RunDir(tmp_path), "true_return", every=100, evaluate_kwargs={})
    model = _Model()
    callback.model = model  # type: ignore[assignment]
    model.num_timesteps = 100
    callback.check()  # the periodic check at the last rollout's end
    model._n_updates = 4
    callback.check()  # the end of training, after the last update
    callback.check()
    assert [(h["step"], h["updates"], h["score"]) for h in callback.history] == [(100, 0, 0.5), (100, 4, 0.75)]
    assert callback.best["updates"] == 4  # type: ignore[index]


def test_unknown_metric_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="overseen_return or true_return"):
        EarlyStoppingCallback(RunDir(tmp_path), "peek", 100, {})
