"""routed-rl: PPO agents whose behaviours live in known, removable experts (gradient routing, arXiv 2410.04332)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("routed-rl")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
