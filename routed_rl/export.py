"""Pickle-free export of a steered policy for deployment: safetensors weights plus a JSON config.

Only the kept experts are written: the weights of removed experts are not in the file at all, and the
gate keeps only the rows of the kept experts (a softmax over them is the ablated gate, renormalised). The
loader, :func:`load_exported`, reads JSON and safetensors only, so loading runs no code from the files.

Layout of an export folder: ``policy.json`` (format, observation shape, features, experts, widths, input
indices) and ``policy.safetensors`` (tensors named ``experts.<name>.<layer>.weight`` ..., ``gate.*``,
``action_net.*``, and ``features.*`` for a CNN features extractor). Image policies (GridCNN, e.g. the MiniGrid
configs) take the env's channel-last images as SB3's ``predict`` does.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from safetensors.torch import load_file, save_file
from torch import nn

from routed_rl.errors import UserError
from routed_rl.moe import mlp

__all__ = ["FORMAT", "ExportedPolicy", "export_policy", "load_exported"]

FORMAT = "routed-rl-policy/1"
_ACTIVATIONS: dict[str, type[nn.Module]] = {"ReLU": nn.ReLU, "Tanh": nn.Tanh}


def export_policy(
    policy: Any, out_dir: str | Path, select: str | None = None, ablate: str | Sequence[str] | None = None
) -> Path:
    """Write the policy, with only the kept experts, to ``out_dir``.

    :param policy: a :class:`~routed_rl.agents.RoutedActorCriticPolicy` with the flatten or the GridCNN extractor
    :param select: keep this expert alone; or ``ablate``: remove these experts; neither: keep every expert
        (the unsteered policy)
    :return: the export folder
    """
    from routed_rl.steering import resolve_steering

    steering = resolve_steering(policy.expert_names, select=select, ablate=ablate)
    extractor = type(policy.features_extractor).__name__
    if extractor not in ("FlattenExtractor", "GridCNN"):
        raise UserError(f"export supports the flatten and GridCNN features extractors, not {extractor}")
    activation = policy.activation_fn.__name__
    if activation not in _ACTIVATIONS:
        raise UserError(f"export supports activations {sorted(_ACTIVATIONS)}, got {activation}")
    moe = policy.moe
    kept = [k for k, keep in enumerate(steering.keep if steering is not None else [True] * moe.n_experts) if keep]
    tensors: dict[str, th.Tensor] = {}
    for k in kept:
        for name, value in moe.experts.expert_state_dict(k).items():
            tensors[f"experts.{moe.expert_names[k]}.{name}"] = value
    if len(kept) > 1:
        for name, value in moe.gate.state_dict().items():
            last = name.startswith(f"{len(moe.gate) - 1}.")
            tensors[f"gate.{name}"] = value[kept] if last else value
    for name, value in policy.action_net.state_dict().items():
        tensors[f"action_net.{name}"] = value
    features = None
    if extractor == "GridCNN":
        for name, value in policy.features_extractor.state_dict().items():
            tensors[f"features.{name}"] = value
        extractor_module = policy.features_extractor
        features = {
            "kind": "grid_cnn",
            "features_dim": int(extractor_module.view_dim),
            "blind_channels": extractor_module.blind_channels,
            "normalize_images": bool(policy.normalize_images),
        }
    index = {
        "expert_input_index": None if moe.expert_input_index is None else moe.expert_input_index.tolist(),
        "gate_input_index": None if moe.gate_input_index is None else moe.gate_input_index.tolist(),
    }
    meta = {
        "format": FORMAT,
        "steering": "unsteered" if steering is None else steering.name,
        "observation_shape": list(policy.observation_space.shape),
        "features": features,
        "n_actions": int(policy.action_space.n),
        "experts": [moe.expert_names[k] for k in kept],
        "expert_arch": policy.expert_arch,
        "gate_arch": policy.gate_arch,
        "activation": activation,
        **index,
    }
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(out / "policy.safetensors"))
        (out / "policy.json").write_text(json.dumps(meta, indent=2))
    except OSError as e:
        raise UserError(f"cannot write the export to {out} ({e.strerror or e})") from None
    return out


class ExportedPolicy(nn.Module):
    """A deployed policy: the kept experts, their gate, and the action head. ``predict`` works like SB3's."""

    def __init__(self, meta: dict[str, Any]) -> None:
        super().__init__()
        self.meta = meta
        act = _ACTIVATIONS[meta["activation"]]
        shape = tuple(meta["observation_shape"])
        cnn = meta.get("features")
        self.features: nn.Module | None = None
        if cnn is not None:
            from gymnasium import spaces

            from routed_rl.agents.policies import GridCNN

            extractor = GridCNN(spaces.Box(0, 255, shape, np.uint8), cnn["features_dim"], cnn.get("blind_channels"))
            self.features = extractor
            in_dim = int(extractor.features_dim)
        else:
            in_dim = int(np.prod(shape))
        self.expert_names: list[str] = list(meta["experts"])
        ex_idx, gate_idx = meta["expert_input_index"], meta["gate_input_index"]
        self.register_buffer("expert_index", None if ex_idx is None else th.tensor(ex_idx, dtype=th.long), persistent=False)
        self.register_buffer("gate_index", None if gate_idx is None else th.tensor(gate_idx, dtype=th.long), persistent=False)
        expert_in = in_dim if ex_idx is None else len(ex_idx)
        gate_in = in_dim if gate_idx is None else len(gate_idx)
        self.experts = nn.ModuleDict({name: mlp(expert_in, meta["expert_arch"], act) for name in self.expert_names})
        gate_arch = meta["gate_arch"]
        self.gate = (
            nn.Sequential(
                mlp(gate_in, gate_arch, act), nn.Linear(gate_arch[-1] if gate_arch else gate_in, len(self.expert_names))
            )
            if len(self.expert_names) > 1
            else None
        )
        self.action_net = nn.Linear(meta["expert_arch"][-1], meta["n_actions"])

    def forward(self, obs: th.Tensor) -> th.Tensor:
        """Action logits (batch, n_actions) for observations (batch, *observation_shape)."""
        x = obs.float()
        if self.features is not None:
            x = self.features(x / 255.0 if self.meta["features"]["normalize_images"] else x)
        x = x.flatten(1)
        ex = x if self.expert_index is None else x[:, self.expert_index]  # type: ignore[index]
        outs = [self.experts[name](ex) for name in self.expert_names]
        if self.gate is None:
            latent = outs[0]
        else:
            g = x if self.gate_index is None else x[:, self.gate_index]  # type: ignore[index]
            weights = th.softmax(self.gate(g), dim=-1)
            latent = sum(weights[:, k : k + 1] * out for k, out in enumerate(outs))  # type: ignore[assignment]
        return self.action_net(latent)

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """Actions for one observation or a batch, as SB3's ``predict`` returns them (without the state)."""
        array = np.asarray(obs, dtype=np.float32)
        shape = tuple(self.meta["observation_shape"])
        if self.features is not None and array.shape[-3:] == (*shape[1:], shape[0]) != shape:
            array = np.moveaxis(array, -1, -3)  # the env's channel-last image, as SB3's predict transposes it
        single = array.shape == shape
        batch = th.as_tensor(array[None] if single else array)
        with th.no_grad():
            logits = self(batch)
            actions = logits.argmax(dim=1) if deterministic else th.distributions.Categorical(logits=logits).sample()
        out = actions.numpy()
        return out[0] if single else out


