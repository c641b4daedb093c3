"""Type aliases shared across routed-rl."""

from __future__ import annotations

from collections.abc import Mapping

#: A routing table: label -> {expert name: gradient weight in [0, 1]}.
RoutingSpec = Mapping[str, Mapping[str, float]]

#: Label id stored in buffers for a step that has no label.
UNLABELED: int = -1

#: Label id stored in buffers for an unlabeled step among the last ``tail_steps`` of its episode (see
#: :class:`~routed_rl.routing.RoutingTable`'s ``unlabeled_tail``); like :data:`UNLABELED`, it is not a label.
UNLABELED_TAIL: int = -2

__all__ = ["UNLABELED", "UNLABELED_TAIL", "RoutingSpec"]
