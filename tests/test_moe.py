"""MixtureOfExperts: routing masks gradients per expert and per sample, never forward values; steering."""

from __future__ import annotations

import pytest
import torch as th

from routed_rl.moe import MixtureOfExperts
from routed_rl.routing import RoutingTable
from routed_rl.steering import resolve_steering

NAMES = ["diamond", "ghost", "extra"]


def _moe(seed: int = 0, **kwargs: object) -> MixtureOfExperts:
    th.manual_seed(seed)
    return MixtureOfExperts(12, NAMES, expert_arch=(16, 8), gate_arch=(8,), **kwargs)  # type: ignore[arg-type]


def _grads(moe: MixtureOfExperts, x: th.Tensor, route_weight: th.Tensor | None) -> dict[str, th.Tensor]:
    moe.zero_grad()
    latent, _ = moe(x, route_weight)
    (latent * th.linspace(-1, 1, latent.shape[1])).sum().backward()
    return {name: p.grad.clone() if p.grad is not None else th.zeros_like(p) for name, p in moe.named_parameters()}


def _group(grads: dict[str, th.Tensor], prefix: str) -> list[th.Tensor]:
    return [g for name, g in grads.items() if name.startswith(prefix)]


@pytest.mark.parametrize("target", range(3), ids=NAMES)
def test_routed_sample_trains_only_its_expert(target: int) -> None:
    moe = _moe()
    table = RoutingTable(NAMES)
    x = th.randn(5, 12)
    grads = _grads(moe, x, table.weights(th.full((5,), target)))
    for k in range(3):
        expert = _group(grads, f"experts.{k}.")
        if k == target:
            assert all(th.count_nonzero(g) > 0 for g in expert)
        else:
            assert all(th.count_nonzero(g) == 0 for g in expert), f"expert {NAMES[k]} got a gradient"
    assert all(th.count_nonzero(g) == 0 for g in _group(grads, "gate.")), "the gate got a gradient from labeled samples"


def test_unlabeled_samples_train_every_expert_and_the_gate() -> None:
    moe = _moe()
    grads = _grads(moe, th.randn(5, 12), RoutingTable(NAMES).weights(th.full((5,), -1)))
    for prefix in ("experts.0.", "experts.1.", "experts.2.", "gate."):
        assert all(th.count_nonzero(g) > 0 for g in _group(grads, prefix)), prefix
    plain = _grads(moe, th.randn(5, 12), None)
    assert plain.keys() == grads.keys()


def test_all_ones_routing_equals_no_routing() -> None:
    moe, x = _moe(), th.randn(7, 12)
    plain, routed = _grads(moe, x, None), _grads(moe, x, th.ones(7, 3))
    assert all(th.equal(plain[k], routed[k]) for k in plain)


@pytest.mark.parametrize("w", [0.5, 0.2])
def test_weight_scales_expert_gradient(w: float) -> None:
    moe, x = _moe(), th.randn(4, 12)
    ones = th.ones(4, 3)
    scaled = ones.clone()
    scaled[:, 1] = w
    # keep the gate out of the comparison: it is stopped on labeled (not all-ones) samples
    base = _grads(moe, x, ones)
    moe.zero_grad()
    latent, _ = moe(x, scaled, gate_route_weight=th.ones(4))
    (latent * th.linspace(-1, 1, latent.shape[1])).sum().backward()
    for name, p in moe.named_parameters():
        assert p.grad is not None
        expected = w * base[name] if name.startswith("experts.1.") else base[name]
        if w == 0.5:
            assert th.equal(p.grad, expected), name
        else:
            assert th.allclose(p.grad, expected, rtol=1e-5, atol=1e-7), name


def test_mixed_batch_per_sample_masks() -> None:
    """Sample 0 routed to expert 0 and sample 1 unlabeled: expert 1 sees only sample 1's gradient."""
    moe = _moe()
    x = th.randn(2, 12)
    both = _grads(moe, x, th.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]]))
    only_second = _grads(moe, x[1:], th.tensor([[1.0, 1.0, 1.0]]))
    for name in both:
        if name.startswith(("experts.1.", "experts.2.", "gate.")):
            assert th.allclose(both[name], only_second[name], atol=1e-6), name


def test_routing_never_changes_forward_values() -> None:
    moe, x = _moe(), th.randn(9, 12)
    plain_latent, plain_logits = moe(x)
    for w in (th.zeros(9, 3), th.rand(9, 3), RoutingTable(NAMES).weights(th.tensor([0, 1, 2, -1, 0, 1, 2, -1, 0]))):
        latent, logits = moe(x, w)
        assert th.equal(latent, plain_latent) and th.equal(logits, plain_logits)


