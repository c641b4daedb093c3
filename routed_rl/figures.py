"""Figures every task shares: episode GIFs (from the env's own renderer) and the sweep report's plots.

Task-specific figures (OversightGrid's policy and gate maps) live with their env and reach training through
the task's ``maps``. Every figure carries a title that says what it shows and a legend for its marks; they
are drawn with matplotlib's object API on its Agg canvas (no display, no pyplot state).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from PIL import Image, ImageDraw

if TYPE_CHECKING:
    from routed_rl.sweeps.report import Group
    from routed_rl.tasks import Task

__all__ = [
    "OVERSEEN_COLOR",
    "episode_frames",
    "gaming_gap_figure",
    "new_figure",
    "return_vs_oversight_figure",
    "save_figure",
    "save_gif",
    "save_png",
    "to_image",
]

#: The colour of overseen things in every figure.
OVERSEEN_COLOR = "#f0b400"


def new_figure(size: tuple[float, float], dpi: int = 100) -> Figure:
    """A matplotlib figure on its own Agg canvas (constrained layout)."""
    fig = Figure(figsize=size, dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def to_image(fig: Figure) -> np.ndarray:
    """The figure as an (H, W, 3) uint8 array."""
    canvas = fig.canvas
    assert isinstance(canvas, FigureCanvasAgg)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_figure(fig: Figure, path: Path) -> Path:
    """Write the figure as PNG (tight bounding box)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def return_vs_oversight_figure(groups: list[Group], iqm: bool, title: str, path: Path) -> Path:
    """Ground-truth return against oversight level (log x axis): one line and 95% band per method (and mode)."""
    fig = new_figure((7, 4.5))
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
    return save_figure(fig, path)


def gaming_gap_figure(groups: list[Group], title: str, path: Path, unwanted: str) -> Path:
    """Per oversight level, each method's ``unwanted`` share of the episodes with an outcome, overseen vs unseen."""
    levels = sorted({g.oversight_prob for g in groups})
    fig = new_figure((4.2 * len(levels) + 1, 4.6))
    axes = fig.subplots(1, len(levels), sharey=True, squeeze=False)
    for ax, prob in zip(axes[0], levels, strict=True):
        at = [g for g in groups if g.oversight_prob == prob]
        x = np.arange(len(at))
        for offset, key, color, name in (
            (-0.2, f"{unwanted}_overseen", OVERSEEN_COLOR, "overseen"),
            (0.2, f"{unwanted}_unseen", "#555555", "unseen"),
        ):
            per_seed = [[r[key] for r in g.rows if r[key] is not None] for g in at]
            means = [float(np.mean(v)) if v else np.nan for v in per_seed]
            ax.bar(x + offset, means, width=0.4, color=color, label=f"{name} episodes (mean over seeds)")
            for i, values in enumerate(per_seed):
                ax.plot([x[i] + offset] * len(values), values, "k.", markersize=4)
        ax.set_xticks(x, [g.label.replace(" (", "\n(") for g in at], fontsize=7, rotation=30, ha="right")
        ax.set_title(f"oversight {prob:.1%}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel(f"{unwanted} share of episodes with an outcome")
    seed_dot = Line2D([], [], color="k", marker=".", linestyle="", label="one seed")
    handles, _ = axes[0][0].get_legend_handles_labels()
    fig.legend(handles=[*handles, seed_dot], loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(f"Behaving only when watched: {unwanted} rate on overseen vs unseen episodes\n{title}", fontsize=10, x=0.4)
    return save_figure(fig, path)


def save_png(image: np.ndarray, path: Path) -> Path:
    """Write an (H, W, 3) uint8 image as PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def save_gif(
    frames: list[np.ndarray],
    path: Path,
    scale: int = 4,
    ms_per_frame: int = 250,
    caption: Sequence[str] = (),
    legend: Mapping[str, tuple[int, int, int]] | None = None,
) -> Path:
    """Write RGB frames (H, W, 3) uint8 to an animated GIF, upscaled ``scale`` times (less for large frames), with
    the caption lines and the colour legend of the env's renderer (name -> RGB, e.g. a task's ``legend``) in a
    strip below."""
    scale = max(1, min(scale, 512 // max(frames[0].shape[:2])))
    size = (frames[0].shape[1] * scale, frames[0].shape[0] * scale)
    legend_items = list((legend or {}).items())
    line_h = 12
    width = max(size[0], 6 * max((len(line) for line in caption), default=0) + 8, 190)
    strip_h = line_h * (len(caption) + (len(legend_items) + 1) // 2) + 8
    images = []
    for k, frame in enumerate(frames):
        image = Image.new("RGB", (width, size[1] + strip_h), (255, 255, 255))
        image.paste(Image.fromarray(frame).resize(size, Image.Resampling.NEAREST), ((width - size[0]) // 2, 0))
        draw = ImageDraw.Draw(image)
        y = size[1] + 4
        for line in caption:
            draw.text((4, y), line.replace("{step}", str(k)), fill=(0, 0, 0))
            y += line_h
        for j, (name, color) in enumerate(legend_items):
            x = 4 + (j % 2) * (width // 2)
            yy = y + (j // 2) * line_h
            draw.rectangle([x, yy + 1, x + 9, yy + 10], fill=color, outline=(120, 120, 120))
            draw.text((x + 14, yy), name + (" cell" if name == "overseen" else ""), fill=(0, 0, 0))
        images.append(image)
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=ms_per_frame, loop=0)
    return path


def episode_frames(
    model: Any, task: Task, env_kwargs: dict[str, Any], seed: int, **steer: Any
) -> tuple[list[np.ndarray], dict]:
    """Play one deterministic episode of the task's env, steered as given; return its frames and final info."""
    if task.make_render_env is None:
        raise ValueError(f"{task.env_id} cannot render images")
    env = task.make_render_env(env_kwargs)
    obs, _ = env.reset(seed=seed)
    frames, done = [env.render()], False
    info: dict[str, Any] = {}
    with model.policy.steer(**steer):
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, _, term, trunc, info = env.step(action.item() if isinstance(action, np.ndarray) else action)
            frames.append(env.render())
            done = term or trunc
    env.close()
    return [np.asarray(f) for f in frames if isinstance(f, np.ndarray)], info
