"""Per-expert views of stacked expert tensors, so tests can check the experts one by one."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_STACKED = re.compile(r"^(?P<prefix>(?:.*\.)?experts\.)(?P<kind>weights|biases)\.(?P<layer>\d+)$")


def per_expert(named: Mapping[str, Any]) -> dict[str, Any]:
    """Split each stacked tensor (``...experts.weights.<i>`` / ``...experts.biases.<i>``, first dim = expert)
    into one entry per expert, named as one MLP per expert would be (``...experts.<k>.<2i>.weight`` / ``.bias``);
    other entries (and ``None`` gradients) are kept as they are."""
    out: dict[str, Any] = {}
    for name, value in named.items():
        match = _STACKED.match(name)
        if match is None or value is None:
            out[name] = value
            continue
        kind = "weight" if match["kind"] == "weights" else "bias"
        for k in range(value.shape[0]):
            out[f"{match['prefix']}{k}.{2 * int(match['layer'])}.{kind}"] = value[k]
    return out
