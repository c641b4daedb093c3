"""MixtureOfExperts: routing masks gradients per expert and per sample, never forward values; steering."""

from __future__ import annotations

import pytest
import torch as th

from experts import per_expert

from routed_rl.moe import MixtureOfExperts
from routed_rl.routing import RoutingTable
from routed_rl.steering import resolve_steering

NAMES = ["diamond", "ghost", "extra"]


def _moe(seed: int = 0, batched: bool = False, **kwargs: object) -> MixtureOfExperts:
    th.manual_seed(seed)
    moe = MixtureOfExperts(12, NAMES, expert_arch=(16, 8), gate_arch=(8,), **kwargs)  # type: ignore[arg-type]
    moe.experts.batched = batched
    return moe


@pytest.fixture(params=[False, True], ids=["one-expert-at-a-time", "batched"])
def batched(request: pytest.FixtureRequest) -> bool:
    """Both ways the mixture evaluates its experts (one at a time: the CPU's; batched: the GPU's)."""
    return bool(request.param)


def _grads(moe: MixtureOfExperts, x: th.Tensor, route_weight: th.Tensor | None) -> dict[str, th.Tensor]:
    moe.zero_grad()
    latent, _ = moe(x, route_weight)
    (latent * th.linspace(-1, 1, latent.shape[1])).sum().backward()
    return per_expert({name: p.grad.clone() if p.grad is not None else th.zeros_like(p) for name, p in moe.named_parameters()})


def _group(grads: dict[str, th.Tensor], prefix: str) -> list[th.Tensor]:
    return [g for name, g in grads.items() if name.startswith(prefix)]


@pytest.mark.parametrize("target", range(3), ids=NAMES)
def test_routed_sample_trains_only_its_expert(target: int, batched: bool) -> None:
    moe = _moe(batched=batched)
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


def test_unlabeled_samples_train_every_expert_and_the_gate(batched: bool) -> None:
    moe = _moe(batched=batched)
    grads = _grads(moe, th.randn(5, 12), RoutingTable(NAMES).weights(th.full((5,), -1)))
    for prefix in ("experts.0.", "experts.1.", "experts.2.", "gate."):
        assert all(th.count_nonzero(g) > 0 for g in _group(grads, prefix)), prefix
    plain = _grads(moe, th.randn(5, 12), None)
    assert plain.keys() == grads.keys()


def test_all_ones_routing_equals_no_routing(batched: bool) -> None:
    moe, x = _moe(batched=batched), th.randn(7, 12)
    plain, routed = _grads(moe, x, None), _grads(moe, x, th.ones(7, 3))
    assert all(th.equal(plain[k], routed[k]) for k in plain)


@pytest.mark.parametrize("w", [0.5, 0.2, 0.0])
def test_weight_scales_expert_gradient(w: float, batched: bool) -> None:
    """w = 0 on the whole batch: the expert is evaluated without a backward pass, and every gradient is still
    exactly the one its zero route weight gives (its own exactly 0, the others' unchanged)."""
    moe, x = _moe(batched=batched), th.randn(4, 12)
    ones = th.ones(4, 3)
    scaled = ones.clone()
    scaled[:, 1] = w
    # keep the gate out of the comparison: it is stopped on labeled (not all-ones) samples
    base = _grads(moe, x, ones)
    moe.zero_grad()
    latent, _ = moe(x, scaled, gate_route_weight=th.ones(4))
    (latent * th.linspace(-1, 1, latent.shape[1])).sum().backward()
    grads = per_expert({name: p.grad for name, p in moe.named_parameters()})
    assert grads.keys() == base.keys()
    for name, grad in grads.items():
        assert grad is not None
        expected = w * base[name] if name.startswith("experts.1.") else base[name]
        if w in (0.5, 0.0):
            assert th.equal(grad, expected), name
        else:
            assert th.allclose(grad, expected, rtol=1e-5, atol=1e-7), name


def test_mixed_batch_per_sample_masks(batched: bool) -> None:
    """Sample 0 routed to expert 0 and sample 1 unlabeled: expert 1 sees only sample 1's gradient."""
    moe = _moe(batched=batched)
    x = th.randn(2, 12)
    both = _grads(moe, x, th.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]]))
    only_second = _grads(moe, x[1:], th.tensor([[1.0, 1.0, 1.0]]))
    for name in both:
        if name.startswith(("experts.1.", "experts.2.", "gate.")):
            assert th.allclose(both[name], only_second[name], atol=1e-6), name


def test_routing_never_changes_forward_values(batched: bool) -> None:
    moe, x = _moe(batched=batched), th.randn(9, 12)
    plain_latent, plain_logits = moe(x)
    for w in (th.zeros(9, 3), th.rand(9, 3), RoutingTable(NAMES).weights(th.tensor([0, 1, 2, -1, 0, 1, 2, -1, 0]))):
        latent, logits = moe(x, w)
        assert th.equal(latent, plain_latent) and th.equal(logits, plain_logits)


