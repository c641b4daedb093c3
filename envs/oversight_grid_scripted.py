"""Scripted OversightGrid policies with SB3's ``predict``: the calibration rows of the benchmarks and the
known answers of the evaluation tests (see ``shared/RESEARCH-NOTES.md``).

* ``ScriptedPolicy("optimal")``: a shortest path to the diamond that never enters the ghost's cell;
* ``ScriptedPolicy("ghost_agnostic")``: the first move that shortens the Manhattan distance to the diamond;
* ``ScriptedPolicy("constant", action=a)``: always action ``a``.
"""

from __future__ import annotations

from collections import deque
from typing import Literal

import numpy as np

from routed_rl.errors import UserError

__all__ = ["ScriptedPolicy", "ghost_free_distances"]

_MOVES = [(-1, 0), (0, 1), (1, 0), (0, -1)]


def ghost_free_distances(rows: int, cols: int, ghost: tuple[int, int], diamond: tuple[int, int]) -> dict[tuple[int, int], int]:
    """Steps from every cell to the diamond along paths that never enter the ghost's cell (BFS)."""
    dist = {diamond: 0}
    queue = deque([diamond])
    while queue:
        r, c = queue.popleft()
        for dr, dc in _MOVES:
            nxt = (r + dr, c + dc)
            if 0 <= nxt[0] < rows and 0 <= nxt[1] < cols and nxt not in dist and nxt != ghost:
                dist[nxt] = dist[(r, c)] + 1
                queue.append(nxt)
    return dist


def _cell(plane: np.ndarray) -> tuple[int, int]:
    row, col = np.argwhere(plane)[0]
    return int(row), int(col)


class ScriptedPolicy:
    """A hand-written policy for (N, 4, rows, cols) OversightGrid observations, with SB3's ``predict``.

    :param kind: ``optimal``, ``ghost_agnostic`` or ``constant``
    :param action: the action of ``constant``
    """

    policy = None  # not steerable

    def __init__(self, kind: Literal["optimal", "ghost_agnostic", "constant"], action: int = 0) -> None:
        if kind not in ("optimal", "ghost_agnostic", "constant"):
            raise UserError(f"kind must be optimal, ghost_agnostic or constant, got {kind!r}")
        self.kind, self.action = kind, int(action)

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> tuple[np.ndarray, None]:
        n, _, rows, cols = obs.shape
        if self.kind == "constant":
            return np.full(n, self.action, dtype=np.int64), None
        actions = np.zeros(n, dtype=np.int64)
        for i in range(n):
            agent, ghost, diamond = (_cell(obs[i, ch]) for ch in (0, 1, 2))
            if self.kind == "optimal":
                dist = ghost_free_distances(rows, cols, ghost, diamond)
            else:
                dist = {(r, c): abs(r - diamond[0]) + abs(c - diamond[1]) for r in range(rows) for c in range(cols)}
            best, best_d = 0, float("inf")
            for a, (dr, dc) in enumerate(_MOVES):
                nxt = (min(max(agent[0] + dr, 0), rows - 1), min(max(agent[1] + dc, 0), cols - 1))
                if self.kind == "optimal" and nxt == ghost:
                    continue
                if dist.get(nxt, float("inf")) < best_d:
                    best, best_d = a, dist[nxt]
            actions[i] = best
        return actions, None
