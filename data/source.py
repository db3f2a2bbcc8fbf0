"""Training data from its source: which source a run reads (`DataConfig`), recording
demonstrations when they are missing, building the zarr cache, and checking that an existing
cache holds what the run asks for. The training loop only asks for the opened cache
(`prepare_data`).
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import NamedTuple

from data.cache import ZarrCache, build_cache, cache_source, files_fingerprint, source_differences
from data.dataset import LoaderConfig
from data.record import RecordConfig
from data.record_libero import LiberoRecordConfig
from data.record_simpler import SimplerRecordConfig
from vla.configs import ConfigError, choice, load_json, recover_dir
from vla.embodiment import Embodiment

log = logging.getLogger(__name__)


class DataSource(StrEnum):
    builtin = "builtin"  # record the built-in suite with scripted experts if missing
    libero_scripted = "libero_scripted"  # record LIBERO (data.libero) with its scripted expert if missing
    simpler_scripted = "simpler_scripted"  # record SimplerEnv's Bridge tasks (data.simpler) if missing
    lerobot = "lerobot"  # a LeRobotDataset v3 folder
    libero_hdf5 = "libero_hdf5"  # a folder of LIBERO's original .hdf5 files


class Convert(StrEnum):
    none = "none"  # the source's state and action as they are
    # a BridgeData V2 LeRobot port's 8-D state and 0/1 gripper onto simpler_bridge's conventions
    bridge_port = "bridge_port"


class CacheMode(StrEnum):
    auto = "auto"  # in memory when the images take under 40% of free memory, else from disk
    memory = "memory"
    disk = "disk"


@dataclass
class DataConfig:
    source: DataSource = DataSource.builtin
    root: str = "runs/data/builtin"  # dataset folder (recorded here for builtin)
    cache: str = ""  # zarr cache path; empty: <root>.zarr
    # A LeRobot or HDF5 source's key map, each empty for the source's defaults (docs/data.md):
    # our camera -> source key, e.g. data.camera_keys={agentview: image, wrist: wrist_image}
    camera_keys: dict = field(default_factory=dict)
    state_key: str = ""  # e.g. data.state_key=state (openpi's port) or observation.state
    action_key: str = ""  # e.g. data.action_key=actions (openpi's port) or action
    # A LeRobot source's state and action turned into a simulated suite's conventions on reading
    # (docs/data.md): bridge_port for the BridgeData V2 ports evaluated on simpler_bridge.
    convert: Convert = Convert.none
    cache_mode: CacheMode = CacheMode.auto  # where training reads the zarr cache from
    # A cache built from other data than asked for is refused; true rebuilds it from the source.
    rebuild_cache: bool = False
    record: RecordConfig = field(default_factory=RecordConfig)  # source=builtin
    libero: LiberoRecordConfig = field(default_factory=LiberoRecordConfig)  # source=libero_scripted
    simpler: SimplerRecordConfig = field(default_factory=SimplerRecordConfig)  # source=simpler_scripted
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    # More LeRobot folders whose episodes join this source's in one cache, read with the same keys:
    # another recording seed of the same suite (more data), or other suites' recordings (one
    # policy over several suites). Each must exist and match the source's frames, state, action,
    # rate and rendering mode; nothing is recorded into them.
    also: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.source = choice(DataSource, self.source, "data.source")
        self.cache_mode = choice(CacheMode, self.cache_mode, "data.cache_mode")
        self.convert = choice(Convert, self.convert, "data.convert")
        if self.convert != Convert.none and self.source != DataSource.lerobot:
            raise ConfigError(f"data.convert={self.convert} reads a LeRobot port: set data.source=lerobot")
        if self.also and self.source == DataSource.libero_hdf5:
            raise ConfigError("data.also adds LeRobot folders; a libero_hdf5 source's .hdf5 files go in its data.root")

    @property
    def cache_path(self) -> str:
        return self.cache or f"{self.root.rstrip('/')}.zarr"


def prepare_data(cfg: DataConfig) -> ZarrCache:
    """Return the zarr cache, recording demonstrations and building the cache when missing.

    A cache is used only if it was built from what `cfg` asks for: the settings that decide its
    content, and (when the source is there) the source's files; otherwise it is refused, or
    rebuilt with `data.rebuild_cache=true`. A lone cache (source deleted) is checked on settings."""
    cache = Path(cfg.cache_path)
    root = Path(cfg.root)
    for folder in {root.parent, cache.parent}:  # what a killed recording or cache build left behind
        recover_dir(folder)
    recorder = _recorder(cfg)
    if recorder and (root.exists() or not cache.exists()):  # a lone cache is checked below
        if not (root / "meta" / "info.json").exists():
            log.info("no demonstrations at %s: recording them with the scripted experts (%s)", root, cfg.source)
            recorder.record(recorder.cfg, root)
        recorder.check(recorder.cfg, root)
    check_also(cfg)
    wanted = source_record(cfg)
    build = not cache.exists()
    if not build:
        saved = cache_source(cache)
        if saved is not None:  # caches built before data.also hold their source alone
            saved.setdefault("also", [])
        diff = source_differences(saved, wanted)
        build = bool(diff) and cfg.rebuild_cache and root.exists()
        if diff and not build:
            how = (
                "set data.rebuild_cache=true to rebuild it from the source"
                if root.exists()
                else f"the source {root} is gone: delete the cache to record again, or ask for the settings it holds"
            )
            raise ValueError(
                f"the training cache {cache} was not built from the data asked for: {'; '.join(diff[:4])}. "
                f"Training on it would not train on what this run records; {how}, or set data.cache elsewhere"
            )
        if build:
            log.warning("data.rebuild_cache=true: rebuilding %s (%s)", cache, "; ".join(diff[:4]))
    if build:
        build_cache(read_source(cfg), cache, total_frames=source_frames(cfg), source=wanted)
    in_memory = {"auto": None, "memory": True, "disk": False}[cfg.cache_mode]
    opened = ZarrCache(cache, in_memory=in_memory)
    where = "memory" if opened.in_memory else "disk"
    log.info("training data: %s (%.1f GB of images), read from %s", cache, opened.image_bytes / 1e9, where)
    return opened


class _Recorder(NamedTuple):
    record: Callable  # (sub-config, root) -> root
    check: Callable  # (sub-config, root): refuses a recording made with other settings
    settings: Callable  # sub-config -> what decides the recording's content
    cfg: object  # the sub-config: data.record, data.libero or data.simpler


def _recorder(cfg: DataConfig) -> _Recorder | None:
    """How a source recorded here by scripted experts is recorded; None for the others."""
    if cfg.source == "builtin":
        from data import record as m

        return _Recorder(m.record_builtin, m.check_recording, m.recording_settings, cfg.record)
    if cfg.source == "libero_scripted":
        from data import record_libero as m

        return _Recorder(m.record_libero, m.check_recording, m.recording_settings, cfg.libero)
    if cfg.source == "simpler_scripted":
        from data import record_simpler as m

        return _Recorder(m.record_simpler, m.check_recording, m.recording_settings, cfg.simpler)
    return None


def source_record(cfg: DataConfig) -> dict:
    """What decides a cache's content: the source kind, its key maps, a recording's settings,
    and (when the source folder exists) a fingerprint of its files."""
    record: dict = {
        "source": str(cfg.source),
        "camera_keys": dict(sorted(cfg.camera_keys.items())),
        "state_key": cfg.state_key,
        "action_key": cfg.action_key,
    }
    if cfg.convert != Convert.none:  # absent when unset, so caches built before the option stay valid
        record["convert"] = str(cfg.convert)
    recorder = _recorder(cfg)
    if recorder:
        record["recording"] = recorder.settings(recorder.cfg)
    root = Path(cfg.root)
    if root.exists():
        patterns = ["*.hdf5"] if cfg.source == "libero_hdf5" else _LEROBOT_FILES
        record["files"] = files_fingerprint(root, patterns)
    record["also"] = [files_fingerprint(p, _LEROBOT_FILES) for p in cfg.also]
    return record


_LEROBOT_FILES = ["meta/**/*", "data/**/*", "videos/**/*"]


def check_also(cfg: DataConfig) -> None:
    """Refuse a `data.also` folder that is missing or holds other frames, state, action, control
    rate or rendering mode than the source: its episodes would join the cache as if they matched."""
    if not cfg.also:
        return
    main = _lerobot_meta(cfg.root, "data.root", cfg)
    for i, folder in enumerate(cfg.also):
        name = f"data.also[{i}]={folder}"
        other = _lerobot_meta(folder, name, cfg)
        for key in [*main, *(k for k in other if k not in main)]:  # a mode on one side only differs too
            if other.get(key) != main.get(key):
                raise ValueError(
                    f"{name}: {key} is {other.get(key) or 'absent'!r} there but {main.get(key) or 'absent'!r} in "
                    f"data.root={cfg.root}; only episodes of the same frames, state, action, rate and rendering "
                    "mode can be trained on together"
                )


def _lerobot_meta(root: str | Path, name: str, cfg: DataConfig) -> dict:
    """What must agree between folders trained on together: fps, the shapes of the features this
    run reads, and a scripted recording's rendering mode (its meta/recording.json)."""
    from data.record_scripted import RECORDING_FILE

    root = Path(root)
    if not (root / "meta" / "info.json").is_file():
        raise FileNotFoundError(
            f"{name}: no LeRobot dataset there (meta/info.json missing). Record it there first (for a "
            "scripted suite, run its preset with data.root set to that folder) or correct the path"
        )
    info = load_json(root / "meta" / "info.json")
    features = info.get("features") if isinstance(info, dict) else None
    if not isinstance(features, dict):
        raise ValueError(f"{name}: meta/info.json has no features map; is it a LeRobot dataset?")
    keys = _lerobot_keys(cfg)
    out: dict = {"fps": info.get("fps")}
    for key in [*keys.cameras.values(), keys.state, keys.action]:
        out[f"shape of {key}"] = (features.get(key) or {}).get("shape")
    recording = load_json(root / RECORDING_FILE) if (root / RECORDING_FILE).is_file() else {}
    if recording.get("render_mode"):
        out["render_mode"] = recording["render_mode"]
    return out


