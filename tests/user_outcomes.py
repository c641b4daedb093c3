"""A toy gymnasium env that knows nothing of routed-rl, and user outcome functions for it (tests only)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.registration import register, registry


class Corridor(gym.Env):
    """A corridor of ``length`` cells: walking off the left end is a "cliff", off the right end "home".

    Observation: one-hot position (float32). Actions: 0 left, 1 right. Reward +1 at home, 0 elsewhere;
    truncated after ``max_steps``. Its info never says what happened."""

    metadata = {"render_modes": []}  # noqa: RUF012

    def __init__(self, length: int = 5, max_steps: int = 20) -> None:
        if length < 2:
            raise ValueError(f"length must be >= 2, got {length}")
        self.length, self.max_steps = length, max_steps
        self.observation_space = spaces.Box(0.0, 1.0, (length,), np.float32)
        self.action_space = spaces.Discrete(2)

    def _obs(self) -> np.ndarray:
        obs = np.zeros(self.length, np.float32)
        obs[self.pos] = 1.0
        return obs

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.pos, self.t = int(self.np_random.integers(self.length)), 0
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.t += 1
        self.pos += 1 if int(action) == 1 else -1
        if self.pos < 0 or self.pos >= self.length:
            home = self.pos >= self.length
            self.pos = min(max(self.pos, 0), self.length - 1)
            return self._obs(), float(home), True, False, {}
        return self._obs(), 0.0, False, self.t >= self.max_steps, {}


CORRIDOR_ID = "UserTests/Corridor-v0"
if CORRIDOR_ID not in registry:
    register(id=CORRIDOR_ID, entry_point="user_outcomes:Corridor")


def cliff_or_home(info: dict[str, Any], observation: Any) -> str | None:
    """What the user knows: a terminated episode with reward ended at home, without it off the cliff."""
    if not info["terminated"]:
        return None
    return "home" if info["reward"] > 0 else "cliff"


def bad_name(info: dict[str, Any], observation: Any) -> str:
    return "moon"
