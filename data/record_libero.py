"""Record scripted LIBERO demonstrations (each suite with an expert in envs.libero.experts) as
a LeRobotDataset v3 in the public ports' schema.

Episodes start from fresh draws of each task's own placement distribution (seeded), never from
the 50 official initial states, which stay for evaluation. Recording resumes: every finished
episode (kept or failed) is written atomically to `<root>.parts/` first, and a re-run records
only the missing ones; the dataset is assembled with lerobot's API into a temporary folder that
replaces `root` only when complete, and the parts are then removed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing as mp
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data.episode import PERTURBED_KEY
from envs.libero.experts import EXPERTS, expert_for
from envs.registry import VALIDATION_SEED
from vla.configs import atomic_dir, atomic_write_text, load_json, save_json, to_dict

log = logging.getLogger(__name__)

# Bump when the expert, the environment wrapper or the rendering change what a recording holds.
RECORDING_VERSION = 1
RECORDING_FILE = "meta/recording.json"
FPS = 20
# The public LeRobot ports' keys (HuggingFaceVLA/libero and the IPEC-COMMUNITY ports).
PORT_KEYS = {
    "agentview": "observation.images.image",
    "wrist": "observation.images.wrist_image",
    "state": "observation.state",
    "action": "action",
}


SEED_STRIDE = 1_000_000  # episode seeds of libero.seed s: s * SEED_STRIDE + task index * 10000 + episode


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
        if self.noise < 0 or not 0 <= self.faults <= 1:
            raise ValueError(f"libero.noise must be >= 0 and libero.faults in [0, 1], got {self.noise}, {self.faults}")


def recording_settings(cfg: LiberoRecordConfig) -> dict:
    """What determines a recording's content (worker count does not). A setting added later is
    left out at its default, which reproduces what recordings made before it hold."""
    defaults = {"placement_widen": 0.0}
    settings = {k: v for k, v in to_dict(cfg).items() if k != "workers" and defaults.get(k, object()) != v}
    return {"version": RECORDING_VERSION, **settings}


# Settings that choose which episodes are recorded, not what an episode holds: episode j of a task
# has the same seed and so the same content whatever they are, so a recording in progress can be
# extended to more episodes or tasks (or cut short) and keep its finished parts.
EXTENSIBLE = ("episodes_per_task", "tasks")


def parts_settings(settings: dict) -> dict:
    """The settings a finished episode part depends on."""
    return {k: v for k, v in settings.items() if k not in EXTENSIBLE}


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


def _episode(job: tuple) -> tuple[str, bool]:
    """Record one episode into its part file; returns (part path, success)."""
    from envs.libero.env import LiberoEnv
    from envs.tabletop.experts import run_expert_episode

    suite, task, seed, image_size, render_mode, widen, noise, faults, part = job
    env = _WORKER.get(task)
    if env is None:
        for old in _WORKER.values():  # one scene alive per worker
            old.close()
        _WORKER.clear()
        env = _WORKER[task] = LiberoEnv(
            suite, task, image_size=image_size, render_mode=render_mode, placement_widen=widen
        )
    frames, ok = run_expert_episode(env, seed, noise=noise, faults=faults, expert=expert_for(suite, env))
    arrays = {"success": np.array(ok)}
    if ok:
        arrays |= {
            "agentview": np.stack([f["agentview"] for f in frames]),
            "wrist": np.stack([f["wrist"] for f in frames]),
            "state": np.stack([f["state"] for f in frames]).astype(np.float32),
            "action": np.stack([f["action"] for f in frames]).astype(np.float32),
            "perturbed": np.array([f["perturbed"] for f in frames], dtype=bool),
        }
    part = Path(part)
    tmp = part.with_name(f".{part.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, part)  # a part exists only once complete
    return str(part), ok


def _init_worker() -> None:
    from envs.libero.env import setup

    setup()


def record_libero(cfg: LiberoRecordConfig, root: str | Path) -> Path:
    """Record successful expert episodes of every task (resuming from `<root>.parts/`)."""
    from datasets.utils import logging as hf_datasets_logging
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from envs.libero.env import setup, suite_tasks

    setup()
    root = Path(root)
    if (root / "meta" / "info.json").exists():
        raise FileExistsError(f"{root} already holds a dataset; remove it or record elsewhere")
    available = suite_tasks(cfg.suite)
    tasks = list(cfg.tasks) or available
    unknown = [t for t in tasks if t not in available]
    if unknown:
        raise KeyError(f"libero.tasks: {unknown} not in {cfg.suite}; available: {available}")
    parts = root.parent / f"{root.name}.parts"
    parts.mkdir(parents=True, exist_ok=True)
    settings_file = parts / "recording.json"
    wanted = recording_settings(cfg)
    if settings_file.is_file() and parts_settings(load_json(settings_file)) != parts_settings(wanted):
        raise ValueError(
            f"{parts} holds episodes recorded with other settings ({load_json(settings_file)}); remove it to start over"
        )
    atomic_write_text(settings_file, json.dumps(parts_settings(wanted), indent=2))
    for stale in parts.glob(".*.tmp.npz"):  # a worker killed while writing
        stale.unlink()
    jobs = []
    for task in tasks:
        for j in range(cfg.episodes_per_task):
            part = parts / f"{available.index(task):02d}_{j:04d}.npz"
            # Seeds disjoint per task and episode; LIBERO's sampler draws the placement from it.
            seed = cfg.seed * SEED_STRIDE + available.index(task) * 10_000 + j
            job = (cfg.suite, task, seed, cfg.image_size, cfg.render_mode, cfg.placement_widen, cfg.noise, cfg.faults)
            jobs.append((*job, str(part)))
    todo = [j for j in jobs if not Path(j[-1]).is_file()]
    if len(todo) < len(jobs):
        log.info(
            "resuming a LIBERO recording: %d of %d episodes already recorded in %s",
            len(jobs) - len(todo),
            len(jobs),
            parts,
        )
    bars_were_on = hf_datasets_logging.is_progress_bar_enabled()
    hf_datasets_logging.disable_progress_bar()
    kept = failed = 0
    per_task: dict[str, list[int]] = {}
    recorded = iter(())
    try:
        with contextlib.ExitStack() as stack:
            if todo:
                pool = stack.enter_context(
                    ProcessPoolExecutor(
                        max(1, cfg.workers), mp_context=mp.get_context("spawn"), initializer=_init_worker
                    )
                )
                # Results come back in job order; the dataset is written here while the workers
                # record the next episodes (writing costs about half as much CPU as recording).
                recorded = pool.map(_episode, todo)
            missing = {job[-1] for job in todo}
            tmp = stack.enter_context(atomic_dir(root, "recording"))
            ds = LeRobotDataset.create(
                f"local/vla_{cfg.suite}",
                FPS,
                features(cfg.image_size),
                root=tmp,
                robot_type="panda",
                use_videos=False,
                image_writer_threads=2,  # PNG encoding releases the GIL: frames of an episode in parallel
            )
            for suite, task, *_, part in tqdm(jobs, desc=f"recording and writing {cfg.suite} demos"):
                if part in missing:
                    next(recorded)  # wait for this episode's part
                instruction = _instruction(suite, task)
                with np.load(part, allow_pickle=False) as z:
                    ep = {k: z[k] for k in z.files}  # each z[k] reads the file again: once per array
                ok = bool(ep["success"])
                per_task.setdefault(task, [0, 0])[0 if ok else 1] += 1
                if not ok:
                    failed += 1
                    continue
                for t in range(len(ep["action"])):
                    ds.add_frame(
                        {
                            PORT_KEYS["agentview"]: ep["agentview"][t],
                            PORT_KEYS["wrist"]: ep["wrist"][t],
                            PORT_KEYS["state"]: ep["state"][t],
                            PORT_KEYS["action"]: ep["action"][t],
                            PERTURBED_KEY: ep["perturbed"][t : t + 1],
                            "task": instruction,
                        }
                    )
                ds.save_episode()
                kept += 1
            ds.finalize()
            save_json(tmp / RECORDING_FILE, {**wanted, "expert_success": per_task})
    finally:
        if bars_were_on:
            hf_datasets_logging.enable_progress_bar()
    shutil.rmtree(parts, ignore_errors=True)
    log.info("recorded %d episodes (%d expert failures skipped) to %s", kept, failed, root)
    return root


_INSTRUCTIONS: dict = {}


def _instruction(suite: str, task: str) -> str:
    if (suite, task) not in _INSTRUCTIONS:
        from envs.libero.env import _task

        _INSTRUCTIONS[(suite, task)] = _task(suite, task).language
    return _INSTRUCTIONS[(suite, task)]


def check_recording(cfg: LiberoRecordConfig, root: str | Path) -> None:
    """Refuse a recording made with other settings than `cfg` asks for."""
    path = Path(root) / RECORDING_FILE
    saved = load_json(path) if path.is_file() else {}
    saved = {k: v for k, v in saved.items() if k != "expert_success"}
    wanted = recording_settings(cfg)
    if saved != wanted:
        diff = sorted(k for k in wanted.keys() | saved.keys() if saved.get(k) != wanted.get(k))
        detail = ", ".join(f"{k}: recorded {saved.get(k)!r}, asked {wanted.get(k)!r}" for k in diff)
        raise ValueError(
            f"the demonstrations at {root} were recorded with other settings ({detail}); "
            f"remove {root} (and its .zarr cache) to record again, or point data.root elsewhere"
        )
