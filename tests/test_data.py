import json
import shutil

import h5py
import numpy as np
import pytest
import torch
from helpers import tiny_policy_config, tiny_stats

from data.cache import ZarrCache, build_cache
from data.dataset import ChunkDataset, Collate, LoaderConfig, ResumableBatches
from data.episode import Episode
from data.readers import BRIDGE_LEROBOT_KEYS, LIBERO_LEROBOT_KEYS, LeRobotKeys, read_lerobot, read_libero_hdf5
from data.record import RECORDING_FILE, RecordConfig, check_recording, record_builtin
from vla.model import VLAModel


def episode(t=6, cams=("agentview", "wrist"), task="lift", seed=0):
    rng = np.random.default_rng(seed)
    return Episode(
        images={c: rng.integers(0, 255, (t, 16, 16, 3), dtype=np.uint8) for c in cams},
        state=rng.normal(size=(t, 8)).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(t, 7)).astype(np.float32),
        task=task,
        source=f"test episode {seed}",
    )


def test_recording_reads_back_with_lerobot(tmp_path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    root = record_builtin(
        RecordConfig(tasks=["lift_red"], episodes_per_task=1, image_size=32, workers=1), tmp_path / "ds"
    )
    ds = LeRobotDataset("local/test", root=root)
    assert ds.num_episodes == 1 and ds[0]["task"] == "pick up the red cube"
    eps = list(read_lerobot(root))
    assert len(eps) == 1 and eps[0].images["wrist"].shape[1:] == (32, 32, 3)
    assert eps[0].perturbed is not None and eps[0].perturbed.shape == (len(eps[0].actions),)
    assert not list(tmp_path.glob(".ds.recording-*"))  # no half-written leftovers
    cfg = RecordConfig(tasks=["lift_red"], episodes_per_task=1, image_size=32, workers=1)
    with pytest.raises(FileExistsError):
        record_builtin(cfg, root)
    check_recording(RecordConfig(tasks=["lift_red"], episodes_per_task=1, image_size=32, workers=2), root)
    with pytest.raises(ValueError, match=r"noise: recorded 0.1, asked 0.3.*remove"):
        check_recording(RecordConfig(tasks=["lift_red"], episodes_per_task=1, image_size=32, noise=0.3), root)
    (root / RECORDING_FILE).write_text("{not json")
    with pytest.raises(ValueError, match=r"recording.json is not valid JSON"):
        check_recording(cfg, root)
    (root / RECORDING_FILE).unlink()  # a recording from before the settings were saved
    with pytest.raises(ValueError, match="version: recorded 1"):
        check_recording(cfg, root)
    with pytest.raises(KeyError, match="no keys"):
        list(read_lerobot(root, LeRobotKeys(cameras={"agentview": "observation.images.image"})))


def write_libero_hdf5(path, demos=2, t=5, instruction="put the bowl on the plate", corrupt=None):
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["problem_info"] = json.dumps({"language_instruction": instruction, "problem_name": "x"})
        for i in range(demos):
            g = data.create_group(f"demo_{i}")
            obs = g.create_group("obs")
            obs["agentview_rgb"] = rng.integers(0, 255, (t, 16, 16, 3), dtype=np.uint8)
            obs["eye_in_hand_rgb"] = rng.integers(0, 255, (t, 16, 16, 3), dtype=np.uint8)
            obs["ee_states"] = rng.normal(size=(t, 6))
            obs["gripper_states"] = rng.normal(size=(t, 2))
            actions = rng.uniform(-1, 1, (t, 7))
            if corrupt == "nan" and i == 1:
                actions[2, 3] = np.nan
            g["actions"] = actions if corrupt != "short" else actions[:-1]
            if corrupt == "missing" and i == 1:
                del obs["eye_in_hand_rgb"]


def test_data_also_trains_on_several_recordings_in_one_cache_and_refuses_what_differs(tmp_path):
    from dataclasses import replace

    from data.source import DataConfig, prepare_data

    rec = RecordConfig(tasks=["lift_red"], episodes_per_task=2, image_size=32, workers=1)
    cfg = DataConfig(source="builtin", root=str(tmp_path / "seed0"), record=rec)
    alone = prepare_data(cfg)  # recorded here
    other = record_builtin(replace(rec, seed=1), tmp_path / "seed1")
    both = replace(cfg, cache=str(tmp_path / "both.zarr"), also=[str(other)])
    cache = prepare_data(both)
    extra = list(read_lerobot(other))
    assert cache.num_episodes == alone.num_episodes + len(extra) and len(extra) > 0
    # The source's episodes first, then the folder's, frame for frame.
    np.testing.assert_array_equal(cache.action[: alone.num_frames], alone.action)
    np.testing.assert_array_equal(cache.action[alone.num_frames :], np.concatenate([e.actions for e in extra]))
    np.testing.assert_array_equal(cache.images["wrist"][alone.num_frames], extra[0].images["wrist"][0])
    assert len(cache.source["also"]) == 1
    prepare_data(both)  # the same request reuses it
    with pytest.raises(ValueError, match=r"not built from the data asked for: also \(cache \['\d+ files"):
        prepare_data(replace(both, also=[]))  # the cache holds more than asked
    with pytest.raises(ValueError, match=r"not built from the data asked for: also"):
        prepare_data(replace(cfg, cache=str(tmp_path / "seed0.zarr"), also=[str(other)]))  # and less

    with pytest.raises(FileNotFoundError, match=r"data.also\[0\]=.*nowhere: no LeRobot dataset there"):
        prepare_data(replace(both, also=[str(tmp_path / "nowhere")]))
    small = record_builtin(replace(rec, image_size=16), tmp_path / "small")
    with pytest.raises(
        ValueError, match=r"data.also\[1\]=.*small: shape of observation.images.agentview is \[16, 16, 3\]"
    ):
        prepare_data(replace(both, cache=str(tmp_path / "three.zarr"), also=[str(other), str(small)]))
    libero_look = tmp_path / "libero_look"  # a recording rendered otherwise (the source names no mode)
    shutil.copytree(other, libero_look)
    settings = json.loads((libero_look / RECORDING_FILE).read_text())
    (libero_look / RECORDING_FILE).write_text(json.dumps({**settings, "render_mode": "libero"}))
    with pytest.raises(ValueError, match=r"data.also\[0\]=.*libero_look: render_mode is 'libero' there but 'absent'"):
        prepare_data(replace(both, also=[str(libero_look)]))
    with pytest.raises(ValueError, match="data.also adds LeRobot folders"):
        DataConfig(source="libero_hdf5", root=str(tmp_path), also=[str(other)])


def test_libero_hdf5_reader_and_cache(tmp_path):
    write_libero_hdf5(tmp_path / "task.hdf5")
    eps = list(read_libero_hdf5(tmp_path / "task.hdf5"))
    assert len(eps) == 2 and eps[0].state.shape == (5, 8) and eps[0].task == "put the bowl on the plate"
    build_cache(eps, tmp_path / "c.zarr")
    cache = ZarrCache(tmp_path / "c.zarr")
    assert cache.num_frames == 10 and cache.tasks == ["put the bowl on the plate"]
    for key in ("q01", "q99", "min", "max", "mean", "std"):
        assert len(cache.stats["action"][key]) == 7 and len(cache.stats["state"][key]) == 8


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        ("nan", "demo_1: actions contain NaN"),
        ("missing", "demo_1: missing key 'obs/eye_in_hand_rgb'"),
        ("short", "state has 5 frames but actions have 4"),
    ],
)
def test_bad_libero_files_name_file_episode_and_key(tmp_path, corrupt, message):
    write_libero_hdf5(tmp_path / "bad.hdf5", corrupt=corrupt)
    with pytest.raises((ValueError, KeyError), match=message):
        list(read_libero_hdf5(tmp_path / "bad.hdf5"))


