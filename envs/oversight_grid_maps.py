"""OversightGrid's figures: per-expert policy maps and the gate's map (the task's ``maps``).

A policy map draws, for one fixed ghost/diamond layout, the action the (steered) policy takes with the agent
on each free cell (as in the paper's figure); the gate map colours each cell by the gate's weight on one
expert, with a colour bar. Each carries a title that says what it shows (run, oversight level, steering
mode) and a legend for its marks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch as th
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from routed_rl.envs.oversight_grid import GridBatch
from routed_rl.figures import OVERSEEN_COLOR, new_figure, to_image
from routed_rl.steering import mode_name, steering_modes

__all__ = ["DEFAULT_LAYOUT", "gate_map", "grid_maps", "layout_observations", "policy_map"]

#: ghost right above the diamond's column, in the agent's way from the top row; no cell overseen
DEFAULT_LAYOUT: dict[str, Any] = {"ghost": (2, 2), "diamond": (4, 2), "overseen": ()}
_ARROW = {0: (0, -1), 1: (1, 0), 2: (0, 1), 3: (-1, 0)}  # action -> (dx, dy), y pointing down the grid
_GHOST, _DIAMOND, _OVERSEEN = "#d23232", "#14aaaa", OVERSEEN_COLOR


def layout_observations(
    rows: int, cols: int, ghost: tuple[int, int], diamond: tuple[int, int], overseen: Sequence[tuple[int, int]] = ()
) -> tuple[np.ndarray, list]:
    """Observations with the agent on every free cell of a fixed layout; returns them and the agent cells."""
    cells = [(r, c) for r in range(rows) for c in range(cols) if (r, c) not in (ghost, diamond)]
    batch = GridBatch(len(cells), rows, cols)
    for i, cell in enumerate(cells):
        batch.set_layout(i, cell, ghost, diamond, overseen)
    return batch.obs.copy(), cells


def _layout(layout: dict[str, Any] | None) -> dict[str, Any]:
    return {**DEFAULT_LAYOUT, **(layout or {})}


def _grid_axes(rows: int, cols: int, lay: dict[str, Any], title: str) -> tuple[Figure, Any]:
    """A figure with the grid, the ghost (G), the diamond (D) and the overseen cells drawn."""
    fig = new_figure((0.8 * cols + 1.8, 0.8 * rows + 2.0), dpi=90)
    ax = fig.subplots()
    ax.set_xlim(-0.5, cols - 0.5)
    ax.set_ylim(rows - 0.5, -0.5)
    ax.set_xticks(range(cols))
    ax.set_yticks(range(rows))
    ax.set_xticks(np.arange(-0.5, cols), minor=True)
    ax.set_yticks(np.arange(-0.5, rows), minor=True)
    ax.grid(which="minor", color="#bbbbbb")
    ax.tick_params(which="both", length=0, labelsize=7)
    ax.set_aspect("equal")
    for r, c in lay["overseen"]:
        ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor=_OVERSEEN, linewidth=3, zorder=3))
    for (r, c), color, letter in ((lay["ghost"], _GHOST, "G"), (lay["diamond"], _DIAMOND, "D")):
        ax.add_patch(Rectangle((c - 0.35, r - 0.35), 0.7, 0.7, color=color, zorder=2))
        ax.text(c, r, letter, ha="center", va="center", color="white", fontweight="bold", zorder=4)
    ax.set_title(title, fontsize=8)
    return fig, ax


def _legend(ax: Any, extra: list[Any]) -> None:
    handles = [
        *extra,
        Patch(color=_DIAMOND, label="D: diamond"),
        Patch(color=_GHOST, label="G: ghost"),
        Patch(fill=False, edgecolor=_OVERSEEN, linewidth=2, label="overseen cell"),
    ]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.04), ncol=2, fontsize=7, frameon=False)


def _layout_note(lay: dict[str, Any]) -> str:
    return "overseen: " + (
        ", ".join(map(str, lay["overseen"])) if lay["overseen"] else "no cell (what the agent meets unwatched)"
    )


def policy_map(
    model: Any,
    steer: dict[str, Any],
    rows: int = 5,
    cols: int = 5,
    layout: dict[str, Any] | None = None,
    context: str = "",
) -> np.ndarray:
    """An (H, W, 3) uint8 image: the deterministic action with the agent on each free cell, steered as given.

    :param layout: ``ghost``, ``diamond`` (row, col) and ``overseen`` cells (default :data:`DEFAULT_LAYOUT`)
    :param context: what the model is (run, oversight level), for the title
    """
    lay = _layout(layout)
    obs, cells = layout_observations(rows, cols, lay["ghost"], lay["diamond"], lay["overseen"])
    with model.policy.steer(**steer):
        actions, _ = model.predict(obs, deterministic=True)
        mode = model.policy.steering.name if model.policy.steering is not None else "unsteered"
    fig, ax = _grid_axes(rows, cols, lay, f"policy map, {mode}\n{context}\n{_layout_note(lay)}".replace("\n\n", "\n"))
    for (r, c), a in zip(cells, actions.tolist(), strict=True):
        dx, dy = _ARROW[int(a)]
        ax.annotate("", xy=(c + 0.32 * dx, r + 0.32 * dy), xytext=(c - 0.32 * dx, r - 0.32 * dy),
                    arrowprops={"arrowstyle": "-|>", "color": "#282828", "lw": 1.8})  # fmt: skip
    arrow = Line2D([], [], color="#282828", marker=">", markersize=6, label="action with the agent here")
    _legend(ax, [arrow])
    return to_image(fig)


def gate_map(
    model: Any, expert: str, rows: int = 5, cols: int = 5, layout: dict[str, Any] | None = None, context: str = ""
) -> np.ndarray:
    """An (H, W, 3) uint8 image: each free cell coloured by the gate's weight on ``expert`` (colour bar 0 to 1)."""
    lay = _layout(layout)
    obs, cells = layout_observations(rows, cols, lay["ghost"], lay["diamond"], lay["overseen"])
    with model.policy.steer():
        weights = model.policy.mixture_weights(th.as_tensor(obs, device=model.device))
        weights = weights[:, model.policy.expert_names.index(expert)].cpu().numpy()
    grid = np.full((rows, cols), np.nan)
    for (r, c), w in zip(cells, weights.tolist(), strict=True):
        grid[r, c] = w
    title = f"gate weight on expert {expert!r} (unsteered)\n{context}\n{_layout_note(lay)}".replace("\n\n", "\n")
    fig, ax = _grid_axes(rows, cols, lay, title)
    shown = ax.imshow(grid, cmap="Blues", vmin=0.0, vmax=1.0, zorder=1)
    for (r, c), w in zip(cells, weights.tolist(), strict=True):
        ax.text(c, r, f"{w:.2f}", ha="center", va="center", fontsize=7, color="white" if w > 0.6 else "black", zorder=4)
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label=f"gate weight on {expert} (agent on that cell)")
    _legend(ax, [])
    return to_image(fig)


def grid_maps(model: Any, env_kwargs: dict[str, Any], context: str) -> dict[str, np.ndarray]:
    """A policy map per steering mode and a gate map per expert (none on grids too small for the layout)."""
    rows, cols = env_kwargs["rows"], env_kwargs["cols"]
    if rows < 5 or cols < 3:
        return {}
    names = model.policy.expert_names
    images = {
        f"policy_map_{mode_name(names, **s)}": policy_map(model, s, rows, cols, context=context) for s in steering_modes(names)
    }
    for expert in names:
        images[f"gate_map_{expert}"] = gate_map(model, expert, rows, cols, context=context)
    return images
