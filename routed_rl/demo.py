"""``make demo``: a seeded rollout of the oversight gridworld, printed to the terminal and saved as a GIF.

Usage: ``python -m routed_rl.demo [--out DIR] [--seed N]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from routed_rl.envs import OversightGridEnv


def save_gif(frames: list[np.ndarray], path: Path, scale: int = 4, ms_per_frame: int = 250) -> None:
    """Write RGB frames (H, W, 3) uint8 to an animated GIF, upscaled ``scale`` times."""
    images = [Image.fromarray(f).resize((f.shape[1] * scale, f.shape[0] * scale), Image.Resampling.NEAREST) for f in frames]
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=ms_per_frame, loop=0)


def random_rollout(seed: int, out: Path) -> None:
    """Play one episode with uniform random actions, print each frame, and save the GIF."""
    env = OversightGridEnv(oversight_prob=0.5, render_mode="rgb_array")
    text = OversightGridEnv(oversight_prob=0.5, render_mode="ansi")
    env.reset(seed=seed)
    text.reset(seed=seed)
    rng = np.random.default_rng(seed)
    frames = [env.render()]
    print(text.render())
    done, info, t = False, {}, 0
    while not done:
        action = int(rng.integers(4))
        _, _, term, trunc, info = env.step(action)
        text.step(action)
        frames.append(env.render())
        t += 1
        print(f"step {t}: action {'URDL'[action]}\n{text.render()}")
        done = term or trunc
    gif = out / "random_rollout.gif"
    save_gif([f for f in frames if f is not None], gif)
    print(f"episode ended after {t} steps: {info}. GIF written to {gif}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo_out"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    random_rollout(args.seed, args.out)


if __name__ == "__main__":
    main()