def test_bad_episodes_rejected_before_training(tmp_path):
    with pytest.raises(ValueError, match="empty episode"):
        episode(t=0).validate()
    ep = episode()
    ep.images["wrist"] = ep.images["wrist"][:3]
    with pytest.raises(ValueError, match="camera 'wrist' has 3 frames"):
        ep.validate()
    with pytest.raises(FileNotFoundError):
        list(read_libero_hdf5(tmp_path / "absent.hdf5"))
    with pytest.raises(ValueError, match="no episodes"):
        build_cache(iter([]), tmp_path / "empty.zarr")
    assert not (tmp_path / "empty.zarr").exists()


def test_chunks_pad_at_episode_end_and_augment(tmp_path):
    build_cache([episode(t=6, seed=0), episode(t=4, seed=1, task="place")], tmp_path / "c.zarr")
    ds = ChunkDataset(ZarrCache(tmp_path / "c.zarr"), chunk_size=4, cameras=["agentview", "wrist"])
    last = ds[4]  # frame 4 of the first episode: steps 4, 5 real, 6, 7 repeat step 5, trained on
    assert last["action_is_pad"].tolist() == [False, False, False, False]
    np.testing.assert_array_equal(last["actions"][2], last["actions"][1])
    np.testing.assert_array_equal(last["actions"][3], last["actions"][1])
    flagged = ChunkDataset(ZarrCache(tmp_path / "c.zarr"), 4, ["agentview", "wrist"], supervise_past_end=False)
    assert flagged[4]["action_is_pad"].tolist() == [False, False, True, True]
    assert ds[6]["instruction"] == "place" and not ds[6]["action_is_pad"].any()
    cfg = tiny_policy_config(cameras=["agentview", "wrist"], state_dim=8, action_dim=7)
    processor = VLAModel(cfg, tiny_stats(action_dim=7, state_dim=8)).processor
    batch = Collate(LoaderConfig(), processor)([ds[(i, 7)] for i in range(4)])
    again = Collate(LoaderConfig(), processor)([ds[(i, 7)] for i in range(4)])
    pixels = batch["vlm"]["pixel_values"]  # the VLM processor's output, made in the loader
    assert pixels.shape == (8, 3, 32, 32) and batch["state"].shape == (4, 8) and batch["vlm"]["text_mask"].any()
    assert torch.equal(pixels, again["vlm"]["pixel_values"])  # seeded augmentation
    centre = Collate(LoaderConfig(), processor, train=False)([ds[(i, 7)] for i in range(4)])
    assert not torch.equal(pixels, centre["vlm"]["pixel_values"])
    with pytest.raises(KeyError, match="no cameras"):
        ChunkDataset(ZarrCache(tmp_path / "c.zarr"), 4, ["side"])


