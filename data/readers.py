"""Readers that map a source format's keys onto the Episode contract through a small config.

(a) LeRobotDataset v3 (our recordings, the public LIBERO ports, Bridge-style ports) through
lerobot's own `LeRobotDataset`; (b) LIBERO's original robomimic-layout HDF5 files.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data.episode import PERTURBED_KEY, Episode
from envs.libero.conventions import frame_from_robosuite
from vla.configs import recover_dir, scratch_folder

log = logging.getLogger(__name__)


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
# The BridgeData V2 ports (IPEC-COMMUNITY/bridge_orig_lerobot): the third-person camera, which
# simpler_bridge calls `image`.
BRIDGE_LEROBOT_KEYS = LeRobotKeys(cameras={"image": "observation.images.image_0"})


def read_lerobot(
    root: str | Path,
    keys: LeRobotKeys | None = None,
    repo_id: str = "local/dataset",
    scratch_dir: str | Path | None = None,
) -> Iterator[Episode]:
    """Episodes of a local LeRobotDataset v3 folder (image or video storage).

    lerobot reads the parquet files through `datasets`, which first writes an Arrow copy of them
    (about the data's uncompressed size: 2.9 GB for LIBERO-Object) to its cache, by default
    ~/.cache/huggingface/datasets, and never removes it. Here that copy goes to a marked scratch folder
    `.<root name>.arrow.vla-tmp-<pid>-<hex>` in `scratch_dir` (default: beside `root`, where the
    zarr cache goes too) and is removed once the episodes are read; a killed read's folder is
    removed by the next read or run (`recover_dir`)."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    keys = keys or LeRobotKeys()
    root = Path(root)
    info = check_lerobot_files(root)
    with _arrow_scratch(root, scratch_dir) as scratch, _datasets_cache_at(scratch):
        try:
            ds = LeRobotDataset(repo_id, root=root, return_uint8=True)
        except Exception as e:  # lerobot/datasets/pyarrow raise many types; say where, keep the cause
            file = f" (file {e.filename})" if getattr(e, "filename", None) else ""
            raise ValueError(
                f"{root}: lerobot cannot open this dataset{file} ({type(e).__name__}: {e}). Its metadata and the "
                f"files the episodes index names were found readable; is it a LeRobotDataset of codebase_version "
                f"v3.x (meta/info.json says {info.get('codebase_version')!r})?"
            ) from e
        yield from _lerobot_episodes(ds, root, keys)


def _lerobot_episodes(ds, root: Path, keys: LeRobotKeys) -> Iterator[Episode]:
    from lerobot.datasets.video_utils import decode_video_frames

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


# ------------------------------------------------------------------ LeRobot dataset files
_RESTORE = "the download or copy is incomplete or corrupt: copy the dataset again from its source"


def check_lerobot_files(root: str | Path) -> dict:
    """Raise, naming the file and what to do, unless every file lerobot will read is present and
    readable: meta/info.json (with the types lerobot assumes), meta/stats.json (when present),
    meta/tasks.parquet, the episodes index (meta/episodes), and each data parquet file and video
    the index names. lerobot takes a missing file for a dataset not downloaded yet and turns to
    the hub, and names neither file nor field for a wrong type. Returns info.json's content."""
    import pyarrow.parquet as pq

    root = Path(root)
    info_path = root / "meta" / "info.json"
    if not info_path.is_file():
        raise FileNotFoundError(f"{root} is not a LeRobotDataset (no meta/info.json); record or download it first")
    info = _json_file(info_path)
    _check_info(info, info_path)
    stats_path = root / "meta" / "stats.json"
    if stats_path.exists():
        _check_stats(_json_file(stats_path), stats_path)
    for f in sorted(root.glob("**/*.parquet")):
        try:
            pq.read_metadata(f)
        except Exception as e:
            raise ValueError(f"{f} is not a readable parquet file ({e}): truncated or corrupt; {_RESTORE}") from e
    if info["total_tasks"] > 0 and not (root / "meta" / "tasks.parquet").is_file():
        raise FileNotFoundError(
            f"{root / 'meta' / 'tasks.parquet'} is missing (info.json counts {info['total_tasks']} tasks): {_RESTORE}"
        )
    if info["total_episodes"] > 0:
        _check_episode_files(root, info, info_path)
    return info


def _json_file(path: Path):
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}): truncated or corrupt; restore it from the source") from e


