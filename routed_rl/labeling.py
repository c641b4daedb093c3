"""Labelers decide which finished episodes an overseer labels, and with what.

A labeler sees each finished episode (its final ``info``, its length and its env index) and returns a label
or ``None``. Built-ins: ``oversight`` (the env's own oversight, as in the paper), ``fraction`` (an i.i.d.
random fraction p of episodes, for envs without oversight cells) and ``budget`` (at most K labels in all).
A user class is named by its import path, ``"package.module:ClassName"``.

Every labeler owns a seeded ``np.random.Generator`` and counts the episodes it saw and the labels it spent.
:class:`EpisodeLabelTracker` spreads an episode's label over all of its steps in the current rollout.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Collection, Mapping
from typing import Any

import numpy as np

from routed_rl.errors import UserError


__all__ = [
    "LABELERS",
    "BudgetLabeler",
    "EpisodeLabelTracker",
    "FractionLabeler",
    "Labeler",
    "OversightLabeler",
    "make_labeler",
]


class Labeler:
    """Base class: override :meth:`label`. Call the instance to label an episode and count it.

    :param labels: the labels that may be returned (others are dropped); ``None`` allows any
    :param outcome_key: the ``info`` key holding an episode's outcome
    :param seed: seed of this labeler's own generator
    """

    def __init__(self, labels: Collection[str] | None = None, outcome_key: str = "outcome", seed: int | None = None) -> None:
        self.labels = None if labels is None else set(labels)
        self.outcome_key = outcome_key
        self.rng = np.random.default_rng(seed)
        self.n_episodes = 0
        self.labels_spent = 0
        self.spent_by_label: dict[str, int] = {}

    def label(self, info: Mapping[str, Any], episode_length: int, env_index: int) -> str | None:
        """The label for one finished episode, or ``None``.

        :param info: the episode's final ``info`` (before SB3's auto-reset)
        :param episode_length: number of steps in the episode
        :param env_index: index of the env in the VecEnv
        """
        raise NotImplementedError

    def __call__(self, info: Mapping[str, Any], episode_length: int, env_index: int) -> str | None:
        self.n_episodes += 1
        label = self.label(info, episode_length, env_index)
        if label is not None and self.labels is not None and label not in self.labels:
            label = None
        if label is not None:
            self.labels_spent += 1
            self.spent_by_label[label] = self.spent_by_label.get(label, 0) + 1
        return label

    @property
    def label_fraction(self) -> float:
        """Fraction of the episodes seen so far that were labeled."""
        return self.labels_spent / self.n_episodes if self.n_episodes else 0.0

    def outcome(self, info: Mapping[str, Any]) -> str | None:
        """The episode's outcome from ``info``, or ``None`` if the env did not report one."""
        value = info.get(self.outcome_key)
        return None if value is None else str(value)


