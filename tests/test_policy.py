"""RoutedActorCriticPolicy: steering in every inference path, save/load round trips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch as th

from routed_rl.agents import GridCNN, RoutedActorCriticPolicy, RoutedPPO
from routed_rl.envs import OversightGridVecEnv

SMALL = {"expert_arch": [16, 16], "value_arch": [16], "gate_arch": [8]}


def _model(seed: int = 0, precision: str = "float32", **kwargs: object) -> RoutedPPO:
    env = OversightGridVecEnv(4, oversight_prob=0.5, seed=seed)
    policy_kwargs = {**SMALL, "precision": precision}
    ppo_kwargs = {"n_steps": 16, "batch_size": 32, "n_epochs": 1, "seed": seed, "policy_kwargs": policy_kwargs, **kwargs}
    return RoutedPPO("RoutedPolicy", env, **ppo_kwargs)  # type: ignore[arg-type]


def _obs(n: int = 64, seed: int = 1) -> np.ndarray:
    env = OversightGridVecEnv(n, oversight_prob=0.3, seed=seed)
    return env.reset()


def test_steering_reaches_all_four_inference_paths() -> None:
    model = _model()
    model.learn(64)
    policy = model.policy
    obs = th.as_tensor(_obs())
    expert_alone = policy.moe.experts.expert(0)(policy.extract_features(obs))  # the expert as a stand-alone MLP
    with th.no_grad(), policy.steer(select="diamond"):
        logits = policy.action_net(expert_alone)
        # forward (rollouts)
        _, _, log_prob_fwd = policy(obs, deterministic=True)
        assert th.allclose(
            log_prob_fwd, th.log_softmax(logits, -1).gather(1, logits.argmax(1, keepdim=True)).squeeze(1), atol=1e-6
        )
        # evaluate_actions (training)
        actions = th.arange(64) % 4
        _, log_prob_eval, _ = policy.evaluate_actions(obs, actions)
        assert th.allclose(log_prob_eval, th.log_softmax(logits, -1)[th.arange(64), actions], atol=1e-6)
        # get_distribution / predict (evaluation)
        assert th.allclose(policy.get_distribution(obs).distribution.logits, th.log_softmax(logits, -1), atol=1e-6)
        predicted, _ = model.predict(obs.numpy(), deterministic=True)
        assert np.array_equal(predicted, logits.argmax(1).numpy())
        # predict_values (bootstrap): the critic is not steered
        values_steered = policy.predict_values(obs)
    assert th.equal(values_steered, policy.predict_values(obs))
    assert policy.steering is None  # restored after the block


def test_routed_log_probs_alone_are_those_of_evaluate_actions_routed_without_the_value_net() -> None:
    """``log_prob_routed`` (label replay's path) gives ``evaluate_actions_routed``'s log-probabilities exactly,
    with the same gradients, and never evaluates the value network."""
    policy = _model().policy
    obs, actions = th.as_tensor(_obs()), th.arange(64) % 4
    route_weight = th.tensor([[1.0, 0.0]]).repeat(64, 1)  # every step routed into expert 0: expert 1 is frozen
    gate_weight = th.zeros(64)

    def grads(log_prob: th.Tensor) -> dict[str, th.Tensor | None]:
        (log_prob * th.linspace(-1, 1, 64)).sum().backward()
        out = {name: None if p.grad is None else p.grad.clone() for name, p in policy.named_parameters()}
        policy.zero_grad(set_to_none=True)
        return out

    _, full, _, _ = policy.evaluate_actions_routed(obs, actions, route_weight, gate_weight)
    full_grads = grads(full)
    critic = policy.mlp_extractor.critic
    critic_calls: list[int] = []
    handle = critic.register_forward_hook(lambda *_: critic_calls.append(1))
    alone = policy.log_prob_routed(obs, actions, route_weight, gate_weight)
    handle.remove()
    assert critic_calls == [] and th.equal(alone, full)
    alone_grads = grads(alone)
    assert alone_grads.keys() == full_grads.keys()
    for name, grad in alone_grads.items():
        expected = full_grads[name]
        if grad is None or expected is None:
            assert grad is None and expected is None, name
        else:
            assert th.equal(grad, expected), name
    assert alone_grads["mlp_extractor.critic.0.weight"] is None  # no gradient path to the value network


def test_steer_is_persistent_without_with() -> None:
    policy = _model().policy
    policy.steer(ablate="ghost")
    assert policy.steering is not None and policy.steering.name == "ablate=ghost"
    with policy.steer(weights={"ghost": 1.0}):
        assert policy.steering.fixed_weights == (0.0, 1.0)
    assert policy.steering.keep == (True, False)
    policy.steer()
    assert policy.steering is None
    with pytest.raises(ValueError, match=r"unknown expert 'diamnd'.*experts are \['diamond', 'ghost'\]"):
        policy.steer(select="diamnd")


def test_learn_lifts_steering_while_training() -> None:
    model = _model()
    model.policy.steer(select="ghost")
    seen: list[object] = []
    model.learn(64, callback=lambda _locals, _globals: seen.append(model.policy.steering) or True)
    assert seen and all(s is None for s in seen)
    assert model.policy.steering is not None  # restored afterwards


def test_save_load_round_trip(tmp_path: Path) -> None:
    model = _model(
        routing={"diamond": {"diamond": 1.0, "ghost": 0.2}, "ghost": {"ghost": 1.0}},
        labeler="fraction",
        labeler_kwargs={"p": 0.5},
        gate_coef=0.5,
    )
    model.learn(128)
    obs = _obs(32)
    before = {mode: None for mode in ("unsteered", "diamond", "ghost")}
    before["unsteered"] = model.predict(obs, deterministic=True)[0]
    for expert in ("diamond", "ghost"):
        with model.policy.steer(select=expert):
            before[expert] = model.predict(obs, deterministic=True)[0]
    weights_before = model.policy.mixture_weights(th.as_tensor(obs))
    model.save(tmp_path / "model.zip")

    loaded = RoutedPPO.load(tmp_path / "model.zip")
    assert loaded.policy.expert_names == ["diamond", "ghost"]
    assert loaded.routing_table.to_dict() == {"diamond": {"diamond": 1.0, "ghost": 0.2}, "ghost": {"ghost": 1.0}}
    assert loaded.labeler_spec == "fraction" and loaded.labeler_kwargs == {"p": 0.5} and loaded.gate_coef == 0.5
    assert loaded.labeler.labels_spent == model.labeler.labels_spent > 0
    assert np.array_equal(loaded.predict(obs, deterministic=True)[0], before["unsteered"])
    for expert in ("diamond", "ghost"):
        with loaded.policy.steer(select=expert):
            assert np.array_equal(loaded.predict(obs, deterministic=True)[0], before[expert])
    assert th.equal(loaded.policy.mixture_weights(th.as_tensor(obs)), weights_before)
    # one observation, unbatched, as SB3 accepts it
    single, _ = loaded.predict(obs[0], deterministic=True)
    assert single.shape == () and single == before["unsteered"][0]
    # the loaded model trains on
    loaded.set_env(OversightGridVecEnv(4, seed=1))
    loaded.learn(64, reset_num_timesteps=False)


def test_policy_save_load_alone(tmp_path: Path) -> None:
    policy = _model().policy
    policy.save(tmp_path / "policy.pth")
    loaded = RoutedActorCriticPolicy.load(tmp_path / "policy.pth")
    obs = th.as_tensor(_obs(8))
    assert th.equal(loaded.get_distribution(obs).distribution.logits, policy.get_distribution(obs).distribution.logits)


def test_cnn_features_extractor_and_expert_channels() -> None:
    env = OversightGridVecEnv(4, seed=0)
    cnn = RoutedPPO(
        "RoutedPolicy", env, n_steps=8, batch_size=16, policy_kwargs={"features_extractor_class": GridCNN, **SMALL}
    )
    assert isinstance(cnn.policy.features_extractor, GridCNN)
    cnn.learn(32)
    hidden = RoutedPPO(
        "RoutedPolicy", env, n_steps=8, batch_size=16, policy_kwargs={"expert_obs_channels": [0, 1, 2], **SMALL}
    )
    assert hidden.policy.moe.experts.in_dim == 75 and hidden.policy.moe.gate[0][0].in_features == 100
    with pytest.raises(ValueError, match="expert_obs_channels"):
        RoutedPPO("RoutedPolicy", env, policy_kwargs={"expert_obs_channels": [7], **SMALL})


def test_bfloat16_precision_runs_the_training_paths_in_bfloat16_and_inference_in_float32(tmp_path: Path) -> None:
    """``precision="bfloat16"``: ``forward`` (rollouts) and the update's paths compute in bfloat16, near the float32
    policy's values but not equal to them, and return float32; ``predict``, ``get_distribution`` and
    ``predict_values`` (evaluation, export, bootstrap) are the float32 policy's exactly; a saved model keeps it."""
    full = _model().policy
    half = _model(precision="bfloat16").policy
    half.load_state_dict(full.state_dict())
    obs, actions = th.as_tensor(_obs()), th.arange(64) % 4
    route_weight = th.tensor([[1.0, 0.0]]).repeat(64, 1)
    with th.no_grad():
        outputs = {
            "forward": lambda p: p(obs, deterministic=True),
            "evaluate_actions": lambda p: p.evaluate_actions(obs, actions),
            "evaluate_actions_routed": lambda p: p.evaluate_actions_routed(obs, actions, route_weight),
            "log_prob_routed": lambda p: (p.log_prob_routed(obs, actions, route_weight),),
            "expert_log_prob": lambda p: (p.expert_log_prob(obs, actions, 1),),
        }
        for name, path in outputs.items():
            for a, b in zip(path(full), path(half), strict=True):
                if a is None or not a.is_floating_point():
                    continue
                assert b.dtype == th.float32, name
                assert th.allclose(a, b, atol=0.05), name
                assert not th.equal(a, b), f"{name} computed in float32"
        assert th.equal(half.get_distribution(obs).distribution.logits, full.get_distribution(obs).distribution.logits)
        assert th.equal(half.predict_values(obs), full.predict_values(obs))
    model = _model(precision="bfloat16")
    model.learn(64)
    model.save(tmp_path / "m.zip")
    assert RoutedPPO.load(tmp_path / "m.zip").policy.precision == "bfloat16"


def test_unknown_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="precision must be one of float32, bfloat16, got 'float16'"):
        _model(precision="float16")