def load_exported(path: str | Path) -> ExportedPolicy:
    """Load an export folder written by :func:`export_policy` (JSON and safetensors only: no pickle)."""
    folder = Path(path)
    try:
        meta = json.loads((folder / "policy.json").read_text())
    except FileNotFoundError:
        raise UserError(f"{folder} has no policy.json: not a routed-rl export folder") from None
    except json.JSONDecodeError:
        raise UserError(f"{folder / 'policy.json'} is not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise UserError(f"{folder / 'policy.json'} is not a {FORMAT} export (format {found!r})")
    _check_meta(meta, folder / "policy.json")
    policy = ExportedPolicy(meta)
    try:
        tensors = load_file(str(folder / "policy.safetensors"))
    except Exception as e:  # safetensors raises several types for missing or corrupt files
        raise UserError(f"cannot read {folder / 'policy.safetensors'}: {e}") from None
    try:
        policy.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        reason = str(e).splitlines()[0]
        raise UserError(f"{folder / 'policy.safetensors'} does not match policy.json: {reason}") from None
    bad = [name for name, value in tensors.items() if not bool(th.isfinite(value).all())]
    if bad:
        raise UserError(f"{folder / 'policy.safetensors'} holds NaN or infinite weights in {bad[0]}")
    return policy.eval()


#: The most parameters an export may declare (400 MB of float32); larger ones are refused before allocating.
MAX_PARAMETERS = 100_000_000


def _check_meta(meta: dict[str, Any], where: Path) -> None:
    """Check every field of ``policy.json`` that the loader uses; a ``ValueError`` names the first bad one."""

    def positive_ints(name: str, allow_empty: bool) -> list[int]:
        value = meta.get(name)
        ok = isinstance(value, list) and (allow_empty or value)
        if not ok or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):  # type: ignore[union-attr]
            raise UserError(f"{where}: field {name!r} must be a list of positive integers, got {value!r}")
        return list(value)  # type: ignore[arg-type]

    shape = positive_ints("observation_shape", allow_empty=False)
    experts = meta.get("experts")
    if not isinstance(experts, list) or not experts or not all(isinstance(e, str) and e.isidentifier() for e in experts):
        raise UserError(f"{where}: field 'experts' must be a non-empty list of expert names, got {experts!r}")
    expert_arch = positive_ints("expert_arch", allow_empty=False)
    gate_arch = positive_ints("gate_arch", allow_empty=True)
    n_actions = meta.get("n_actions")
    if not isinstance(n_actions, int) or isinstance(n_actions, bool) or n_actions < 1:
        raise UserError(f"{where}: field 'n_actions' must be a positive integer, got {n_actions!r}")
    if meta.get("activation") not in _ACTIVATIONS:
        raise UserError(f"{where}: field 'activation' must be one of {sorted(_ACTIVATIONS)}, got {meta.get('activation')!r}")
    in_dim = int(min(np.prod(shape, dtype=np.float64), MAX_PARAMETERS))
    features = meta.get("features")
    cnn_size = 0.0
    if features is not None:
        ok = (
            isinstance(features, dict)
            and features.get("kind") == "grid_cnn"
            and isinstance(features.get("features_dim"), int)
            and not isinstance(features.get("features_dim"), bool)
            and 0 < features["features_dim"] <= 65536
            and isinstance(features.get("normalize_images"), bool)
            and len(shape) == 3
            and (
                features.get("blind_channels") is None
                or (
                    isinstance(features["blind_channels"], list)
                    and len(features["blind_channels"]) <= shape[0]
                    and all(isinstance(c, int) and 0 <= c < shape[0] for c in features["blind_channels"])
                )
            )
            and min(shape[1:]) >= 4
            and shape[0] <= 64
        )
        if not ok:
            raise UserError(
                f"{where}: field 'features' must be null or a grid_cnn of a (C, H, W) image, got {str(features)[:80]}"
            )
        views = 1 if features.get("blind_channels") is None else 2
        in_dim = features["features_dim"] * views
        cnn_size = views * (shape[1] - 3) * (shape[2] - 3) * 64 * (features["features_dim"] + 1)
    sizes = {}
    for name in ("expert_input_index", "gate_input_index"):
        index = meta.get(name)
        if index is None:
            sizes[name] = in_dim
            continue
        if not isinstance(index, list) or not index or not all(isinstance(i, int) and 0 <= i < in_dim for i in index):
            raise UserError(f"{where}: field {name!r} must be null or indices in [0, {in_dim}), got {str(index)[:80]}")
        sizes[name] = len(index)

    def mlp_size(widths: list[int], n_in: int) -> float:
        total, width_in = 0.0, float(n_in)
        for width in widths:
            total += (width_in + 1) * width
            width_in = width
        return total

    total = cnn_size + len(experts) * mlp_size(expert_arch, sizes["expert_input_index"]) + (expert_arch[-1] + 1) * n_actions
    if len(experts) > 1:
        total += mlp_size([*gate_arch, len(experts)], sizes["gate_input_index"])
    if total > MAX_PARAMETERS or in_dim >= MAX_PARAMETERS:
        raise UserError(f"{where}: the sizes declared ask for {total:.3g} parameters, more than {MAX_PARAMETERS:,}")
