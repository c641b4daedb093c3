"""Mixture-of-experts actor with gradient routing (arXiv 2410.04332, §4.3).

N named experts (MLPs) map features to latents; a gate gives mixture weights (a softmax over experts, which
for two experts equals the paper's sigmoid gate); the mixture of expert latents feeds a shared output. A
route-weight input masks each expert's gradient per sample (:func:`routed_rl.routing.route`) and stops the
gate's gradient on labeled samples, as the paper does.

The experts are one :class:`StackedMLP`: their weights are stacked, so on a GPU every layer of every expert
is one batched matrix product (one kernel); on the CPU they run one at a time on their slices of it. An expert
that no sample of a batch routes into (route weight 0 throughout, e.g. every replayed label goes to another
expert) is evaluated without recording its backward pass: the same forward values and the same, exactly zero,
gradient, without the work of computing it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch as th
import torch.nn.functional as F
from torch import nn

from routed_rl.errors import UserError, check_expert_name
from routed_rl.routing import route
from routed_rl.steering import Steering

__all__ = ["MixtureOfExperts", "StackedMLP", "mlp"]


def mlp(in_dim: int, widths: Sequence[int], activation_fn: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """A plain MLP: Linear + activation for each width (an empty ``widths`` gives the identity)."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Linear(in_dim, width), activation_fn()]
        in_dim = width
    return nn.Sequential(*layers)


class StackedMLP(nn.Module):
    """N MLPs of one shape with stacked weights: layer ``i`` of all experts can be one batched matrix product.

    Calling it evaluates the experts together (one batched product per layer: one kernel per layer on a GPU);
    :meth:`one` evaluates a single expert on its slices of the same weights. Which one the mixture uses is
    :attr:`batched`: by default the batched product on a GPU and one expert at a time on the CPU, where
    batching does the same multiply-adds and measured slower (benchmarks/README.md, training throughput).

    Expert ``k``'s layer ``i`` is ``nn.Linear`` with weight ``weights[i][k]`` (out, in) and bias
    ``biases[i][k]``, each followed by the activation, as :func:`mlp` builds one expert; the weights start as
    ``nn.Linear``'s would, expert by expert and layer by layer (so seeded initialisations are unchanged).
    State dicts saved with one ``mlp`` per expert (``<k>.<2i>.weight``) load into it.

    :param n: number of experts
    :param in_dim: input size
    :param widths: hidden widths (at least one)
    :param activation_fn: activation class
    :param input_mask: optional (n, in_dim) 0/1 tensor: expert ``k`` sees input ``j`` only where it is 1. Its
        first-layer weights there are multiplied by 0 in every forward pass, so their gradient is exactly 0
        (call :meth:`zero_masked_weights` to set the weights themselves to 0, e.g. for an export)
    """

    def __init__(
        self,
        n: int,
        in_dim: int,
        widths: Sequence[int],
        activation_fn: type[nn.Module] = nn.ReLU,
        input_mask: th.Tensor | None = None,
    ) -> None:
        super().__init__()
        if len(widths) == 0:
            raise UserError("expert_arch needs at least one hidden width")
        self.n = n
        self.in_dim = in_dim
        self.widths = [int(w) for w in widths]
        dims = [in_dim, *self.widths]
        self.weights = nn.ParameterList([nn.Parameter(th.empty(n, o, i)) for i, o in itertools.pairwise(dims)])
        self.biases = nn.ParameterList([nn.Parameter(th.empty(n, o)) for o in dims[1:]])
        self.activation = activation_fn()
        self.register_buffer("input_mask", None if input_mask is None else input_mask.reshape(n, 1, in_dim).float())
        #: evaluate the experts together (True), one at a time (False), or by device (None: together on a GPU)
        self.batched: bool | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.Linear``'s initialisation, expert by expert, layer by layer (the order of one ``mlp`` per expert)."""
        with th.no_grad():
            for k in range(self.n):
                for weight, bias in zip(self.weights, self.biases, strict=True):
                    nn.init.kaiming_uniform_(weight[k], a=math.sqrt(5))
                    bound = 1 / math.sqrt(weight.shape[2])
                    nn.init.uniform_(bias[k], -bound, bound)
        self.zero_masked_weights()

    def orthogonal_(self, gain: float) -> None:
        """SB3's orthogonal initialisation (``ActorCriticPolicy.init_weights``) of every expert's layers, zero
        biases, in the order SB3 would initialise one ``mlp`` per expert."""
        with th.no_grad():
            for k in range(self.n):
                for weight, bias in zip(self.weights, self.biases, strict=True):
                    nn.init.orthogonal_(weight[k], gain=gain)
                    bias[k].fill_(0.0)
        self.zero_masked_weights()

    def zero_masked_weights(self) -> None:
        """Set the first-layer weights on each expert's masked-out inputs to 0."""
        mask: th.Tensor | None = self.input_mask  # type: ignore[assignment]
        if mask is not None:
            with th.no_grad():
                self.weights[0].mul_(mask)

    def forward(self, x: th.Tensor, experts: Sequence[int] | None = None) -> th.Tensor:
        """The experts' outputs for the same input.

        :param x: (batch, in_dim)
        :param experts: which experts to evaluate, in this order (default: all)
        :return: (len(experts), batch, widths[-1])
        """
        index = None if experts is None or list(experts) == list(range(self.n)) else list(experts)
        n = self.n if index is None else len(index)
        mask: th.Tensor | None = self.input_mask  # type: ignore[assignment]
        h = x
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            w, b = (weight, bias) if index is None else (weight[index], bias[index])
            if i == 0:
                if mask is not None:
                    w = w * (mask if index is None else mask[index])
                # one matrix product for every expert: their first layers side by side
                out = self.activation(F.linear(h, w.reshape(-1, self.in_dim), b.reshape(-1)))
                h = out.view(x.shape[0], n, -1).transpose(0, 1)
            else:
                h = self.activation(th.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2)))
        return h

    def _layers(self, k: int) -> list[tuple[th.Tensor, th.Tensor]]:
        """Expert ``k``'s (weight, bias) per layer: slices of the stacked weights, its input mask applied."""
        mask: th.Tensor | None = self.input_mask  # type: ignore[assignment]
        return [
            (weight[k] * mask[k] if i == 0 and mask is not None else weight[k], bias[k])
            for i, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True))
        ]

    def one(self, k: int, x: th.Tensor) -> th.Tensor:
        """Expert ``k`` alone: (batch, in_dim) -> (batch, widths[-1]), on its slices of the stacked weights."""
        h = x
        for w, b in self._layers(k):
            h = self.activation(F.linear(h, w, b))
        return h

    def use_batched(self, x: th.Tensor) -> bool:
        """Whether the mixture evaluates the experts together for input ``x`` (see :attr:`batched`)."""
        return x.is_cuda if self.batched is None else self.batched

    def expert(self, k: int) -> nn.Sequential:
        """A standalone copy of expert ``k`` as one :func:`mlp` (for exports and checks)."""
        module = mlp(self.in_dim, self.widths, type(self.activation))
        module.load_state_dict(self.expert_state_dict(k))
        return module

    def expert_state_dict(self, k: int) -> dict[str, th.Tensor]:
        """Expert ``k``'s weights with :func:`mlp`'s names (``0.weight``, ``0.bias``, ``2.weight``, ...)."""
        out: dict[str, th.Tensor] = {}
        for i, (w, b) in enumerate(self._layers(k)):
            out[f"{2 * i}.weight"], out[f"{2 * i}.bias"] = w.detach().clone(), b.detach().clone()
        return out

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        upgrade_per_module_keys(state_dict, prefix, self.n, len(self.widths))
        super()._load_from_state_dict(state_dict, prefix, *args)


