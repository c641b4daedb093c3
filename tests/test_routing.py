"""The gradient-masking primitive and the routing table, with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th

from routed_rl.routing import RoutingTable, route
from routed_rl.type_aliases import UNLABELED, UNLABELED_TAIL


def _grad(weight: th.Tensor | None, seed: int = 0) -> tuple[th.Tensor, th.Tensor]:
    g = th.Generator().manual_seed(seed)
    x = th.randn(6, 5, generator=g, requires_grad=True)
    y = route(x * 3.0, weight)
    (y.sin() * th.arange(5.0)).sum().backward()
    assert x.grad is not None
    return y.detach(), x.grad


def test_forward_value_is_exactly_the_input() -> None:
    x = th.randn(8, 7, dtype=th.float64)
    for w in (th.zeros(8), th.full((8,), 0.3), th.rand(8), th.ones(8)):
        assert th.equal(route(x, w), x)
    assert route(x, None) is x


def test_zero_weight_gives_exactly_zero_gradient() -> None:
    _, grad = _grad(th.zeros(6))
    assert th.count_nonzero(grad) == 0


def test_unit_weight_gives_the_plain_gradient_exactly() -> None:
    (_, plain), (_, routed) = _grad(None), _grad(th.ones(6))
    assert th.equal(plain, routed)


@pytest.mark.parametrize("w", [0.5, 0.25, 0.3, 0.9])
def test_weight_scales_gradient_by_w(w: float) -> None:
    (_, plain), (_, routed) = _grad(None), _grad(th.full((6,), w))
    if w in (0.5, 0.25):  # powers of two scale floats exactly
        assert th.equal(routed, w * plain)
    else:
        assert th.allclose(routed, w * plain, rtol=1e-6, atol=0)


def test_per_sample_weights() -> None:
    w = th.tensor([1.0, 0.0, 0.5, 0.0, 1.0, 0.25])
    (_, plain), (_, routed) = _grad(None), _grad(w)
    assert th.equal(routed, w[:, None] * plain)


def test_default_table_routes_each_label_into_its_expert() -> None:
    table = RoutingTable(["diamond", "ghost"])
    assert table.labels == ["diamond", "ghost"]
    w = table.weights(np.array([0, 1, -1]))
    assert th.equal(w, th.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    assert th.equal(table.gate_targets(np.array([0, 1, -1])), th.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))


def test_weighted_entries() -> None:
    table = RoutingTable(
        ["diamond", "ghost"], {"ghost": {"ghost": 1.0, "diamond": 0.0}, "diamond": {"diamond": 1.0, "ghost": 0.2}}
    )
    w = table.weights(np.array([table.label_id("diamond"), table.label_id("ghost")]))
    assert th.allclose(w, th.tensor([[1.0, 0.2], [0.0, 1.0]]))
    # the gate's target for a label named after an expert is that expert
    assert th.equal(table.gate_targets(np.array([table.label_id("diamond")])), th.tensor([[1.0, 0.0]]))
    other = RoutingTable(["a", "b"], {"both": {"a": 1.0, "b": 1.0}})
    assert th.equal(other.gate_targets(np.array([0])), th.tensor([[0.5, 0.5]]))


@pytest.mark.parametrize(
    "table,message",
    [
        ({"ghost": {"ghots": 1.0}}, r"unknown expert 'ghots' \(did you mean 'ghost'\?\)"),
        ({"ghost": {"ghost": 1.5}}, r"must be in \[0, 1\]"),
        ({"ghost": {"ghost": -0.1}}, r"must be in \[0, 1\]"),
        ({"ghost": 1.0}, "must map expert names to weights"),
    ],
    ids=["unknown-expert", "weight-above-1", "negative-weight", "not-a-map"],
)
def test_bad_tables(table: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RoutingTable(["diamond", "ghost"], table)


def test_unknown_label_and_bad_expert_names() -> None:
    table = RoutingTable(["diamond", "ghost"])
    with pytest.raises(ValueError, match=r"unknown label 'diamnd' \(did you mean 'diamond'\?\)"):
        table.label_id("diamnd")
    with pytest.raises(ValueError, match="distinct"):
        RoutingTable(["a", "a"])


def test_unlabeled_weights() -> None:
    table = RoutingTable(["diamond", "ghost"], unlabeled={"diamond": 0.25})
    assert th.equal(table.weights(np.array([-1, 0])), th.tensor([[0.25, 1.0], [1.0, 0.0]]))
    assert th.equal(table.owners(np.array([0, 1])), th.tensor([0, 1]))
    with pytest.raises(ValueError, match="unknown expert 'diamnd'"):
        RoutingTable(["diamond", "ghost"], unlabeled={"diamnd": 0.5})
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        RoutingTable(["diamond", "ghost"], unlabeled={"diamond": 1.5})


def test_unlabeled_tail_weights() -> None:
    """Unlabeled steps at an episode's end (id -2) take the tail row; experts it leaves out keep their
    unlabeled weight; gate targets stay empty for both."""
    table = RoutingTable(["diamond", "ghost"], unlabeled={"ghost": 0.5}, unlabeled_tail={"diamond": 0.0})
    w = table.weights(np.array([UNLABELED_TAIL, UNLABELED, 0]))
    assert th.equal(w, th.tensor([[0.0, 0.5], [1.0, 0.5], [1.0, 0.0]]))
    assert th.equal(table.gate_targets(np.array([UNLABELED_TAIL])), th.tensor([[0.0, 0.0]]))
    assert th.equal(RoutingTable(["diamond", "ghost"]).weights(np.array([UNLABELED_TAIL])), th.tensor([[1.0, 1.0]]))
    with pytest.raises(ValueError, match=r"unlabeled_tail routing names unknown expert 'diamnd' \(did you mean 'diamond'\?\)"):
        RoutingTable(["diamond", "ghost"], unlabeled_tail={"diamnd": 0.0})
    with pytest.raises(ValueError, match=r"unlabeled_tail routing weight for 'ghost' must be in \[0, 1\], got 2"):
        RoutingTable(["diamond", "ghost"], unlabeled_tail={"ghost": 2})