def test_steering_select_ablate_weights(batched: bool) -> None:
    moe, x = _moe(batched=batched), th.randn(4, 12)
    expert_out = [moe.experts.expert(k)(x) for k in range(3)]  # each expert as a stand-alone MLP
    moe.steering = resolve_steering(NAMES, select="ghost")
    assert th.allclose(moe(x)[0], expert_out[1], atol=1e-6)
    moe.steering = resolve_steering(NAMES, ablate=["ghost"])
    gate = th.softmax(moe.gate_logits(x), dim=-1)
    renorm = gate[:, [0, 2]] / gate[:, [0, 2]].sum(dim=1, keepdim=True)
    expected = renorm[:, :1] * expert_out[0] + renorm[:, 1:] * expert_out[2]
    assert th.allclose(moe(x)[0], expected, atol=1e-6)
    moe.steering = resolve_steering(NAMES, weights={"diamond": 3.0, "extra": 1.0})
    assert th.allclose(moe(x)[0], 0.75 * expert_out[0] + 0.25 * expert_out[2], atol=1e-6)
    moe.steering = None
    assert th.allclose(moe(x)[0], sum(gate[:, k : k + 1] * expert_out[k] for k in range(3)), atol=1e-6)


def test_weight_scale_scales_and_renormalises_the_mixture_and_zero_removes_an_expert(batched: bool) -> None:
    moe, x = _moe(batched=batched), th.randn(5, 12)
    expert_out = [moe.experts.expert(k)(x) for k in range(3)]
    gate = th.softmax(moe.gate_logits(x), dim=-1)
    moe.weight_scale = th.tensor([1.0, 0.25, 1.0])
    scaled = gate * th.tensor([1.0, 0.25, 1.0])
    scaled = scaled / scaled.sum(dim=1, keepdim=True)
    assert th.allclose(moe(x)[0], sum(scaled[:, k : k + 1] * expert_out[k] for k in range(3)), atol=1e-6)
    moe.weight_scale = th.tensor([1.0, 0.0, 1.0])  # scale 0: the same policy as ablating the expert
    annealed = moe(x)[0]
    grads = _grads(moe, x, None)
    assert all(th.count_nonzero(g) == 0 for g in _group(grads, "experts.1."))  # exactly zero
    moe.steering = resolve_steering(NAMES, ablate=["ghost"])
    assert th.allclose(annealed, moe(x)[0], atol=1e-6)
    moe.weight_scale = th.tensor([1.0, 0.25, 1.0])  # a steering overrides the scale
    assert th.allclose(moe(x)[0], annealed, atol=1e-6)


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


def test_expert_input_index_hides_features_from_experts_only(batched: bool) -> None:
    moe = _moe(batched=batched, expert_input_index=range(6))
    x = th.randn(3, 12)
    x2 = x.clone()
    x2[:, 6:] += 1.0  # change only the hidden features
    assert th.equal(moe.experts(x[:, :6]), moe.experts(x2[:, :6]))
    assert not th.equal(moe.gate_logits(x), moe.gate_logits(x2))
    with pytest.raises(ValueError, match="expert_input_index"):
        _moe(expert_input_index=[12])


def test_an_expert_blind_to_some_features_never_sees_them_and_the_others_do() -> None:
    """The hidden features' first-layer weights start at 0 and get exactly zero gradient; other experts train them."""
    from routed_rl.agents import RoutedPPO
    from routed_rl.envs import OversightGridVecEnv

    env = OversightGridVecEnv(8, oversight_prob=0.5, seed=0)
    kwargs = {"expert_arch": [16], "value_arch": [16], "expert_hidden_channels": {"diamond": [3]}}
    model = RoutedPPO("RoutedPolicy", env, n_steps=16, batch_size=64, seed=0, n_epochs=2, policy_kwargs=kwargs)
    moe = model.policy.moe
    hidden = list(range(75, 100))  # channel 3 of a (4, 5, 5) observation
    assert th.count_nonzero(moe.experts.weights[0][0][:, hidden]) == 0  # zero after SB3's orthogonal init
    model.learn(8 * 16 * 3)
    assert th.count_nonzero(moe.experts.weights[0][0][:, hidden]) == 0  # still exactly zero after training
    assert th.count_nonzero(moe.experts.weights[0][1][:, hidden]) > 0  # the ghost expert sees the mask
    obs = th.as_tensor(OversightGridVecEnv(4, seed=1).reset())
    flipped = obs.clone()
    flipped[:, 3] = 1.0 - flipped[:, 3]  # every cell's oversight flipped
    with model.policy.steer(select="diamond"), th.no_grad():
        a = model.policy.get_distribution(obs).distribution.probs
        b = model.policy.get_distribution(flipped).distribution.probs
    assert th.equal(a, b)  # the diamond expert acting alone cannot tell whether it is watched
    with pytest.raises(ValueError, match="unknown expert 'dimond'"):
        RoutedPPO("RoutedPolicy", env, policy_kwargs={"expert_hidden_channels": {"dimond": [3]}})


