"""Type aliases shared across routed-rl."""

from __future__ import annotations

from collections.abc import Mapping

#: A routing table: label -> {expert name: gradient weight in [0, 1]}.
RoutingSpec = Mapping[str, Mapping[str, float]]

#: Label id stored in buffers for a step that has no label.
UNLABELED: int = -1

__all__ = ["UNLABELED", "RoutingSpec"]
