"""RL algorithms for routed-rl, installed as ``routed_rl.agents``."""

from routed_rl.agents.buffers import LabeledRolloutBuffer, LabeledRolloutBufferSamples
from routed_rl.agents.policies import GridCNN, RoutedActorCriticPolicy, RoutedExtractor
from routed_rl.agents.ppo import RoutedPPO

__all__ = [
    "GridCNN",
    "LabeledRolloutBuffer",
    "LabeledRolloutBufferSamples",
    "RoutedActorCriticPolicy",
    "RoutedExtractor",
    "RoutedPPO",
]
