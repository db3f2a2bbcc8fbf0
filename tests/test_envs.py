import numpy as np
import pytest

from envs.registry import make_env, suite_tasks
from envs.tabletop.env import LAYOUT, PLACE_CUBE_XY, REGION_HALF, TASKS, TabletopEnv
from envs.tabletop.experts import ScriptedExpert, run_expert_episode

TASK_NAMES = suite_tasks("builtin")


@pytest.mark.parametrize("task", TASK_NAMES)
def test_every_task_resets_steps_renders_without_nan(task):
    env = make_env("builtin", task, image_size=64)
    try:
        obs, info = env.reset(seed=0)
        assert info["instruction"] == TASKS[task].instruction
        for _ in range(5):
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        for cam in ("agentview", "wrist"):
            assert obs[cam].shape == (64, 64, 3) and obs[cam].dtype == np.uint8 and obs[cam].std() > 1
        assert obs["state"].shape == (8,) and np.isfinite(obs["state"]).all()
        assert np.isfinite(env.unwrapped.data.qpos).all()
    finally:
        env.close()


def test_resets_are_reproducible_and_seeds_differ():
    env = TabletopEnv("lift_red", image_size=32)
    a = env.reset(seed=5)[0]["agentview"]
    b = env.reset(seed=5)[0]["agentview"]
    c = env.reset(seed=6)[0]["agentview"]
    env.close()
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize("task", ["lift_green", "place_purple"])
def test_objects_start_inside_their_init_regions(task):
    env = TabletopEnv(task, image_size=32)
    starts = []
    for seed in range(20):
        env.reset(seed=seed)
        xy = {f"{c}_cube": env.object_pos(f"{c}_cube")[:2] for c in env.task.cubes}
        xy |= {f"{p}_plate": env.object_pos(f"{p}_plate")[:2] for p in env.task.plates}
        for name, pos in xy.items():
            centre = PLACE_CUBE_XY if env.task.kind == "place" and name.endswith("cube") else LAYOUT[name]
            assert np.all(np.abs(pos - centre) <= np.array(REGION_HALF[name.split("_")[1]]) + 1e-6), (name, pos)
        starts.append(xy[f"{env.task.target_cube}_cube"])
    env.close()
    assert np.ptp(np.array(starts), axis=0).min() > 0.02  # jittered, not fixed


def test_tasks_sharing_a_scene_differ_only_in_instruction():
    a, b = TabletopEnv("lift_red", image_size=32), TabletopEnv("lift_blue", image_size=32)
    oa, ob = a.reset(seed=3)[0], b.reset(seed=3)[0]
    assert np.array_equal(oa["agentview"], ob["agentview"]) and a.instruction != b.instruction
    a.close()
    b.close()


@pytest.mark.parametrize("task", TASK_NAMES)
def test_expert_solves_a_few_seeds(task):
    env = TabletopEnv(task, image_size=32)
    try:
        results = [run_expert_episode(env, seed, noise=0.1)[1] for seed in range(3)]
    finally:
        env.close()
    assert all(results)


def test_expert_is_state_feedback_and_recovers_from_a_missed_grasp():
    env = TabletopEnv("lift_red", image_size=32)
    try:
        env.reset(seed=3)
        a, b = ScriptedExpert(env).act(), ScriptedExpert(env).act()
        assert np.array_equal(a, b)  # a function of the current state, not of a phase history
        assert a[6] < 0 and a[2] < 0  # far above: gripper open, descending towards the cube
        # Close the fingers on nothing, away from the cube: the expert opens them and keeps
        # approaching through the funnel (2 cm higher), moving towards the cube.
        for _ in range(10):
            env.step(np.array([0, 0, 0, 0, 0, 0, 1.0]))
        assert env.gripper_opening() < 0.02
        act = ScriptedExpert(env).act()
        to_cube = (env.object_pos("red_cube") - env.eef_pos())[:2]
        assert act[6] < 0 and np.dot(act[:2], to_cube) > 0
    finally:
        env.close()


