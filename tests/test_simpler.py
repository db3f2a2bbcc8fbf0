"""SimplerEnv's Bridge suite (`simpler_bridge`): the asset overlay and its stand-ins, the
protocol's layouts, metrics and action convention against ManiSkill's own definitions, and the
policy driving a real episode through `evaluate`. The simulator tests are skipped, with the
reason, only where ManiSkill, the offline assets or a Vulkan driver are absent."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from envs.simpler import assets
from envs.simpler.conventions import ACTION_NAMES, LAYOUTS, STATE_NAMES, TASKS, spaces


def _fake_source(root: Path) -> Path:
    """A ManiSkill asset folder with the offline subset's gaps: no stages, no eggplant visual."""
    eggplant = root / assets.BRIDGE / "custom/models/eggplant"
    eggplant.mkdir(parents=True)
    (eggplant / "collision.obj").write_text(
        "o eggplant\nv 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 0 1\nf 1/1 2/2 3/3\n"
    )
    (root / assets.BRIDGE / "real_inpainting").mkdir(parents=True)
    (root / assets.BRIDGE / "real_inpainting/bridge_real_eval_1.png").write_bytes(b"png")
    (root / assets.WIDOWX).mkdir(parents=True)
    (root / assets.WIDOWX / "wx250s.urdf").write_text("<robot/>")
    return root


def test_overlay_links_the_source_adds_standins_and_never_writes_the_source(tmp_path):
    source = _fake_source(tmp_path / "src")
    before = sorted(p.relative_to(source) for p in source.rglob("*"))
    folder, standins = assets.prepare(source, cache=tmp_path / "cache")
    assert sorted(p.relative_to(source) for p in source.rglob("*")) == before
    assert sorted(Path(s).name for s in standins) == ["bridge_table_1_v1.glb", "bridge_table_1_v2.glb", "textured.dae"]
    linked = folder / assets.WIDOWX / "wx250s.urdf"
    assert linked.is_symlink() and linked.resolve() == (source / assets.WIDOWX / "wx250s.urdf").resolve()
    visual = (folder / assets.BRIDGE / "custom/models/eggplant/textured.obj").read_text()
    assert visual.startswith("mtllib textured.mtl") and "usemtl eggplant" in visual and "vt 1 0" in visual
    # A second call reuses the finished overlay; a complete source is used as it is.
    assert assets.prepare(source, cache=tmp_path / "cache") == (folder, standins)
    for name in assets.STAGES:
        (source / assets.BRIDGE / "stages").mkdir(exist_ok=True)
        (source / assets.BRIDGE / "stages" / name).write_bytes(b"glb")
    (source / assets.BRIDGE / "custom/models/eggplant/textured.dae").write_text("<dae/>")
    assert assets.prepare(source, cache=tmp_path / "cache") == (source.resolve(), [])


def test_standin_table_top_is_at_the_table_height_in_the_world(tmp_path):
    """The stage file is placed by ManiSkill with q = (0.707, 0.707, 0, 0) at -SCENE_OFFSET:
    the stand-in's top must land at the table height, under every object of every layout."""
    import trimesh

    path = tmp_path / "stage.glb"
    assets._write_stage(path, 0.870)
    mesh = trimesh.load(path, force="mesh")
    v = mesh.vertices  # file frame: world = (x, -z, y) - SCENE_OFFSET
    world = np.stack([v[:, 0], -v[:, 2], v[:, 1]], axis=1) - np.array(assets.SCENE_OFFSET)
    assert world[:, 2].max() == pytest.approx(0.870, abs=1e-6)
    assert world[:, 0].min() < -0.35 and world[:, 0].max() < 0.127 - 0.05  # stops short of the robot's base
    assert world[:, 1].min() < -0.15 and world[:, 1].max() > 0.35


