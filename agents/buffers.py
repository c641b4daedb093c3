"""A rollout buffer that also stores a label per step (mirrors SB3 2.9's ``RolloutBuffer``)."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import NamedTuple

import numpy as np
import torch as th
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.vec_env import VecNormalize

from routed_rl.type_aliases import UNLABELED, UNLABELED_TAIL

__all__ = ["LabelReplay", "LabeledRolloutBuffer", "LabeledRolloutBufferSamples", "ReplaySamples", "steps_to_episode_end"]


class LabeledRolloutBufferSamples(NamedTuple):
    """SB3's ``RolloutBufferSamples`` fields plus ``labels`` (batch,) long, -1 = unlabeled, ``label_mask``
    (batch,) bool, True where the step is labeled, ``owner_log_prob`` (batch,) float, the log-probability
    of the action under the expert its label routes into, acting alone, before the update (0 if unset), and
    ``deployed`` (batch,) bool, True where the step was collected with the deployed steering."""

    observations: th.Tensor
    actions: th.Tensor
    old_values: th.Tensor
    old_log_prob: th.Tensor
    advantages: th.Tensor
    returns: th.Tensor
    labels: th.Tensor
    label_mask: th.Tensor
    owner_log_prob: th.Tensor
    deployed: th.Tensor


class LabeledRolloutBuffer(RolloutBuffer):
    """``RolloutBuffer`` plus ``labels`` of shape (n_steps, n_envs), reset to :data:`UNLABELED` every rollout.

    Labels are written by :meth:`set_labels` when an episode ends (they are not known at ``add`` time) and
    flattened env-major together with the other arrays, so each label stays with its own step.
    ``deployed`` (n_steps, n_envs) marks the steps of the envs in :attr:`deployed_envs` (those that act with
    the deployed steering while collecting). With :attr:`tail_steps` > 0, the unlabeled steps among the last
    ``tail_steps`` of an episode that ends in this rollout get the id :data:`UNLABELED_TAIL` when the rollout
    is complete (:meth:`compute_returns_and_advantage`), so that routing can treat them apart.
    """

    labels: np.ndarray
    owner_log_probs: np.ndarray
    deployed: np.ndarray
    deployed_envs: np.ndarray | None = None
    """(n_envs,) bool: the envs that act with the deployed steering (None: none)."""
    tail_steps: int = 0
    """How many of an episode's last steps count as its tail (0: none)."""

    def reset(self) -> None:
        self.labels = np.full((self.buffer_size, self.n_envs), UNLABELED, dtype=np.int64)
        self.owner_log_probs = np.zeros((self.buffer_size, self.n_envs), dtype=np.float32)
        self.deployed = np.zeros((self.buffer_size, self.n_envs), dtype=bool)
        if self.deployed_envs is not None:
            self.deployed[:] = self.deployed_envs
        super().reset()

    def set_labels(self, rows: np.ndarray, env: int, label_id: int) -> None:
        """Give label ``label_id`` to buffer rows ``rows`` of env ``env`` (rows may include the one about to be added)."""
        if self.generator_ready:
            raise RuntimeError("labels must be set before the buffer is flattened for training")
        self.labels[rows, env] = label_id

    def compute_returns_and_advantage(self, last_values: th.Tensor, dones: np.ndarray) -> None:
        """SB3's GAE; then the unlabeled tail steps are marked (``dones``: whether each env's last step ended
        its episode)."""
        super().compute_returns_and_advantage(last_values, dones)
        if self.tail_steps > 0:
            tail = steps_to_episode_end(self.episode_starts, dones) < self.tail_steps
            self.labels[tail & (self.labels == UNLABELED)] = UNLABELED_TAIL

    def get(self, batch_size: int | None = None) -> Generator[LabeledRolloutBufferSamples, None, None]:  # type: ignore[override]
        if not self.generator_ready:
            self.labels = self.swap_and_flatten(self.labels)
            self.owner_log_probs = self.swap_and_flatten(self.owner_log_probs)
            self.deployed = self.swap_and_flatten(self.deployed)
        yield from super().get(batch_size)  # type: ignore[misc]

    def _get_samples(self, batch_inds: np.ndarray, env: VecNormalize | None = None) -> LabeledRolloutBufferSamples:  # type: ignore[override]
        base = super()._get_samples(batch_inds, env)
        labels = self.labels[batch_inds].flatten()
        return LabeledRolloutBufferSamples(
            *base,
            labels=self.to_torch(labels).long(),
            label_mask=self.to_torch(labels >= 0).bool(),
            owner_log_prob=self.to_torch(self.owner_log_probs[batch_inds].flatten()),
            deployed=self.to_torch(self.deployed[batch_inds].flatten()).bool(),
        )


