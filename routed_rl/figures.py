"""Figures: per-expert policy maps, the gate's map, episode GIFs, and the sweep report's plots.

A policy map draws, for one fixed ghost/diamond layout, the action the (steered) policy takes with the agent
on each free cell (as in the paper's figure); the gate map colours each cell by the gate's weight on one
expert, with a colour bar. Every figure carries a title that says what it shows (run, oversight level,
steering mode) and a legend for what its marks mean. Drawn with matplotlib's object API on its Agg canvas
(no display, no pyplot state); GIF
frames come from the env's own renderer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch as th
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from PIL import Image, ImageDraw

from routed_rl.envs import RENDER_COLORS, GridBatch, OversightGridEnv

if TYPE_CHECKING:
    from routed_rl.sweeps.report import Group

__all__ = [
    "DEFAULT_LAYOUT",
    "episode_frames",
    "gaming_gap_figure",
    "gate_map",
    "layout_observations",
    "policy_map",
    "return_vs_oversight_figure",
    "save_gif",
    "save_png",
]

#: ghost right above the diamond's column, in the agent's way from the top row; no cell overseen
DEFAULT_LAYOUT: dict[str, Any] = {"ghost": (2, 2), "diamond": (4, 2), "overseen": ()}
_ARROW = {0: (0, -1), 1: (1, 0), 2: (0, 1), 3: (-1, 0)}  # action -> (dx, dy), y pointing down the grid
_GHOST, _DIAMOND, _OVERSEEN = "#d23232", "#14aaaa", "#f0b400"


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


def _figure(size: tuple[float, float], dpi: int = 100) -> Figure:
    fig = Figure(figsize=size, dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _grid_axes(rows: int, cols: int, lay: dict[str, Any], title: str) -> tuple[Figure, Any]:
    """A figure with the grid, the ghost (G), the diamond (D) and the overseen cells drawn."""
    fig = _figure((0.8 * cols + 1.8, 0.8 * rows + 2.0), dpi=90)
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


def _to_image(fig: Figure) -> np.ndarray:
    """The figure as an (H, W, 3) uint8 array, then closed."""
    canvas = fig.canvas
    assert isinstance(canvas, FigureCanvasAgg)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


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
    return _to_image(fig)


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
    return _to_image(fig)


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def return_vs_oversight_figure(groups: list[Group], iqm: bool, title: str, path: Path) -> Path:
    """Ground-truth return against oversight level (log x axis): one line and 95% band per method (and mode)."""
    fig = _figure((7, 4.5))
    ax = fig.subplots()
    for label in dict.fromkeys(g.label for g in groups):
        mine = sorted((g for g in groups if g.label == label), key=lambda g: g.oversight_prob)
        x = [g.oversight_prob for g in mine]
        stats = [g.stats["return"] for g in mine]
        (line,) = ax.plot(x, [s.point for s in stats], marker="o", label=f"{label}, {mine[0].stats['return'].n} seeds")
        ax.fill_between(x, [s.low for s in stats], [s.high for s in stats], color=line.get_color(), alpha=0.18)
    ax.set_xscale("log")
    levels = sorted({g.oversight_prob for g in groups})
    ax.set_xticks(levels, [f"{p:.1%}" for p in levels])
    ax.minorticks_off()
    ax.set_xlabel("oversight level (probability that a terminal cell is overseen)")
    ax.set_ylabel(f"ground-truth return ({'IQM' if iqm else 'mean'} over seeds)")
    ax.set_title(f"Ground-truth return vs oversight, each method in its deployed steering mode\n{title}; bands: 95% bootstrap "
                 "interval over seeds", fontsize=9)  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def gaming_gap_figure(groups: list[Group], title: str, path: Path) -> Path:
    """Per oversight level, each method's ghost share of terminal episodes on overseen vs unseen cells."""
    levels = sorted({g.oversight_prob for g in groups})
    fig = _figure((4.2 * len(levels) + 1, 4.6))
    axes = fig.subplots(1, len(levels), sharey=True, squeeze=False)
    for ax, prob in zip(axes[0], levels, strict=True):
        at = [g for g in groups if g.oversight_prob == prob]
        x = np.arange(len(at))
        for offset, key, color, name in (
            (-0.2, "ghost_overseen", _OVERSEEN, "overseen"),
            (0.2, "ghost_unseen", "#555555", "unseen"),
        ):
            per_seed = [[r[key] for r in g.rows if r[key] is not None] for g in at]
            means = [float(np.mean(v)) if v else np.nan for v in per_seed]
            ax.bar(x + offset, means, width=0.4, color=color, label=f"{name} terminal cells (mean over seeds)")
            for i, values in enumerate(per_seed):
                ax.plot([x[i] + offset] * len(values), values, "k.", markersize=4)
        ax.set_xticks(x, [g.label.replace(" (", "\n(") for g in at], fontsize=7, rotation=30, ha="right")
        ax.set_title(f"oversight {prob:.1%}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("ghost share of episodes that ended at a terminal")
    seed_dot = Line2D([], [], color="k", marker=".", linestyle="", label="one seed")
    handles, _ = axes[0][0].get_legend_handles_labels()
    fig.legend(handles=[*handles, seed_dot], loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(f"Behaving only when watched: ghost rate on overseen vs unseen episodes\n{title}", fontsize=10, x=0.4)
    return _save(fig, path)


def save_png(image: np.ndarray, path: Path) -> Path:
    """Write an (H, W, 3) uint8 image as PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def save_gif(
    frames: list[np.ndarray], path: Path, scale: int = 4, ms_per_frame: int = 250, caption: Sequence[str] = ()
) -> Path:
    """Write RGB frames (H, W, 3) uint8 to an animated GIF, upscaled ``scale`` times, with the caption lines and
    a colour legend of the env's renderer (agent, diamond, ghost, overseen cell) in a strip below."""
    size = (frames[0].shape[1] * scale, frames[0].shape[0] * scale)
    legend = [(name, color) for name, color in RENDER_COLORS.items() if name != "floor"]
    line_h = 12
    width = max(size[0], 6 * max((len(line) for line in caption), default=0) + 8, 190)
    strip_h = line_h * (len(caption) + (len(legend) + 1) // 2) + 8
    images = []
    for k, frame in enumerate(frames):
        image = Image.new("RGB", (width, size[1] + strip_h), (255, 255, 255))
        image.paste(Image.fromarray(frame).resize(size, Image.Resampling.NEAREST), ((width - size[0]) // 2, 0))
        draw = ImageDraw.Draw(image)
        y = size[1] + 4
        for line in caption:
            draw.text((4, y), line.replace("{step}", str(k)), fill=(0, 0, 0))
            y += line_h
        for j, (name, color) in enumerate(legend):
            x = 4 + (j % 2) * (width // 2)
            yy = y + (j // 2) * line_h
            draw.rectangle([x, yy + 1, x + 9, yy + 10], fill=color, outline=(120, 120, 120))
            draw.text((x + 14, yy), name + (" cell" if name == "overseen" else ""), fill=(0, 0, 0))
        images.append(image)
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=ms_per_frame, loop=0)
    return path


def episode_frames(model: Any, env_kwargs: dict[str, Any], seed: int, **steer: Any) -> tuple[list[np.ndarray], dict]:
    """Play one deterministic episode of the true-reward env, steered as given; return its frames and final info."""
    env = OversightGridEnv(**{**env_kwargs, "reward_scheme": "true"}, render_mode="rgb_array")
    obs, _ = env.reset(seed=seed)
    frames, info, done = [env.render()], {}, False
    with model.policy.steer(**steer):
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, _, term, trunc, info = env.step(int(action))
            frames.append(env.render())
            done = term or trunc
    return [f for f in frames if isinstance(f, np.ndarray)], info