def test_steering_select_ablate_weights() -> None:
    moe, x = _moe(), th.randn(4, 12)
    expert_out = [expert(x) for expert in moe.experts]
    moe.steering = resolve_steering(NAMES, select="ghost")
    assert th.equal(moe(x)[0], expert_out[1])
    moe.steering = resolve_steering(NAMES, ablate=["ghost"])
    gate = th.softmax(moe.gate_logits(x), dim=-1)
    renorm = gate[:, [0, 2]] / gate[:, [0, 2]].sum(dim=1, keepdim=True)
    expected = renorm[:, :1] * expert_out[0] + renorm[:, 1:] * expert_out[2]
    assert th.allclose(moe(x)[0], expected, atol=1e-6)
    moe.steering = resolve_steering(NAMES, weights={"diamond": 3.0, "extra": 1.0})
    assert th.allclose(moe(x)[0], 0.75 * expert_out[0] + 0.25 * expert_out[2], atol=1e-6)
    moe.steering = None
    assert th.allclose(moe(x)[0], sum(gate[:, k : k + 1] * expert_out[k] for k in range(3)), atol=1e-6)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"select": "gost"}, r"unknown expert 'gost' \(did you mean 'ghost'\?\); experts are \['diamond', 'ghost', 'extra'\]"),
        ({"ablate": ["diamond", "ghost", "extra"]}, "cannot ablate every expert"),
        ({"ablate": "nope"}, "unknown expert 'nope'"),
        ({"weights": {"diamond": -1.0}}, ">= 0"),
        ({"weights": {"diamond": 0.0}}, "positive sum"),
        ({"select": "ghost", "ablate": "diamond"}, "one of select=, ablate= or weights="),
    ],
    ids=["unknown-select", "ablate-all", "unknown-ablate", "negative-weight", "zero-weights", "two-modes"],
)
def test_bad_steering(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_steering(NAMES, **kwargs)


def test_expert_input_index_hides_features_from_experts_only() -> None:
    moe = _moe(expert_input_index=range(6))
    x = th.randn(3, 12)
    x2 = x.clone()
    x2[:, 6:] += 1.0  # change only the hidden features
    assert all(th.equal(e(x[:, :6]), e(x2[:, :6])) for e in moe.experts)
    assert not th.equal(moe.gate_logits(x), moe.gate_logits(x2))
    with pytest.raises(ValueError, match="expert_input_index"):
        _moe(expert_input_index=[12])


def test_an_expert_blind_to_some_features_never_sees_them_and_the_others_do() -> None:
    """The hidden features' first-layer weights start at 0 and get exactly zero gradient; other experts train them."""
    from routed_rl.agents import RoutedPPO
    from routed_rl.envs import OversightGridVecEnv

    env = OversightGridVecEnv(8, oversight_prob=0.5, seed=0)
    model = RoutedPPO("RoutedPolicy", env, n_steps=16, batch_size=64, seed=0,
                      policy_kwargs={"expert_arch": [16], "expert_hidden_channels": {"diamond": [3]}})  # fmt: skip
    moe = model.policy.moe
    hidden = list(range(75, 100))  # channel 3 of a (4, 5, 5) observation
    assert th.count_nonzero(moe.experts[0][0].weight[:, hidden]) == 0  # zero after SB3's orthogonal init
    model.learn(8 * 16 * 3)
    assert th.count_nonzero(moe.experts[0][0].weight[:, hidden]) == 0  # still exactly zero after training
    assert th.count_nonzero(moe.experts[1][0].weight[:, hidden]) > 0  # the ghost expert sees the mask
    obs = th.as_tensor(OversightGridVecEnv(4, seed=1).reset())
    flipped = obs.clone()
    flipped[:, 3] = 1.0 - flipped[:, 3]  # every cell's oversight flipped
    with model.policy.steer(select="diamond"), th.no_grad():
        a = model.policy.get_distribution(obs).distribution.probs
        b = model.policy.get_distribution(flipped).distribution.probs
    assert th.equal(a, b)  # the diamond expert acting alone cannot tell whether it is watched
    with pytest.raises(ValueError, match="unknown expert 'dimond'"):
        RoutedPPO("RoutedPolicy", env, policy_kwargs={"expert_hidden_channels": {"dimond": [3]}})
