"""The zarr training cache: chunked, compressed arrays + an episode index + normalisation stats.

Layout (zarr v3 group):
    images/<camera>  uint8 (N, H, W, 3), uncompressed chunks of FRAMES_PER_CHUNK frames
    state            float32 (N, S)
    action           float32 (N, D)
    perturbed        bool (N,)    a recording fault replaced the executed action (Episode.perturbed)
    episode_ends     int64 (E,)   exclusive end index of each episode
    task_index       int64 (E,)   index into attrs["tasks"]
    attrs: tasks, cameras, stats (q01, q99, min, max, mean, std per dimension), complete,
           source (what the cache was built from: the settings that decide its content and a
           fingerprint of the source's files; `source_differences` compares it)
The group is written to a temporary folder and renamed when complete.

Reading: a cache that fits in memory (`in_memory=None` decides by size) is loaded once; a
larger one (a public LIBERO port at 128 px is about 27 GB) is read from disk frame by frame.
zarr-python costs about 1.6 ms per single-frame read, more than training can wait, so frames
of uncompressed images are read directly from their chunk files, whose layout the zarr v3
specification fixes (the `bytes` codec alone: a chunk file is the C-order array, edge chunks
full-size): one `pread` per frame. Caches built by older versions (compressed, sharded) are
read through zarr.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import zarr
from tqdm import tqdm

from data.episode import Episode
from vla.configs import atomic_dir

CACHE_FORMAT = "vla-zarr-cache/1"
FRAMES_PER_CHUNK = 64
IN_MEMORY_FRACTION = 0.4  # in_memory=None loads the cache when its images take under this share of free memory


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


def build_cache(
    episodes: Iterable[Episode],
    path: str | Path,
    frames_per_chunk: int = FRAMES_PER_CHUNK,
    total_frames: int | None = None,
    source: dict | None = None,
) -> Path:
    """Write `episodes` as a cache at `path` (atomically); `total_frames`, when the source knows
    it, gives the progress bar its end and its time estimate; `source` (JSON-able) records what
    the episodes came from."""
    with (
        atomic_dir(path, "building") as tmp,
        tqdm(total=total_frames, unit="frame", unit_scale=True, desc=f"building {Path(path).name}") as bar,
    ):
        root = zarr.open_group(str(tmp), mode="w")
        arrays: dict[str, zarr.Array] = {}
        n = 0
        ends, task_idx, tasks = [], [], []
        states, actions, perturbed = [], [], []
        for ep in episodes:
            ep.validate()
            if not arrays:
                for cam, img in ep.images.items():
                    h, w, _ = img.shape[1:]
                    arrays[cam] = root.create_array(
                        f"images/{cam}",
                        shape=(0, h, w, 3),
                        dtype="uint8",
                        chunks=(frames_per_chunk, h, w, 3),
                        compressors=None,  # raw chunks: frames are read straight from the files (RawFrames)
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
            bar.update(t)
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
                "source": source,
            }
        )
    return Path(path)


def files_fingerprint(root: str | Path, patterns: Iterable[str]) -> str:
    """sha256 over the relative path and size of every file under `root` matching `patterns`
    (globs): another recording, or files added, removed or cut, change it; copying does not."""
    root = Path(root)
    h = hashlib.sha256()
    files = sorted({p for pattern in patterns for p in root.glob(pattern) if p.is_file()})
    for p in files:
        h.update(f"{p.relative_to(root).as_posix()}\0{p.stat().st_size}\n".encode())
    return f"{len(files)} files, sha256 {h.hexdigest()[:16]}"


def cache_source(path: str | Path) -> dict | None:
    """What a cache records it was built from (None: built before caches recorded it)."""
    source = zarr.open_group(str(path), mode="r").attrs.get("source")
    return dict(source) if isinstance(source, dict) else None


def source_differences(saved: dict | None, wanted: dict, where: str = "") -> list[str]:
    """`key (cache X, asked Y)` for each leaf of `wanted` that the cache's record lacks or holds
    otherwise; keys only the cache records (what cannot be checked now) do not count."""
    if saved is None:
        return ["(the cache records no source: it was built by an older version)"]
    out = []
    for k, v in wanted.items():
        name = f"{where}{k}"
        if isinstance(v, dict) and isinstance(saved.get(k), dict):
            out += source_differences(saved[k], v, f"{name}.")
        elif saved.get(k) != v:
            out.append(f"{name} (cache {saved.get(k)!r}, asked {v!r})")
    return out


class RawFrames:
    """Frames of an uncompressed zarr v3 image array, read with one `pread` each."""

    def __init__(self, array: zarr.Array, folder: Path) -> None:
        self.shape = array.shape
        self.dtype = np.dtype(array.dtype)
        self._chunk = array.chunks[0]
        self._frame_bytes = int(np.prod(self.shape[1:])) * self.dtype.itemsize
        self._encode = array.metadata.encode_chunk_key
        self._folder = folder

    @staticmethod
    def readable(array: zarr.Array) -> bool:
        """Whether the chunk files hold the raw C-order array (the bytes codec alone, no sharding)."""
        codecs = array.metadata.codecs
        return (
            len(codecs) == 1
            and type(codecs[0]).__name__ == "BytesCodec"
            and array.chunks[1:] == array.shape[1:]
            and np.dtype(array.dtype).itemsize == 1
        )

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, i) -> np.ndarray:
        i = int(i)
        if not 0 <= i < self.shape[0]:
            raise IndexError(f"frame {i} out of range [0, {self.shape[0]})")
        chunk, offset = divmod(i, self._chunk)
        path = self._folder / self._encode((chunk,) + (0,) * (len(self.shape) - 1))
        fd = os.open(path, os.O_RDONLY)
        try:
            buf = os.pread(fd, self._frame_bytes, offset * self._frame_bytes)
        finally:
            os.close(fd)
        if len(buf) != self._frame_bytes:
            raise ValueError(f"{path}: chunk file is truncated (frame {i}); rebuild the cache")
        return np.frombuffer(buf, dtype=self.dtype).reshape(self.shape[1:])


def _free_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


class ZarrCache:
    """Read side. `in_memory`: True loads every array once (fast random access for training),
    False reads frames from disk, None (default) loads when the images fit comfortably in free memory."""

    def __init__(self, path: str | Path, in_memory: bool | None = None) -> None:
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
        self.source: dict | None = cache_source(path)
        arrays = {cam: root[f"images/{cam}"] for cam in self.cameras}
        self.image_bytes = sum(a.nbytes for a in arrays.values())
        if in_memory is None:
            in_memory = self.image_bytes < IN_MEMORY_FRACTION * _free_memory()
        self.in_memory = in_memory
        if in_memory:
            self.images = {cam: a[:] for cam, a in arrays.items()}
        else:
            self.images = {
                cam: RawFrames(a, path / "images" / cam) if RawFrames.readable(a) else a for cam, a in arrays.items()
            }
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