def test_chunks_stop_supervision_after_a_perturbed_step(tmp_path):
    """Labels after a faulted executed action show a recovery from a push the policy at t
    cannot foresee: step k of the chunk at t is unsupervised once any of t .. t + k - 1 was
    perturbed; step 0 always stays (the recovery label itself)."""
    ep = episode(t=10)
    ep.perturbed = np.zeros(10, dtype=bool)
    ep.perturbed[[3, 4]] = True
    build_cache([ep, episode(t=5, seed=1)], tmp_path / "c.zarr")
    cache = ZarrCache(tmp_path / "c.zarr")
    assert cache.perturbed.tolist() == [False] * 3 + [True] * 2 + [False] * 10  # absent flags: False
    ds = ChunkDataset(cache, chunk_size=4, cameras=["agentview"])
    pads = [ds[i]["action_is_pad"].tolist() for i in range(7)]
    assert pads[0] == [False, False, False, False]  # frames 0..3: the fault at 3 is executed last
    assert pads[1] == [False, False, False, True]
    assert pads[3] == [False, True, True, True]  # at a perturbed frame: only its own label
    assert pads[4] == [False, True, True, True]
    assert pads[5] == [False, False, False, False]
    assert not ds[8]["action_is_pad"].any()  # past the end: the last action, trained on
    ep.perturbed[9] = True  # a fault at the last frame cuts the repeats after it like any step
    build_cache([ep], tmp_path / "last.zarr")
    last = ChunkDataset(ZarrCache(tmp_path / "last.zarr"), 4, ["agentview"])
    assert last[8]["action_is_pad"].tolist() == [False, False, True, True]
    assert last[9]["action_is_pad"].tolist() == [False, True, True, True]
    bad = episode(t=4)
    for flags in (np.zeros(3, dtype=bool), np.full(4, np.nan)):  # wrong length; NaN is not a flag
        bad.perturbed = flags
        with pytest.raises(ValueError, match="perturbed flags must be bool"):
            bad.validate()


def test_resumable_batches_continue_the_same_stream():
    full = ResumableBatches(10, 3, seed=1)
    it = iter(full)
    first = [next(it) for _ in range(7)]
    it2 = iter(ResumableBatches(10, 3, seed=1, start=4))
    assert [next(it2) for _ in range(3)] == first[4:]


