"""Steering as a persistent setting on a loaded model, and the list of steering modes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from routed_rl.agents import RoutedPPO
from routed_rl.envs import OversightGridVecEnv
from routed_rl.steering import resolve_steering, steering_modes


def test_steering_modes() -> None:
    assert steering_modes(["a", "b"]) == [{}, {"select": "a"}, {"select": "b"}, {"ablate": ["a"]}, {"ablate": ["b"]}]
    assert steering_modes(["only"]) == [{}, {"select": "only"}]
    assert resolve_steering(["a", "b"]) is None
    s = resolve_steering(["a", "b", "c"], weights={"a": 1, "c": 3})
    assert s is not None and s.fixed_weights == (0.25, 0.0, 0.75) and s.keep == (True, False, True)
    assert s.name == "weights=a:0.25,b:0,c:0.75"


def test_persistent_steering_on_a_loaded_model(tmp_path: Path) -> None:
    env = OversightGridVecEnv(4, seed=0)
    model = RoutedPPO("RoutedPolicy", env, n_steps=16, batch_size=32, seed=0, policy_kwargs={"expert_arch": [16]})
    model.learn(64)
    model.save(tmp_path / "m.zip")
    loaded = RoutedPPO.load(tmp_path / "m.zip")
    obs = OversightGridVecEnv(300, seed=1).reset()
    with loaded.policy.steer(select="ghost"):
        ghost_actions, _ = loaded.predict(obs, deterministic=True)
    loaded.policy.steer(select="ghost")  # persistent from here on
    assert np.array_equal(loaded.predict(obs, deterministic=True)[0], ghost_actions)
    assert np.array_equal(loaded.predict(obs, deterministic=True)[0], ghost_actions)
    loaded.policy.steer()
    unsteered, _ = loaded.predict(obs, deterministic=True)
    assert np.array_equal(unsteered, model.predict(obs, deterministic=True)[0])


def test_bad_steering_requests_name_what_to_fix() -> None:
    import pytest

    from routed_rl.steering import parse_mode, steer_kwargs

    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ValueError, match="must be a finite number >= 0"):
            resolve_steering(["a", "b"], weights={"a": bad, "b": 1.0})
    with pytest.raises(ValueError, match="ablate names an expert twice"):
        resolve_steering(["a", "b"], ablate=["a", "a"])
    with pytest.raises(ValueError, match="either select"):
        steer_kwargs("a", ["b"])
    assert parse_mode("ablate=a,b") == {"ablate": ["a", "b"]} and parse_mode("unsteered") == {}
    with pytest.raises(ValueError, match="steering mode must be"):
        parse_mode("select=")
