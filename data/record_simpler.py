"""Record scripted WidowX demonstrations of SimplerEnv's Bridge tasks (`simpler_bridge`) as a
LeRobotDataset v3 in the BridgeData V2 ports' camera key, resumably (`data.record_scripted`).

Episodes start from fresh placements (seeded draws around the protocol's layouts), never from the
protocol's 24 layouts, which stay for evaluation. An episode ends when the expert's plan is done,
kept if the task's success predicate holds then; the recording's noise and faults are scaled to
the expert's top speed (2.5 cm a step), since this action space is in metres.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from data.episode import PERTURBED_KEY
from data.readers import BRIDGE_LEROBOT_KEYS
from data.record_scripted import (
    SEED_STRIDE,
    Family,
    Job,
    episode_seed,
    parts_folder,
    record_scripted,
    save_part,
)
from data.record_scripted import check_recording as check_settings
from envs.registry import VALIDATION_SEED
from vla.configs import to_dict

log = logging.getLogger(__name__)

# Bump when the expert or the environment wrapper change what a recording holds.
RECORDING_VERSION = 1
# Our array names -> the public ports' keys.
PORT_KEYS = {
    "image": BRIDGE_LEROBOT_KEYS.cameras["image"],
    "state": BRIDGE_LEROBOT_KEYS.state,
    "action": BRIDGE_LEROBOT_KEYS.action,
}


@dataclass
class SimplerRecordConfig:
    tasks: list[str] = field(default_factory=list)  # empty: all four Bridge tasks
    episodes_per_task: int = 50
    image_size: int = 128
    noise: float = 0.1  # DART: std of noise on the executed translation, in units of the expert's top speed
    # Per-step chance of a 3-8 step push of the hand or inverted gripper. A step here is 0.2 s,
    # four of LIBERO's (0.03 there): at 0.03 a fault lasts up to 1.6 s, pushes the hand up to 20 cm,
    # and 4 of 8 carrot episodes ran out of the protocol's 60 steps.
    faults: float = 0.01
    seed: int = 0
    workers: int = 1  # processes recording episodes side by side

    def __post_init__(self) -> None:
        if self.episodes_per_task < 1:
            raise ValueError(f"simpler.episodes_per_task must be >= 1, got {self.episodes_per_task}")
        if not 0 <= self.seed < VALIDATION_SEED // SEED_STRIDE:  # episode seeds stay below the validation split's
            raise ValueError(f"simpler.seed must be in [0, {VALIDATION_SEED // SEED_STRIDE}), got {self.seed}")
        if self.noise < 0 or not 0 <= self.faults <= 1:
            raise ValueError(
                f"simpler.noise must be >= 0 and simpler.faults in [0, 1], got {self.noise}, {self.faults}"
            )


def recording_settings(cfg: SimplerRecordConfig) -> dict:
    """What determines a recording's content (worker count does not)."""
    settings = {k: v for k, v in to_dict(cfg).items() if k != "workers"}
    return {"version": RECORDING_VERSION, "suite": "simpler_bridge", **settings}


def features(image_size: int) -> dict:
    from envs.simpler.conventions import ACTION_NAMES, CAMERA, STATE_NAMES, spaces

    observation, action = spaces(image_size)
    return {
        PORT_KEYS["image"]: {
            "dtype": "image",
            "shape": observation[CAMERA].shape,
            "names": ["height", "width", "channels"],
        },
        PORT_KEYS["state"]: {"dtype": "float32", "shape": observation["state"].shape, "names": STATE_NAMES},
        PORT_KEYS["action"]: {"dtype": "float32", "shape": action.shape, "names": ACTION_NAMES},
        PERTURBED_KEY: {"dtype": "bool", "shape": (1,), "names": ["perturbed"]},
    }


_WORKER: dict = {}


def _episode(job: Job) -> tuple[str, bool]:
    """Record one episode into its part file; returns (part path, success)."""
    from envs.simpler.env import SimplerBridgeEnv
    from envs.simpler.experts import SPEED, BridgeExpert
    from envs.tabletop.experts import run_expert_episode

    image_size, noise, faults = job.args
    env = _WORKER.get(job.task)
    if env is None:
        for old in _WORKER.values():  # one scene alive per worker
            old.close()
        _WORKER.clear()
        env = _WORKER[job.task] = SimplerBridgeEnv(job.task, image_size=image_size)
    frames, ok = run_expert_episode(
        env, job.seed, noise=noise, faults=faults, expert=BridgeExpert(env), translation_scale=SPEED
    )
    return save_part(job.part, frames, ok, ["image", "state", "action"])


def _init_worker() -> None:
    from envs.simpler.setup import ready

    ready()


def _instruction(task: str) -> str:
    from envs.simpler.conventions import TASKS

    return TASKS[task].instruction


def record_simpler(cfg: SimplerRecordConfig, root: str | Path) -> Path:
    """Record successful expert episodes of every task (resuming from `<root>.parts/`)."""
    from envs.simpler.conventions import FPS, TASKS

    available = list(TASKS)
    tasks = list(cfg.tasks) or available
    unknown = [t for t in tasks if t not in available]
    if unknown:
        raise KeyError(f"simpler.tasks: {unknown} not in simpler_bridge; available: {available}")
    root = Path(root)
    args = (cfg.image_size, cfg.noise, cfg.faults)
    jobs = [
        Job(
            task,
            episode_seed(cfg.seed, available.index(task), j),
            str(parts_folder(root) / f"{available.index(task):02d}_{j:04d}.npz"),
            args,
        )
        for task in tasks
        for j in range(cfg.episodes_per_task)
    ]
    family = Family(
        name="simpler_bridge",
        fps=int(FPS),
        robot_type="widowx",
        features=features(cfg.image_size),
        keys=PORT_KEYS,
        episode=_episode,
        init_worker=_init_worker,
        instruction=_instruction,
    )
    return record_scripted(family, jobs, recording_settings(cfg), root, cfg.workers)


def check_recording(cfg: SimplerRecordConfig, root: str | Path) -> None:
    """Refuse a recording made with other settings than `cfg` asks for."""
    check_settings(recording_settings(cfg), root)