def test_a_bad_asset_folder_says_what_is_missing_and_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv("MS_ASSET_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match=r"simpler.asset_dir=.*lacks .*download_asset bridge_v2_real2sim"):
        assets.find_source(tmp_path)
    monkeypatch.setenv("MS_ASSET_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="MS_ASSET_DIR="):
        assets.find_source()


def test_no_vulkan_driver_is_an_error_that_says_what_to_do(monkeypatch):
    from envs.simpler import vulkan

    monkeypatch.setattr(vulkan, "_CHOSEN", None)
    monkeypatch.delenv("VK_ICD_FILENAMES", raising=False)
    monkeypatch.setattr(vulkan, "renders", lambda env=None: (False, "RuntimeError: failed to find a rendering device"))
    monkeypatch.setattr(vulkan, "lavapipe_icd", lambda: None)
    with pytest.raises(RuntimeError, match=r"failed to find a rendering device.*python -m envs.simpler.vulkan"):
        vulkan.configure()
    monkeypatch.setenv("VK_ICD_FILENAMES", "/nowhere/icd.json")
    with pytest.raises(RuntimeError, match="VK_ICD_FILENAMES=/nowhere/icd.json does not render"):
        vulkan.configure()


def test_conventions_match_the_spaces():
    observation, action = spaces(64)
    assert observation["image"].shape == (64, 64, 3) and observation["state"].shape == (len(STATE_NAMES),)
    assert action.shape == (len(ACTION_NAMES),) and action.high[-1] == 1.0
    assert [t.max_steps for t in TASKS.values()] == [60, 60, 60, 120] and LAYOUTS == 24


# ---------------------------------------------------------------------------------- simulator


def _simulator_or_skip():
    import importlib.util

    if importlib.util.find_spec("mani_skill") is None:  # never imported here: it reads MS_ASSET_DIR then
        pytest.skip("ManiSkill 3 not installed (the project's simpler extra)")
    if assets.shared_subset() is None and not os.environ.get("MS_ASSET_DIR"):
        pytest.skip("no SimplerEnv Bridge assets (shared/assets/simplerenv-bridge or MS_ASSET_DIR)")
    from envs.simpler.vulkan import configure

    try:
        configure()
    except RuntimeError as e:
        pytest.skip(f"no Vulkan driver renders: {e}")


@pytest.fixture(scope="module", params=list(TASKS))
def bridge_env(request):
    _simulator_or_skip()
    from envs.simpler.env import SimplerBridgeEnv

    env = SimplerBridgeEnv(request.param, image_size=32)
    yield env
    env.close()


def test_each_task_resets_to_the_protocols_layouts_and_steps(bridge_env):
    import torch

    env, base = bridge_env, bridge_env._env.unwrapped
    assert env.instruction == base.get_language_instruction()[0]  # recordings write it without a scene
    n_quat = len(base.quat_configs)
    layout = 5  # ManiSkill's episode_id: position pair id // n_quat, orientation id % n_quat
    obs, info = env.reset(seed=0, options={"init_state": layout})
    assert obs["image"].shape == (32, 32, 3) and obs["image"].dtype == np.uint8 and obs["image"].std() > 5
    assert (
        obs["state"].shape == (7,) and np.isfinite(obs["state"]).all() and info == {"success": False, "partial": False}
    )
    source = base.objs[base.source_obj_name].pose.p[0]
    expected = base.xyz_configs[layout // n_quat, 0]
    assert torch.linalg.norm(source[:2] - expected[:2]) < 0.02  # settled where the protocol puts it
    # A fresh placement is none of the protocol's layouts and is a function of its seed.
    env.reset(seed=7)
    fresh = base.objs[base.source_obj_name].pose.p[0].clone()
    assert torch.linalg.norm(base.xyz_configs[:, 0, :2] - fresh[:2], dim=1).min() > 1e-3
    if not TASKS[env.task].move_target:  # the eggplant's target region stays in the basket
        target = base.objs[base.target_obj_name].pose.p[0]
        assert torch.linalg.norm(target[:2] - base.xyz_configs[0, 1, :2]) < 0.01
    env.reset(seed=7)
    assert torch.allclose(base.objs[base.source_obj_name].pose.p[0], fresh, atol=1e-4)
    with pytest.raises(IndexError, match="out of range 0..23"):
        env.reset(seed=0, options={"init_state": LAYOUTS})


def test_gripper_polarity_and_translation_units_are_maniskills(bridge_env):
    env = bridge_env
    obs, _ = env.reset(seed=0, options={"init_state": 0})
    assert obs["state"][-1] == pytest.approx(1.0, abs=0.1)  # the protocol starts with the gripper open
    z0 = obs["state"][2]
    for _ in range(3):
        obs, *_ = env.step(np.array([0, 0, 0.01, 0, 0, 0, -1.0]))  # 1 cm up per step, close
    assert obs["state"][-1] < 0.5  # -1 closes
    assert obs["state"][2] - z0 == pytest.approx(0.03, abs=0.01)  # metres in the base frame
    with pytest.raises(ValueError, match="7 finite numbers"):
        env.step(np.array([0, 0, np.nan, 0, 0, 0, 1.0]))


def test_an_episode_runs_to_its_step_limit_and_reports_both_metrics(tmp_path):
    """The policy's adapter end to end: `evaluate` on the protocol's layout 0 of the carrot task,
    with a tiny untrained WidowX policy: the episode runs its 60 steps, success and partial are
    reported apart, and the video comes from a viewing render."""
    _simulator_or_skip()
    from helpers import tiny_policy_config, tiny_stats

    from envs.evaluate import EvalConfig, evaluate
    from envs.tables import format_table
    from vla.embodiment import Embodiment
    from vla.model import VLAModel
    from vla.policy import VLAPolicy

    cfg = tiny_policy_config(
        action_dim=7,
        state_dim=7,
        cameras=["image"],
        camera_shapes={"image": [32, 32]},
        embodiment=Embodiment("widowx", STATE_NAMES, ACTION_NAMES, "delta_eef_widowx", 5.0),
    )
    ckpt = VLAPolicy(VLAModel(cfg, tiny_stats(7, 7))).save(tmp_path / "ckpt")
    ev = EvalConfig(
        suite="simpler_bridge", tasks=["put_carrot_on_plate"], episodes_per_task=1, workers=1, video_size=64
    )
    res = evaluate(ckpt, ev, tmp_path / "out", progress=False)
    (episode,) = res["episodes"]
    assert episode["steps"] == 60 and episode["init_state"] == 0
    assert set(res["per_task_partial"]) == {"put_carrot_on_plate"} and "partial" in episode
    assert Path(episode["video"]).is_file()
    assert "partial (grasped)" in format_table(res)
    assert json.loads((tmp_path / "out/results.json").read_text())["mean_partial"] == res["mean_partial"]


def test_the_expert_solves_fresh_placements(bridge_env):
    """The scripted WidowX expert from privileged state: two fresh placements per task (seeds
    the protocol's layouts never use), each judged at its last step as the protocol does."""
    from envs.simpler.experts import BridgeExpert

    env, expert = bridge_env, BridgeExpert(bridge_env)
    for seed in (0, 1):  # fresh placements (seeds 0-19: 78 of 80 solved, docs/simpler.md)
        env.reset(seed=seed)
        expert.start()
        for _ in range(env.max_episode_steps):
            *_, truncated, info = env.step(expert.act())
        assert truncated and info["success"] and info["partial"], f"{env.task} seed {seed}: {info}"


def test_a_recording_holds_the_frames_evaluation_feeds_the_policy(tmp_path, monkeypatch):
    """Record one expert episode (in this process), read it back through the training reader
    and compare it with what the environment gives a policy for the same reset; the episode ends
    when the plan is done, and other settings are refused."""
    _simulator_or_skip()
    from helpers import InlinePool

    import data.record_scripted as core
    from data.readers import BRIDGE_LEROBOT_KEYS, read_lerobot
    from data.record_simpler import _WORKER, SimplerRecordConfig, check_recording, record_simpler
    from envs.simpler.env import SimplerBridgeEnv

    monkeypatch.setattr(core, "ProcessPoolExecutor", InlinePool)
    cfg = SimplerRecordConfig(tasks=["put_carrot_on_plate"], episodes_per_task=1, image_size=32, faults=0.0)
    try:
        root = record_simpler(cfg, tmp_path / "demos")
    finally:
        for env in _WORKER.values():  # the inline "worker" is this process
            env.close()
        _WORKER.clear()
    check_recording(cfg, root)
    (episode,) = read_lerobot(root, BRIDGE_LEROBOT_KEYS)
    assert episode.task == "put carrot on plate" and set(episode.images) == {"image"}
    assert 20 < len(episode.actions) < TASKS["put_carrot_on_plate"].max_steps  # stops when the plan is done
    assert np.abs(episode.actions[:, :3]).max() < 0.05 and set(np.unique(episode.actions[:, 6])) <= {-1.0, 1.0}
    info = json.loads((root / "meta" / "info.json").read_text())
    assert info["fps"] == 5 and info["robot_type"] == "widowx"
    env = SimplerBridgeEnv("put_carrot_on_plate", image_size=32)
    try:
        obs, _ = env.reset(seed=0)  # the recorder's seed for episode 0 of task 0
        np.testing.assert_array_equal(episode.images["image"][0], obs["image"])
        np.testing.assert_allclose(episode.state[0], obs["state"], atol=1e-6)
        _the_expert_recovers_from_a_drop(env)
    finally:
        env.close()
    with pytest.raises(ValueError, match="noise: recorded 0.1, asked 0.2"):
        check_recording(
            SimplerRecordConfig(tasks=cfg.tasks, episodes_per_task=1, image_size=32, faults=0.0, noise=0.2), root
        )


def _the_expert_recovers_from_a_drop(env):
    """A fault opens the gripper during the carry (the carrot falls): the expert plans again
    from where the carrot lies and still puts it on the plate, so recordings show recoveries."""
    from envs.simpler.experts import BridgeExpert

    expert = BridgeExpert(env)
    env.reset(seed=0)
    expert.start()
    opened = None
    for t in range(env.max_episode_steps):
        action = expert.act()
        if expert.index == 4 and opened is None:  # carrying it over to the plate
            opened = t
        if opened is not None and t < opened + 4:
            action = action.copy()
            action[6] = 1.0
        *_, info = env.step(action)
    assert opened is not None and expert.replans == 1 and info["success"], info
