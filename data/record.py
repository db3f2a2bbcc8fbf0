"""Record scripted-expert demonstrations of the built-in suite as a LeRobotDataset v3.

Written with lerobot's own API (create / add_frame / save_episode / finalize) into a
temporary folder that is renamed into place only after `finalize()`: an interrupted
recording never leaves a dataset that looks complete.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data.episode import PERTURBED_KEY
from envs import headless
from envs.registry import VALIDATION_SEED
from vla.configs import atomic_dir, load_json, save_json, to_dict

log = logging.getLogger(__name__)

REPO_ID = "local/vla_builtin"
# Bump when the scripted experts or the scene change what a recording with the same settings holds.
RECORDING_VERSION = 8
RECORDING_FILE = "meta/recording.json"  # the settings a built-in recording was made with
FPS = 20


SEED_STRIDE = 100_000  # episode seeds of record.seed s: s * SEED_STRIDE + task index * 1000 + episode


@dataclass
class RecordConfig:
    tasks: list[str] = field(
        default_factory=lambda: ["lift_red", "lift_green", "lift_blue", "place_yellow", "place_purple"]
    )
    episodes_per_task: int = 40
    image_size: int = 128
    noise: float = 0.1  # DART: std of noise on the executed translation (labels stay clean)
    faults: float = 0.08  # per-step chance of a 3-8 step push of the hand or inverted gripper
    seed: int = 0
    workers: int = 2
    use_videos: bool = False

    def __post_init__(self) -> None:
        if self.episodes_per_task < 1:
            raise ValueError(f"record.episodes_per_task must be >= 1, got {self.episodes_per_task}")
        if not 0 <= self.seed < VALIDATION_SEED // SEED_STRIDE:  # episode seeds stay below the validation split's
            raise ValueError(f"record.seed must be in [0, {VALIDATION_SEED // SEED_STRIDE}), got {self.seed}")
        if self.noise < 0:
            raise ValueError(f"record.noise must be >= 0 (a standard deviation), got {self.noise}")
        if not 0 <= self.faults <= 1:
            raise ValueError(f"record.faults must be a probability in [0, 1], got {self.faults}")


def features(image_size: int, use_videos: bool) -> dict:
    """The LeRobot schema of a recording: the built-in suite's own observation and action spaces
    (`envs.tabletop.env.spaces`), plus the per-frame fault flag."""
    from envs.tabletop.env import ACTION_NAMES, CAMERAS, STATE_NAMES, spaces

    observation, action = spaces(image_size)
    kind = "video" if use_videos else "image"
    out = {
        f"observation.images.{cam}": {
            "dtype": kind,
            "shape": observation[cam].shape,
            "names": ["height", "width", "channels"],
        }
        for cam in CAMERAS
    }
    out["observation.state"] = {"dtype": "float32", "shape": observation["state"].shape, "names": STATE_NAMES}
    out["action"] = {"dtype": "float32", "shape": action.shape, "names": ACTION_NAMES}
    # True where a recording fault replaced the executed action: the following states
    # come from a push the label does not show, so training chunks stop there.
    out[PERTURBED_KEY] = {"dtype": "bool", "shape": (1,), "names": ["perturbed"]}
    return out


def lerobot_frame(images: dict, state, action, perturbed: bool, task: str) -> dict:
    """One frame in the recording schema of `features` (camera names as the environment's)."""
    return {
        **{f"observation.images.{cam}": img for cam, img in images.items()},
        "observation.state": state,
        "action": action,
        PERTURBED_KEY: np.array([perturbed], dtype=bool),
        "task": task,
    }


def _rollout(args: tuple[str, int, int, float, float]) -> tuple[str, list[dict], bool]:
    headless()  # before mujoco's rendering is imported
    from envs.tabletop.env import TabletopEnv
    from envs.tabletop.experts import run_expert_episode

    task, seed, image_size, noise, faults = args
    env = TabletopEnv(task, image_size=image_size)
    try:
        frames, ok = run_expert_episode(env, seed, noise=noise, faults=faults)
        return env.instruction, frames, ok
    finally:
        env.close()


def recording_settings(cfg: RecordConfig) -> dict:
    """What determines a recording's content (worker count does not)."""
    settings = {k: v for k, v in to_dict(cfg).items() if k != "workers"}
    return {"version": RECORDING_VERSION, **settings}


def check_recording(cfg: RecordConfig, root: str | Path) -> None:
    """Refuse a built-in recording made with other settings or an older expert than `cfg` asks for."""
    path = Path(root) / RECORDING_FILE
    saved = load_json(path) if path.is_file() else {"version": 1}
    wanted = recording_settings(cfg)
    diff = sorted(k for k in wanted.keys() | saved.keys() if saved.get(k) != wanted.get(k))
    if diff:
        detail = ", ".join(f"{k}: recorded {saved.get(k)!r}, asked {wanted.get(k)!r}" for k in diff)
        raise ValueError(
            f"the demonstrations at {root} were recorded with other settings ({detail}); "
            f"remove {root} (and its .zarr cache) to record again, or point data.root elsewhere"
        )


def record_builtin(cfg: RecordConfig, root: str | Path) -> Path:
    """Collect successful expert episodes of every task; returns the dataset folder."""
    from datasets.utils import logging as hf_datasets_logging
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from envs.tabletop.env import CAMERAS

    root = Path(root)
    if (root / "meta" / "info.json").exists():
        raise FileExistsError(f"{root} already holds a dataset; remove it or record elsewhere")
    jobs = [
        (task, cfg.seed * SEED_STRIDE + i * 1_000 + j, cfg.image_size, cfg.noise, cfg.faults)
        for i, task in enumerate(cfg.tasks)
        for j in range(cfg.episodes_per_task)
    ]
    failed = 0
    # save_episode runs a `datasets` map per episode; its bar would bury ours. Restored after.
    bars_were_on = hf_datasets_logging.is_progress_bar_enabled()
    hf_datasets_logging.disable_progress_bar()
    try:
        with atomic_dir(root, "recording") as tmp:
            ds = LeRobotDataset.create(
                REPO_ID,
                FPS,
                features(cfg.image_size, cfg.use_videos),
                root=tmp,
                robot_type="vla_tabletop_arm7",
                use_videos=cfg.use_videos,
            )
            # spawn, not fork: a forked child of a process holding an EGL context can deadlock.
            with ProcessPoolExecutor(max(1, cfg.workers), mp_context=mp.get_context("spawn")) as pool:
                for instruction, frames, ok in tqdm(pool.map(_rollout, jobs), total=len(jobs), desc="recording demos"):
                    if not ok:
                        failed += 1
                        continue
                    for fr in frames:
                        images = {cam: fr[cam] for cam in CAMERAS}
                        ds.add_frame(lerobot_frame(images, fr["state"], fr["action"], fr["perturbed"], instruction))
                    ds.save_episode()
            ds.finalize()
            save_json(tmp / RECORDING_FILE, recording_settings(cfg))
    finally:
        if bars_were_on:
            hf_datasets_logging.enable_progress_bar()
    log.info("recorded %d episodes (%d expert failures skipped) to %s", len(jobs) - failed, failed, root)
    return root
