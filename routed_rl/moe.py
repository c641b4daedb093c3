"""Mixture-of-experts actor with gradient routing (arXiv 2410.04332, §4.3).

N named experts (MLPs) map features to latents; a gate gives mixture weights (a softmax over experts, which
for two experts equals the paper's sigmoid gate); the mixture of expert latents feeds a shared output. A
route-weight input masks each expert's gradient per sample (:func:`routed_rl.routing.route`) and stops the
gate's gradient on labeled samples, as the paper does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch as th
from torch import nn

from routed_rl.errors import UserError
from routed_rl.routing import route
from routed_rl.steering import Steering

__all__ = ["MixtureOfExperts", "mlp"]


def mlp(in_dim: int, widths: Sequence[int], activation_fn: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """A plain MLP: Linear + activation for each width (an empty ``widths`` gives the identity)."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Linear(in_dim, width), activation_fn()]
        in_dim = width
    return nn.Sequential(*layers)


class MixtureOfExperts(nn.Module):
    """N named MLP experts mixed by a softmax gate.

    :param in_dim: input feature size
    :param expert_names: one name per expert, e.g. ``("diamond", "ghost")``
    :param expert_arch: hidden widths of each expert (the paper: 256, 256); the output size is the last width
    :param gate_arch: hidden widths of the gate before its linear layer to N logits
    :param activation_fn: activation class
    :param expert_input_index: optional feature indices the experts see (default: all), e.g. to hide the
        oversight mask from the experts
    :param gate_input_index: optional feature indices the gate sees (default: all)
    :param expert_hidden_index: optional ``{expert name: feature indices}`` (of the experts' input) that this
        expert alone cannot see: they are zeroed on its input, and its first layer's weights on them start
        at 0 and, their gradient being exactly 0, stay there, so the expert is blind to them in every path
        (steered, exported) while the other experts and the gate still see them
    """

    def __init__(
        self,
        in_dim: int,
        expert_names: Sequence[str] = ("diamond", "ghost"),
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
        self.experts = nn.ModuleList([mlp(expert_in, expert_arch, activation_fn) for _ in self.expert_names])
        self.gate = nn.Sequential(
            mlp(gate_in, gate_arch, activation_fn), nn.Linear(gate_arch[-1] if gate_arch else gate_in, self.n_experts)
        )
        self.latent_dim = int(expert_arch[-1])
        self.steering: Steering | None = None
        self._hidden: dict[int, str] = {}
        for name, index in (expert_hidden_index or {}).items():
            if name not in self.expert_names:
                raise UserError(f"expert_hidden_index: unknown expert {name!r}; experts are {self.expert_names}")
            hidden = th.as_tensor(list(index), dtype=th.long)
            if hidden.numel() == 0 or hidden.min() < 0 or hidden.max() >= expert_in:
                raise UserError(
                    f"expert_hidden_index[{name!r}] must be non-empty indices in [0, {expert_in}), got {list(index)}"
                )
            k = self.expert_names.index(name)
            mask = th.ones(expert_in)
            mask[hidden] = 0.0
            self.register_buffer(f"expert_input_mask_{k}", mask)
            self._hidden[k] = f"expert_input_mask_{k}"
        self.zero_hidden_weights()

    def zero_hidden_weights(self) -> None:
        """Set each expert's first-layer weights on its hidden features to 0 (call again after re-initialising
        the weights, as SB3's orthogonal initialisation does)."""
        with th.no_grad():
            for k, mask in self._hidden.items():
                first: nn.Linear = self.experts[k][0]  # type: ignore[assignment,index]
                first.weight[:, getattr(self, mask) == 0] = 0.0

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
        """Expert ``k``'s latent for the experts' input features (with its hidden features zeroed)."""
        mask = self._hidden.get(k)
        return self.experts[k](expert_in if mask is None else expert_in * getattr(self, mask))

    def gate_logits(self, features: th.Tensor) -> th.Tensor:
        """(batch, n_experts) raw gate logits."""
        return self.gate(self._select(features, "gate_input_index"))

    def mixture_weights(self, logits: th.Tensor) -> th.Tensor:
        """Softmax of the gate logits, with the current steering applied."""
        s = self.steering
        if s is None:
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
    ) -> tuple[th.Tensor, th.Tensor]:
        """Mix the experts.

        :param features: (batch, in_dim)
        :param route_weight: (batch, n_experts) float, gradient weight of each expert per sample
            (1 = gradient flows, 0 = none); ``None``: no routing
        :param gate_route_weight: (batch,) float gradient weight of the gate; by default 1 where every
            route weight is 1 (unlabeled) and 0 elsewhere (labeled), as in the paper
        :return: the mixed latent (batch, latent_dim) and the raw gate logits (batch, n_experts), whose
            gradient is not routed (for a supervised gate loss)
        """
        if route_weight is not None and gate_route_weight is None:
            gate_route_weight = (route_weight == 1).all(dim=1).to(features.dtype)
        logits = self.gate_logits(features)
        weights = self.mixture_weights(route(logits, gate_route_weight))
        expert_in = self._select(features, "expert_input_index")
        latent = features.new_zeros((features.shape[0], self.latent_dim))
        keep = self.steering.keep if self.steering is not None else (True,) * self.n_experts
        for k in range(self.n_experts):
            if not keep[k]:
                continue  # a dropped expert has mixture weight 0: skip its work
            out = self.expert_forward(k, expert_in)
            out = route(out, None if route_weight is None else route_weight[:, k])
            latent = latent + weights[:, k : k + 1] * out
        return latent, logits
