"""Record scripted LIBERO demonstrations (each suite with an expert in envs.libero.experts) as
a LeRobotDataset v3 in the public ports' schema, resumably (`data.record_scripted`).

Episodes start from fresh draws of each task's own placement distribution (seeded), never from
the 50 official initial states, which stay for evaluation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from data.episode import PERTURBED_KEY
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
from envs.libero.experts import EXPERTS, expert_for
from envs.registry import VALIDATION_SEED
from vla.configs import to_dict

log = logging.getLogger(__name__)

# Bump when the expert, the environment wrapper or the rendering change what a recording holds
# (2: one seed gives one scene in the four joint-initialised tasks; the Spatial expert's drawer
# grasp closes where the fingers stop, from the wall facing the robot). A change to one suite's
# expert alone bumps that suite in SUITE_VERSIONS, so the other suites' recordings stay valid
# (libero_spatial 3: the drawer grasp closes after 3 still steps, not 13; libero_goal 3: the top
# drawer is opened part-way for the bowl, and the hand goes over it to the bowl).
RECORDING_VERSION = 2
SUITE_VERSIONS = {"libero_spatial": 3, "libero_goal": 3}
FPS = 20
# The public LeRobot ports' keys (HuggingFaceVLA/libero and the IPEC-COMMUNITY ports).
PORT_KEYS = {
    "agentview": "observation.images.image",
    "wrist": "observation.images.wrist_image",
    "state": "observation.state",
    "action": "action",
}


@dataclass
class LiberoRecordConfig:
    suite: str = "libero_object"
    tasks: list[str] = field(default_factory=list)  # empty: every task of the suite
    episodes_per_task: int = 40
    image_size: int = 128
    render_mode: str = "fast"  # "fast" or "libero" (envs.libero.conventions.RenderMode)
    noise: float = 0.1  # DART: std of noise on the executed translation (labels stay clean)
    faults: float = 0.03  # per-step chance of a 3-8 step push of the hand or inverted gripper
    # Metres added on each side of every placement region (0: the task's own distribution, which
    # moves the target at most about 2 cm and the basket about 3 cm across the official states).
    placement_widen: float = 0.0
    # Steps a demonstration may take (0: the suite's evaluation limit). More lets the expert finish
    # after the noise and faults cost it time (LIBERO-Goal's drawer-and-bowl task, 181 steps of 300
    # when clean, finished 4 of 8 noisy episodes in 450 steps against 1 of 8 in 300); policies
    # are still measured within the suite's limit.
    max_steps: int = 0
    seed: int = 0
    workers: int = 2

    def __post_init__(self) -> None:
        if self.suite not in EXPERTS:
            raise ValueError(f"libero.suite={self.suite!r}: scripted experts exist for {sorted(EXPERTS)}")
        if self.episodes_per_task < 1:
            raise ValueError(f"libero.episodes_per_task must be >= 1, got {self.episodes_per_task}")
        if not 0 <= self.seed < VALIDATION_SEED // SEED_STRIDE:  # episode seeds stay below the validation split's
            raise ValueError(f"libero.seed must be in [0, {VALIDATION_SEED // SEED_STRIDE}), got {self.seed}")
        if self.render_mode not in ("fast", "libero"):
            raise ValueError(f"libero.render_mode must be 'fast' or 'libero', got {self.render_mode!r}")
        if not 0 <= self.placement_widen <= 0.2:
            raise ValueError(f"libero.placement_widen must be in [0, 0.2] metres, got {self.placement_widen}")
        if self.max_steps < 0:
            raise ValueError(f"libero.max_steps must be >= 0 (0: the suite's evaluation limit), got {self.max_steps}")
        if self.noise < 0 or not 0 <= self.faults <= 1:
            raise ValueError(f"libero.noise must be >= 0 and libero.faults in [0, 1], got {self.noise}, {self.faults}")


def recording_settings(cfg: LiberoRecordConfig) -> dict:
    """What determines a recording's content (worker count does not). A setting added later is
    left out at its default, which reproduces what recordings made before it hold."""
    defaults = {"placement_widen": 0.0, "max_steps": 0}
    settings = {k: v for k, v in to_dict(cfg).items() if k != "workers" and defaults.get(k, object()) != v}
    return {"version": SUITE_VERSIONS.get(cfg.suite, RECORDING_VERSION), **settings}


def features(image_size: int) -> dict:
    from envs.libero.conventions import ACTION_NAMES, STATE_NAMES, spaces

    observation, action = spaces(image_size)
    out = {
        PORT_KEYS[cam]: {"dtype": "image", "shape": observation[cam].shape, "names": ["height", "width", "channels"]}
        for cam in ("agentview", "wrist")
    }
    out[PORT_KEYS["state"]] = {"dtype": "float32", "shape": observation["state"].shape, "names": STATE_NAMES}
    out[PORT_KEYS["action"]] = {"dtype": "float32", "shape": action.shape, "names": ACTION_NAMES}
    out[PERTURBED_KEY] = {"dtype": "bool", "shape": (1,), "names": ["perturbed"]}
    return out


_WORKER: dict = {}


def _episode(job: Job) -> tuple[str, bool]:
    """Record one episode into its part file; returns (part path, success)."""
    from envs.libero.env import LiberoEnv
    from envs.tabletop.experts import run_expert_episode

    suite, image_size, render_mode, widen, noise, faults, max_steps = job.args
    env = _WORKER.get((job.task, job.args))
    if env is None:
        for old in _WORKER.values():  # one scene alive per worker
            old.close()
        _WORKER.clear()
        env = _WORKER[(job.task, job.args)] = LiberoEnv(
            suite,
            job.task,
            image_size=image_size,
            render_mode=render_mode,
            placement_widen=widen,
            max_episode_steps=max_steps or None,
        )
    frames, ok = run_expert_episode(env, job.seed, noise=noise, faults=faults, expert=expert_for(suite, env))
    return save_part(job.part, frames, ok, ["agentview", "wrist", "state", "action"])


def _init_worker() -> None:
    from envs.libero.env import setup

    setup()


def record_libero(cfg: LiberoRecordConfig, root: str | Path) -> Path:
    """Record successful expert episodes of every task (resuming from `<root>.parts/`)."""
    from envs.libero.env import setup, suite_tasks

    setup()
    available = suite_tasks(cfg.suite)
    tasks = list(cfg.tasks) or available
    unknown = [t for t in tasks if t not in available]
    if unknown:
        raise KeyError(f"libero.tasks: {unknown} not in {cfg.suite}; available: {available}")
    root = Path(root)
    args = (cfg.suite, cfg.image_size, cfg.render_mode, cfg.placement_widen, cfg.noise, cfg.faults, cfg.max_steps)
    jobs = [
        Job(task, episode_seed(cfg.seed, available.index(task), j), str(_part(root, available.index(task), j)), args)
        for task in tasks
        for j in range(cfg.episodes_per_task)
    ]
    family = Family(
        name=cfg.suite,
        fps=FPS,
        robot_type="panda",
        features=features(cfg.image_size),
        keys=PORT_KEYS,
        episode=_episode,
        init_worker=_init_worker,
        instruction=lambda task: _instruction(cfg.suite, task),
    )
    return record_scripted(family, jobs, recording_settings(cfg), root, cfg.workers)


def _part(root: Path, task_index: int, episode: int) -> Path:
    return parts_folder(root) / f"{task_index:02d}_{episode:04d}.npz"


_INSTRUCTIONS: dict = {}


def _instruction(suite: str, task: str) -> str:
    if (suite, task) not in _INSTRUCTIONS:
        from envs.libero.env import _task

        _INSTRUCTIONS[(suite, task)] = _task(suite, task).language
    return _INSTRUCTIONS[(suite, task)]


def check_recording(cfg: LiberoRecordConfig, root: str | Path) -> None:
    """Refuse a recording made with other settings than `cfg` asks for."""
    check_settings(recording_settings(cfg), root)
