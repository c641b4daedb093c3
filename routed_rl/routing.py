"""Gradient routing: data-dependent weighted masks on the backward pass (arXiv 2410.04332, §3 and §4.3).

This module owns the one gradient-masking primitive, :func:`route`: its forward value is ``x`` itself, and
its backward pass multiplies the incoming gradient by a per-sample weight. No other module re-implements it.
It also holds the :class:`RoutingTable` that turns episode labels into per-expert weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch as th

from routed_rl.errors import UserError, check_expert_name, did_you_mean
from routed_rl.type_aliases import UNLABELED, UNLABELED_TAIL, RoutingSpec

__all__ = ["RoutingTable", "route"]


class _Route(th.autograd.Function):
    @staticmethod
    def forward(ctx: th.autograd.function.FunctionCtx, x: th.Tensor, weight: th.Tensor) -> th.Tensor:
        ctx.save_for_backward(weight)
        return x.view_as(x)

    @staticmethod
    def backward(ctx: th.autograd.function.FunctionCtx, grad: th.Tensor) -> tuple[th.Tensor, None]:
        (weight,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return grad * weight, None


def route(x: th.Tensor, weight: th.Tensor | None) -> th.Tensor:
    """Identity on the forward pass; on the backward pass the gradient is multiplied by ``weight``.

    The forward value is exactly ``x`` (not ``w*x + (1-w)*x``, which can differ by rounding), and a weight of
    0 gives an exactly zero gradient, a weight of 1 the unchanged gradient.

    :param x: (batch, ...) tensor
    :param weight: (batch,) or (batch, 1, ...) weights broadcastable to ``x`` after adding trailing dims;
        ``None`` means no routing
    :return: a tensor equal to ``x``
    """
    if weight is None:
        return x
    w = weight.detach().to(dtype=x.dtype, device=x.device)
    while w.dim() < x.dim():
        w = w.unsqueeze(-1)
    return _Route.apply(x, w)  # type: ignore[no-any-return]


class RoutingTable:
    """Maps episode labels to per-expert gradient weights.

    Default: a label named after an expert routes only into that expert. Unlabeled samples train every
    expert (weight 1) and the gate. Weighted entries are allowed, e.g.
    ``{"ghost": {"ghost": 1.0, "diamond": 0.0}, "diamond": {"diamond": 1.0, "ghost": 0.2}}``; experts missing
    from an entry get weight 0.

    :param expert_names: the experts, in the mixture's order
    :param table: label -> {expert: weight in [0, 1]}; ``None`` gives the default one label per expert
    :param unlabeled: per-expert weights of unlabeled samples (default 1 for every expert); missing experts
        get 1
    :param unlabeled_tail: per-expert weights of unlabeled samples that are among the last steps of their
        episode (label id :data:`~routed_rl.type_aliases.UNLABELED_TAIL`, which the buffer gives them); missing
        experts get their ``unlabeled`` weight (default: the ``unlabeled`` weights)
    """

    def __init__(
        self,
        expert_names: Sequence[str],
        table: RoutingSpec | None = None,
        unlabeled: Mapping[str, float] | None = None,
        unlabeled_tail: Mapping[str, float] | None = None,
    ) -> None:
        self.expert_names = list(expert_names)
        if not self.expert_names or len(set(self.expert_names)) != len(self.expert_names):
            raise UserError(f"expert names must be non-empty and distinct, got {self.expert_names}")
        if table is None:
            table = {name: {name: 1.0} for name in self.expert_names}
        self.table: dict[str, dict[str, float]] = {}
        for label, entry in table.items():
            if not isinstance(entry, Mapping):
                raise UserError(f"routing table entry for label {label!r} must map expert names to weights, got {entry!r}")
            self.table[str(label)] = self._expert_weights(f"routing table entry {label!r}", entry)
        self.labels: list[str] = list(self.table)
        self.n_experts = len(self.expert_names)
        self.unlabeled = {e: 1.0 for e in self.expert_names} | self._expert_weights("unlabeled routing", unlabeled or {})
        self.unlabeled_tail = self.unlabeled | self._expert_weights("unlabeled_tail routing", unlabeled_tail or {})
        n = len(self.expert_names)
        # row k = weights for label id k; the last two rows (indices -2 == UNLABELED_TAIL, -1 == UNLABELED) are
        # the unlabeled weights at an episode's end and elsewhere
        weights = np.ones((len(self.labels) + 2, n), dtype=np.float32)
        weights[UNLABELED] = [self.unlabeled[e] for e in self.expert_names]
        weights[UNLABELED_TAIL] = [self.unlabeled_tail[e] for e in self.expert_names]
        for k, label in enumerate(self.labels):
            weights[k] = [self.table[label].get(e, 0.0) for e in self.expert_names]
        self._weights = weights
        # gate target: the expert a label is named after, else its weights normalised (zero rows: no target)
        targets = np.zeros((len(self.labels) + 2, n), dtype=np.float32)
        for k, label in enumerate(self.labels):
            if label in self.expert_names:
                targets[k, self.expert_names.index(label)] = 1.0
            elif weights[k].sum() > 0:
                targets[k] = weights[k] / weights[k].sum()
        self._gate_targets = targets

    def _expert_weights(self, what: str, given: Mapping[str, float]) -> dict[str, float]:
        """``given`` as floats, each key a known expert and each weight in [0, 1]; ``what`` names it in errors."""
        for expert, weight in given.items():
            check_expert_name(expert, self.expert_names, what)
            if not 0.0 <= float(weight) <= 1.0:
                raise UserError(f"{what} weight for {expert!r} must be in [0, 1], got {weight}")
        return {e: float(w) for e, w in given.items()}

    def label_id(self, label: str) -> int:
        """The integer id stored in buffers for ``label``; raises ``ValueError`` for an unknown label."""
        try:
            return self.labels.index(label)
        except ValueError:
            raise UserError(f"unknown label {label!r}{did_you_mean(label, self.labels)}; labels are {self.labels}") from None

    def weights(self, label_ids: np.ndarray | th.Tensor) -> th.Tensor:
        """Per-expert gradient weights.

        :param label_ids: (batch,) int label ids, :data:`UNLABELED` (-1) for unlabeled samples,
            :data:`UNLABELED_TAIL` (-2) for unlabeled samples at the end of their episode
        :return: (batch, n_experts) float32 weights
        """
        ids = th.as_tensor(label_ids).long()
        return th.as_tensor(self._weights, device=ids.device)[ids]

    def gate_targets(self, label_ids: np.ndarray | th.Tensor) -> th.Tensor:
        """(batch, n_experts) target distribution of the gate for labeled samples (zeros for unlabeled ones)."""
        ids = th.as_tensor(label_ids).long()
        return th.as_tensor(self._gate_targets, device=ids.device)[ids]

    def owners(self, label_ids: np.ndarray | th.Tensor) -> th.Tensor:
        """(batch,) index of the expert each label mainly routes into (its largest weight; first on ties)."""
        ids = th.as_tensor(label_ids).long()
        return th.as_tensor(self._weights, device=ids.device)[ids].argmax(dim=1)

    def to_dict(self) -> dict[str, dict[str, float]]:
        """The table as plain data (for configs and saving)."""
        return {label: dict(entry) for label, entry in self.table.items()}

    def __repr__(self) -> str:
        return (
            f"RoutingTable(expert_names={self.expert_names}, table={self.table}, unlabeled={self.unlabeled}, "
            f"unlabeled_tail={self.unlabeled_tail})"
        )


assert (UNLABELED, UNLABELED_TAIL) == (-1, -2), "RoutingTable.weights indexes the unlabeled rows from the end"