def _is_int(v, low: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def _check_info(info, path: Path) -> None:
    """The fields of meta/info.json that lerobot reads, with their types (lerobot's DatasetInfo
    takes whatever JSON holds and fails later, naming neither file nor field)."""
    from lerobot.datasets.utils import DEFAULT_DATA_PATH, DEFAULT_VIDEO_PATH

    if not isinstance(info, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(info).__name__}; {_RESTORE}")
    for key in ("codebase_version", "features", "fps", "total_episodes"):
        if key not in info:
            raise KeyError(f"{path} has no {key!r}; is this a LeRobotDataset v3 folder?")
    info.setdefault("total_tasks", 0)
    info.setdefault("data_path", DEFAULT_DATA_PATH)
    info.setdefault("video_path", DEFAULT_VIDEO_PATH)
    checks = {
        "codebase_version": (lambda v: isinstance(v, str), "a string such as 'v3.0'"),
        "fps": (lambda v: not isinstance(v, bool) and isinstance(v, (int, float)) and v > 0, "a number > 0"),
        "total_episodes": (lambda v: _is_int(v, 0), "an integer >= 0"),
        "total_frames": (lambda v: _is_int(v, 0), "an integer >= 0"),
        "total_tasks": (lambda v: _is_int(v, 0), "an integer >= 0"),
        "chunks_size": (lambda v: _is_int(v, 1), "an integer >= 1"),
        "data_path": (lambda v: isinstance(v, str), "a path template string"),
        "video_path": (lambda v: v is None or isinstance(v, str), "a path template string or null"),
        "features": (
            lambda v: (
                isinstance(v, dict)
                and all(
                    isinstance(f, dict)
                    and isinstance(f.get("dtype"), str)
                    and isinstance(f.get("shape"), list)
                    and all(_is_int(n, 0) for n in f["shape"])
                    for f in v.values()
                )
            ),
            "an object of {key: {dtype: string, shape: [integers], ...}}",
        ),
    }
    for key, (ok, want) in checks.items():
        if key in info and not ok(info[key]):
            raise ValueError(f"{path}: {key}={info[key]!r} is not {want}; {_RESTORE}")


def _check_stats(stats, path: Path) -> None:
    """meta/stats.json: {feature: {statistic: number or nested list of numbers}}. lerobot loads it
    whether or not it is used; training computes its own statistics (the zarr cache's)."""
    what = (
        f"restore it from the source, or delete it (lerobot reads a dataset without {path.name}; "
        "training computes its own statistics)"
    )
    if not isinstance(stats, dict) or not all(isinstance(v, dict) for v in stats.values()):
        raise ValueError(f"{path}: expected {{feature: {{statistic: numbers}}}}; {what}")
    for feature, values in stats.items():
        for name, v in values.items():
            try:  # a number or a (nested, rectangular) list of numbers, as lerobot's np.array reads it
                ok = isinstance(v, (int, float, list)) and not isinstance(v, bool)
                ok = ok and np.asarray(v, dtype=np.float64).size > 0
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ValueError(
                    f"{path}: {feature}.{name}={str(v)[:60]!r} is not a number or array of numbers; {what}"
                )


def _check_episode_files(root: Path, info: dict, info_path: Path) -> None:
    """The episodes index (meta/episodes/*/*.parquet) covers info.json's episodes, and the data
    parquet files and videos it names exist."""
    import pyarrow.parquet as pq

    index = sorted((root / "meta" / "episodes").glob("*/*.parquet"))
    if not index:
        raise FileNotFoundError(f"{root / 'meta' / 'episodes'} holds no episodes index (*/*.parquet): {_RESTORE}")
    videos = [k for k, f in info["features"].items() if f["dtype"] == "video"]
    columns = ["data/chunk_index", "data/file_index"]
    columns += [f"videos/{k}/{c}" for k in videos for c in ("chunk_index", "file_index")]
    wanted: dict[Path, Path] = {}  # file -> the index file that names it
    rows = 0
    for f in index:
        try:
            table = pq.read_table(f, columns=columns).to_pydict()
        except Exception as e:  # a column missing from the index
            raise ValueError(f"{f}: the episodes index lacks what lerobot reads ({e}); {_RESTORE}") from e
        rows += len(table["data/chunk_index"])
        for i in range(len(table["data/chunk_index"])):
            chunk, file = table["data/chunk_index"][i], table["data/file_index"][i]
            wanted.setdefault(root / info["data_path"].format(chunk_index=chunk, file_index=file), f)
            for k in videos:
                chunk, file = table[f"videos/{k}/chunk_index"][i], table[f"videos/{k}/file_index"][i]
                wanted.setdefault(root / info["video_path"].format(video_key=k, chunk_index=chunk, file_index=file), f)
    if rows != info["total_episodes"]:
        raise ValueError(
            f"{info_path} counts {info['total_episodes']} episodes, the episodes index {root / 'meta' / 'episodes'} "
            f"lists {rows}: {_RESTORE}"
        )
    missing = [(p, by) for p, by in wanted.items() if not p.is_file()]
    if missing:
        p, by = missing[0]
        raise FileNotFoundError(
            f"{p} is missing (named by {by}{f', and {len(missing) - 1} more' if len(missing) > 1 else ''}): {_RESTORE}"
        )


@contextmanager
def _arrow_scratch(root: Path, scratch: str | Path | None) -> Iterator[Path]:
    """A marked scratch folder for this read's Arrow copy in `scratch` (default: beside `root`);
    those that killed reads left there are removed first (`recover_dir` removes only folders
    carrying the project's marker)."""
    root = root.resolve()  # "." has no name
    base = Path(scratch) if scratch is not None else root.parent
    with ExitStack() as stack:
        try:
            recover_dir(base)
            folder = stack.enter_context(scratch_folder(base, f"{root.name}.arrow"))
        except OSError as e:  # a read-only place (a shared data folder): the system's temporary folder
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f".{root.name}.arrow-")))
            log.warning("cannot write beside %s (%s); lerobot's Arrow copy of it goes to %s instead", root, e, folder)
        yield folder


@contextmanager
def _datasets_cache_at(folder: Path) -> Iterator[None]:
    """Point the `datasets` cache at `folder` while lerobot builds its tables: lerobot passes no
    cache_dir, and `datasets` reads `config.HF_DATASETS_CACHE` each time it makes a builder."""
    import datasets.config

    before = datasets.config.HF_DATASETS_CACHE
    datasets.config.HF_DATASETS_CACHE = folder
    try:
        yield
    finally:
        datasets.config.HF_DATASETS_CACHE = before


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
