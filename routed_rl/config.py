"""Typed, validated run configs (pydantic v2), loaded from YAML.

A config has the sections ``env``, ``policy``, ``ppo``, ``routing``, ``labeling``, ``early_stopping``,
``eval`` and ``logging`` plus ``seed`` and ``total_steps``. Every field is documented and range-checked; an
unknown key is an error that names its path and the closest valid key.

A YAML config may name another as its ``base`` (a built-in name, or a path relative to the file): it then
holds only the keys it changes, merged section by section over the base. The built-in baselines are
written this way over ``default``, so a method and its baselines cannot drift apart in their PPO settings.
Built-in configs live in ``routed_rl.configs``; ``routed-rl configs`` lists them.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import torch as th
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from stable_baselines3.common.utils import LinearSchedule

from routed_rl.errors import UserError, did_you_mean
from routed_rl.routing import RoutingTable
from routed_rl.steering import parse_mode, resolve_steering
from routed_rl.tasks import Task, task_for
from routed_rl.type_aliases import Precision

__all__ = [
    "ConfigError",
    "EarlyStoppingConfig",
    "EnvConfig",
    "EvalConfig",
    "LabelingConfig",
    "LoggingConfig",
    "PPOConfig",
    "PolicyConfig",
    "RoutingConfig",
    "RunConfig",
    "builtin_configs",
    "load_config",
    "optimizer_kwargs",
    "whole_number",
]


#: Most evaluation episodes at once (each is a grid in memory; more would not fit).
MAX_EVAL_EPISODES = 1_000_000


class ConfigError(UserError):
    """A config that cannot be used; the message is one line that says what to fix."""


_SCIENTIFIC = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def whole_number(value: Any) -> Any:
    """``"1e6"`` -> ``1000000``: YAML reads an exponent without a dot as a string, and step counts are
    written that way (rl-zoo3's ``n_timesteps: !!float 1e6``). Anything else, a fraction included, is
    returned as it came, for the field's own check to accept or reject."""
    if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
        number = float(value)
        if number.is_integer():
            return int(number)
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _whole_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        annotation = cls.model_fields[info.field_name].annotation if info.field_name else None
        return whole_number(value) if annotation in (int, int | None) else value


class EnvConfig(_Section):
    """The training environment: its id, how many copies step together, and its own parameters.

    Any other key is a parameter of the env (OversightGrid's ``rows``, ``cols``, ``oversight_prob``,
    ``max_steps``, ``reward_scheme``, ...): the env's :class:`~routed_rl.tasks.Task` lists them, fills in
    their defaults and checks them by building one env; an unknown one is an error that names the closest.
    """

    model_config = ConfigDict(extra="allow", validate_assignment=True, allow_inf_nan=False)

    id: str = "RoutedRL/OversightGrid-v0"
    """Gymnasium id: a routed-rl env (``routed-rl envs`` lists them) or any registered env with ``outcomes``."""
    n_envs: int = Field(256, ge=1)
    """Number of envs stepped together."""
    wrappers: list[str] = Field(default_factory=list)
    """Gymnasium wrappers (import paths ``package.module:Class``) around every env, innermost first, e.g.
    ``minigrid.wrappers:ImgObsWrapper``."""
    outcome: str | None = None
    """For an env that does not report ``info["outcome"]``: an import path ``package.module:function`` of
    (final info, final observation) -> outcome name or None (see :class:`~routed_rl.tasks.OutcomeWrapper`)."""
    outcomes: dict[str, float] | None = None
    """For an env routed-rl does not own: outcome name -> ground-truth reward (positive: wanted)."""

    @model_validator(mode="before")
    @classmethod
    def _task_params(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        core = {k: data[k] for k in cls.model_fields if k in data}
        try:
            task = task_for(
                str(core.get("id", cls.model_fields["id"].default)),
                core.get("wrappers") or [],
                core.get("outcome"),
                core.get("outcomes"),
            )
        except UserError as e:
            raise ConfigError(str(e)) from None
        params = task.check_kwargs({k: v for k, v in data.items() if k not in cls.model_fields})
        return {**core, **params}

    @property
    def oversight_prob(self) -> float | None:
        """The env's ``oversight_prob`` parameter, when it has one."""
        value = (self.model_extra or {}).get("oversight_prob")
        return None if value is None else float(value)

    def task(self) -> Task:
        """The env's :class:`~routed_rl.tasks.Task`."""
        return task_for(self.id, self.wrappers, self.outcome, self.outcomes)

    def env_kwargs(self) -> dict[str, Any]:
        """The env's own keyword arguments (every key but the ones above)."""
        return dict(self.model_extra or {})


def optimizer_kwargs(changes: dict[str, Any]) -> dict[str, Any]:
    """The Adam keyword arguments of a run: SB3's for PPO (``eps=1e-5``) with ``policy.optimizer_kwargs`` over them."""
    return {"eps": 1e-5, **changes}


class PolicyConfig(_Section):
    """The mixture-of-experts actor-critic policy."""

    expert_names: list[str] = Field(default_factory=list)
    """One name per expert; labels named after an expert route into it. Empty (the default): one expert per
    outcome of the env that carries a reward, wanted first (OversightGrid and DiamondGhost: diamond, ghost)."""
    expert_arch: list[int] = Field(default_factory=lambda: [256, 256], min_length=1)
    """Hidden widths of each expert."""
    gate_arch: list[int] = Field(default_factory=list)
    """Hidden widths of the gate before its linear layer."""
    value_arch: list[int] = Field(default_factory=lambda: [256, 256])
    """Hidden widths of the (unrouted) value network."""
    activation: Literal["relu", "tanh"] = "relu"
    """Activation function."""
    expert_obs_channels: list[int] | None = None
    """Observation channels the experts see (None: all)."""
    gate_obs_channels: list[int] | None = None
    """Observation channels the gate sees (None: all)."""
    expert_hidden_channels: dict[str, list[int]] | None = None
    """Observation channels one expert alone cannot see, e.g. ``{diamond: [3]}`` (the deployed expert blind
    to the oversight mask while the other expert and the gate see it); not with ``expert_obs_channels``.
    With ``features_extractor: cnn`` the listed experts see the image only through a second CNN view with
    those channels zeroed (e.g. ``{diamond: [2]}``: MiniGrid's state channel, where oversight is marked)."""
    expert_own_cnn: list[str] | None = None
    """Experts that see the image through a CNN of their own, which no other part of the network sees or trains,
    e.g. ``[diamond]``: the deployed expert sees everything (the oversight marking too) but learns its features
    from its own routed gradient alone, as each expert does from the flat grid (``features_extractor: cnn``)."""
    precision: Precision = "float32"
    """Training precision: ``bfloat16`` runs the network's matrix products and convolutions in bfloat16 under
    ``torch.autocast`` while collecting rollouts and updating (mixed precision: parameters, gradients and Adam
    stay float32); evaluation, ``predict`` and export run in float32 either way. Fast on CPUs with bfloat16
    units (AMX, AVX512-BF16) and on recent GPUs; see benchmarks/README.md, training throughput."""
    features_extractor: Literal["flatten", "cnn"] = "flatten"
    """``flatten`` for grid observations, ``cnn`` (GridCNN, MiniGrid's SB3 recipe) for images."""
    normalize_images: bool = True
    """SB3's division of uint8 images by 255 (MiniGrid's image holds small indices, not pixels: false)."""
    ortho_init: bool = True
    """SB3's orthogonal initialisation."""
    optimizer_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments of the Adam optimizer over SB3's own for PPO (``eps: 1.0e-5``, kept unless given here),
    as SB3's ``policy_kwargs["optimizer_kwargs"]``, e.g. ``{betas: [0.9, 0.99]}`` or ``{fused: true}`` (torch's
    fused Adam: the same update up to float rounding)."""

    @field_validator("optimizer_kwargs")
    @classmethod
    def _optimizer_kwargs(cls, value: dict[str, Any]) -> dict[str, Any]:
        kwargs = optimizer_kwargs(value)
        valid = [name for name in inspect.signature(th.optim.Adam).parameters if name not in ("self", "params", "lr")]
        for name in kwargs:
            if name == "lr":
                raise UserError("policy.optimizer_kwargs cannot set lr: set ppo.learning_rate")
            if name not in valid:
                hint = did_you_mean(name, valid)
                raise UserError(f"unknown Adam argument {name!r}{hint} in policy.optimizer_kwargs; valid: {', '.join(valid)}")
        try:
            th.optim.Adam([th.zeros(1, requires_grad=True)], **kwargs)
        except (TypeError, ValueError, RuntimeError) as e:
            raise UserError(f"policy.optimizer_kwargs: {str(e).splitlines()[0]}") from None
        return value

    @model_validator(mode="after")
    def _check(self) -> PolicyConfig:
        if len(set(self.expert_names)) != len(self.expert_names):
            raise UserError(f"expert_names must be distinct, got {self.expert_names}")
        bad = [name for name in self.expert_names if not name.isidentifier()]
        if bad:  # names end up in file names and tensor keys
            raise UserError(f"expert names must be identifiers (letters, digits, _; not starting with a digit), got {bad}")
        for name in ("expert_arch", "gate_arch", "value_arch"):
            if any(w < 1 for w in getattr(self, name)):
                raise UserError(f"{name} widths must be >= 1, got {getattr(self, name)}")
        return self


@dataclass(frozen=True)
class HeldLinearSchedule:
    """An SB3 schedule (of ``progress_remaining``, 1 at the start of training, 0 at its end): ``start`` until a
    fraction ``held`` of training has passed, then linearly down to 0 at its end."""

    start: float
    held: float

    def __call__(self, progress_remaining: float) -> float:
        done = 1.0 - progress_remaining
        if done <= self.held:
            return self.start
        return max(0.0, self.start * (1.0 - done) / (1.0 - self.held))


def _linear(value: float | str, held: float = 0.0) -> float | LinearSchedule | HeldLinearSchedule:
    """A number as it is; ``"lin_<x>"`` as SB3's linear schedule from x at the start of training to 0 at its end,
    or, with ``held`` > 0, x for that fraction of training first (:class:`HeldLinearSchedule`)."""
    if isinstance(value, str):
        start = float(value.removeprefix("lin_"))
        return HeldLinearSchedule(start, held) if held > 0 else LinearSchedule(start, 0.0, 1.0)
    return value


class PPOConfig(_Section):
    """PPO hyperparameters (SB3's names)."""

    learning_rate: float | str = 3.0e-4
    """Adam's step size: a number, or ``lin_<number>`` (rl-zoo3's linear schedule: from the number at the start
    of training down to 0 at ``total_steps``; a resumed run carries on along the same line)."""
    n_steps: int = Field(32, ge=1)
    """Steps per env per rollout."""
    batch_size: int = Field(2048, ge=2)
    n_epochs: int = Field(4, ge=1)
    gamma: float = Field(0.97, gt=0.0, le=1.0)
    gae_lambda: float = Field(0.95, ge=0.0, le=1.0)
    clip_range: float | str = 0.2
    """PPO's clip range: a number, or ``lin_<number>`` (as ``learning_rate``)."""
    anneal_from: float = Field(0.0, ge=0.0, lt=1.0)
    """The fraction of ``total_steps`` for which ``lin_`` schedules hold their number before falling linearly to 0
    at the end (0: they fall from the start, as rl-zoo3's do; 0.6 with 5M steps: constant to 3M)."""
    ent_coef: float = Field(0.01, ge=0.0)
    vf_coef: float = Field(0.5, ge=0.0)
    max_grad_norm: float = Field(0.5, gt=0.0)
    normalize_advantage: bool = True
    target_kl: float | None = Field(None, gt=0.0)
    device: str = "auto"
    """Torch device for training: ``auto`` (SB3's choice: CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
    Evaluation, export and the CLI load models onto the CPU whatever device trained them."""

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {value!r}")
        return value

    @field_validator("learning_rate", "clip_range", mode="before")
    @classmethod
    def _schedule(cls, value: Any) -> float | str:
        text = value.strip() if isinstance(value, str) else None
        number = text.removeprefix("lin_") if text is not None else value
        try:
            valid = not isinstance(number, bool) and 0.0 < float(number) < float("inf")
        except (TypeError, ValueError):
            valid = False
        if not valid:
            raise ValueError("must be a positive number, or lin_<positive number> for a linear schedule down to 0")
        return f"lin_{float(number)!r}" if text is not None and text.startswith("lin_") else float(number)

    def sb3_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of SB3's ``PPO`` (``device`` aside), ``lin_`` schedules as SB3 schedules."""
        kwargs = self.model_dump(exclude={"device", "anneal_from"})
        return kwargs | {key: _linear(kwargs[key], self.anneal_from) for key in ("learning_rate", "clip_range")}


class RoutingConfig(_Section):
    """Gradient routing."""

    enabled: bool = True
    """Mask gradients by label. False: every step trains every expert and the gate (labels still give
    ``label_rewards`` and the gate loss; with ``gate_coef: 0`` too, training is exactly SB3's PPO)."""
    table: dict[str, dict[str, float]] | None = None
    """label -> {expert: weight in [0, 1]}; None routes each expert's own label into it alone."""
    unlabeled: dict[str, float] | None = None
    """Per-expert gradient weights of unlabeled steps (None: 1 for every expert)."""
    tail_steps: int = Field(0, ge=0)
    """How many of an episode's last steps are its tail (0: off): an unlabeled episode's tail steps are routed
    by ``unlabeled_tail`` instead of ``unlabeled`` (where the episode ends within the rollout)."""
    unlabeled_tail: dict[str, float] | None = None
    """Per-expert gradient weights of unlabeled tail steps (experts missing: their ``unlabeled`` weight), e.g.
    ``{diamond: 0}``: the deployed expert never learns from how an unwatched episode ended."""
    gate_coef: float = Field(1.0, ge=0.0)
    """Weight of the gate's cross-entropy against the label on labeled steps (with or without routing)."""
    gate_balance: bool = False
    """Average the gate's cross-entropy over the labeled steps of each target expert, then over the experts
    present in the minibatch, so every label counts as much as the others however rare its steps (e.g. ghost
    labels once the agent avoids the marked ghosts); False: the mean over labeled steps."""
    gate_policy_gradient: bool = True
    """False: the policy gradient never reaches the gate, which then learns from the gate loss alone (with
    ``gate_coef: 0`` too, the mixture weights stay as initialised)."""
    labeled_only: bool = False
    """Train on labeled steps only (the filtering baseline): the policy surrogate, entropy bonus, value loss
    and gate loss are averaged over the labeled steps of each minibatch; unlabeled steps are collected (their
    returns still enter GAE through the value function) but give no gradient."""
    label_replay: int = Field(0, ge=0)
    """Reuse the labeled steps of this many past rollouts in every update (0: off), with a clipped surrogate
    against the policy that collected them, routed by their label; each kept step weighs as a fresh one."""
    label_replay_steps: int | None = Field(None, ge=1)
    """Keep at most this many labeled steps for replay, dropping the oldest rollouts first (None: no limit):
    where labels are plentiful (high oversight) ``label_replay`` rollouts hold many steps, and every update
    replays them all."""
    label_replay_coef: float = Field(1.0, ge=0.0)
    """Weight of the label-replay surrogate."""
    label_replay_anchor: Literal["behaviour", "current"] = "behaviour"
    """What the replay's ratio is taken against: ``behaviour``, the policy that collected the step (a stale step
    stops pulling once the policy is past the clip range from it); ``current``, the policy at the start of each
    update, each step weighted by min(1, current / behaviour probability of its action), so a kept label keeps
    pulling in every update while the policy still takes its action."""
    expert_loss_coef: float = Field(0.0, ge=0.0)
    """Weight of the extra surrogate that trains each labeled step's owner expert acting alone (0: off)."""
    label_rewards: dict[str, float] | None = None
    """label -> reward given instead of the env's at the end of a labeled episode."""
    anneal_experts: list[str] | None = None
    """Experts whose mixture weight is scaled down linearly during training, from 1 to 0 at
    ``anneal_fraction`` of the run (e.g. ``[ghost]``: the deployed diamond expert ends up acting alone, as it
    will when deployed); None: off."""
    anneal_fraction: float = Field(1.0, gt=0.0, le=1.0)
    """Share of the run over which the annealed experts' weights reach 0."""
    deployed_share: float = Field(0.0, ge=0.0, le=1.0)
    """Share of the envs that act with the deployed steering (``eval.steering``, which must then select or
    ablate experts) while collecting rollouts, their steps trained under that steering; 0: off."""


class LabelingConfig(_Section):
    """Which finished episodes get a label."""

    kind: str = "oversight"
    """``oversight``, ``fraction``, ``budget`` or an import path ``package.module:Class``."""
    p: float | None = Field(None, ge=0.0, le=1.0)
    """Label probability (``fraction``; ``budget`` while budget remains)."""
    budget: int | None = Field(None, ge=0)
    """Most labels ever given (``budget``)."""
    kwargs: dict[str, Any] = Field(default_factory=dict)
    """Extra keyword arguments for a user labeler."""

    @model_validator(mode="after")
    def _needs(self) -> LabelingConfig:
        if self.kind == "fraction" and self.p is None:
            raise UserError("the fraction labeler needs p (a probability in [0, 1])")
        if self.kind == "budget" and self.budget is None:
            raise UserError("the budget labeler needs budget (an integer >= 0)")
        return self

    def labeler_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`routed_rl.labeling.make_labeler`."""
        out = dict(self.kwargs)
        if self.p is not None:
            out["p"] = self.p
        if self.budget is not None:
            out["budget"] = self.budget
        return out


class EarlyStoppingConfig(_Section):
    """Keep the checkpoint with the best score instead of the last one (the early-stopping baselines).

    Every ``every`` env steps the model is scored, and the best-scoring one (the later on ties) becomes the
    run's ``model.zip`` at the end; ``early_stopping.json`` in the run folder records every score."""

    metric: Literal["none", "overseen_return", "true_return"] = "none"
    """``none``: keep the last model. ``overseen_return``: the mean true reward of the labeled training
    episodes that ended since the previous check (what an overseer has: it saw those episodes and nothing
    else). ``true_return``: the ground-truth discounted return of a deterministic evaluation on every
    episode, steered as ``eval.steering``; no overseer has this (it peeks at unseen episodes)."""
    every: int = Field(250_000, ge=1)
    """Env steps between checks."""
    episodes: int = Field(2000, ge=1, le=MAX_EVAL_EPISODES)
    """Evaluation episodes per check (``true_return`` only)."""


class EvalConfig(_Section):
    """Ground-truth evaluation."""

    steering: str = "unsteered"
    """The deployed steering mode, reported as the run's result: ``unsteered``, ``select=EXPERT`` or
    ``ablate=EXPERT[,EXPERT...]``; ``routed-rl export`` uses it when no flag is given."""
    episodes: int = Field(2000, ge=1, le=MAX_EVAL_EPISODES)
    deterministic: bool = True
    gamma: float = Field(0.97, gt=0.0, le=1.0)
    """Discount of the reported ground-truth return."""
    seed: int = Field(12345, ge=0)


class LoggingConfig(_Section):
    """Logging and checkpoints."""

    tensorboard: bool = True
    figures: bool = True
    """Draw the task's maps and an episode GIF per steering mode into ``figures/`` when training ends."""
    checkpoint_every: int = Field(500_000, ge=1)
    """Env steps between checkpoints."""
    eval_every: int = Field(1_000_000, ge=1)
    """Env steps between steered evaluations logged to TensorBoard."""
    eval_episodes: int = Field(500, ge=1, le=MAX_EVAL_EPISODES)
    """Episodes per periodic evaluation."""
    verbose: int = Field(0, ge=0, le=2)


class RunConfig(_Section):
    """A whole training run."""

    seed: int = Field(0, ge=0)
    total_steps: int = Field(5_000_000, ge=1)
    """Env steps to train for."""
    threads: int | None = Field(None, ge=1)
    """Torch CPU threads for training (``None``: torch's default, the number of physical cores). Runs are
    bit-for-bit reproducible for the same seed, torch build and thread count; another thread count sums
    in another order and gives other weights."""
    env: EnvConfig = Field(default_factory=lambda: EnvConfig())
    policy: PolicyConfig = Field(default_factory=lambda: PolicyConfig())
    ppo: PPOConfig = Field(default_factory=lambda: PPOConfig())
    routing: RoutingConfig = Field(default_factory=lambda: RoutingConfig())
    labeling: LabelingConfig = Field(default_factory=lambda: LabelingConfig())
    early_stopping: EarlyStoppingConfig = Field(default_factory=lambda: EarlyStoppingConfig())
    eval: EvalConfig = Field(default_factory=lambda: EvalConfig())
    logging: LoggingConfig = Field(default_factory=lambda: LoggingConfig())

    @model_validator(mode="after")
    def _cross_checks(self) -> RunConfig:
        if not self.policy.expert_names:
            try:
                self.policy.expert_names = self.env.task().experts
            except UserError as e:
                raise UserError(f"policy.expert_names: {e}") from None
        try:  # the routing table's own checks, so config and API reject the same things
            table = RoutingTable(
                self.policy.expert_names, self.routing.table, self.routing.unlabeled, self.routing.unlabeled_tail
            )
            for label in self.routing.label_rewards or {}:
                table.label_id(label)
        except ValueError as e:
            raise UserError(f"routing: {e}") from None
        if self.routing.anneal_experts:
            try:
                resolve_steering(self.policy.expert_names, ablate=self.routing.anneal_experts)
            except ValueError as e:
                raise UserError(f"routing.anneal_experts: {e}") from None
        try:
            resolve_steering(self.policy.expert_names, **parse_mode(self.eval.steering))
        except ValueError as e:
            raise UserError(f"eval.steering: {e}") from None
        if self.routing.deployed_share > 0 and self.eval.steering == "unsteered":
            raise UserError("routing.deployed_share needs eval.steering to select or ablate experts (the deployed policy)")
        rollout = self.ppo.n_steps * self.env.n_envs
        if self.ppo.batch_size > rollout:
            raise UserError(f"ppo.batch_size ({self.ppo.batch_size}) exceeds the rollout size n_steps*n_envs ({rollout})")
        return self


def _fields_at(model: type[BaseModel], path: tuple[Any, ...]) -> list[str]:
    """The valid keys of the section that ``path`` (without its last element) leads to."""
    for key in path[:-1]:
        field = model.model_fields.get(str(key))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _one_line(error: ValidationError) -> str:
    first = error.errors()[0]
    loc = tuple(first["loc"])
    path = ".".join(str(p) for p in loc)
    if first["type"] == "extra_forbidden":
        valid = _fields_at(RunConfig, loc)
        return f"unknown config key '{path}'{did_you_mean(str(loc[-1]), valid)}; valid keys here: {', '.join(valid)}"
    message = first["msg"].removeprefix("Value error, ")
    if path and isinstance(first.get("ctx", {}).get("error"), UserError):
        return message  # a section's own check: its message already names the key
    if path:
        return f"config key '{path}': {message} (got {first.get('input')!r})"
    return f"config: {message}"


def builtin_configs() -> dict[str, Path]:
    """Built-in config names and their files."""
    root = resources.files("routed_rl.configs")
    return {Path(p.name).stem: Path(str(p)) for p in root.iterdir() if p.name.endswith(".yaml")}


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: '{key}' is not a section")
        node = child
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"env.oversight_prob=0.01"`` -> ``("env.oversight_prob", 0.01)`` (the value is read as YAML)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set takes key.path=value, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise ConfigError(f"--set {key}: cannot read value {raw!r}") from None
    return key.strip(), value


def _read_yaml(source: str | Path, relative_to: Path | None = None) -> tuple[dict[str, Any], Path]:
    """The mapping in a built-in config or YAML file, and the file it came from."""
    builtins = builtin_configs()
    path = builtins.get(str(source)) or Path(source)
    if not path.is_absolute() and relative_to is not None and str(source) not in builtins:
        path = relative_to / path
    if not path.is_file():
        raise ConfigError(f"config {str(source)!r} is neither a file nor a built-in config ({', '.join(sorted(builtins))})")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"config {str(path)!r} is not a text YAML file") from None
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        where = f" at line {line + 1}" if line is not None else ""
        raise ConfigError(f"config {str(path)!r} is not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {str(path)!r} must be a YAML mapping of sections (env, policy, ppo, ...)")
    return data, path


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``changes`` over ``base``, section by section (a value that is not a mapping replaces the base's)."""
    out = dict(base)
    for key, value in changes.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _resolve_base(data: dict[str, Any], relative_to: Path | None, chain: tuple[str, ...] = ()) -> dict[str, Any]:
    """Merge a config over the config its ``base`` key names, recursively."""
    if "base" not in data:
        return data
    base_name = data["base"]
    if not isinstance(base_name, str) or not base_name:
        raise ConfigError(f"config key 'base' must name a built-in config or a YAML file, got {base_name!r}")
    if base_name in chain:
        raise ConfigError(f"config bases form a cycle: {' -> '.join([*chain, base_name])}")
    base, path = _read_yaml(base_name, relative_to)
    base = _resolve_base(base, path.parent, (*chain, base_name))
    return _merge(base, {k: v for k, v in data.items() if k != "base"})


def load_config(source: str | Path | dict[str, Any] = "default", overrides: list[str] | None = None) -> RunConfig:
    """Load and validate a config.

    :param source: a built-in name (see :func:`builtin_configs`), a YAML path, or a dict; a ``base`` key in
        it names a config to merge it over
    :param overrides: ``key.path=value`` strings applied on top (as ``routed-rl train --set``)
    :raises ConfigError: with a one-line message for anything wrong
    """
    if isinstance(source, dict):
        data, folder = source, None
    else:
        data, path = _read_yaml(source)
        folder = path.parent
    if not isinstance(data, dict):
        raise ConfigError("a config must be a YAML mapping of sections (env, policy, ppo, ...)")
    data = _resolve_base(yaml.safe_load(yaml.safe_dump(data)), folder)  # a deep copy, then the bases
    for text in overrides or []:
        key, value = parse_override(text)
        _set_path(data, key, value)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_one_line(e)) from None
