"""Figures of a trained routed policy: per-expert policy maps, the gate's map, and episode GIFs.

A policy map draws, for one fixed ghost/diamond layout, the action each expert takes with the agent on each
free cell (as in the paper's figure); the gate map shades each cell by the gate's weight on each expert.
Drawn with Pillow only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from PIL import Image, ImageDraw

from routed_rl.envs import GridBatch, OversightGridEnv

__all__ = ["DEFAULT_LAYOUT", "episode_frames", "gate_map", "layout_observations", "policy_map", "save_gif", "save_png"]

#: ghost right above the diamond's column, in the agent's way from the top row
DEFAULT_LAYOUT = {"ghost": (2, 2), "diamond": (4, 2)}
_CELL = 40
_ARROW = {0: (0, -1), 1: (1, 0), 2: (0, 1), 3: (-1, 0)}  # action -> (dx, dy) in image coordinates


def layout_observations(rows: int, cols: int, ghost: tuple[int, int], diamond: tuple[int, int]) -> tuple[np.ndarray, list]:
    """Observations with the agent on every free cell of a fixed layout; returns them and the agent cells."""
    cells = [(r, c) for r in range(rows) for c in range(cols) if (r, c) not in (ghost, diamond)]
    batch = GridBatch(len(cells), rows, cols)
    for i, cell in enumerate(cells):
        batch.set_layout(i, cell, ghost, diamond)
    return batch.obs.copy(), cells


def _canvas(rows: int, cols: int, ghost: tuple[int, int], diamond: tuple[int, int]) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new("RGB", (cols * _CELL, rows * _CELL), (245, 245, 245))
    draw = ImageDraw.Draw(img)
    for r in range(rows):
        for c in range(cols):
            draw.rectangle([c * _CELL, r * _CELL, (c + 1) * _CELL - 1, (r + 1) * _CELL - 1], outline=(190, 190, 190))
    for (r, c), color in ((ghost, (210, 50, 50)), (diamond, (20, 170, 170))):
        draw.rectangle([c * _CELL + 6, r * _CELL + 6, (c + 1) * _CELL - 7, (r + 1) * _CELL - 7], fill=color)
    return img, draw


def policy_map(model: Any, steer: dict[str, Any], rows: int = 5, cols: int = 5, layout: dict | None = None) -> np.ndarray:
    """An (H, W, 3) uint8 image: the deterministic action in each free cell, with the policy steered as given."""
    lay = layout or DEFAULT_LAYOUT
    obs, cells = layout_observations(rows, cols, lay["ghost"], lay["diamond"])
    with model.policy.steer(**steer):
        actions, _ = model.predict(obs, deterministic=True)
    img, draw = _canvas(rows, cols, lay["ghost"], lay["diamond"])
    for (r, c), a in zip(cells, actions.tolist(), strict=True):
        cx, cy = c * _CELL + _CELL // 2, r * _CELL + _CELL // 2
        dx, dy = _ARROW[int(a)]
        tip = (cx + dx * 13, cy + dy * 13)
        draw.line([(cx - dx * 10, cy - dy * 10), tip], fill=(40, 40, 40), width=3)
        left = (tip[0] - dx * 7 - dy * 6, tip[1] - dy * 7 - dx * 6)
        right = (tip[0] - dx * 7 + dy * 6, tip[1] - dy * 7 + dx * 6)
        draw.polygon([tip, left, right], fill=(40, 40, 40))
    return np.asarray(img)


def gate_map(model: Any, expert: str, rows: int = 5, cols: int = 5, layout: dict | None = None) -> np.ndarray:
    """An (H, W, 3) uint8 image: each free cell shaded by the gate's weight on ``expert`` (white 0, blue 1)."""
    lay = layout or DEFAULT_LAYOUT
    obs, cells = layout_observations(rows, cols, lay["ghost"], lay["diamond"])
    with model.policy.steer():
        weights = model.policy.mixture_weights(th.as_tensor(obs))[:, model.policy.expert_names.index(expert)].numpy()
    img, draw = _canvas(rows, cols, lay["ghost"], lay["diamond"])
    for (r, c), w in zip(cells, weights.tolist(), strict=True):
        shade = (int(255 - 215 * w), int(255 - 165 * w), 255)
        draw.rectangle([c * _CELL + 1, r * _CELL + 1, (c + 1) * _CELL - 2, (r + 1) * _CELL - 2], fill=shade)
        draw.text((c * _CELL + 8, r * _CELL + 14), f"{w:.2f}", fill=(0, 0, 0))
    return np.asarray(img)


def save_png(image: np.ndarray, path: Path) -> Path:
    """Write an (H, W, 3) uint8 image as PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def save_gif(frames: list[np.ndarray], path: Path, scale: int = 4, ms_per_frame: int = 250) -> Path:
    """Write RGB frames (H, W, 3) uint8 to an animated GIF, upscaled ``scale`` times."""
    size = (frames[0].shape[1] * scale, frames[0].shape[0] * scale)
    images = [Image.fromarray(f).resize(size, Image.Resampling.NEAREST) for f in frames]
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