def _write_port(
    root,
    cams: dict[str, str],
    state_dim: int,
    episodes=2,
    t=4,
    state_key="observation.state",
    action_key="action",
    videos=False,
    size=16,
):
    """A LeRobotDataset v3 in a public port's schema, written with lerobot's API; `t` is one
    length for every episode or a list of lengths."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    img = {"dtype": "video" if videos else "image", "shape": (size, size, 3), "names": ["height", "width", "channels"]}
    features = {key: dict(img) for key in cams.values()}
    features[state_key] = {"dtype": "float32", "shape": (state_dim,), "names": None}
    features[action_key] = {"dtype": "float32", "shape": (7,), "names": None}
    ds = LeRobotDataset.create("local/port", 10, features, root=root, use_videos=videos)
    rng = np.random.default_rng(0)
    for length in t if isinstance(t, list) else [t] * episodes:
        for _ in range(length):
            # Smooth frames (4x4 blocks): video coding keeps them close to the input.
            frame = {
                key: rng.integers(0, 255, (size // 4, size // 4, 3), dtype=np.uint8).repeat(4, 0).repeat(4, 1)
                for key in cams.values()
            }
            frame[state_key] = rng.normal(size=state_dim).astype(np.float32)
            frame[action_key] = rng.uniform(-1, 1, 7).astype(np.float32)
            frame["task"] = "put the carrot on the plate"
            ds.add_frame(frame)
        ds.save_episode()
    ds.finalize()
    return root


@pytest.mark.parametrize(
    ("keys", "state_dim"),
    [(LIBERO_LEROBOT_KEYS, 8), (BRIDGE_LEROBOT_KEYS, 8)],
    ids=["libero_port", "bridge_port"],
)
def test_public_lerobot_port_schemas(tmp_path, keys, state_dim):
    root = _write_port(tmp_path / "port", keys.cameras, state_dim)
    eps = list(read_lerobot(root, keys))
    assert len(eps) == 2 and set(eps[0].images) == set(keys.cameras)
    assert eps[0].state.shape == (4, state_dim) and eps[0].actions.shape == (4, 7)
    assert eps[0].task == "put the carrot on the plate"
    build_cache(eps, tmp_path / "c.zarr")
    assert ZarrCache(tmp_path / "c.zarr").cameras == sorted(keys.cameras)


def _euler_xyz_matrix(roll, pitch, yaw):
    """Bridge's convention written out: R = Rz(yaw) Ry(pitch) Rx(roll)."""
    c, s = np.cos, np.sin
    rx = np.array([[1, 0, 0], [0, c(roll), -s(roll)], [0, s(roll), c(roll)]])
    ry = np.array([[c(pitch), 0, s(pitch)], [0, 1, 0], [-s(pitch), 0, c(pitch)]])
    rz = np.array([[c(yaw), -s(yaw), 0], [s(yaw), c(yaw), 0], [0, 0, 1]])
    return rz @ ry @ rx


def test_a_bridge_port_reads_in_simpler_bridge_conventions(tmp_path):
    """data.convert=bridge_port: the port's (x, y, z, roll, pitch, yaw, pad, gripper) state becomes
    simpler_bridge's (position, rotation vector from pointing down, opening), its 0/1 gripper
    command -1/+1, and the run's embodiment is the suite's."""
    from data.source import DataConfig, embodiment_of, read_source
    from envs.rotations import mat_to_rotvec
    from envs.simpler.conventions import ACTION_NAMES, STATE_NAMES
    from vla.configs import ConfigError

    root = _write_port(tmp_path / "port", BRIDGE_LEROBOT_KEYS.cameras, 8, t=[3, 5])
    raw = list(read_lerobot(root, BRIDGE_LEROBOT_KEYS))
    cfg = DataConfig(
        source="lerobot", root=str(root), camera_keys={"image": "observation.images.image_0"}, convert="bridge_port"
    )
    ours = list(read_source(cfg))
    assert [len(e.actions) for e in ours] == [3, 5] and set(ours[0].images) == {"image"}
    for r, e in zip(raw, ours, strict=True):
        assert e.state.shape == (len(r.state), 7) and e.actions.shape == (len(r.state), 7)
        np.testing.assert_array_equal(e.state[:, :3], r.state[:, :3])
        np.testing.assert_array_equal(e.state[:, 6], r.state[:, 7])  # the pad (6) is dropped
        for t in range(len(r.state)):
            want = mat_to_rotvec(_euler_xyz_matrix(*r.state[t, 3:6].astype(np.float64)))
            np.testing.assert_allclose(e.state[t, 3:6], want, atol=1e-5)
        np.testing.assert_array_equal(e.actions[:, :6], r.actions[:, :6])
        np.testing.assert_allclose(e.actions[:, 6], 2 * r.actions[:, 6] - 1, atol=1e-6)
        np.testing.assert_array_equal(e.images["image"], r.images["image"])
    found = embodiment_of(cfg)
    assert (found.robot, found.action_space, found.fps) == ("widowx", "delta_eef_widowx", 5.0)
    assert found.state_names == STATE_NAMES and found.action_names == ACTION_NAMES

    seven = _write_port(tmp_path / "seven", BRIDGE_LEROBOT_KEYS.cameras, 7)  # not a Bridge port
    cfg.root = str(seven)
    with pytest.raises(ValueError, match=r"\(T, 8\) states .*data.convert=bridge_port"):
        list(read_source(cfg))
    with pytest.raises(ConfigError, match="data.source=lerobot"):
        DataConfig(source="builtin", convert="bridge_port")
    with pytest.raises(ConfigError, match="data.convert"):
        DataConfig(source="lerobot", convert="bridge")