def test_expert_lifts_a_cube_gripped_off_centre():
    # Holding is read from the fingers: a cube shut between them 2 cm off centre (outside the
    # 1.5 cm box the expert closes in) is lifted, not treated as a missed grasp.
    env = TabletopEnv("lift_red", image_size=32)
    try:
        env.reset(seed=1)
        expert = ScriptedExpert(env)
        target = env.object_pos("red_cube") + np.array([0.02, 0.0, 0.005])
        for t in range(40):  # the expert's own proportional move, aimed 2 cm off, then close
            env.step(expert.move_to(target, -1.0 if t < 30 else 1.0))
        assert 0.03 < env.gripper_opening() < 0.06
        assert np.linalg.norm((env.eef_pos() - env.object_pos("red_cube"))[:2]) > 0.015
        for _ in range(20):
            action = expert.act()
            assert action[6] > 0  # never re-opens
            _, _, terminated, _, _ = env.step(action)
            if terminated:
                break
        assert env.is_success()
    finally:
        env.close()


def test_bad_actions_and_tasks_are_refused():
    with pytest.raises(KeyError, match="available"):
        TabletopEnv("fly_to_mars")
    env = TabletopEnv("lift_red", image_size=32)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(6))
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.full(7, np.nan))
    env.close()


def test_gripper_faults_put_recoveries_into_the_demonstrations():
    env = TabletopEnv("lift_red", image_size=32)
    try:
        clean, _ = run_expert_episode(env, 0, noise=0.1)
        faulty = [run_expert_episode(env, seed, noise=0.1, faults=0.08) for seed in range(4)]
    finally:
        env.close()
    shut = lambda f: f["state"][6] + f["state"][7] < 0.02  # noqa: E731  (fingers closed on nothing)
    assert not any(shut(f) for f in clean)
    assert not any(f["perturbed"] for f in clean)  # Gaussian noise alone is not a fault
    flags = [f["perturbed"] for frames, _ in faulty for f in frames]
    assert 0.1 < np.mean(flags) < 0.6  # faults (8% per step, 3-8 steps each) are flagged
    # The label stays the expert's clean command: open again when the fault shut the fingers.
    assert any(shut(f) and f["action"][6] < 0 for frames, _ in faulty for f in frames)
    assert sum(ok for _, ok in faulty) >= 3


