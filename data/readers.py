"""Readers that map a source format's keys onto the Episode contract through a small config.

(a) LeRobotDataset v3 (our recordings, the public LIBERO ports, Bridge-style ports) through
lerobot's own `LeRobotDataset`; (b) LIBERO's original robomimic-layout HDF5 files.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data.episode import PERTURBED_KEY, Episode
from envs.libero import frame_from_robosuite


@dataclass
class LeRobotKeys:
    """Source key for each of our cameras, plus state/action keys (defaults: our recordings)."""

    cameras: dict[str, str] = field(
        default_factory=lambda: {"agentview": "observation.images.agentview", "wrist": "observation.images.wrist"}
    )
    state: str = "observation.state"
    action: str = "action"
    perturbed: str = PERTURBED_KEY  # optional: per-frame recording-fault flag (our recordings)


LIBERO_LEROBOT_KEYS = LeRobotKeys(
    cameras={"agentview": "observation.images.image", "wrist": "observation.images.wrist_image"}
)
BRIDGE_LEROBOT_KEYS = LeRobotKeys(cameras={"agentview": "observation.images.image_0"})


def read_lerobot(
    root: str | Path, keys: LeRobotKeys | None = None, repo_id: str = "local/dataset"
) -> Iterator[Episode]:
    """Episodes of a local LeRobotDataset v3 folder (image or video storage)."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from lerobot.datasets.video_utils import decode_video_frames

    keys = keys or LeRobotKeys()
    root = Path(root)
    check_lerobot_files(root)
    try:
        ds = LeRobotDataset(repo_id, root=root, return_uint8=True)
    except Exception as e:  # lerobot/datasets/pyarrow raise many types; say where, keep the cause
        raise ValueError(f"{root}: lerobot cannot open this dataset ({type(e).__name__}: {e})") from e
    have = set(ds.meta.features)
    wanted = [keys.state, keys.action, *keys.cameras.values()]
    missing = [k for k in wanted if k not in have]
    if missing:
        raise KeyError(
            f"{root}: dataset has no keys {missing}; it has {sorted(have)}. Map them with "
            "data.camera_keys={agentview: <key>, wrist: <key>}, data.state_key=<key>, data.action_key=<key>"
        )
    # Whole episodes at a time: one decoder call per camera and episode decodes the episode's
    # frames in order instead of seeking for each frame (lerobot's per-frame access), which is
    # what makes building the cache from a port of 270,000 video frames practical
    # (docs/benchmarks.md#data-reads).
    table = ds.hf_dataset.with_format("numpy")  # uint8 (T, H, W, 3) images, without lerobot's float transform
    videos = set(ds.meta.video_keys)
    for ep in range(ds.num_episodes):
        info = ds.meta.episodes[ep]
        start, end = int(info["dataset_from_index"]), int(info["dataset_to_index"])
        where = f"{root} episode {ep}"
        try:
            rows = table[start:end]
        except Exception as e:  # a truncated parquet row group surfaces here
            raise ValueError(f"{where}: rows {start}-{end} cannot be read ({type(e).__name__}: {e})") from e
        images = {}
        for cam, src in keys.cameras.items():
            if src not in videos:
                images[cam] = _hwc_uint8(rows[src])
                continue
            stamps = [float(info[f"videos/{src}/from_timestamp"]) + float(t) for t in rows["timestamp"]]
            path = root / ds.meta.get_video_file_path(ep, src)
            try:
                frames = decode_video_frames(path, stamps, ds.tolerance_s, return_uint8=True)
            except Exception as e:  # a truncated or missing video; the decoders raise many types
                raise ValueError(
                    f"{where}: {src} frames cannot be decoded from {path} ({type(e).__name__}: {e})"
                ) from e
            images[cam] = _hwc_uint8(frames.numpy())
        yield Episode(
            images=images,
            state=np.asarray(rows[keys.state], dtype=np.float32),
            actions=np.asarray(rows[keys.action], dtype=np.float32),
            task=str(ds.meta.tasks.iloc[int(rows["task_index"][0])].name),
            source=where,
            perturbed=(
                np.asarray(rows[keys.perturbed]).reshape(end - start, -1)[:, 0].astype(bool)
                if keys.perturbed in have
                else None
            ),
        ).validate()


