"""`vla-bench-data`: training-style random-access throughput, zarr cache vs LeRobotDataset (video).

The same episodes are written as a LeRobotDataset in video mode with lerobot's API, then
batches of random (frame, 8-step action chunk, two cameras) samples are read from each.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from data.cache import ZarrCache
from data.dataset import ChunkDataset
from data.record import FPS, features, lerobot_frame


def _video_dataset(cache: ZarrCache, episodes: int, root: Path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    size = cache.images[cache.cameras[0]].shape[1]
    ds = LeRobotDataset.create("local/bench", FPS, features(size, use_videos=True), root=root, use_videos=True)
    for ep in range(episodes):
        start, end = int(cache.episode_starts[ep]), int(cache.episode_ends[ep])
        task = cache.tasks[int(cache.task_index[ep])]
        for i in range(start, end):
            images = {cam: np.asarray(cache.images[cam][i]) for cam in ("agentview", "wrist")}
            ds.add_frame(lerobot_frame(images, cache.state[i], cache.action[i], bool(cache.perturbed[i]), task))
        ds.save_episode()
    ds.finalize()
    return LeRobotDataset("local/bench", root=root, delta_timestamps={"action": [k / FPS for k in range(8)]})


def _throughput(get, n_frames: int, batches: int, batch_size: int, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    get(0)  # open files / warm caches
    t0 = time.perf_counter()
    for _ in range(batches):
        for i in rng.integers(0, n_frames, batch_size):
            get(int(i))
    return batches * batch_size / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cache", default="runs/data/builtin.zarr")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    on_disk = ZarrCache(args.cache, in_memory=False)
    n_frames = int(on_disk.episode_ends[args.episodes - 1])
    with tempfile.TemporaryDirectory() as tmp:
        video = _video_dataset(on_disk, args.episodes, Path(tmp) / "video")
        rows = [
            (
                "LeRobotDataset, video (lerobot API)",
                _throughput(video.__getitem__, n_frames, args.batches, args.batch_size),
            ),
            (
                "zarr cache, read from disk",
                _throughput(
                    ChunkDataset(on_disk, 8, on_disk.cameras).__getitem__, n_frames, args.batches, args.batch_size
                ),
            ),
        ]
    in_mem = ZarrCache(args.cache, in_memory=True)
    rows.append(
        (
            "zarr cache, loaded in memory (training default)",
            _throughput(ChunkDataset(in_mem, 8, in_mem.cameras).__getitem__, n_frames, args.batches, args.batch_size),
        )
    )
    base = rows[0][1]
    print(f"random-access samples (2 cameras + 8-step chunk), {args.episodes} episodes / {n_frames} frames")
    print(f"{'reader':<50}{'samples/s':>10}{'vs video':>10}")
    for name, sps in rows:
        print(f"{name:<50}{sps:>10.0f}{sps / base:>9.1f}x")


if __name__ == "__main__":
    main()
