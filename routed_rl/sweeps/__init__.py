"""Oversight sweeps: a grid of methods x oversight levels x seeds (x any other config axis), trained as
ordinary run folders inside one sweep folder, locally or on a Ray cluster, and the report that compares them.

- :mod:`routed_rl.sweeps.spec`: the sweep file (validated like a config) and its grid of trials;
- :mod:`routed_rl.sweeps.runner`: running the trials (process pool or Ray), resumably;
- :mod:`routed_rl.sweeps.report`: ``results.csv``, ``report.md`` and the figures.
"""

from routed_rl.sweeps.spec import SweepSpec, Trial, builtin_sweeps, load_sweep

__all__ = ["SweepSpec", "Trial", "builtin_sweeps", "load_sweep"]