def check_lerobot_files(root: Path) -> None:
    """Raise, naming the file, if meta/info.json or any parquet file of the dataset is unreadable
    (a truncated download or an interrupted copy) before lerobot fails somewhere inside."""
    import pyarrow.parquet as pq

    info = root / "meta" / "info.json"
    if not info.is_file():
        raise FileNotFoundError(f"{root} is not a LeRobotDataset (no meta/info.json); record or download it first")
    try:
        meta = json.loads(info.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{info} is not valid JSON ({e}): truncated or corrupt; restore it from the source") from e
    for key in ("features", "fps", "total_episodes"):
        if key not in meta:
            raise KeyError(f"{info} has no {key!r}; is this a LeRobotDataset v3 folder?")
    for f in sorted(root.glob("**/*.parquet")):
        try:
            pq.read_metadata(f)
        except Exception as e:
            raise ValueError(f"{f} is not a readable parquet file ({e}): truncated or corrupt") from e


def _hwc_uint8(x) -> np.ndarray:
    """Frames (T, 3, H, W) or (T, H, W, 3), uint8 or float in [0, 1], as uint8 (T, H, W, 3)."""
    a = np.asarray(x)
    if a.ndim == 4 and a.shape[1] == 3 and a.shape[3] != 3:  # (T, 3, H, W) -> (T, H, W, 3)
        a = a.transpose(0, 2, 3, 1)
    if a.dtype != np.uint8:
        a = (np.clip(a, 0, 1) * 255).round().astype(np.uint8)
    return a


@dataclass
class LiberoHDF5Keys:
    cameras: dict[str, str] = field(default_factory=lambda: {"agentview": "agentview_rgb", "wrist": "eye_in_hand_rgb"})
    state: list[str] = field(default_factory=lambda: ["ee_states", "gripper_states"])
    action: str = "actions"


def read_libero_hdf5(path: str | Path, keys: LiberoHDF5Keys | None = None) -> Iterator[Episode]:
    """Episodes of one LIBERO demonstration file (robomimic layout, data/demo_N/...)."""
    import h5py

    keys = keys or LiberoHDF5Keys()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LIBERO demonstration file {path} does not exist")
    with h5py.File(path, "r") as f:
        if "data" not in f:
            raise KeyError(f"{path}: no 'data' group; is this a LIBERO/robomimic demonstration file?")
        task = _libero_instruction(f["data"], path)
        demos = sorted(f["data"].keys(), key=lambda k: int(k.split("_")[-1]))
        for demo in demos:
            g = f["data"][demo]
            where = f"{path} {demo}"
            for k in [f"obs/{c}" for c in keys.cameras.values()] + [f"obs/{s}" for s in keys.state] + [keys.action]:
                if k not in g:
                    raise KeyError(f"{where}: missing key {k!r}")
            state = np.concatenate([np.asarray(g["obs"][s], dtype=np.float32) for s in keys.state], axis=1)
            yield Episode(
                # LIBERO's own files hold robosuite's raw (bottom-up) frames; turn them to the
                # orientation that the public ports and envs.libero use.
                images={cam: frame_from_robosuite(np.asarray(g["obs"][src])) for cam, src in keys.cameras.items()},
                state=state,
                actions=np.asarray(g[keys.action], dtype=np.float32),
                task=task,
                source=where,
            ).validate()


def _libero_instruction(data, path: Path) -> str:
    info = data.attrs.get("problem_info")
    if info is None:
        raise KeyError(f"{path}: data has no 'problem_info' attribute holding the language instruction")
    info = json.loads(info if isinstance(info, str) else info.decode())
    instruction = info.get("language_instruction", "")
    return " ".join(instruction) if isinstance(instruction, list) else str(instruction)
