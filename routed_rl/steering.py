"""Steering: choose which experts act at inference (select one, ablate some, or fix the mixture weights).

A :class:`Steering` is plain data resolved against the expert names; :class:`~routed_rl.moe.MixtureOfExperts`
applies it in every forward pass, so all of SB3's inference paths (``forward``, ``evaluate_actions``,
``get_distribution``/``predict``, ``predict_values``) see the same steering.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from routed_rl.errors import UserError, check_expert_name

__all__ = [
    "Steering",
    "first_alike",
    "mode_file_stem",
    "mode_name",
    "parse_mode",
    "resolve_steering",
    "steer_kwargs",
    "steering_modes",
]


@dataclass(frozen=True)
class Steering:
    """Resolved steering.

    :param keep: one bool per expert; dropped experts get mixture weight 0 and the gate is renormalised
        over the kept ones
    :param fixed_weights: if set, the mixture weights (one per expert, summing to 1) replace the gate
    """

    keep: tuple[bool, ...]
    fixed_weights: tuple[float, ...] | None = None
    name: str = ""
    """How it was asked for, e.g. ``select=diamond``, ``ablate=ghost`` or ``weights=diamond:0.75,ghost:0.25``."""


def resolve_steering(
    expert_names: Sequence[str],
    select: str | None = None,
    ablate: str | Sequence[str] | None = None,
    weights: Mapping[str, float] | None = None,
) -> Steering | None:
    """Check a steering request against the experts and resolve it; ``None`` when nothing is asked.

    :param expert_names: the mixture's experts, in order
    :param select: act with this expert alone
    :param ablate: drop these experts and renormalise the gate over the rest
    :param weights: fixed mixture weights by expert name (missing experts get 0; normalised to sum 1)
    :return: the :class:`Steering`, or ``None`` (unsteered)
    """
    given = [name for name, v in (("select", select), ("ablate", ablate), ("weights", weights)) if v is not None]
    if len(given) > 1:
        raise UserError(f"steer takes one of select=, ablate= or weights=, got {' and '.join(given)}")
    names = list(expert_names)
    if select is not None:
        check_expert_name(select, names)
        return Steering(keep=tuple(e == select for e in names), name=f"select={select}")
    if ablate is not None:
        dropped = [ablate] if isinstance(ablate, str) else list(ablate)
        for name in dropped:
            check_expert_name(name, names)
        if len(set(dropped)) != len(dropped):
            raise UserError(f"ablate names an expert twice: {dropped}")
        keep = tuple(e not in dropped for e in names)
        if not any(keep):
            raise UserError(f"cannot ablate every expert; experts are {names}")
        return Steering(keep=keep, name="ablate=" + ",".join(dropped))
    if weights is not None:
        for name, w in weights.items():
            check_expert_name(name, names)
            if not math.isfinite(float(w)) or float(w) < 0:
                raise UserError(f"steering weight for {name!r} must be a finite number >= 0, got {w}; experts are {names}")
        total = sum(float(w) for w in weights.values())
        if total <= 0:
            raise UserError(f"steering weights must have a positive sum; experts are {names}")
        fixed = tuple(float(weights.get(e, 0.0)) / total for e in names)
        name = "weights=" + ",".join(f"{e}:{w:g}" for e, w in zip(names, fixed, strict=True))
        return Steering(keep=tuple(w > 0 for w in fixed), fixed_weights=fixed, name=name)
    return None


def steering_modes(expert_names: Sequence[str]) -> list[dict[str, Any]]:
    """Unsteered, each expert selected, and each expert ablated, as ``policy.steer`` keyword arguments."""
    modes: list[dict[str, Any]] = [{}]
    modes += [{"select": e} for e in expert_names]
    if len(expert_names) > 1:
        modes += [{"ablate": [e]} for e in expert_names]
    return modes


def first_alike(expert_names: Sequence[str] | None, modes: Sequence[Mapping[str, Any]]) -> list[int]:
    """For each steering mode, the index of the first mode that acts identically (itself if none before it
    does): with two experts ``select=a`` and ``ablate=b`` keep the same expert. ``expert_names=None`` (a
    policy without experts): every mode is its own."""
    if expert_names is None:
        return list(range(len(modes)))
    seen: dict[Any, int] = {}
    out = []
    for i, steer in enumerate(modes):
        steering = resolve_steering(expert_names, **steer)
        key = None if steering is None else (steering.keep, steering.fixed_weights)
        out.append(seen.setdefault(key, i))
    return out


def mode_name(expert_names: Sequence[str], **steer: Any) -> str:
    """The name of a steering mode given as ``policy.steer`` keyword arguments, e.g. ``ablate=ghost``."""
    steering = resolve_steering(expert_names, **steer)
    return "unsteered" if steering is None else steering.name


def mode_file_stem(name: str) -> str:
    """A steering mode's name as it appears in file names: ``ablate=a,b`` -> ``ablate_a_b``."""
    return name.replace("=", "_").replace(",", "_")


def steer_kwargs(select: str | None = None, ablate: str | Sequence[str] | None = None) -> dict[str, Any]:
    """``policy.steer`` keyword arguments from a select-or-ablate request (``{}``: unsteered).

    :raises ValueError: when both are given
    """
    if select is not None and ablate:
        raise UserError("use either select (--select) or ablate (--ablate), not both")
    if select is not None:
        return {"select": select}
    if ablate:
        return {"ablate": [ablate] if isinstance(ablate, str) else list(ablate)}
    return {}


def parse_mode(text: str) -> dict[str, Any]:
    """The inverse of :func:`mode_name` for select and ablate: ``"select=diamond"`` -> ``{"select": "diamond"}``,
    ``"ablate=ghost"`` -> ``{"ablate": ["ghost"]}``, ``"unsteered"`` -> ``{}``.

    :raises ValueError: for any other text
    """
    kind, sep, names = text.partition("=")
    if text == "unsteered":
        return {}
    if sep and names and kind == "select":
        return {"select": names}
    if sep and names and kind == "ablate":
        return {"ablate": names.split(",")}
    raise UserError(f"steering mode must be 'unsteered', 'select=EXPERT' or 'ablate=EXPERT[,EXPERT...]', got {text!r}")
