"""The sweep file: which methods, oversight levels, seeds and other config axes to train, and its trials.

A sweep file is YAML, validated like a config (an unknown key, an empty grid, an out-of-range value is a
one-line :class:`~routed_rl.errors.UserError`)::

    methods: [default, naive, oracle]       # built-in config names or YAML paths (relative to the file)
    oversight_probs: [0.01, 0.1]            # env.oversight_prob of each trial
    seeds: [0, 1, 2]
    total_steps: 3000000                    # env steps per trial
    threads: 1                              # torch threads per trial (part of each trial's config)
    axes:                                   # optional: more grid axes, config key -> values
      ppo.learning_rate: [1.0e-4, 3.0e-4]
    overrides:                              # optional: config keys set in every trial
      logging.eval_every: 500000

Every combination is one :class:`Trial`, trained with ``routed-rl train METHOD --seed S --total-steps N
--set env.oversight_prob=P --set threads=T ...`` into ``<sweep folder>/<trial name>``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from itertools import product
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from routed_rl.config import RunConfig, builtin_configs, load_config, parse_override, whole_number
from routed_rl.errors import UserError, did_you_mean

__all__ = ["SweepSpec", "Trial", "builtin_sweeps", "load_sweep"]

#: Config sections that never change what a run learns (checked by the tests): a finished trial whose
#: config differs from the sweep's only in these is still the same trial.
RESULT_NEUTRAL_SECTIONS = ("logging",)


class SweepSpec(BaseModel):
    """A sweep: the grid of trials and the settings they share."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    methods: list[str] = Field(min_length=1)
    """Configs to compare (built-in names or YAML paths); the first is the one the report compares the others with."""
    oversight_probs: list[float] = Field(min_length=1)
    """Oversight levels (``env.oversight_prob``), each in [0, 1]."""
    seeds: list[int] = Field(min_length=1)
    """Seeds, each >= 0."""
    total_steps: int = Field(ge=1)
    """Env steps per trial."""
    threads: int = Field(1, ge=1)
    """Torch threads per trial; part of each trial's config, so a trial's result does not depend on how many
    trials run beside it."""
    axes: dict[str, list[Any]] = Field(default_factory=dict)
    """More grid axes: a config key (``section.key``) and the values it takes."""
    overrides: dict[str, Any] = Field(default_factory=dict)
    """Config keys (``section.key``) set to one value in every trial."""

    @field_validator("total_steps", "threads", mode="before")
    @classmethod
    def _whole_numbers(cls, value: Any) -> Any:
        return whole_number(value)

    @field_validator("oversight_probs")
    @classmethod
    def _probabilities(cls, probs: list[float]) -> list[float]:
        bad = [p for p in probs if not 0.0 <= p <= 1.0]
        if bad:
            raise ValueError(f"oversight levels must be probabilities in [0, 1], got {bad[0]}")
        return _distinct("oversight_probs", probs)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int]) -> list[int]:
        if any(s < 0 for s in seeds):
            raise ValueError(f"seeds must be >= 0, got {min(seeds)}")
        return _distinct("seeds", seeds)

    @field_validator("methods")
    @classmethod
    def _methods(cls, methods: list[str]) -> list[str]:
        return _distinct("methods", methods)

    @field_validator("axes")
    @classmethod
    def _axes(cls, axes: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in axes.items():
            if not values:
                raise ValueError(f"axis {key!r} has no values")
            _distinct(f"axis {key!r}", values)
        return axes

    def trials(self, relative_to: Path | None = None) -> list[Trial]:
        """Every grid point, ordered by oversight level, method, other axes, then seed."""
        keys = list(self.axes)
        out = []
        for prob, method, *values, seed in product(self.oversight_probs, self.methods, *self.axes.values(), self.seeds):
            source = _method_source(method, relative_to)
            out.append(Trial(source, method_label(method), prob, seed, tuple(zip(keys, values, strict=True))))
        names = [t.name for t in out]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise UserError(f"two trials would share the folder {dup!r}: make the axis values differ in letters or digits")
        return out

    def trial_config(self, trial: Trial) -> RunConfig:
        """The resolved config a trial trains with."""
        return load_config(trial.source, trial.overrides(self))


def _distinct(what: str, values: list[Any]) -> list[Any]:
    seen: list[Any] = []
    for v in values:
        if v in seen:
            raise ValueError(f"{what} lists {v!r} twice")
        seen.append(v)
    return values


def method_label(method: str) -> str:
    return Path(method).stem if method.endswith((".yaml", ".yml")) else method


def _method_source(method: str, relative_to: Path | None) -> str:
    """A built-in name as it is; a YAML path made absolute against the sweep file's folder."""
    if method in builtin_configs() or relative_to is None or Path(method).is_absolute():
        return method
    return str((relative_to / method).resolve())


def _value_text(value: Any) -> str:
    """An axis value as it appears in a trial folder's name: letters, digits and ``.,_+-`` only."""
    text = f"{value:g}" if isinstance(value, float) else json.dumps(value, separators=(",", ":"))
    return re.sub(r"[^A-Za-z0-9.,_+-]", "", text)


@dataclass(frozen=True)
class Trial:
    """One grid point of a sweep.

    :param source: the config it starts from (a built-in name or an absolute YAML path)
    :param method: the method's name in reports (the config name, or the YAML file's stem)
    :param oversight_prob: ``env.oversight_prob``
    :param seed: the run's seed
    :param axes: ``(config key, value)`` for each extra axis
    """

    source: str
    method: str
    oversight_prob: float
    seed: int
    axes: tuple[tuple[str, Any], ...] = ()

    @property
    def name(self) -> str:
        """The trial's folder name, e.g. ``default__p0.01__s0`` or ``default__p0.01__ppo.learning_rate=0.0001__s0``."""
        parts = [self.method, f"p{self.oversight_prob:g}", *(f"{k}={_value_text(v)}" for k, v in self.axes), f"s{self.seed}"]
        return "__".join(parts)

    def overrides(self, spec: SweepSpec) -> list[str]:
        """The ``--set`` overrides (seed and total steps included) that make the method's config this trial's."""
        sets = {**spec.overrides, "env.oversight_prob": self.oversight_prob, "threads": spec.threads, **dict(self.axes)}
        sets |= {"seed": self.seed, "total_steps": spec.total_steps}
        return [f"{key}={json.dumps(value)}" for key, value in sets.items()]

    def record(self) -> dict[str, Any]:
        """What the report needs to know of the trial without reading its config."""
        return {"trial": self.name, "method": self.method, "oversight_prob": self.oversight_prob, "seed": self.seed,
                "axes": dict(self.axes)}  # fmt: skip


def builtin_sweeps() -> dict[str, Path]:
    """Built-in sweep names (``quick``, ``standard``, ``paper``) and their files."""
    root = resources.files("routed_rl.configs").joinpath("sweeps")
    return {Path(p.name).stem: Path(str(p)) for p in root.iterdir() if p.name.endswith(".yaml")}


def _one_line(error: ValidationError) -> str:
    first = error.errors()[0]
    path = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        valid = list(SweepSpec.model_fields)
        return f"unknown sweep key {path!r}{did_you_mean(path, valid)}; valid keys: {', '.join(valid)}"
    if first["type"] == "missing":
        return f"the sweep file needs {path!r}"
    message = first["msg"].removeprefix("Value error, ")
    return f"sweep key {path!r}: {message}" + ("" if "got" in message else f" (got {first.get('input')!r})")


def _apply_sets(data: dict[str, Any], sets: list[str]) -> None:
    """``--set`` on the sweep command: a sweep key (``seeds=[0]``) replaces it; any other key is a config key
    set in every trial (added to ``overrides``)."""
    for text in sets:
        key, value = parse_override(text)
        if key in SweepSpec.model_fields:
            data[key] = value
        else:
            data.setdefault("overrides", {})
            if not isinstance(data["overrides"], dict):
                raise UserError("sweep key 'overrides' must be a mapping of config keys to values")
            data["overrides"][key] = value


def load_sweep(source: str | Path, sets: list[str] | None = None) -> tuple[SweepSpec, list[Trial], str]:
    """Load and check a sweep: every method must exist and every trial's config must validate.

    :param source: a built-in sweep name or a YAML path
    :param sets: ``key=value`` overrides (see :func:`_apply_sets`)
    :return: the spec, its trials and the sweep's name
    :raises UserError: with a one-line message for anything wrong, before anything runs
    """
    builtins = builtin_sweeps()
    path = builtins.get(str(source)) or Path(source)
    if not path.is_file():
        raise UserError(
            f"sweep {str(source)!r} is neither a file nor a built-in sweep{did_you_mean(str(source), builtins)} "
            f"({', '.join(sorted(builtins))})"
        )
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError):
        raise UserError(f"sweep file {str(path)!r} is not valid YAML") from None
    if not isinstance(data, dict):
        raise UserError(f"sweep file {str(path)!r} must be a YAML mapping (methods, oversight_probs, seeds, total_steps)")
    _apply_sets(data, list(sets or []))
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as e:
        raise UserError(_one_line(e)) from None
    relative_to = None if str(source) in builtins else path.parent
    trials = spec.trials(relative_to)
    configs = builtin_configs()
    for trial in trials:
        if trial.source not in configs and not Path(trial.source).is_file():
            raise UserError(
                f"unknown method {trial.method!r}{did_you_mean(trial.method, configs)}: methods are built-in configs "
                f"({', '.join(sorted(configs))}) or YAML files"
            )
        try:
            spec.trial_config(trial)
        except UserError as e:
            raise UserError(f"trial {trial.name}: {e}") from None
    return spec, trials, path.stem
