"""A user-defined labeler, loaded by import path in the tests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from routed_rl.labeling import Labeler


class EvenEnvLabeler(Labeler):
    """Labels episodes of even-numbered envs with their outcome."""

    def label(self, info: Mapping[str, Any], episode_length: int, env_index: int) -> str | None:
        return self.outcome(info) if env_index % 2 == 0 else None


class BrokenLabeler(Labeler):
    """A labeler with a bug: the CLI must show its traceback, not pass it off as a user error."""

    def label(self, info: Mapping[str, Any], episode_length: int, env_index: int) -> str | None:
        raise RuntimeError("a bug in the labeler")


class BuggyValueLabeler(Labeler):
    """A bug that raises ValueError: still a bug, not bad input."""

    def label(self, info: Mapping[str, Any], episode_length: int, env_index: int) -> str | None:
        raise ValueError("int('x') inside the labeler")
