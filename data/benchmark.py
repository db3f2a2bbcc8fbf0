"""`vla-bench-data`: training-style random-access throughput, zarr cache vs LeRobotDataset (video).

Random samples (two camera frames + an 8-step action chunk, as training draws them) are read
from a LeRobotDataset in video mode (written with lerobot's API from the same episodes), from
the zarr cache on disk, and from the cache loaded in memory.

    vla-bench-data --cache runs/data/builtin.zarr          # an existing cache
    vla-bench-data --synthetic 270000 --image-size 128     # a port-sized synthetic cache
    vla-bench-data --synthetic 270000 --keep runs/data/synthetic_270k.zarr   # ... kept for a training run

`--synthetic N` builds a cache of N frames (episodes of 130 frames, two cameras of smooth
random images, 8-D state, 7-D action) in a temporary folder, N = 270,000 being the size of a
public LIBERO port; the page cache is dropped for its files before the disk reads are timed
(posix_fadvise), so a cache larger than memory is measured as it is read in training. The video
dataset holds the first `--episodes` episodes: its per-sample cost (seek and decode) does not
grow with the dataset. Building a cache from that video dataset (the reader training uses for a
LeRobot port) is timed too, and its rate gives the time to build the whole cache from a port.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from data.cache import ZarrCache, build_cache
from data.dataset import ChunkDataset
from data.episode import Episode
from data.readers import LeRobotKeys, read_lerobot
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


def _synthetic_episodes(frames: int, size: int, length: int = 130, seed: int = 0):
    """Episodes of smooth random images (a low-resolution noise field upsampled, so video and
    compression see image-like content), random state and actions."""
    rng = np.random.default_rng(seed)
    done = 0
    while done < frames:
        t = min(length, frames - done)
        low = rng.integers(0, 255, (t, size // 8, size // 8, 3), dtype=np.uint8)
        images = {cam: np.ascontiguousarray(low.repeat(8, 1).repeat(8, 2)) for cam in ("agentview", "wrist")}
        yield Episode(
            images=images,
            state=rng.normal(size=(t, 8)).astype(np.float32),
            actions=rng.uniform(-1, 1, (t, 7)).astype(np.float32),
            task="put the synthetic object in the basket",
            source="synthetic",
        )
        done += t


def _drop_page_cache(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _throughput(get, n_frames: int, batches: int, batch_size: int, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    get(0)  # open files / warm caches
    t0 = time.perf_counter()
    for _ in range(batches):
        for i in rng.integers(0, n_frames, batch_size):
            get(int(i))
    return batches * batch_size / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", default="runs/data/builtin.zarr")
    parser.add_argument("--synthetic", type=int, default=0, help="build a synthetic cache of this many frames")
    parser.add_argument("--image-size", type=int, default=128, help="--synthetic: frame size")
    parser.add_argument("--episodes", type=int, default=20, help="episodes written to the video dataset")
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--keep", default="", help="--synthetic: build the cache here and keep it (reused if present)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.cache)
        if args.synthetic:
            path = Path(args.keep) if args.keep else Path(tmp) / "synthetic.zarr"
            if path.exists() and ZarrCache(path, in_memory=False).num_frames != args.synthetic:
                raise SystemExit(f"{path} holds another cache; remove it or choose another --keep")
            if not path.exists():
                t0 = time.time()
                episodes = _synthetic_episodes(args.synthetic, args.image_size)
                build_cache(episodes, path, total_frames=args.synthetic)
                print(f"built a {args.synthetic}-frame synthetic cache in {time.time() - t0:.0f} s")
        on_disk = ZarrCache(path, in_memory=False)
        n_video = int(on_disk.episode_ends[args.episodes - 1])
        video = _video_dataset(on_disk, args.episodes, Path(tmp) / "video")
        t0 = time.time()
        build_cache(read_lerobot(Path(tmp) / "video", LeRobotKeys()), Path(tmp) / "from_video.zarr")
        build_rate = n_video / (time.time() - t0)
        rows = [
            (
                "LeRobotDataset, video (lerobot API)",
                n_video,
                _throughput(video.__getitem__, n_video, args.batches, args.batch_size),
            )
        ]
        _drop_page_cache(path)
        sample = ChunkDataset(on_disk, 8, on_disk.cameras).__getitem__
        rows.append(
            (
                "zarr cache, from disk (page cache dropped)",
                on_disk.num_frames,
                _throughput(sample, on_disk.num_frames, args.batches, args.batch_size),
            )
        )
        gb = on_disk.image_bytes / 1e9
        if ZarrCache(path).in_memory:  # only when it fits: what training does by default
            in_mem = ZarrCache(path, in_memory=True)
            sample = ChunkDataset(in_mem, 8, in_mem.cameras).__getitem__
            rows.append(
                (
                    "zarr cache, loaded in memory",
                    in_mem.num_frames,
                    _throughput(sample, in_mem.num_frames, args.batches, args.batch_size),
                )
            )
    base = rows[0][2]
    print(
        f"random-access samples (2 cameras + 8-step chunk); cache: {on_disk.num_frames} frames, {gb:.1f} GB of images"
    )
    print(f"{'reader':<46}{'frames':>9}{'samples/s':>11}{'vs video':>10}")
    for name, n, sps in rows:
        print(f"{name:<46}{n:>9}{sps:>11.0f}{sps / base:>9.1f}x")
    print(
        f"cache build from the video dataset: {build_rate:.0f} frames/s, "
        f"{on_disk.num_frames / build_rate / 60:.1f} min for {on_disk.num_frames} frames"
    )


if __name__ == "__main__":
    main()
