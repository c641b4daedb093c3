"""Pickle-free export: removed experts are absent, predictions equal the steered model's, and bad folders fail clearly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch as th
from safetensors.torch import load_file

from routed_rl.agents import RoutedPPO
from routed_rl.envs import OversightGridVecEnv
from routed_rl.export import export_policy, load_exported

NAMES = ["diamond", "ghost", "lava"]


@pytest.fixture(scope="module")
def model() -> RoutedPPO:
    env = OversightGridVecEnv(8, oversight_prob=0.5, seed=0)
    kwargs = {
        "expert_names": NAMES,
        "expert_arch": [16, 16],
        "gate_arch": [8],
        "value_arch": [8],
        "expert_obs_channels": [0, 1, 2],
    }
    m = RoutedPPO("RoutedPolicy", env, n_steps=16, batch_size=64, seed=0, policy_kwargs=kwargs)
    m.learn(256)
    return m


@pytest.mark.parametrize(
    "steer,kept",
    [
        ({"select": "diamond"}, ["diamond"]),
        ({"ablate": ["ghost"]}, ["diamond", "lava"]),
        ({"ablate": ["ghost", "lava"]}, ["diamond"]),
        ({}, NAMES),
    ],
    ids=["select", "ablate-one", "ablate-two", "unsteered"],
)
def test_export_keeps_only_kept_experts_and_matches_steering(
    model: RoutedPPO, tmp_path: Path, steer: dict, kept: list[str]
) -> None:
    export_policy(model.policy, tmp_path, **steer)
    tensors = load_file(str(tmp_path / "policy.safetensors"))
    experts_in_file = sorted({name.split(".")[1] for name in tensors if name.startswith("experts.")})
    assert experts_in_file == sorted(kept)
    removed = [e for e in NAMES if e not in kept]
    assert not any(f".{e}." in name for name in tensors for e in removed)
    if len(kept) > 1:
        assert tensors["gate.1.weight"].shape[0] == len(kept)  # the gate keeps only the kept experts' rows
    else:
        assert not any(name.startswith("gate.") for name in tensors)
    meta = json.loads((tmp_path / "policy.json").read_text())
    assert meta["experts"] == kept

    deployed = load_exported(tmp_path)
    obs = OversightGridVecEnv(500, oversight_prob=0.3, seed=2).reset()
    with model.policy.steer(**steer):
        expected, _ = model.predict(obs, deterministic=True)
        logits = model.policy.get_distribution(th.as_tensor(obs)).distribution.logits
    assert np.array_equal(deployed.predict(obs), expected)
    with th.no_grad():
        assert th.allclose(th.log_softmax(deployed(th.as_tensor(obs)), -1), logits, atol=1e-5)
    assert deployed.predict(obs[0]) == expected[0]  # one observation, like SB3's predict


def test_export_needs_one_mode_and_known_experts(model: RoutedPPO, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="steer takes one of select=, ablate= or weights="):
        export_policy(model.policy, tmp_path, select="diamond", ablate="ghost")
    with pytest.raises(ValueError, match=r"unknown expert 'gost'.*experts are \['diamond', 'ghost', 'lava'\]"):
        export_policy(model.policy, tmp_path, select="gost")
    with pytest.raises(ValueError, match="cannot ablate every expert"):
        export_policy(model.policy, tmp_path, ablate=NAMES)


def test_bad_export_folders(model: RoutedPPO, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no policy\.json"):
        load_exported(tmp_path / "nothing")
    export_policy(model.policy, tmp_path / "ok", select="diamond")
    (tmp_path / "ok" / "policy.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read"):
        load_exported(tmp_path / "ok")
    (tmp_path / "ok" / "policy.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_exported(tmp_path / "ok")


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("expert_arch", [1e6, 1e6], "field 'expert_arch' must be a list of positive integers"),
        ("expert_arch", [1000000, 1000000], "more than 100,000,000"),
        ("observation_shape", "4x5x5", "field 'observation_shape'"),
        ("experts", None, "field 'experts'"),
        ("experts", ["a.b"], "field 'experts'"),
        ("n_actions", -1, "field 'n_actions'"),
        ("activation", "gelu", "field 'activation'"),
        ("gate_input_index", [0, 10**9], "field 'gate_input_index'"),
    ],
    ids=["float-widths", "huge", "shape", "no-experts", "dotted-name", "actions", "activation", "index"],
)
def test_malformed_export_fields_are_named_before_anything_is_allocated(
    model: RoutedPPO, tmp_path: Path, field: str, value: object, message: str
) -> None:
    export_policy(model.policy, tmp_path, ablate="lava")
    meta = json.loads((tmp_path / "policy.json").read_text())
    meta[field] = value
    (tmp_path / "policy.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=message):
        load_exported(tmp_path)


def test_nan_weights_and_mismatched_tensors_are_refused(model: RoutedPPO, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    export_policy(model.policy, tmp_path, select="diamond")
    tensors = load_file(str(tmp_path / "policy.safetensors"))
    name = next(iter(tensors))
    tensors[name] = tensors[name].clone().fill_(float("nan"))
    save_file(tensors, str(tmp_path / "policy.safetensors"))
    with pytest.raises(ValueError, match="NaN or infinite weights"):
        load_exported(tmp_path)
    del tensors[name]
    save_file(tensors, str(tmp_path / "policy.safetensors"))
    with pytest.raises(ValueError, match=r"does not match policy\.json"):
        load_exported(tmp_path)
    (tmp_path / "policy.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="is not a routed-rl-policy/1 export"):
        load_exported(tmp_path)


def test_an_export_that_cannot_be_written_is_one_line(model: RoutedPPO, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="cannot write the export to"):
        export_policy(model.policy, tmp_path / "file" / "sub", select="diamond")  # a folder under a file
