"""Run folders: what a training run writes, atomic checkpoints, and loading a run's model back.

A run folder holds ``config.yaml`` (the resolved config), ``command.txt``, ``model.zip``, ``checkpoints/``
(periodic, written atomically), ``tensorboard/``, ``eval.json``, ``labels.jsonl`` (every label spent) and
``figures/``; an early-stopped run also ``best.zip`` and ``early_stopping.json``.
"""

from __future__ import annotations

import json
import os
import re
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from routed_rl.config import ConfigError, RunConfig, load_config
from routed_rl.errors import UserError

__all__ = ["RunDir", "atomic_save"]


def atomic_save(model: Any, path: Path) -> Path:
    """Save an SB3 model to ``path`` through a temporary file and a rename, so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.zip")
    model.save(tmp)
    os.replace(tmp, path)
    return path


@dataclass(frozen=True)
class RunDir:
    """The files of one run."""

    root: Path

    @classmethod
    def default(cls, config: RunConfig, config_name: str) -> RunDir:
        """``runs/<env>__<config name>__<seed>__<time>``, as rl-zoo3 names its run folders."""
        env = config.env.id.split("/")[-1]
        return cls(Path("runs") / f"{env}__{Path(config_name).stem}__{config.seed}__{time.strftime('%Y%m%d-%H%M%S')}")

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def command(self) -> Path:
        return self.root / "command.txt"

    @property
    def model(self) -> Path:
        return self.root / "model.zip"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def best_model(self) -> Path:
        """The best-scoring model of an early-stopped run (see ``early_stopping.json``)."""
        return self.root / "best.zip"

    @property
    def early_stopping(self) -> Path:
        return self.root / "early_stopping.json"

    @property
    def eval(self) -> Path:
        return self.root / "eval.json"

    @property
    def labels(self) -> Path:
        return self.root / "labels.jsonl"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    def write_config(self, config: RunConfig, command: str) -> None:
        """Write the resolved config (YAML) and append the command line to ``command.txt``."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.config.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
        self.append_command(command)

    def append_command(self, command: str) -> None:
        """Record a command line that worked on the run (started, resumed or extended it)."""
        with self.command.open("a") as f:
            f.write(command + "\n")

    def load_config(self) -> RunConfig:
        """The run's resolved config."""
        if not self.config.is_file():
            raise ConfigError(f"{self.root} has no config.yaml: not a routed-rl run folder")
        return load_config(self.config)

    def checkpoint_path(self, step: int) -> Path:
        return self.checkpoints / f"step_{step:012d}.zip"

    def checkpoint_files(self) -> list[Path]:
        """The periodic checkpoints, oldest first."""
        return sorted(p for p in self.checkpoints.glob("step_*.zip") if re.fullmatch(r"step_\d+\.zip", p.name))

    def latest_checkpoint(self) -> Path | None:
        """The checkpoint with the most steps, or ``None``."""
        found = self.checkpoint_files()
        return found[-1] if found else None

    def checkpoint_at(self, step: str) -> Path:
        """The checkpoint written at env step ``step`` (digits, commas or underscores allowed), or the newest for
        ``"last"``; a one-line error naming the steps there are when there is none."""
        found = {int(p.stem.removeprefix("step_")): p for p in self.checkpoint_files()}
        if not found:
            raise UserError(f"{self.root} has no checkpoint")
        if step == "last":
            return found[max(found)]
        digits = step.replace(",", "").replace("_", "")
        if not (digits.isascii() and digits.isdigit()):
            raise UserError(f"checkpoint must be an env step count or 'last', got {step!r}")
        if int(digits) not in found:
            steps = sorted(found)
            shown = ", ".join(f"{s:,}" for s in steps[:3]) + (f", ..., {steps[-1]:,}" if len(steps) > 3 else "")
            raise UserError(f"{self.root} has no checkpoint at step {int(digits):,}; its checkpoints are at {shown}")
        return found[int(digits)]

    def load_model(self, env: Any = None, checkpoint: str | None = None) -> Any:
        """Load the run's ``model.zip`` (else its latest checkpoint), or the checkpoint ``checkpoint`` names
        (see :meth:`checkpoint_at`), with a one-line error if it cannot be."""
        from routed_rl.agents import RoutedPPO

        if not self.root.is_dir():
            raise UserError(f"run folder {self.root} does not exist")
        if checkpoint is not None:
            return load_model_file(RoutedPPO, self.checkpoint_at(checkpoint), env)
        path = self.model if self.model.is_file() else self.latest_checkpoint()
        if path is None:
            raise UserError(f"{self.root} has no model.zip and no checkpoint: train it first")
        return load_model_file(RoutedPPO, path, env)

    def resumable_model(self, env: Any = None, device: str = "cpu") -> tuple[Any, list[str]]:
        """The model to resume from: the newest checkpoint that loads (else ``model.zip``), and one line per
        newer checkpoint that could not be loaded and was passed over; loaded onto ``device``."""
        from routed_rl.agents import RoutedPPO

        if not self.root.is_dir():
            raise UserError(f"run folder {self.root} does not exist")
        candidates = self.checkpoint_files()[::-1]
        if self.model.is_file():
            candidates.append(self.model)
        skipped: list[str] = []
        for path in candidates:
            try:
                return load_model_file(RoutedPPO, path, env, device), skipped
            except ValueError as e:
                skipped.append(str(e))
        if skipped:
            raise UserError(f"no checkpoint of {self.root} can be loaded: {skipped[-1]}")
        raise UserError(f"{self.root} has no model.zip and no checkpoint: train it first")

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete the temporary files of atomic saves that a killed process left behind; return them."""
        stale = [*self.root.glob(".*.tmp.zip"), *self.checkpoints.glob(".*.tmp.zip")]
        for path in stale:
            path.unlink()
        return stale

    def truncate_labels(self, step: int) -> int:
        """Drop the label-log lines of steps after ``step`` (labels of rollouts the resumed model never
        trained on); return how many were dropped."""
        if not self.labels.is_file():
            return 0
        lines = self.labels.read_text().splitlines()
        kept = [line for line in lines if json.loads(line)["step"] <= step]
        if len(kept) != len(lines):
            tmp = self.labels.with_name(".labels.jsonl.tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            os.replace(tmp, self.labels)
        return len(lines) - len(kept)

    def load_best_model(self, env: Any = None, device: str = "cpu") -> Any:
        """The best-scoring model an early-stopped run kept (``best.zip``)."""
        from routed_rl.agents import RoutedPPO

        return load_model_file(RoutedPPO, self.best_model, env, device)


def load_model_file(cls: Any, path: Path, env: Any = None, device: str = "cpu") -> Any:
    """``cls.load(path)`` onto ``device`` (the CPU by default, whatever device trained the model), with a
    one-line ``ValueError`` for a missing, truncated or corrupt file."""
    if not path.is_file():
        raise UserError(f"model file {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise UserError(f"model file {path} is corrupt (not a zip archive); retrain or resume from a checkpoint")
    try:
        return cls.load(path, env=env, device=device)
    except Exception as e:  # SB3 raises many types for damaged archives
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "routing needs a RoutedActorCriticPolicy" in reason:
            raise UserError(f"model file {path} is not a routed-rl model (its policy is not a mixture of experts)") from None
        raise UserError(f"model file {path} cannot be loaded ({reason}); retrain or resume from a checkpoint") from None
