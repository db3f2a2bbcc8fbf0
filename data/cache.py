"""The zarr training cache: chunked, compressed arrays + an episode index + normalisation stats.

Layout (zarr v3 group):
    images/<camera>  uint8 (N, H, W, 3), one frame per chunk (random access reads one chunk)
    state            float32 (N, S)
    action           float32 (N, D)
    perturbed        bool (N,)    a recording fault replaced the executed action (Episode.perturbed)
    episode_ends     int64 (E,)   exclusive end index of each episode
    task_index       int64 (E,)   index into attrs["tasks"]
    attrs: tasks, cameras, stats (q01, q99, min, max, mean, std per dimension), complete
The group is written to a temporary folder and renamed when complete.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import zarr
from tqdm import tqdm

from data.episode import Episode
from vla.configs import atomic_dir

CACHE_FORMAT = "vla-zarr-cache/1"


def compute_stats(x: np.ndarray) -> dict:
    x = x.astype(np.float64)
    return {
        "q01": np.quantile(x, 0.01, axis=0).tolist(),
        "q99": np.quantile(x, 0.99, axis=0).tolist(),
        "min": x.min(0).tolist(),
        "max": x.max(0).tolist(),
        "mean": x.mean(0).tolist(),
        "std": x.std(0).tolist(),
    }


def build_cache(episodes: Iterable[Episode], path: str | Path, frames_per_shard: int = 256) -> Path:
    with atomic_dir(path, "building") as tmp:
        root = zarr.open_group(str(tmp), mode="w")
        arrays: dict[str, zarr.Array] = {}
        n = 0
        ends, task_idx, tasks = [], [], []
        states, actions, perturbed = [], [], []
        for ep in tqdm(episodes, desc="building zarr cache"):
            ep.validate()
            if not arrays:
                for cam, img in ep.images.items():
                    h, w, _ = img.shape[1:]
                    arrays[cam] = root.create_array(
                        f"images/{cam}",
                        shape=(0, h, w, 3),
                        dtype="uint8",
                        chunks=(1, h, w, 3),
                        shards=(frames_per_shard, h, w, 3),
                    )
                cams = sorted(ep.images)
            if sorted(ep.images) != cams:
                raise ValueError(f"{ep.source}: cameras {sorted(ep.images)} differ from the first episode's {cams}")
            t = len(ep.actions)
            for cam, arr in arrays.items():
                if ep.images[cam].shape[1:] != arr.shape[1:]:
                    raise ValueError(
                        f"{ep.source}: camera {cam!r} frames {ep.images[cam].shape[1:]} != {arr.shape[1:]}"
                    )
                arr.resize((n + t, *arr.shape[1:]))
                arr[n : n + t] = ep.images[cam]
            states.append(ep.state)
            actions.append(ep.actions)
            perturbed.append(np.zeros(t, dtype=bool) if ep.perturbed is None else ep.perturbed)
            if ep.task not in tasks:
                tasks.append(ep.task)
            task_idx.append(tasks.index(ep.task))
            n += t
            ends.append(n)
        if not ends:
            raise ValueError("no episodes to cache: the source is empty")
        state, action = np.concatenate(states), np.concatenate(actions)
        root.create_array(
            "state", data=state.astype(np.float32), chunks=(max(1, min(len(state), 65536)), state.shape[1])
        )
        root.create_array(
            "action", data=action.astype(np.float32), chunks=(max(1, min(len(action), 65536)), action.shape[1])
        )
        root.create_array("perturbed", data=np.concatenate(perturbed), chunks=(max(1, min(n, 65536)),))
        root.create_array("episode_ends", data=np.asarray(ends, dtype=np.int64))
        root.create_array("task_index", data=np.asarray(task_idx, dtype=np.int64))
        root.attrs.update(
            {
                "format": CACHE_FORMAT,
                "tasks": tasks,
                "cameras": cams,
                "stats": {"state": compute_stats(state), "action": compute_stats(action)},
            }
        )
    return Path(path)


class ZarrCache:
    """Read side. `in_memory=True` loads every array once (fast random access for training)."""

    def __init__(self, path: str | Path, in_memory: bool = True) -> None:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"zarr cache {path} does not exist; build it with data.cache.build_cache")
        root = zarr.open_group(str(path), mode="r")
        if root.attrs.get("format") != CACHE_FORMAT:
            raise ValueError(f"{path} is not a complete {CACHE_FORMAT} cache (interrupted build?)")
        self.path = path
        self.cameras: list[str] = list(root.attrs["cameras"])
        self.tasks: list[str] = list(root.attrs["tasks"])
        self.stats: dict = dict(root.attrs["stats"])
        load = (lambda a: a[:]) if in_memory else (lambda a: a)
        self.images = {cam: load(root[f"images/{cam}"]) for cam in self.cameras}
        self.state = root["state"][:]
        self.action = root["action"][:]
        # Caches built before the flag existed hold only unperturbed sources.
        self.perturbed = root["perturbed"][:] if "perturbed" in root else np.zeros(len(self.action), dtype=bool)
        self.episode_ends = root["episode_ends"][:]
        self.task_index = root["task_index"][:]
        self.episode_starts = np.concatenate([[0], self.episode_ends[:-1]])

    @property
    def num_frames(self) -> int:
        return int(self.episode_ends[-1])

    @property
    def num_episodes(self) -> int:
        return len(self.episode_ends)