def test_evaluate_names_a_missing_checkpoint_before_starting_workers(tmp_path):
    from envs.evaluate import EvalConfig, evaluate

    with pytest.raises(FileNotFoundError, match="nope does not exist"):
        evaluate(tmp_path / "nope", EvalConfig(episodes_per_task=1, workers=1), tmp_path / "out")
    (tmp_path / "half").mkdir()
    with pytest.raises(ValueError, match="config.json is missing"):
        evaluate(tmp_path / "half", EvalConfig(episodes_per_task=1, workers=1), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def tiny_tabletop_checkpoint(path):
    """A random tiny policy with the built-in suite's cameras, state and action widths, saved."""
    import torch
    from helpers import tiny_policy_config, tiny_stats

    from vla.model import VLAModel
    from vla.policy import VLAPolicy

    torch.manual_seed(0)
    cfg = tiny_policy_config(
        action_dim=7,
        state_dim=8,
        cameras=["agentview", "wrist"],
        camera_shapes={"agentview": [32, 32], "wrist": [32, 32]},
    )
    return VLAPolicy(VLAModel(cfg, tiny_stats(7, 8))).save(path)


def test_an_interrupted_evaluation_runs_only_the_episodes_it_lacks(tmp_path, caplog):
    """Finished episodes are kept in episodes.partial.jsonl as they arrive; a re-run with the
    same weights and settings reuses them (results identical to an uninterrupted run), a file
    of other settings is not reused, and a line cut short by a kill is ignored."""
    import json

    from envs.evaluate import PARTIAL_FILE, EvalConfig, evaluate, partial_header
    from vla.checkpoint import Checkpoint

    ckpt = tiny_tabletop_checkpoint(tmp_path / "ckpt")
    ev = EvalConfig(tasks=["lift_red"], episodes_per_task=3, workers=1, videos_per_task=0)
    full = evaluate(ckpt, ev, tmp_path / "full", progress=False)
    assert not (tmp_path / "full" / PARTIAL_FILE).exists()  # removed once results.json is written
    assert full["weights_sha256"] == Checkpoint(ckpt).sha256("model.safetensors")  # which policy ran

    def outcome(res):
        return [(e["task"], e["seed"], e["success"], e["steps"]) for e in res["episodes"]]

    # What an evaluation killed after two episodes leaves: the header, two episodes, a torn line.
    # The reused episodes are marked (steps 999), so reuse is told apart from re-running.
    header = partial_header(Checkpoint(ckpt).sha256("model.safetensors"), EvalConfig(execute_steps=0), "")
    marked = [{**e, "steps": 999} for e in full["episodes"][:2]]
    killed = tmp_path / "killed"
    killed.mkdir()
    lines = [json.dumps(header)] + [json.dumps(e) for e in marked] + ['{"task": "lift_red", "se']
    (killed / PARTIAL_FILE).write_text("\n".join(lines))
    resumed = evaluate(ckpt, ev, killed, progress=False)
    assert resumed["reused_episodes"] == 2
    assert outcome(resumed) == outcome({"episodes": marked}) + outcome(full)[2:]
    # Other sampler settings: nothing is reused, every episode runs again.
    (killed / PARTIAL_FILE).write_text("\n".join(lines[:3]))
    other = evaluate(ckpt, EvalConfig(**{**ev.__dict__, "sampler_overrides": {"steps": 2}}), killed, progress=False)
    assert other["reused_episodes"] == 0 and "not reused" in caplog.text
    assert all(e["steps"] != 999 for e in other["episodes"])


def test_validation_and_test_splits_use_disjoint_episodes(tmp_path):
    """`eval.split=validation` (selects settings) draws fresh placements from seeds no recording
    and no test episode uses; LIBERO's test split is the official initial states."""
    from data.record import RecordConfig
    from data.record_libero import LiberoRecordConfig
    from envs.evaluate import EvalConfig, episode_jobs
    from envs.registry import VALIDATION_SEED
    from envs.tables import format_table

    test = episode_jobs(EvalConfig(episodes_per_task=3), ["lift_red"], [None] * 3)
    val = episode_jobs(EvalConfig(episodes_per_task=3, split="validation"), ["lift_red"], [None] * 3)
    assert [j[2] for j in test] == [10_000, 10_001, 10_002]
    assert [j[2] for j in val] == [VALIDATION_SEED, VALIDATION_SEED + 1, VALIDATION_SEED + 2]
    official = episode_jobs(EvalConfig(suite="libero_object", init_states=[4, 9]), ["t"], [4, 9])
    assert [j[3] for j in official] == [4, 9]
    with pytest.raises(ValueError, match="eval.split must be one of"):
        EvalConfig(split="train")
    with pytest.raises(ValueError, match="validation split never uses"):
        EvalConfig(split="validation", init_states=[0])
    with pytest.raises(ValueError, match="below the validation split's"):
        EvalConfig(seed=VALIDATION_SEED)
    # recordings stop short of the validation seeds
    for cfg, limit in ((RecordConfig, VALIDATION_SEED // 100_000), (LiberoRecordConfig, VALIDATION_SEED // 1_000_000)):
        with pytest.raises(ValueError, match=rf"seed must be in \[0, {limit}\)"):
            cfg(seed=limit)
        cfg(seed=limit - 1)
    # a validation run end to end on the built-in suite: its episodes, seeds and table

    from envs.evaluate import evaluate

    ckpt = tiny_tabletop_checkpoint(tmp_path / "ckpt")
    ev = EvalConfig(tasks=["lift_red"], episodes_per_task=1, workers=1, videos_per_task=0, split="validation")
    res = evaluate(ckpt, ev, tmp_path / "val", progress=False)
    assert [e["seed"] for e in res["episodes"]] == [VALIDATION_SEED] and res["config"]["split"] == "validation"
    assert "1 validation episodes each" in format_table(res)


def test_rollout_videos_are_drawn_at_the_viewing_size(tmp_path):
    """eval.video_size: recorded frames come from a viewing render at that size (both cameras side
    by side), not the policy's small frames; 0 keeps the policy's frames; outcomes are the same."""
    from envs.evaluate import rollout
    from envs.registry import make_env
    from vla.policy import VLAPolicy

    policy = VLAPolicy.load(tiny_tabletop_checkpoint(tmp_path / "ckpt"))
    env = make_env("builtin", "lift_red", 32)
    try:
        views = env.unwrapped.render_view(96)
        assert {k: v.shape for k, v in views.items()} == {"agentview": (96, 96, 3), "wrist": (96, 96, 3)}
        seen = rollout(policy, env, 0, 8, record=True)
        viewed = rollout(policy, env, 0, 8, record=True, video_size=96)
    finally:
        env.close()
    assert seen["frames"][0].shape == (32, 64, 3) and viewed["frames"][0].shape == (96, 192, 3)
    assert (seen["success"], seen["steps"]) == (viewed["success"], viewed["steps"])


def test_evaluation_draws_frames_only_for_the_policy_and_runs_the_same_episode(tmp_path):
    """rollout draws the cameras at the policy's requests only (rendering every step was most of
    a built-in step's cost): the episode, and every frame the policy sees, are those of drawing
    every step; the environment is left drawing every step afterwards."""
    from gymnasium.wrappers import TimeLimit
    from helpers import assert_same_episode_fewer_draws, rollout_drawing_on_demand_and_every_step

    from envs.registry import make_env
    from vla.policy import VLAPolicy

    policy = VLAPolicy.load(tiny_tabletop_checkpoint(tmp_path / "ckpt"))
    env = TimeLimit(make_env("builtin", "lift_red", 32), 23)
    try:
        runs = rollout_drawing_on_demand_and_every_step(policy, env, 3)
        assert env.unwrapped.cameras is True and "wrist" in env.step(np.zeros(7))[0]
    finally:
        env.close()
    assert_same_episode_fewer_draws(runs)
    assert runs[0][2] == 8  # requests at steps 0, 3, ..., 21 of 23


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("execute_steps", -1, "execute_steps must be >= 0"),
        ("video_size", -1, "video_size must be in"),
        ("video_size", 4096, "video_size must be in"),
        ("workers", 0, "workers and eval.threads_per_worker must be >= 1"),
        ("videos_per_task", -1, "videos_per_task >= 0"),
        ("episodes_per_task", 0, "episodes_per_task must be >= 1"),
    ],
)
def test_evaluation_numbers_out_of_range_are_refused(field, value, message):
    from envs.evaluate import EvalConfig

    with pytest.raises(ValueError, match=message):
        EvalConfig(**{field: value})


def test_vla_eval_over_several_suites_prints_one_table_with_their_average(tmp_path, monkeypatch, capsys):
    """suites=[...]: each suite evaluated in turn into its own folder, then one table of the suites
    with standard errors and the average."""
    import sys
    from pathlib import Path

    from envs import evaluate
    from train.hydra_app import eval_main

    ckpt = tiny_tabletop_checkpoint(tmp_path / "ckpt")
    calls = []

    def fake(checkpoint, cfg, out_dir, **kw):
        calls.append((cfg.suite, cfg.tasks, Path(out_dir).name))
        wins = {"builtin": [1, 1, 0, 1], "libero_object": [1, 0, 0, 0]}[cfg.suite]
        episodes = [{"task": "t", "success": bool(w)} for w in wins]
        return {
            "per_task_success": {"t": sum(wins) / 4},
            "mean_success": sum(wins) / 4,
            "episodes": episodes,
            "config": {},
        }

    monkeypatch.setattr(evaluate, "evaluate", fake)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        sys, "argv", ["vla-eval", f"checkpoint={ckpt}", "suites=[builtin,libero_object]", f"out_dir={tmp_path / 'ev'}"]
    )
    eval_main()
    assert calls == [("builtin", [], "builtin"), ("libero_object", [], "libero_object")]
    table = capsys.readouterr().out.split("suite ")[-1]
    assert "75.0%   21.7" in table and "25.0%   21.7" in table and "50.0%   15.3         8" in table
    argv = ["vla-eval", f"checkpoint={ckpt}", "suites=[builtin,libero_object]", "eval.tasks=[lift_red]"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit):  # hydra prints the error and exits 1
        eval_main()
    assert "every task of each suite runs" in capsys.readouterr().err


def test_suites_table_averages_the_suites_and_their_standard_errors():
    from envs.tables import suites_table

    def res(*outcomes):
        return {"episodes": [{"success": o} for o in outcomes]}

    table = suites_table({"libero_object": res(1, 1, 1, 0), "libero_goal": res(1, 0, 0, 0)})
    rows = {line.split()[0]: line.split()[1:] for line in table.splitlines() if line and line[0] != "-"}
    assert rows["libero_object"] == ["75.0%", "21.7", "4"]  # sqrt(0.75 * 0.25 / 4)
    assert rows["libero_goal"] == ["25.0%", "21.7", "4"]
    assert rows["average"] == ["50.0%", "15.3", "8"]  # sqrt(2 * 0.2165^2) / 2