def test_the_bridge_preset_trains_on_a_port_for_simpler_bridge(tmp_path):
    """experiment=bridge with only the paths given (and sizes cut for a test): the checkpoint it
    writes is one that vla-eval accepts for simpler_bridge."""
    from helpers import composed

    from envs.evaluate import EvalConfig, plan_episodes
    from train.hydra_app import to_train_config
    from train.loop import train
    from vla.policy import VLAPolicy

    root = _write_port(tmp_path / "port", BRIDGE_LEROBOT_KEYS.cameras, 8, t=[6, 6], size=32)
    small = ["policy.backbone.image_size=32", "policy.backbone.layers=1", "policy.backbone.vision_layers=1"]
    small += ["policy.backbone.lora_rank=0", "policy.decoder.layers=1", "policy.chunk_size=4", "optim.steps=2"]
    small += ["optim.warmup_steps=1", "data.loader.batch_size=4", "data.loader.workers=0", "eval_at_end=false"]
    paths = [f"data.root={root}", "policy.backbone.source=tiny", f"run_dir={tmp_path}/run"]
    cfg = to_train_config(composed(["experiment=bridge", *paths, *small]))
    out = train(cfg)
    policy = VLAPolicy.load(out["checkpoint"])
    emb = policy.cfg.embodiment
    assert (emb.robot, emb.action_space) == ("widowx", "delta_eef_widowx") and policy.cfg.cameras == ["image"]
    tasks, states, _ = plan_episodes(EvalConfig(suite="simpler_bridge", episodes_per_task=2), policy.cfg)
    assert len(tasks) == 4 and states == [0, 1]  # the protocol's first two layouts


