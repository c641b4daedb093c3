"""DiamondGhost in MiniGrid's four rooms: walls and doors between the agent, the diamond and the ghost.

Registered as ``RoutedRL/MiniGrid-DiamondGhost-FourRooms-v0``.
"""

from __future__ import annotations

from minigrid.core.grid import Grid
from minigrid.core.world_object import Door

from routed_rl.envs.minigrid_diamond_ghost import DiamondGhostEnv

__all__ = ["DiamondGhostFourRoomsEnv"]


class DiamondGhostFourRoomsEnv(DiamondGhostEnv):
    """Reach the diamond, avoid the ghost, across four rooms joined by open doors.

    ## Description

    MiniGrid's FourRooms layout (``size`` x ``size`` with walls, default 19): four rooms, each wall between
    two rooms with an open door at a random place. The agent, the diamond and the ghost stand on random
    cells of any room; the walls hide what is behind them, so the agent must explore to find either.
    Everything else (oversight, rewards, labels) is :class:`~routed_rl.envs.minigrid_diamond_ghost.DiamondGhostEnv`'s.

    ## Mission Space

    "reach the diamond and avoid the ghost"

    ## Action Space

    | Num | Name    | Action       |
    |-----|---------|--------------|
    | 0   | left    | Turn left    |
    | 1   | right   | Turn right   |
    | 2   | forward | Move forward (through an open door too) |

    ## Observation Encoding

    As DiamondGhostEnv's, with walls (``wall``) and open doors (``door``, state 0) in view.

    ## Rewards

    As DiamondGhostEnv's (``reward_scheme``).

    ## Termination

    Entering the diamond or the ghost terminates; truncated after ``max_steps`` (default 200).

    ## Labels

    ``info`` at every episode end: ``outcome`` (``diamond``, ``ghost``, ``timeout``), ``overseen``,
    ``true_reward``.

    ## Registered Configurations

    - ``RoutedRL/MiniGrid-DiamondGhost-FourRooms-v0``
    """

    see_through_walls_default = False
    min_size = 7

    def __init__(
        self,
        size: int = 19,
        oversight_prob: float = 0.1,
        max_steps: int | None = 200,
        reward_scheme: str = "terminal",
        agent_view_size: int = 7,
        render_mode: str | None = None,
        mark_overseen: bool = True,
    ) -> None:
        super().__init__(size, oversight_prob, max_steps, reward_scheme, agent_view_size, render_mode, mark_overseen)

    def _gen_walls(self, width: int, height: int) -> None:
        self.grid = Grid(width, height)
        self.grid.wall_rect(0, 0, width, height)
        room_w, room_h = width // 2, height // 2
        colors = ["red", "green", "blue", "yellow"]
        for j in range(2):
            for i in range(2):
                x_left, y_top = i * room_w, j * room_h
                if i == 0:  # the wall to the right of this room, with a door
                    self.grid.vert_wall(x_left + room_w, y_top, room_h)
                    self.grid.set(
                        x_left + room_w, self._rand_int(y_top + 1, y_top + room_h), Door(colors[2 * j], is_open=True)
                    )
                if j == 0:  # the wall below this room, with a door
                    self.grid.horz_wall(x_left, y_top + room_h, room_w)
                    self.grid.set(
                        self._rand_int(x_left + 1, x_left + room_w), y_top + room_h, Door(colors[1 + 2 * i], is_open=True)
                    )
