"""Typed run configuration (plain dataclasses; `train/hydra_app.py` registers them with hydra)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from data.source import DataConfig
from envs.evaluate import EvalConfig
from vla.configs import choice
from vla.model import PolicyConfig


class Strategy(StrEnum):
    none = "none"
    ddp = "ddp"  # replicated (launch with torchrun)
    fsdp = "fsdp"  # parameters sharded over the ranks (launch with torchrun)


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


@dataclass
class OptimConfig:
    steps: int = 3000
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping (the norm is still checked)
    grad_accum: int = 1
    ema_decay: float = 0.0  # 0 disables EMA
    # Consecutive steps with a non-finite gradient norm that are skipped (no update) before the
    # run stops; a skipped step is logged. The last good checkpoint is never overwritten.
    max_nonfinite_steps: int = 3

    def __post_init__(self) -> None:
        if self.steps < 1 or self.grad_accum < 1:
            raise ValueError(f"optim.steps and optim.grad_accum must be >= 1, got {self.steps}, {self.grad_accum}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"optim.ema_decay must be in [0, 1), got {self.ema_decay}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"optim.lr must be a positive number, got {self.lr}")
        if not (math.isfinite(self.grad_clip) and self.grad_clip >= 0):
            raise ValueError(f"optim.grad_clip must be >= 0 (0 disables clipping), got {self.grad_clip}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"optim.min_lr_ratio must be in [0, 1] (a fraction of optim.lr), got {self.min_lr_ratio}")
        if self.warmup_steps < 0 or self.weight_decay < 0 or self.max_nonfinite_steps < 0:
            raise ValueError(
                "optim.warmup_steps, optim.weight_decay and optim.max_nonfinite_steps must be >= 0, got "
                f"{self.warmup_steps}, {self.weight_decay}, {self.max_nonfinite_steps}"
            )


@dataclass
class TrainConfig:
    run_dir: str = "runs/builtin"
    seed: int = 0
    device: Device = Device.auto
    threads: int = 0  # torch intra-op threads on CPU; 0 = torch's default
    strategy: Strategy = Strategy.none
    log_every: int = 25
    save_every: int = 500
    eval_every: int = 0  # periodic evaluation in simulation; 0 = only at the end
    eval_at_end: bool = True
    resume: bool = True  # continue from <run_dir>/checkpoints/latest when it exists
    # When latest is missing or damaged: a step folder of this run to continue from (e.g.
    # step_0003000, copied over latest), or "newest" for the newest intact one.
    resume_from: str = ""
    stop_after: int = 0  # stop (after saving) once this many steps ran in this invocation; 0 = never
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        self.strategy = choice(Strategy, self.strategy, "strategy")
        self.device = choice(Device, self.device, "device")
        if not self.run_dir.strip():
            raise ValueError(
                "run_dir is empty: give the folder for this run's checkpoints and logs (e.g. run_dir=runs/x)"
            )
        for name in ("log_every", "save_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (steps), got {getattr(self, name)}")
        for name in ("eval_every", "stop_after", "threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 = off / default), got {getattr(self, name)}")