def source_frames(cfg: DataConfig) -> int | None:
    """Frames in a LeRobot source and its data.also folders (their meta/info.json), for the cache
    build's progress bar."""
    total = 0
    for root in [cfg.root, *cfg.also]:
        info = Path(root) / "meta" / "info.json"  # LIBERO's .hdf5 folders have none
        if not info.is_file():
            return None
        try:
            total += int(json.loads(info.read_text())["total_frames"])
        except (ValueError, KeyError, TypeError):
            return None  # the reader names what is wrong with the file
    return total


def read_source(cfg: DataConfig):
    from data.readers import LiberoHDF5Keys, read_lerobot, read_libero_hdf5

    if cfg.source != "libero_hdf5":
        keys = _lerobot_keys(cfg)
        episodes = itertools.chain.from_iterable(read_lerobot(root, keys) for root in [cfg.root, *cfg.also])
        return _bridge_port_episodes(episodes) if cfg.convert == Convert.bridge_port else episodes
    files = sorted(Path(cfg.root).glob("*.hdf5"))
    if not files:
        raise FileNotFoundError(f"data.root={cfg.root} holds no LIBERO .hdf5 files")
    if cfg.state_key:
        raise ValueError(
            "data.state_key applies to LeRobot sources; LIBERO .hdf5 files concatenate ee_states and gripper_states"
        )
    keys = LiberoHDF5Keys()
    keys = replace(keys, cameras=dict(cfg.camera_keys) or keys.cameras, action=cfg.action_key or keys.action)
    return itertools.chain.from_iterable(read_libero_hdf5(f, keys) for f in files)


