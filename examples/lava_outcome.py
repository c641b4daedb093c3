"""A user's outcome function for MiniGrid envs that routed-rl does not own (LavaGap, LavaCrossing).

MiniGrid ends such an episode at the goal (reward > 0) or in lava (reward 0); routed-rl's
``OutcomeWrapper`` calls this at every episode end with the final info (plus the step's ``reward``,
``terminated`` and ``truncated``) and the final observation.
"""

from __future__ import annotations

from typing import Any


def lava_or_goal(info: dict[str, Any], observation: Any) -> str | None:
    """``"goal"`` or ``"lava"`` for an episode that ended in either; ``None`` (no outcome) when time ran out."""
    if not info["terminated"]:
        return None
    return "goal" if info["reward"] > 0 else "lava"