def upgrade_per_module_keys(state_dict: dict[str, Any], prefix: str, n: int, n_layers: int) -> list[tuple[str, list[str]]]:
    """Stack, in place, the per-expert entries of a state dict saved with one ``mlp`` per expert into a
    :class:`StackedMLP`'s ``weights.<i>``/``biases.<i>``.

    :return: (stacked key, the per-expert keys it replaced in expert order) for each entry replaced
    """
    replaced = []
    for i in range(n_layers):
        for kind, stacked in (("weight", "weights"), ("bias", "biases")):
            old = [f"{prefix}{k}.{2 * i}.{kind}" for k in range(n)]  # one mlp per expert: Linear at 2i
            if all(key in state_dict for key in old):
                state_dict[f"{prefix}{stacked}.{i}"] = th.stack([state_dict.pop(key) for key in old])
                replaced.append((f"{prefix}{stacked}.{i}", old))
    return replaced


class MixtureOfExperts(nn.Module):
    """N named MLP experts mixed by a softmax gate.

    :param in_dim: input feature size
    :param expert_names: one distinct identifier per expert (routing and steering address experts by name)
    :param expert_arch: hidden widths of each expert (the paper: 256, 256); the output size is the last width
    :param gate_arch: hidden widths of the gate before its linear layer to N logits
    :param activation_fn: activation class
    :param expert_input_index: optional feature indices the experts see (default: all), e.g. to hide the
        oversight mask from the experts
    :param gate_input_index: optional feature indices the gate sees (default: all)
    :param expert_hidden_index: optional ``{expert name: feature indices}`` (of the experts' input) that this
        expert alone cannot see: its first layer's weights on them start at 0 and are multiplied by 0 in every
        forward pass, so their gradient is exactly 0 and they stay 0: the expert is blind to them in every path
        (steered, exported) while the other experts and the gate still see them
    """

    def __init__(
        self,
        in_dim: int,
        expert_names: Sequence[str],
        expert_arch: Sequence[int] = (256, 256),
        gate_arch: Sequence[int] = (),
        activation_fn: type[nn.Module] = nn.ReLU,
        expert_input_index: Sequence[int] | None = None,
        gate_input_index: Sequence[int] | None = None,
        expert_hidden_index: Mapping[str, Sequence[int]] | None = None,
    ) -> None:
        super().__init__()
        if len(expert_arch) == 0:
            raise UserError("expert_arch needs at least one hidden width")
        self.expert_names = list(expert_names)
        self.n_experts = len(self.expert_names)
        if self.n_experts < 1 or len(set(self.expert_names)) != self.n_experts:
            raise UserError(f"expert names must be non-empty and distinct, got {self.expert_names}")
        if not all(isinstance(name, str) and name.isidentifier() for name in self.expert_names):
            raise UserError(f"expert names must be identifiers (letters, digits, _), got {self.expert_names}")
        self._slices: dict[str, slice] = {}
        expert_in = self._register_index("expert_input_index", expert_input_index, in_dim)
        gate_in = self._register_index("gate_input_index", gate_input_index, in_dim)
        self.experts = StackedMLP(
            self.n_experts, expert_in, expert_arch, activation_fn, self._input_mask(expert_hidden_index, expert_in)
        )
        self.gate = nn.Sequential(
            mlp(gate_in, gate_arch, activation_fn), nn.Linear(gate_arch[-1] if gate_arch else gate_in, self.n_experts)
        )
        self.latent_dim = int(expert_arch[-1])
        self.steering: Steering | None = None
        #: optional (n_experts,) factors in [0, 1] on the unsteered mixture weights (renormalised), e.g. to
        #: anneal an expert out during training; not saved, and ignored while a steering is set
        self.weight_scale: th.Tensor | None = None
        #: optional (batch, n_experts) bool: per-sample experts kept (as a steering would, sample by sample) in
        #: forward passes not given ``keep``; set only around a call whose batch it matches
        self.sample_keep: th.Tensor | None = None

    def _input_mask(self, hidden_index: Mapping[str, Sequence[int]] | None, expert_in: int) -> th.Tensor | None:
        """(n_experts, expert_in) 0/1: which of the experts' input features each expert sees."""
        if not hidden_index:
            return None
        mask = th.ones(self.n_experts, expert_in)
        for name, index in hidden_index.items():
            check_expert_name(name, self.expert_names, "expert_hidden_index")
            hidden = th.as_tensor(list(index), dtype=th.long)
            if hidden.numel() == 0 or hidden.min() < 0 or hidden.max() >= expert_in:
                raise UserError(
                    f"expert_hidden_index[{name!r}] must be non-empty indices in [0, {expert_in}), got {list(index)}"
                )
            mask[self.expert_names.index(name), hidden] = 0.0
        return mask

    def zero_hidden_weights(self) -> None:
        """Set each expert's first-layer weights on its hidden features to 0 (call again after re-initialising
        the weights)."""
        self.experts.zero_masked_weights()

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # saved with one mlp per expert: their hidden-feature masks were buffers of their own
        old = [f"{prefix}expert_input_mask_{k}" for k in range(self.n_experts)]
        if any(key in state_dict for key in old):
            mask = th.ones(self.n_experts, self.experts.in_dim)
            for k, key in enumerate(old):
                if key in state_dict:
                    mask[k] = state_dict.pop(key)
            state_dict[f"{prefix}experts.input_mask"] = mask.reshape(self.n_experts, 1, -1)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def _register_index(self, name: str, index: Sequence[int] | None, in_dim: int) -> int:
        """Store an optional input-feature selection as a buffer; return the selected input size."""
        if index is None:
            self.register_buffer(name, None)
            return in_dim
        tensor = th.as_tensor(list(index), dtype=th.long)
        if tensor.numel() == 0 or tensor.min() < 0 or tensor.max() >= in_dim:
            raise UserError(f"{name} must be non-empty indices in [0, {in_dim}), got {list(index)}")
        self.register_buffer(name, tensor)
        first = int(tensor[0])
        if th.equal(tensor, th.arange(first, first + tensor.numel())):  # a contiguous block: slice, no copy
            self._slices[name] = slice(first, first + tensor.numel())
        return tensor.numel()

    def _select(self, features: th.Tensor, name: str) -> th.Tensor:
        """The input features named by ``expert_input_index`` or ``gate_input_index``."""
        index: th.Tensor | None = getattr(self, name)
        if index is None:
            return features
        block = self._slices.get(name)
        return features[:, block] if block is not None else features[:, index]

    def expert_forward(self, k: int, expert_in: th.Tensor) -> th.Tensor:
        """Expert ``k``'s latent for the experts' input features (blind to its hidden features)."""
        return self.experts.one(k, expert_in)

    def _expert_outputs(self, expert_in: th.Tensor, kept: list[int], frozen: list[int]) -> list[th.Tensor]:
        """Each kept expert's (batch, latent) output, in ``kept``'s order; the ``frozen`` ones without gradient.

        Together (one batched product per layer) where :meth:`StackedMLP.use_batched` says so, else one at a time."""
        live = [k for k in kept if k not in frozen]
        out: dict[int, th.Tensor] = {}
        for group, grad in ((live, True), (frozen, False)):
            if not group:
                continue
            with th.set_grad_enabled(grad and th.is_grad_enabled()):
                if self.experts.use_batched(expert_in):
                    out.update(zip(group, self.experts(expert_in, group).unbind(0), strict=True))
                else:
                    out.update((k, self.experts.one(k, expert_in)) for k in group)
        return [out[k] for k in kept]

    def gate_logits(self, features: th.Tensor) -> th.Tensor:
        """(batch, n_experts) raw gate logits."""
        return self.gate(self._select(features, "gate_input_index"))

    def mixture_weights(self, logits: th.Tensor, keep: th.Tensor | None = None) -> th.Tensor:
        """Softmax of the gate logits, with the current steering applied; unsteered, with :attr:`weight_scale`
        and the per-sample ``keep`` (batch, n_experts) bool mask applied, if given."""
        s = self.steering
        if s is None:
            if self.weight_scale is not None:  # softmax(logits + log scale) = scaled weights, renormalised
                logits = logits + th.log(self.weight_scale.to(device=logits.device, dtype=logits.dtype))
            if keep is not None:
                logits = logits.masked_fill(~keep.to(logits.device), float("-inf"))
            return th.softmax(logits, dim=-1)
        if s.fixed_weights is not None:
            return th.as_tensor(s.fixed_weights, dtype=logits.dtype, device=logits.device).expand_as(logits)
        keep = th.as_tensor(s.keep, device=logits.device)
        return th.softmax(logits.masked_fill(~keep, float("-inf")), dim=-1)

    def forward(
        self,
        features: th.Tensor,
        route_weight: th.Tensor | None = None,
        gate_route_weight: th.Tensor | None = None,
        keep: th.Tensor | None = None,
    ) -> tuple[th.Tensor, th.Tensor]:
        """Mix the experts.

        :param features: (batch, in_dim)
        :param route_weight: (batch, n_experts) float, gradient weight of each expert per sample
            (1 = gradient flows, 0 = none); ``None``: no routing
        :param gate_route_weight: (batch,) float gradient weight of the gate; by default 1 where every
            route weight is 1 (unlabeled) and 0 elsewhere (labeled), as in the paper
        :param keep: (batch, n_experts) bool, the experts each sample keeps, as ``steer(select=...)`` or
            ``steer(ablate=...)`` would for the whole batch (default :attr:`sample_keep`; ``None``: all);
            ignored while a steering is set
        :return: the mixed latent (batch, latent_dim) and the raw gate logits (batch, n_experts), whose
            gradient is not routed (for a supervised gate loss)
        """
        if route_weight is not None and gate_route_weight is None:
            gate_route_weight = (route_weight == 1).all(dim=1).to(features.dtype)
        logits = self.gate_logits(features)
        keep = self.sample_keep if keep is None else keep
        weights = self.mixture_weights(route(logits, gate_route_weight), keep)
        if self.steering is not None:
            used = self.steering.keep
        else:
            used = tuple(keep.any(dim=0).tolist()) if keep is not None else (True,) * self.n_experts
        kept = [k for k in range(self.n_experts) if used[k]]  # a dropped expert has mixture weight 0: skip its work
        # an expert whose route weight is 0 on every sample gets an exactly zero gradient from this batch: it
        # is evaluated without building its backward pass (the same forward values, no wasted backward work)
        frozen = [] if route_weight is None else [k for k in kept if not bool(route_weight[:, k].any())]
        expert_in = self._select(features, "expert_input_index")
        outs = self._expert_outputs(expert_in, kept, frozen)
        if route_weight is not None:
            outs = [out if k in frozen else route(out, route_weight[:, k]) for k, out in zip(kept, outs, strict=True)]
        latent = None
        for k, out in zip(kept, outs, strict=True):
            latent = weights[:, k : k + 1] * out if latent is None else latent + weights[:, k : k + 1] * out
        assert latent is not None  # steering always keeps at least one expert
        return latent, logits
