"""Resumable recording of a simulated suite's scripted demonstrations as a LeRobotDataset v3,
shared by the LIBERO (`data.record_libero`) and SimplerEnv (`data.record_simpler`) recorders.

Every finished episode (kept or failed) is written atomically to `<root>.parts/` first, and a
re-run records only the missing ones; the dataset is assembled with lerobot's API into a
temporary folder that replaces `root` only when complete, and the parts are then removed. A
family (`Family`) says what differs between simulators: its episode function (run in spawned
worker processes), the arrays an episode holds and their dataset keys, and its rate and robot.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing as mp
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from data.episode import PERTURBED_KEY
from vla.configs import atomic_dir, atomic_write_text, load_json, save_json

log = logging.getLogger(__name__)

RECORDING_FILE = "meta/recording.json"
SEED_STRIDE = 1_000_000  # episode seeds of a recording's seed s: s * SEED_STRIDE + task index * 10000 + episode

# Settings that choose which episodes are recorded, not what an episode holds: episode j of a task
# has the same seed and so the same content whatever they are, so a recording in progress can be
# extended to more episodes or tasks (or cut short) and keep its finished parts.
EXTENSIBLE = ("episodes_per_task", "tasks")


def parts_settings(settings: dict) -> dict:
    """The settings a finished episode part depends on."""
    return {k: v for k, v in settings.items() if k not in EXTENSIBLE}


def episode_seed(seed: int, task_index: int, episode: int) -> int:
    """Seeds disjoint per task and episode; the suite's sampler draws the placement from it."""
    return seed * SEED_STRIDE + task_index * 10_000 + episode


class Job(NamedTuple):
    task: str
    seed: int
    part: str  # where the finished episode is written
    args: tuple  # the family's own settings, for its episode function


@dataclass(frozen=True)
class Family:
    """What one simulator's recording needs. `episode` and `init_worker` are module-level
    functions (workers are spawned processes)."""

    name: str  # the suite: the dataset's id and the progress bar's label
    fps: int
    robot_type: str
    features: dict  # lerobot features, PERTURBED_KEY included
    keys: dict[str, str]  # an episode's arrays (cameras, state, action) -> dataset keys, in writing order
    episode: Callable[[Job], tuple[str, bool]]
    init_worker: Callable[[], None]
    instruction: Callable[[str], str]  # task -> its language instruction


def save_part(part: str | Path, frames: list[dict], ok: bool, arrays: list[str]) -> tuple[str, bool]:
    """Write one episode's `arrays` (stacked over its frames) and its `perturbed` flags when it
    succeeded, only its outcome when not; a part exists only once complete."""
    out = {"success": np.array(ok)}
    if ok:
        for name in arrays:
            stacked = np.stack([f[name] for f in frames])
            out[name] = stacked.astype(np.float32) if name in ("state", "action") else stacked
        out["perturbed"] = np.array([f["perturbed"] for f in frames], dtype=bool)
    part = Path(part)
    tmp = part.with_name(f".{part.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **out)
    os.replace(tmp, part)
    return str(part), ok


def parts_folder(root: Path) -> Path:
    return root.parent / f"{root.name}.parts"


def record_scripted(family: Family, jobs: list[Job], wanted: dict, root: str | Path, workers: int) -> Path:
    """Record `jobs` (resuming from `<root>.parts/`) and write the successful episodes to `root`;
    `wanted` are the settings saved with the recording (`check_recording` compares them)."""
    from datasets.utils import logging as hf_datasets_logging
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    root = Path(root)
    if (root / "meta" / "info.json").exists():
        raise FileExistsError(f"{root} already holds a dataset; remove it or record elsewhere")
    parts = parts_folder(root)
    parts.mkdir(parents=True, exist_ok=True)
    settings_file = parts / "recording.json"
    if settings_file.is_file() and parts_settings(load_json(settings_file)) != parts_settings(wanted):
        raise ValueError(
            f"{parts} holds episodes recorded with other settings ({load_json(settings_file)}); remove it to start over"
        )
    atomic_write_text(settings_file, json.dumps(parts_settings(wanted), indent=2))
    for stale in parts.glob(".*.tmp.npz"):  # a worker killed while writing
        stale.unlink()
    todo = [j for j in jobs if not Path(j.part).is_file()]
    if len(todo) < len(jobs):
        log.info(
            "resuming a %s recording: %d of %d episodes already recorded in %s",
            family.name,
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
                # The workers' set-up, here first: a missing asset or driver is raised as itself,
                # not as the BrokenProcessPool a failing initializer becomes.
                family.init_worker()
                pool = stack.enter_context(
                    ProcessPoolExecutor(
                        max(1, workers), mp_context=mp.get_context("spawn"), initializer=family.init_worker
                    )
                )
                # Results come back in job order; the dataset is written here while the workers
                # record the next episodes (writing costs about half as much CPU as recording).
                recorded = pool.map(family.episode, todo)
            missing = {job.part for job in todo}
            tmp = stack.enter_context(atomic_dir(root, "recording"))
            ds = LeRobotDataset.create(
                f"local/vla_{family.name}",
                family.fps,
                family.features,
                root=tmp,
                robot_type=family.robot_type,
                use_videos=False,
                image_writer_threads=2,  # PNG encoding releases the GIL: frames of an episode in parallel
            )
            for job in tqdm(jobs, desc=f"recording and writing {family.name} demos"):
                if job.part in missing:
                    next(recorded)  # wait for this episode's part
                with np.load(job.part, allow_pickle=False) as z:
                    ep = {k: z[k] for k in z.files}  # each z[k] reads the file again: once per array
                ok = bool(ep["success"])
                per_task.setdefault(job.task, [0, 0])[0 if ok else 1] += 1
                if not ok:
                    failed += 1
                    continue
                instruction = family.instruction(job.task)
                for t in range(len(ep["action"])):
                    frame = {key: ep[name][t] for name, key in family.keys.items()}
                    ds.add_frame({**frame, PERTURBED_KEY: ep["perturbed"][t : t + 1], "task": instruction})
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


def check_recording(wanted: dict, root: str | Path) -> None:
    """Refuse a recording made with other settings than `wanted`."""
    path = Path(root) / RECORDING_FILE
    saved = load_json(path) if path.is_file() else {}
    saved = {k: v for k, v in saved.items() if k != "expert_success"}
    if saved != wanted:
        diff = sorted(k for k in wanted.keys() | saved.keys() if saved.get(k) != wanted.get(k))
        detail = ", ".join(f"{k}: recorded {saved.get(k)!r}, asked {wanted.get(k)!r}" for k in diff)
        raise ValueError(
            f"the demonstrations at {root} were recorded with other settings ({detail}); "
            f"remove {root} (and its .zarr cache) to record again, or point data.root elsewhere"
        )