class OversightLabeler(Labeler):
    """Labels an episode with its outcome when the env says the overseer saw it (``info["overseen"]``).

    :param overseen_key: the ``info`` key that says whether the episode was overseen
    """

    def __init__(self, overseen_key: str = "overseen", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.overseen_key = overseen_key

    def label(self, info: Mapping[str, Any], episode_length: int, env_index: int) -> str | None:
        return self.outcome(info) if info.get(self.overseen_key, False) else None


class FractionLabeler(Labeler):
    """Labels an i.i.d. random fraction ``p`` of episodes with their outcome.

    :param p: probability in [0, 1] that an episode is labeled
    """

    def __init__(self, p: float, **kwargs: Any) -> None:
        if not 0.0 <= float(p) <= 1.0:
            raise UserError(f"fraction labeler: p must be a probability in [0, 1], got {p}")
        super().__init__(**kwargs)
        self.p = float(p)

    def label(self, info: Mapping[str, Any], episode_length: int, env_index: int) -> str | None:
        outcome = self.outcome(info)
        if outcome is None or (self.labels is not None and outcome not in self.labels):
            return None  # no draw is spent on episodes that could not be labeled anyway
        return outcome if self.rng.random() < self.p else None


class BudgetLabeler(Labeler):
    """Labels episodes with their outcome until ``budget`` labels are spent, then none.

    :param budget: the most labels ever given
    :param p: probability that an episode is labeled while budget remains (1.0: every labelable episode)
    """

    def __init__(self, budget: int, p: float = 1.0, **kwargs: Any) -> None:
        if int(budget) < 0:
            raise UserError(f"budget labeler: budget must be >= 0, got {budget}")
        if not 0.0 <= float(p) <= 1.0:
            raise UserError(f"budget labeler: p must be a probability in [0, 1], got {p}")
        super().__init__(**kwargs)
        self.budget, self.p = int(budget), float(p)

    def label(self, info: Mapping[str, Any], episode_length: int, env_index: int) -> str | None:
        outcome = self.outcome(info)
        if self.labels_spent >= self.budget or outcome is None or (self.labels is not None and outcome not in self.labels):
            return None
        return outcome if self.p >= 1.0 or self.rng.random() < self.p else None


LABELERS: dict[str, type[Labeler]] = {"oversight": OversightLabeler, "fraction": FractionLabeler, "budget": BudgetLabeler}


def make_labeler(kind: str, labels: Collection[str] | None = None, seed: int | None = None, **kwargs: Any) -> Labeler:
    """Build a labeler by built-in name (see :data:`LABELERS`) or import path ``"module:Class"``.

    :param kind: ``"oversight"``, ``"fraction"``, ``"budget"`` or ``"package.module:ClassName"``
    :param labels: the labels that may be returned
    :param seed: seed of the labeler's generator
    :param kwargs: passed to the labeler's constructor (e.g. ``p=0.05``, ``budget=1000``)
    """
    if kind in LABELERS:
        cls: type[Labeler] = LABELERS[kind]
    elif ":" in kind:
        module_name, _, class_name = kind.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as e:
            raise UserError(f"cannot import labeler {kind!r}: {e}") from None
        if not (isinstance(cls, type) and issubclass(cls, Labeler)):
            raise UserError(f"labeler {kind!r} must be a subclass of routed_rl.labeling.Labeler")
    else:
        raise UserError(f"unknown labeler {kind!r}; use one of {sorted(LABELERS)} or an import path 'module:Class'")
    try:
        return cls(labels=labels, seed=seed, **kwargs)
    except TypeError as e:
        raise UserError(f"labeler {kind!r}: {e}") from None


class EpisodeLabelTracker:
    """Spreads each finished episode's label over its steps in the current rollout.

    Call :meth:`start_rollout` when a rollout starts, and :meth:`on_step` for every env step with the step's
    buffer row ``t`` (the transition that the ``dones`` belong to). Steps an episode took in an earlier
    rollout were already trained unlabeled: they are counted in ``leaked_steps``. Episodes still running
    when the rollout ends stay unlabeled, as in the paper.

    :param n_envs: number of envs
    :param labeler: turns finished episodes into labels
    :param label_id: maps a label to the integer stored in the buffer
    :param write: ``write(rows, env, label_id)`` stores a label for buffer rows ``rows`` of env ``env``
    """

    def __init__(
        self,
        n_envs: int,
        labeler: Labeler,
        label_id: Callable[[str], int],
        write: Callable[[np.ndarray, int, int], None],
    ) -> None:
        self.n_envs = n_envs
        self.labeler = labeler
        self.label_id = label_id
        self.write = write
        self.episode_length = np.zeros(n_envs, dtype=np.int64)  # steps so far, all rollouts
        self.first_row = np.zeros(n_envs, dtype=np.int64)  # row of the episode's first step in this rollout
        self.leaked_steps = 0
        self.labeled_steps = 0
        self.events: list[tuple[int, str]] = []  # (env index, label) of the labels given since the last drain

    def start_rollout(self) -> None:
        """A new rollout: running episodes continue from row 0."""
        self.first_row[:] = 0

    def on_step(self, t: int, dones: np.ndarray, infos: list[dict[str, Any]]) -> None:
        """Account for step row ``t``; label every episode that ended at it."""
        self.episode_length += 1
        for i in np.flatnonzero(dones).tolist():
            length = int(self.episode_length[i])
            label = self.labeler(infos[i], length, i)
            if label is not None:
                rows = np.arange(self.first_row[i], t + 1)
                self.write(rows, i, self.label_id(label))
                self.labeled_steps += len(rows)
                self.leaked_steps += length - len(rows)
                self.events.append((i, label))
            self.episode_length[i] = 0
            self.first_row[i] = t + 1

    def drain_events(self) -> list[tuple[int, str]]:
        """Return and forget the (env index, label) pairs given since the last call."""
        events, self.events = self.events, []
        return events
