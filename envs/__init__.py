"""Environments for routed-rl, installed as ``routed_rl.envs``.

Importing this package registers ``RoutedRL/OversightGrid-v0`` with gymnasium.
"""

from gymnasium.envs.registration import register, registry

from routed_rl.envs.oversight_grid import (
    OUTCOMES,
    RENDER_COLORS,
    REWARD_SCHEMES,
    GridBatch,
    OversightGridEnv,
    OversightGridVecEnv,
)

__all__ = [
    "OUTCOMES",
    "OVERSIGHT_GRID_ID",
    "RENDER_COLORS",
    "REWARD_SCHEMES",
    "GridBatch",
    "OversightGridEnv",
    "OversightGridVecEnv",
]

OVERSIGHT_GRID_ID = "RoutedRL/OversightGrid-v0"


def _register_envs() -> None:
    if OVERSIGHT_GRID_ID not in registry:
        register(id=OVERSIGHT_GRID_ID, entry_point="routed_rl.envs.oversight_grid:OversightGridEnv")


_register_envs()
