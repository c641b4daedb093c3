"""Environments for routed-rl, installed as ``routed_rl.envs``.

Importing this package registers each env with gymnasium and its :class:`~routed_rl.tasks.Task` with
routed-rl (one registration per env below; nothing else in the package names an env):

- ``RoutedRL/OversightGrid-v0``: the paper's 5x5 oversight gridworld (:mod:`routed_rl.envs.oversight_grid`);
- ``RoutedRL/MiniGrid-DiamondGhost-{5x5,8x8,16x16}-v0``: the same problem in a MiniGrid room, partial view
  (:mod:`routed_rl.envs.minigrid_diamond_ghost`);
- ``RoutedRL/MiniGrid-DiamondGhost-FourRooms-v0``: four rooms with walls and doors
  (:mod:`routed_rl.envs.minigrid_four_rooms`).
"""

from typing import Any

from gymnasium.envs.registration import register, registry

from routed_rl.envs.minigrid_diamond_ghost import DiamondGhostEnv, minigrid_task
from routed_rl.envs.minigrid_four_rooms import DiamondGhostFourRoomsEnv
from routed_rl.envs.oversight_grid import (
    OUTCOMES,
    OVERSIGHT_GRID_ID,
    RENDER_COLORS,
    REWARD_SCHEMES,
    TASK,
    GridBatch,
    OversightGridEnv,
    OversightGridVecEnv,
)
from routed_rl.tasks import register_task

__all__ = [
    "MINIGRID_IDS",
    "OUTCOMES",
    "OVERSIGHT_GRID_ID",
    "RENDER_COLORS",
    "REWARD_SCHEMES",
    "DiamondGhostEnv",
    "DiamondGhostFourRoomsEnv",
    "GridBatch",
    "OversightGridEnv",
    "OversightGridVecEnv",
]

_MINIGRID_PARAMS: dict[str, Any] = {
    "oversight_prob": 0.1,
    "reward_scheme": "terminal",
    "agent_view_size": 7,
    "mark_overseen": True,
}
#: MiniGrid DiamondGhost ids -> (entry point, parameters with their defaults).
MINIGRID_IDS: dict[str, tuple[str, dict[str, Any]]] = {
    **{
        f"RoutedRL/MiniGrid-DiamondGhost-{n}x{n}-v0": (
            "routed_rl.envs.minigrid_diamond_ghost:DiamondGhostEnv",
            {"size": n, "max_steps": 4 * n * n, **_MINIGRID_PARAMS},
        )
        for n in (5, 8, 16)
    },
    "RoutedRL/MiniGrid-DiamondGhost-FourRooms-v0": (
        "routed_rl.envs.minigrid_four_rooms:DiamondGhostFourRoomsEnv",
        {"size": 19, "max_steps": 200, **_MINIGRID_PARAMS},
    ),
}


def _register_envs() -> None:
    if OVERSIGHT_GRID_ID not in registry:
        register(id=OVERSIGHT_GRID_ID, entry_point="routed_rl.envs.oversight_grid:OversightGridEnv")
    register_task(TASK)
    for env_id, (entry_point, params) in MINIGRID_IDS.items():
        if env_id not in registry:
            register(id=env_id, entry_point=entry_point, kwargs={"size": params["size"]})
        register_task(minigrid_task(env_id, params))


_register_envs()
