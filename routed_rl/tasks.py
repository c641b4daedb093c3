"""The task interface: everything routed-rl knows about an environment, in one place.

Training, labeling, evaluation, figures, callbacks, sweeps and the CLI never name an environment's outcomes
or draw its maps themselves: they ask the :class:`Task` that the config's ``env.id`` selects.

* An env module of routed-rl (``routed_rl.envs``) builds its task and registers it beside its gymnasium id
  with :func:`register_task`; adding an env touches that module and the registration, not this core.
* Any other gymnasium env becomes a task from the config alone: ``env.outcomes`` names the outcomes and
  their ground-truth rewards, and ``env.outcome`` (an import path ``package.module:function``) turns the
  episode's final info and observation into one of them, through :class:`OutcomeWrapper`.

Every env a task builds reports, at each episode end, ``info["outcome"]`` (an outcome name),
``info["overseen"]`` (whether the overseer saw it; False for envs without oversight) and
``info["true_reward"]``; that is all that labelers, routing and evaluation read.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from routed_rl.errors import UserError, did_you_mean

__all__ = [
    "NO_OUTCOME",
    "OutcomeWrapper",
    "Task",
    "env_outcomes",
    "expert_names_for",
    "gym_task",
    "gym_vec_env",
    "import_object",
    "register_task",
    "registered_tasks",
    "task_for",
]

#: The outcome of an episode that the outcome function gives no name (e.g. cut off by a time limit).
NO_OUTCOME = "none"

#: (model, env kwargs, context line) -> named images; see :attr:`Task.maps`.
MapsFn = Callable[[Any, dict[str, Any], str], dict[str, np.ndarray]]


@dataclass(frozen=True)
class Task:
    """What routed-rl needs from one environment.

    :param env_id: the gymnasium id
    :param outcomes: every ``info["outcome"]`` value with its ground-truth reward, in report order; outcomes
        with a positive reward are *wanted*, those with a negative reward *unwanted* (what oversight is for)
    :param make_env: ``(kwargs, n_envs, seed) -> VecEnv`` over ``n_envs`` copies, env ``i`` seeded ``seed + i``
        (or one batched env drawing from ``seed``)
    :param make_render_env: ``kwargs -> gym.Env`` with ``render_mode="rgb_array"``, the same observations
        as one env of ``make_env`` (episode GIFs); ``None`` for an env that cannot render images
    :param maps: optional figures of a trained model (policy and gate maps) as named images
    :param legend: colours of the renderer's marks, drawn under episode GIFs
    :param defaults: the env's parameters and their defaults (written into run configs); ``None`` when the
        env takes parameters that cannot be listed
    :param batched: ``make_env`` builds one batched env however many copies (OversightGrid): evaluation then
        plays all its episodes at once instead of in chunks
    :param wrappers: the gymnasium wrappers around each of its envs (see :func:`gym_task`), which a config's
        ``env.wrappers`` extend
    """

    env_id: str
    outcomes: Mapping[str, float]
    make_env: Callable[[dict[str, Any], int, int], VecEnv]
    make_render_env: Callable[[dict[str, Any]], gym.Env] | None
    maps: MapsFn | None = None
    legend: Mapping[str, tuple[int, int, int]] = field(default_factory=dict)
    defaults: Mapping[str, Any] | None = None
    batched: bool = False
    wrappers: tuple[Callable[[gym.Env], gym.Env], ...] = ()

    @property
    def wanted(self) -> tuple[str, ...]:
        """Outcomes with a positive ground-truth reward."""
        return _with_sign(self.outcomes, +1)

    @property
    def unwanted(self) -> tuple[str, ...]:
        """Outcomes with a negative ground-truth reward."""
        return _with_sign(self.outcomes, -1)

    @property
    def experts(self) -> list[str]:
        """The default expert names: one per outcome with a ground-truth reward, wanted first (see
        :func:`expert_names_for`)."""
        return expert_names_for(self.outcomes)

    @property
    def rewarded(self) -> tuple[str, ...]:
        """Outcomes with a nonzero ground-truth reward (those the gaming gap compares; timeouts are not)."""
        return tuple(o for o, r in self.outcomes.items() if r != 0)

    def check_kwargs(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The env's full keyword arguments (defaults filled in), after building one env with them.

        :raises UserError: for an unknown parameter (with the closest valid one) or a value the env refuses
        """
        if self.defaults is not None:
            for key in kwargs:
                if key not in self.defaults:
                    valid = sorted(self.defaults)
                    raise UserError(
                        f"unknown config key 'env.{key}'{did_you_mean(key, valid)}; {self.env_id} takes: "
                        f"{', '.join(valid) or 'no parameters'} (and id, n_envs, wrappers, outcome, outcomes)"
                    )
        full = {**(self.defaults or {}), **kwargs}
        for key, value in kwargs.items():  # YAML reads a documented string value `true` as a boolean
            if isinstance(value, bool) and isinstance((self.defaults or {}).get(key), str):
                full[key] = str(value).lower()
        try:
            self.make_env(full, 1, 0).close()
        except UserError as e:
            message = str(e)
            named = any(message.startswith(f"{key} ") for key in full)  # "oversight_prob must be ..."
            raise UserError(f"env.{message}" if named else f"env: {message}") from None
        except (ValueError, TypeError, AssertionError) as e:
            raise UserError(f"env {self.env_id}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        return full


_TASKS: dict[str, Task] = {}


def _with_sign(outcomes: Mapping[str, float], sign: int) -> tuple[str, ...]:
    """The outcomes whose ground-truth reward has the sign of ``sign`` (in their order)."""
    return tuple(o for o, r in outcomes.items() if r * sign > 0)


def expert_names_for(outcomes: Mapping[str, float]) -> list[str]:
    """One expert per outcome with a nonzero ground-truth reward, wanted (positive) ones first, so that each
    label, named after its outcome, routes into its own expert (OversightGrid: ``["diamond", "ghost"]``).

    :raises UserError: when no outcome carries a reward
    """
    names = [*_with_sign(outcomes, +1), *_with_sign(outcomes, -1)]
    if not names:
        raise UserError(f"no outcome has a nonzero reward in {dict(outcomes)}: name the experts (expert_names)")
    return names


def env_outcomes(env: VecEnv) -> dict[str, float] | None:
    """The outcomes (name -> ground-truth reward) that a vectorized env reports: those of the routed-rl task
    registered under its gymnasium id (``env.spec``), else those of an :class:`OutcomeWrapper` around its
    envs; ``None`` when it has neither."""
    for attr in ("spec", "outcomes"):
        try:
            value = env.get_attr(attr, indices=[0])[0]
        except AttributeError:
            continue
        if attr == "outcomes" and isinstance(value, Mapping):
            return dict(value)
        task = registered_tasks().get(getattr(value, "id", None) or "")
        if task is not None:
            return dict(task.outcomes)
    return None


def register_task(task: Task) -> None:
    """Make ``task`` the one a config with ``env.id: task.env_id`` uses (an env module calls this)."""
    _TASKS[task.env_id] = task


def registered_tasks() -> dict[str, Task]:
    """The routed-rl tasks by env id."""
    import routed_rl.envs  # noqa: F401 (registers the package's own tasks)

    return dict(_TASKS)


def import_object(path: str, what: str) -> Any:
    """The object an import path ``package.module:name`` names.

    :param what: what it is for, in the error message (e.g. ``env.outcome``)
    :raises UserError: when the path is malformed or cannot be imported
    """
    module_name, sep, name = path.partition(":")
    if not sep or not module_name or not name:
        raise UserError(f"{what} must be an import path 'package.module:name', got {path!r}")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in name.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise UserError(f"{what}: cannot import {path!r} ({e})") from None
    return obj


class OutcomeWrapper(gym.Wrapper):
    """Gives an env that knows nothing of routed-rl an episode outcome, from a user function.

    At every episode end (terminated or truncated) ``outcome_fn(info, observation)`` names the outcome; the
    ``info`` it gets is the env's final info plus the step's ``reward``, ``terminated`` and ``truncated``. The
    wrapper then adds ``info["outcome"]`` (``"none"`` when the function returns ``None``),
    ``info["overseen"]`` (the env's own value, else False) and ``info["true_reward"]``.

    :param env: any gymnasium env
    :param outcome_fn: ``(info, observation) -> outcome name or None``
    :param outcomes: the outcome names the function may return, with their ground-truth rewards
    """

    def __init__(
        self, env: gym.Env, outcome_fn: Callable[[dict[str, Any], Any], str | None], outcomes: Mapping[str, float]
    ) -> None:
        super().__init__(env)
        self.outcome_fn = outcome_fn
        self.outcomes = dict(outcomes)

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        if terminated or truncated:
            seen = {**info, "reward": reward, "terminated": terminated, "truncated": truncated}
            outcome = self.outcome_fn(seen, obs)
            name = NO_OUTCOME if outcome is None else str(outcome)
            if name not in self.outcomes:
                raise UserError(
                    f"env.outcome returned {outcome!r}; it must return one of env.outcomes {sorted(self.outcomes)} or None"
                )
            info = {**info, "outcome": name, "overseen": bool(info.get("overseen", False))}
            info["true_reward"] = self.outcomes[name]
        return obs, reward, terminated, truncated, info


def _make_one(
    env_id: str, kwargs: Mapping[str, Any], wrappers: Sequence[Callable[[gym.Env], gym.Env]], **extra: Any
) -> gym.Env:
    """``gym.make(env_id, **kwargs)`` (no env checker), wrapped by ``wrappers`` in order."""
    env = gym.make(env_id, disable_env_checker=True, **extra, **kwargs)
    for wrap in wrappers:
        env = wrap(env)
    return env


def gym_vec_env(
    env_id: str, kwargs: Mapping[str, Any], n_envs: int, seed: int, wrappers: Sequence[Callable[[gym.Env], gym.Env]] = ()
) -> VecEnv:
    """SB3's ``DummyVecEnv`` over ``n_envs`` envs ``gym.make(env_id, **kwargs)`` (no env checker), each wrapped
    by ``wrappers`` in order; env ``i`` is seeded ``seed + i`` at the first reset."""
    venv = DummyVecEnv([lambda: _make_one(env_id, kwargs, wrappers)] * n_envs)
    venv.seed(seed)
    return venv


def gym_task(
    env_id: str,
    outcomes: Mapping[str, float],
    wrappers: Sequence[Callable[[gym.Env], gym.Env]] = (),
    renders: bool = True,
    legend: Mapping[str, tuple[int, int, int]] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> Task:
    """The task of a registered gymnasium env, one env per copy, each wrapped by ``wrappers`` in order: its
    training/evaluation envs (:func:`gym_vec_env`) and, when ``renders``, its GIF env (``rgb_array``)."""
    wraps = tuple(wrappers)

    def make(kwargs: dict[str, Any], n: int, seed: int) -> VecEnv:
        return gym_vec_env(env_id, kwargs, n, seed, wraps)

    def render(kwargs: dict[str, Any]) -> gym.Env:
        return _make_one(env_id, kwargs, wraps, render_mode="rgb_array")

    return Task(env_id, outcomes, make, render if renders else None, None, dict(legend or {}), defaults, False, wraps)


def _entry_point(env_id: str) -> Any:
    entry = gym.spec(env_id).entry_point
    return import_object(entry, f"env.id {env_id}") if isinstance(entry, str) else entry


def _signature_defaults(env_id: str) -> dict[str, Any] | None:
    """The parameters of a registered env's entry point with their defaults, the registration's kwargs over
    them; ``None`` when it takes ``**kwargs`` (so its parameters cannot be listed)."""
    params = inspect.signature(_entry_point(env_id)).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    defaults = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty and p.name != "render_mode"}
    return {**defaults, **gym.spec(env_id).kwargs}


def _user_task(env_id: str, wrappers: Sequence[str], outcome: str | None, outcomes: Mapping[str, float] | None) -> Task:
    """The task of a gymnasium env that routed-rl does not own, from the config's ``env`` keys."""
    if not outcomes:
        raise UserError(
            f"env.id {env_id!r} is not a routed-rl env ({', '.join(sorted(_TASKS))}): give env.outcomes "
            "(outcome -> ground-truth reward) and env.outcome (an import path 'module:function' of (info, observation) "
            "-> outcome), or use a routed-rl env"
        )
    wraps = [import_object(w, "env.wrappers") for w in wrappers]
    named = dict(outcomes)
    if outcome is not None:
        fn = import_object(outcome, "env.outcome")
        if not callable(fn):
            raise UserError(f"env.outcome {outcome!r} is not a function")
        named.setdefault(NO_OUTCOME, 0.0)
        wraps.append(lambda env: OutcomeWrapper(env, fn, named))

    name = env_id.rpartition(":")[2]
    renders = "rgb_array" in getattr(_entry_point(name), "metadata", {}).get("render_modes", [])
    return gym_task(env_id, named, wraps, renders=renders, defaults=_signature_defaults(name))


def task_for(
    env_id: str, wrappers: Sequence[str] = (), outcome: str | None = None, outcomes: Mapping[str, float] | None = None
) -> Task:
    """The task a config's ``env`` section selects: routed-rl's own for its ids, else one built from
    ``outcomes``/``outcome`` (see the module docstring); ``wrappers`` (import paths) wrap every env.

    :raises UserError: for an id gymnasium does not know, or a foreign env without ``outcomes``
    """
    tasks = registered_tasks()
    module, _, name = env_id.rpartition(":")
    if module:  # "package:EnvId" imports the package first, as gym.make does
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise UserError(f"env.id {env_id!r}: cannot import {module!r} ({e})") from None
    if name not in gym.registry:
        ids = [*tasks, *gym.registry]
        raise UserError(
            f"env.id {env_id!r} is not a registered gymnasium env{did_you_mean(name, ids)}; for an env of another "
            "package write 'package:EnvId' (the package is imported first)"
        )
    task = tasks.get(name)
    if task is None:
        return _user_task(env_id, wrappers, outcome, outcomes)
    if outcome is not None or outcomes is not None:
        raise UserError(f"{env_id} reports its own outcomes {list(task.outcomes)}: remove env.outcome and env.outcomes")
    if not wrappers:
        return task
    wraps = [import_object(w, "env.wrappers") for w in wrappers]
    # one env per copy (a batched env has no gymnasium form to wrap), the task's own wrappers inside the config's
    return gym_task(
        env_id,
        task.outcomes,
        [*task.wrappers, *wraps],
        renders=task.make_render_env is not None,
        legend=task.legend,
        defaults=task.defaults,
    )