def steps_to_episode_end(episode_starts: np.ndarray, last_dones: np.ndarray) -> np.ndarray:
    """(n_steps, n_envs) how many steps after each step its episode ends within the rollout (0: it ends at
    that step), or a number larger than the rollout where it does not end in the rollout.

    :param episode_starts: (n_steps, n_envs) SB3's flag: the step is its episode's first (the step before it ended one)
    :param last_dones: (n_envs,) whether each env's last step of the rollout ended its episode
    """
    n_steps = len(episode_starts)
    ends = np.zeros_like(episode_starts, dtype=bool)
    ends[:-1] = episode_starts[1:] > 0
    ends[-1] = np.asarray(last_dones) > 0
    out = np.empty(ends.shape, dtype=np.int64)
    remaining = np.full(ends.shape[1:], n_steps + 1, dtype=np.int64)  # no end seen yet
    for t in range(n_steps - 1, -1, -1):
        remaining = np.where(ends[t], 0, remaining + 1)
        out[t] = remaining
    return out


class ReplaySamples(NamedTuple):
    """Labeled steps of past rollouts: what their behaviour policy did and how it fared."""

    observations: th.Tensor
    actions: th.Tensor
    old_log_prob: th.Tensor
    """Log-probability of the action under the policy that collected it (the behaviour policy)."""
    advantages: th.Tensor
    labels: th.Tensor
    deployed: th.Tensor | None = None
    """True where the step was collected with the deployed steering (None in stores saved before it existed:
    none was)."""
    weight: th.Tensor | None = None
    """Per-step weight of the step's surrogate (None: 1); set when the replay is re-anchored on the current
    policy (``old_log_prob`` then holds that policy's log-probability)."""


class LabelReplay:
    """The labeled steps of the last ``rollouts`` rollouts, kept for reuse in later updates.

    Labeled episodes are a small share of the data but all of the overseer's signal; keeping them lets each
    label train the policy in several updates (with a clipped surrogate against the behaviour policy, so a
    stale step stops pulling once the policy has moved past the clip range).

    :param rollouts: how many past rollouts to keep (the oldest is dropped first)
    :param max_steps: keep at most this many labeled steps, dropping the oldest rollouts first (the newest one
        is always kept whole); None: no limit. With many labels (high oversight) ``rollouts`` rollouts hold many
        steps and every update replays them all; this bounds what the replay costs per update.
    """

    def __init__(self, rollouts: int, max_steps: int | None = None) -> None:
        self.rollouts = rollouts
        self.max_steps = max_steps
        self._store: list[ReplaySamples] = []

    def __len__(self) -> int:
        return sum(len(s.labels) for s in self._store)

    def add(self, buffer: LabeledRolloutBuffer) -> None:
        """Keep the labeled steps of a filled buffer (call after GAE, before the buffer is flattened)."""
        rows, envs = np.nonzero(buffer.labels >= 0)
        if self.rollouts <= 0:
            return
        pick = (rows, envs)
        self._store.append(
            ReplaySamples(
                observations=th.as_tensor(buffer.observations[pick]),
                actions=th.as_tensor(buffer.actions[pick]),
                old_log_prob=th.as_tensor(buffer.log_probs[pick]),
                advantages=th.as_tensor(buffer.advantages[pick]),
                labels=th.as_tensor(buffer.labels[pick]).long(),
                deployed=th.as_tensor(buffer.deployed[pick]),
            )
        )
        del self._store[: -self.rollouts]
        limit = getattr(self, "max_steps", None)  # (a store saved before the limit existed has none)
        while limit is not None and len(self._store) > 1 and len(self) > limit:
            del self._store[0]

    def sample(self, n_batches: int, generator: th.Generator | None = None) -> list[ReplaySamples]:
        """All kept steps, shuffled and split into ``n_batches`` parts (empty list when nothing is kept)."""
        return self.epochs(1, n_batches, generator)[0]

    def epochs(
        self,
        n_epochs: int,
        n_batches: int,
        generator: th.Generator | None = None,
        reanchor: Callable[[ReplaySamples], ReplaySamples] | None = None,
    ) -> list[list[ReplaySamples]]:
        """:meth:`sample` for each of ``n_epochs`` epochs (a new shuffle each), joining the kept rollouts once.

        :param reanchor: applied once to the joined steps before they are shuffled (e.g. to set each step's
            ``old_log_prob`` and ``weight`` from the current policy); draws nothing from the RNG
        """
        if not self._store:
            return [[] for _ in range(n_epochs)]
        store = [  # a store saved before ``deployed`` existed: none of its steps was
            s if s.deployed is not None else s._replace(deployed=th.zeros(len(s.labels), dtype=th.bool)) for s in self._store
        ]
        joined = ReplaySamples(*(None if parts[0] is None else th.cat(parts) for parts in zip(*store, strict=True)))  # type: ignore[arg-type]
        if reanchor is not None:
            joined = reanchor(joined)
        out = []
        for _ in range(n_epochs):
            order = th.randperm(len(joined.labels), generator=generator)
            parts = [idx for idx in th.tensor_split(order, n_batches) if len(idx)]
            out.append([ReplaySamples(*(None if f is None else f[idx] for f in joined)) for idx in parts])  # type: ignore[arg-type]
        return out