def test_stacked_experts_are_the_per_expert_mlps() -> None:
    """One batched product per layer gives each expert's own MLP, for all experts or any subset, and starts
    from the weights one MLP per expert would have (nn.Linear's and SB3's orthogonal initialisation)."""
    from stable_baselines3.common.policies import ActorCriticPolicy

    from routed_rl.moe import StackedMLP, mlp

    th.manual_seed(3)
    stacked = StackedMLP(3, 12, [16, 8])
    th.manual_seed(3)
    separate = [mlp(12, [16, 8]) for _ in range(3)]

    def same_weights() -> bool:
        pairs = [(stacked.expert_state_dict(k), separate[k].state_dict()) for k in range(3)]
        return all(a.keys() == b.keys() and all(th.equal(a[n], b[n]) for n in a) for a, b in pairs)

    assert same_weights()
    x = th.randn(10, 12)
    out = stacked(x)
    assert out.shape == (3, 10, 8)
    for k in range(3):
        assert th.allclose(out[k], separate[k](x), atol=1e-6)
    assert th.allclose(stacked(x, [2, 0]), out[[2, 0]], atol=1e-6)
    assert all(th.allclose(stacked.one(k, x), out[k], atol=1e-6) for k in range(3))
    th.manual_seed(4)
    stacked.orthogonal_(gain=2.0)
    th.manual_seed(4)
    for module in separate:
        module.apply(lambda m: ActorCriticPolicy.init_weights(m, gain=2.0))
    assert same_weights()


def test_a_model_saved_with_one_module_per_expert_loads_and_resumes() -> None:
    """tests/data/per_module_experts.zip was saved before the experts were stacked (expert_hidden_channels on,
    trained two rollouts); it acts exactly as it did then, its Adam moments are carried over, and it trains on."""
    from pathlib import Path

    import numpy as np
    from stable_baselines3.common.save_util import load_from_zip_file

    from routed_rl.agents import RoutedPPO
    from routed_rl.envs import OversightGridVecEnv

    data = Path(__file__).parent / "data"
    expected = np.load(data / "per_module_experts_expected.npz")
    model = RoutedPPO.load(data / "per_module_experts.zip", env=OversightGridVecEnv(4, oversight_prob=0.5, seed=0))
    obs = th.as_tensor(expected["obs"])
    with th.no_grad():
        assert np.array_equal(model.policy.get_distribution(obs).distribution.probs.numpy(), expected["probs"])
        with model.policy.steer(select="diamond"):
            assert np.array_equal(model.policy.get_distribution(obs).distribution.probs.numpy(), expected["select_diamond"])
    _, saved, _ = load_from_zip_file(data / "per_module_experts.zip")
    old = saved["policy.optimizer"]["state"]  # old order: expert 0's 4 tensors, expert 1's 4, then the rest
    new = model.policy.optimizer.state_dict()["state"]
    names = [name for name, _ in model.policy.named_parameters()]
    first = names.index("mlp_extractor.actor.experts.weights.0")
    for key in ("exp_avg", "exp_avg_sq"):
        assert th.equal(new[first][key], th.stack([old[0][key], old[4][key]]))
    assert len(new) == len(names) == len(old) - 4
    mask = model.policy.moe.experts.input_mask
    assert mask is not None and int((mask[0] == 0).sum()) == 25 and bool((mask[1] == 1).all())
    before = model.policy.moe.experts.weights[0].detach().clone()
    model.learn(4 * 16, reset_num_timesteps=False)
    after = model.policy.moe.experts.weights[0]
    assert model.num_timesteps == 128 + 64 and not th.equal(after, before)
    assert th.count_nonzero(after[0][:, 75:]) == 0  # the diamond expert is still blind to the oversight mask


def test_both_ways_of_evaluating_the_experts_agree_and_keep_hidden_features_hidden() -> None:
    """The batched product and one expert at a time give the same mixture and gradients, and in both a
    hidden feature's first-layer weights get exactly zero gradient."""
    x, rw = th.randn(6, 12), th.tensor([[1.0, 0.0, 0.0]] * 3 + [[1.0, 1.0, 1.0]] * 3)
    results = []
    for batched in (False, True):
        moe = _moe(batched=batched, expert_hidden_index={"diamond": [0, 1, 2]})
        latent, _ = moe(x, rw)
        (latent * th.linspace(-1, 1, latent.shape[1])).sum().backward()
        first = moe.experts.weights[0]
        assert first.grad is not None
        assert th.count_nonzero(first[0][:, :3]) == 0 and th.count_nonzero(first.grad[0][:, :3]) == 0
        assert th.count_nonzero(first.grad[1][:, :3]) > 0  # the ghost expert sees them
        results.append((latent.detach(), {n: p.grad.clone() for n, p in moe.named_parameters() if p.grad is not None}))
    (a, grads_a), (b, grads_b) = results
    assert th.allclose(a, b, atol=1e-6) and grads_a.keys() == grads_b.keys()
    assert all(th.allclose(grads_a[n], grads_b[n], atol=1e-6) for n in grads_a)