@pytest.mark.parametrize("videos", [False, True], ids=["image_storage", "video_storage"])
def test_lerobot_reader_equals_lerobots_own_frame_access(tmp_path, videos):
    """read_lerobot decodes a whole episode per call; every frame, state and action must be what
    lerobot's own per-frame access returns, across episodes of different lengths."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    keys = LIBERO_LEROBOT_KEYS
    root = _write_port(tmp_path / "port", keys.cameras, 8, t=[3, 6, 4], videos=videos, size=32)
    episodes = list(read_lerobot(root, keys))
    assert [len(e.actions) for e in episodes] == [3, 6, 4]
    ds = LeRobotDataset("local/port", root=root, return_uint8=True)
    frames = [ds[i] for i in range(ds.num_frames)]
    for cam, src in keys.cameras.items():
        theirs = np.stack([np.asarray(f[src]) for f in frames])
        if theirs.dtype != np.uint8:  # image storage: lerobot gives float in [0, 1]
            theirs = (theirs * 255).round().astype(np.uint8)
        ours = np.concatenate([e.images[cam] for e in episodes])
        np.testing.assert_array_equal(ours, theirs.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(
        np.concatenate([e.state for e in episodes]), np.stack([f[keys.state] for f in frames])
    )
    np.testing.assert_array_equal(
        np.concatenate([e.actions for e in episodes]), np.stack([f[keys.action] for f in frames])
    )
    assert {e.task for e in episodes} == {"put the carrot on the plate"}


def test_record_config_refuses_bad_perturbations():
    with pytest.raises(ValueError, match="record.faults"):
        RecordConfig(faults=1.5)
    with pytest.raises(ValueError, match="record.noise"):
        RecordConfig(noise=-0.1)


def test_on_disk_cache_reads_the_same_frames_as_memory(tmp_path):
    from data.cache import RawFrames

    eps = [episode(t=t, seed=s) for s, t in enumerate((5, 70, 9))]  # 84 frames: two chunks, the second partial
    build_cache(eps, tmp_path / "c.zarr")
    disk, memory = ZarrCache(tmp_path / "c.zarr", in_memory=False), ZarrCache(tmp_path / "c.zarr", in_memory=True)
    assert not disk.in_memory and memory.in_memory and ZarrCache(tmp_path / "c.zarr").in_memory  # auto: small
    for cam in disk.cameras:
        assert isinstance(disk.images[cam], RawFrames) and disk.images[cam].shape == memory.images[cam].shape
        for i in (0, 63, 64, 83):
            np.testing.assert_array_equal(disk.images[cam][i], memory.images[cam][i])
    np.testing.assert_array_equal(disk.images["wrist"][80], eps[2].images["wrist"][80 - 75])
    a, b = ChunkDataset(disk, 4, ["agentview", "wrist"]), ChunkDataset(memory, 4, ["agentview", "wrist"])
    for i in (3, 40, 83):
        for key in ("images", "state", "actions", "action_is_pad"):
            np.testing.assert_array_equal(a[i][key], b[i][key])
    with pytest.raises(IndexError, match="frame 84 out of range"):
        disk.images["agentview"][84]
    chunk = tmp_path / "c.zarr" / "images" / "agentview" / "c" / "1" / "0" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:100])
    with pytest.raises(ValueError, match="truncated .*rebuild the cache"):
        disk.images["agentview"][70]


def test_libero_hdf5_frames_turn_to_the_ports_orientation(tmp_path):
    write_libero_hdf5(tmp_path / "task.hdf5", demos=1)
    with h5py.File(tmp_path / "task.hdf5") as f:
        raw = f["data/demo_0/obs/agentview_rgb"][:]
    (ep,) = read_libero_hdf5(tmp_path / "task.hdf5")
    np.testing.assert_array_equal(ep.images["agentview"], raw[:, ::-1, ::-1])


def test_key_maps_are_set_from_the_command_line(tmp_path):
    """openpi's LIBERO port names its keys `image`, `wrist_image`, `state`, `actions`."""
    from helpers import composed

    from data.source import DataConfig, read_source
    from train.hydra_app import to_train_config

    cams = {"agentview": "image", "wrist": "wrist_image"}
    root = _write_port(tmp_path / "port", cams, 8, state_key="state", action_key="actions")
    cfg = to_train_config(
        composed(
            [
                "data.source=lerobot",
                f"data.root={root}",
                "data.camera_keys={agentview: image, wrist: wrist_image}",  # no '+' needed
                "data.state_key=state",
                "data.action_key=actions",
            ]
        )
    )
    eps = list(read_source(cfg.data))
    assert len(eps) == 2 and eps[0].state.shape == (4, 8) and eps[0].actions.shape == (4, 7)
    with pytest.raises(KeyError, match=r"no keys \['observation.state'\].*data.state_key="):
        list(read_source(DataConfig(source="lerobot", root=str(root), camera_keys=cams, action_key="actions")))


def test_goal_targets_are_the_next_gripper_events_of_the_same_episode():
    from data.dataset import goal_targets

    pos = np.arange(30, dtype=np.float32).reshape(10, 3)  # frame t at (3t, 3t + 1, 3t + 2)
    # episode 0: frames 0-6, closes at 2, opens at 5; episode 1: frames 7-9, closed from its start
    grip = np.array([-1, -1, 1, 1, 1, -1, -1, 1, 1, -1], np.float32)
    goal, valid = goal_targets(pos, grip, np.array([7, 10]), events=2)
    assert valid[0].tolist() == [True, True] and goal[0].tolist() == [[6.0] * 3, [15.0] * 3]
    assert valid[2].tolist() == [True, False] and goal[2, 0].tolist() == [9.0] * 3  # at an event: the next one
    assert not valid[5:7].any()  # after the last event of episode 0
    # episode 1's first frame is no event (the closed gripper at 6 -> 7 crosses episodes)
    assert valid[7].tolist() == [True, False] and goal[7, 0].tolist() == [6.0] * 3
    assert not valid[9].any() and goal.dtype == np.float32
