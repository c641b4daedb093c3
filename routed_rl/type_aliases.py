"""Type aliases shared across routed-rl."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, get_args

#: A routing table: label -> {expert name: gradient weight in [0, 1]}.
RoutingSpec = Mapping[str, Mapping[str, float]]

#: Label id stored in buffers for a step that has no label.
UNLABELED: int = -1

#: Label id stored in buffers for an unlabeled step among the last ``tail_steps`` of its episode (see
#: :class:`~routed_rl.routing.RoutingTable`'s ``unlabeled_tail``); like :data:`UNLABELED`, it is not a label.
UNLABELED_TAIL: int = -2

#: A training precision: ``float32``, or ``bfloat16`` matrix products and convolutions under ``torch.autocast``
#: (the policy's ``precision``, the config's ``policy.precision``).
Precision = Literal["float32", "bfloat16"]

#: The training precisions, in :data:`Precision`'s order.
PRECISIONS: tuple[str, ...] = get_args(Precision)

__all__ = ["PRECISIONS", "UNLABELED", "UNLABELED_TAIL", "Precision", "RoutingSpec"]