def _lerobot_keys(cfg: DataConfig):
    from data.readers import BRIDGE_LEROBOT_KEYS, LIBERO_LEROBOT_KEYS, LeRobotKeys

    keys = {"libero_scripted": LIBERO_LEROBOT_KEYS, "simpler_scripted": BRIDGE_LEROBOT_KEYS}.get(
        cfg.source, LeRobotKeys()
    )
    return replace(
        keys,
        cameras=dict(cfg.camera_keys) or keys.cameras,
        state=cfg.state_key or keys.state,
        action=cfg.action_key or keys.action,
    )


def _bridge_port_episodes(episodes):
    from envs.simpler.conventions import from_bridge_port

    for ep in episodes:
        state, actions = from_bridge_port(ep.state, ep.actions, ep.source)
        yield replace(ep, state=state, actions=actions).validate()


def embodiment_of(cfg: DataConfig) -> Embodiment:
    """What the source's data was recorded on: the simulated suites' own robots, or a LeRobot
    dataset's meta/info.json (robot_type, fps, the state and action features' names; its action
    convention is not recorded there: set policy.embodiment.action_space). Unknown fields stay empty."""
    if cfg.source == "builtin":
        from data.record import FPS
        from envs.tabletop.env import ACTION_NAMES, STATE_NAMES

        return Embodiment("tabletop", list(STATE_NAMES), list(ACTION_NAMES), "delta_eef_libero", float(FPS))
    if cfg.source in ("libero_scripted", "libero_hdf5"):
        from data.record_libero import FPS
        from envs.libero.conventions import ACTION_NAMES, STATE_NAMES

        return Embodiment("libero", list(STATE_NAMES), list(ACTION_NAMES), "delta_eef_libero", float(FPS))
    if cfg.source == "simpler_scripted" or cfg.convert == Convert.bridge_port:
        from envs.simpler.conventions import ACTION_NAMES, FPS, STATE_NAMES

        return Embodiment("widowx", list(STATE_NAMES), list(ACTION_NAMES), "delta_eef_widowx", float(FPS))
    info_path = Path(cfg.root) / "meta" / "info.json"
    if not info_path.is_file():  # a lone cache: the source that would say is gone
        return Embodiment()
    from data.readers import LeRobotKeys

    info = json.loads(info_path.read_text())  # the reader has checked its types
    keys = LeRobotKeys()
    features = info.get("features", {})

    def names(key: str) -> list[str]:
        found = features.get(key, {}).get("names")
        if isinstance(found, dict) and len(found) == 1:  # lerobot's {"motors": [...]} form
            found = next(iter(found.values()))
        return [str(n) for n in found] if isinstance(found, list) else []

    return Embodiment(
        robot=str(info.get("robot_type") or ""),
        state_names=names(cfg.state_key or keys.state),
        action_names=names(cfg.action_key or keys.action),
        fps=float(info.get("fps") or 0.0),
    )
