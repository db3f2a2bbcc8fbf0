"""Typed run configuration (plain dataclasses; `train/hydra_app.py` registers them with hydra)."""

from __future__ import annotations

from dataclasses import dataclass, field

from data.dataset import LoaderConfig
from data.record import RecordConfig
from envs.evaluate import EvalConfig
from vla.policy import PolicyConfig


@dataclass
class DataConfig:
    # builtin: record the built-in suite with scripted experts if missing;
    # lerobot: a LeRobotDataset v3 folder; libero_hdf5: a folder of LIBERO .hdf5 files.
    source: str = "builtin"
    root: str = "runs/data/builtin"  # dataset folder (recorded here for builtin)
    cache: str = ""  # zarr cache path; empty: <root>.zarr
    camera_keys: dict = field(default_factory=dict)  # our camera -> source key (empty: defaults)
    record: RecordConfig = field(default_factory=RecordConfig)
    loader: LoaderConfig = field(default_factory=LoaderConfig)

    def __post_init__(self) -> None:
        if self.source not in ("builtin", "lerobot", "libero_hdf5"):
            raise ValueError(f"data.source={self.source!r}; choose builtin, lerobot or libero_hdf5")

    @property
    def cache_path(self) -> str:
        return self.cache or f"{self.root.rstrip('/')}.zarr"


@dataclass
class OptimConfig:
    steps: int = 3000
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    grad_accum: int = 1
    ema_decay: float = 0.0  # 0 disables EMA

    def __post_init__(self) -> None:
        if self.steps < 1 or self.grad_accum < 1:
            raise ValueError(f"optim.steps and optim.grad_accum must be >= 1, got {self.steps}, {self.grad_accum}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"optim.ema_decay must be in [0, 1), got {self.ema_decay}")


@dataclass
class TrainConfig:
    run_dir: str = "runs/builtin"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch intra-op threads on CPU; 0 = torch's default
    strategy: str = "none"  # none | ddp | fsdp (launch the last two with torchrun)
    log_every: int = 25
    save_every: int = 500
    eval_every: int = 0  # periodic evaluation in simulation; 0 = only at the end
    eval_at_end: bool = True
    resume: bool = True  # continue from <run_dir>/checkpoints/latest when it exists
    stop_after: int = 0  # stop (after saving) once this many steps ran in this invocation; 0 = never
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        if self.strategy not in ("none", "ddp", "fsdp"):
            raise ValueError(f"strategy={self.strategy!r}; choose none, ddp or fsdp")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device={self.device!r}; choose auto, cpu or cuda")
