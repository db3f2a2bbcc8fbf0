"""Evaluation with inference delay (eval.delay_steps, vla-eval delays=[...]): the schedule a
deployed policy runs, checked step by step on a counting environment, then end to end."""

from types import SimpleNamespace

import numpy as np
import pytest

CHUNK = 8


class CountingEnv:
    """Observes the step count; records every action applied; ends after `horizon` steps."""

    def __init__(self, horizon: int) -> None:
        self.horizon, self.unwrapped, self.instruction = horizon, self, "count"

    def _obs(self) -> dict:
        return {"state": np.array([float(self.t)])}

    def reset(self, seed=None, options=None):
        self.t, self.applied = 0, []
        return self._obs(), {}

    def step(self, action):
        self.applied.append(np.array(action, dtype=float))
        self.t += 1
        return self._obs(), 0.0, False, self.t >= self.horizon, {}


class StampingPolicy:
    """Slot j of a chunk computed at step t is the action meant for step t + j (and the call's
    index): an aligned schedule executes, at every step s, an action stamped s."""

    def __init__(self) -> None:
        self.cfg = SimpleNamespace(chunk_size=CHUNK, cameras=[])

    def reset(self, seed) -> None:
        self.calls = []

    def infer(self, observation, fixed_actions=None):
        t = int(observation["state"][0])
        self.calls.append((t, None if fixed_actions is None else np.array(fixed_actions)))
        return np.array([[t + j, len(self.calls) - 1] for j in range(CHUNK)], dtype=float)


@pytest.mark.parametrize("execute_steps, delay", [(4, 0), (4, 1), (4, 2), (4, 4), (2, 3), (0, 0)])
@pytest.mark.parametrize("mode", ["inpaint", "naive"])
def test_a_delayed_chunk_runs_from_the_slot_of_the_step_it_arrives_at(execute_steps, delay, mode):
    from envs.evaluate import rollout

    env, policy = CountingEnv(horizon=23), StampingPolicy()
    res = rollout(policy, env, 0, execute_steps, delay_steps=delay, delay_mode=mode)
    assert res["steps"] == 23 and len(env.applied) == 23
    stamps = np.array([a[0] for a in env.applied])
    np.testing.assert_array_equal(stamps, np.arange(23))  # never a slot meant for another step
    k = execute_steps or CHUNK
    requests = [t for t, _ in policy.calls]
    # The first chunk at rest, then one request per chunk, execute_steps - d actions into it.
    expected = [0] + [max(0, k - delay) + i * max(k, delay) for i in range(len(requests) - 1)]
    assert requests == expected
    assert requests[-1] < 23 <= requests[-1] + delay + max(k, delay)
    chunk_of = np.array([a[1] for a in env.applied])
    assert (np.diff(chunk_of) >= 0).all() and chunk_of[0] == 0  # the first chunk from its slot 0
    for t, prefix in policy.calls[1:]:
        if mode == "naive" or delay == 0:
            assert prefix is None
        else:  # the committed prefix is exactly what ran while the chunk was computed
            ran = np.array(env.applied[t : t + delay])  # the episode may end before all of it ran
            np.testing.assert_array_equal(prefix[: len(ran)], ran)
            assert len(prefix) == delay


def test_a_delay_the_chunk_cannot_cover_is_refused_with_what_to_change():
    from envs.evaluate import EvalConfig, check_delay, rollout

    check_delay(CHUNK, 4, 4)  # 4 + max(4, 4) = 8 slots: fits
    with pytest.raises(ValueError, match="delay_steps=5 with execute_steps=4 needs chunks of at least 10"):
        check_delay(CHUNK, 4, 5)
    with pytest.raises(ValueError, match="needs chunks of at least 16 actions; this policy's chunk_size is 8"):
        rollout(StampingPolicy(), CountingEnv(5), 0, 4, delay_steps=8)
    with pytest.raises(ValueError, match="delay_mode one of"):
        EvalConfig(delay_mode="fast")
    with pytest.raises(ValueError, match="delay_steps must be >= 0"):
        EvalConfig(delay_steps=-1)


def test_an_inpainted_delay_on_an_autoregressive_policy_is_refused_before_any_worker(tmp_path):
    import torch
    from helpers import tiny_policy_config, tiny_stats

    from envs.evaluate import EvalConfig, evaluate
    from vla.model import VLAModel
    from vla.policy import VLAPolicy

    torch.manual_seed(0)
    cfg = tiny_policy_config(
        decoder_type="autoregressive",
        action_dim=7,
        state_dim=8,
        cameras=["agentview", "wrist"],
        camera_shapes={"agentview": [32, 32], "wrist": [32, 32]},
    )
    ckpt = VLAPolicy(VLAModel(cfg, tiny_stats(7, 8))).save(tmp_path / "ar")
    ev = EvalConfig(tasks=["lift_red"], episodes_per_task=1, workers=1, execute_steps=2, delay_steps=2)
    with pytest.raises(ValueError, match="use eval.delay_mode=naive"):
        evaluate(ckpt, ev, tmp_path / "out", progress=False)


def test_delayed_rollout_of_a_real_policy_on_the_built_in_suite(tmp_path):
    """The inpainting path through VLAPolicy.infer: the committed prefix comes back unchanged
    at the head of the chunk, and a delay of 0 is the synchronous rollout, step for step."""
    from test_envs import tiny_tabletop_checkpoint

    from envs.evaluate import rollout
    from envs.registry import make_env
    from vla.policy import VLAPolicy

    policy = VLAPolicy.load(tiny_tabletop_checkpoint(tmp_path / "ckpt"))
    seen = []
    infer = policy.infer

    def spy(observation, fixed_actions=None):
        chunk = infer(observation, fixed_actions=fixed_actions)
        seen.append((fixed_actions, chunk))
        return chunk

    policy.infer = spy
    from gymnasium.wrappers import TimeLimit

    env = TimeLimit(make_env("builtin", "lift_red", 32), 12)  # a dozen steps show the schedule
    try:
        sync = rollout(policy, env, 0, 2)  # the tiny policy decodes chunks of 4
        synced = [c for _, c in seen]
        seen.clear()
        again = rollout(policy, env, 0, 2, delay_steps=0)
        delayed = rollout(policy, env, 0, 2, delay_steps=2, delay_mode="inpaint")
    finally:
        env.close()
    assert (sync["success"], sync["steps"]) == (again["success"], again["steps"])
    np.testing.assert_array_equal(np.array(synced), np.array([c for _, c in seen[: len(synced)]]))
    prefixed = [(p, c) for p, c in seen[len(synced) :] if p is not None]
    assert delayed["steps"] == 12 and len(prefixed) == 6  # k = d: requests at steps 0 (at once), 2, 4, 6, 8, 10
    low, high = policy.action_bounds
    for prefix, chunk in prefixed:
        assert prefix.shape == (2, 7)
        # decoded back from its tokens: equal to within a bin, exactly on the binary gripper
        np.testing.assert_allclose(chunk[:2], prefix, atol=float(np.max(high - low)) / 16)


def test_vla_eval_delay_sweep_prints_success_against_delay_with_paired_differences(tmp_path, monkeypatch, capsys):
    import sys
    from pathlib import Path

    from test_envs import tiny_tabletop_checkpoint

    from envs import evaluate
    from train.hydra_app import delay_sweep, eval_main

    ckpt = tiny_tabletop_checkpoint(tmp_path / "ckpt")
    calls = []
    wins = {0: [1, 1, 1, 0], 2: [1, 0, 1, 0], 4: [0, 0, 1, 0]}

    def fake(checkpoint, cfg, out_dir, **kw):
        calls.append((cfg.delay_steps, cfg.delay_mode, Path(out_dir).name))
        episodes = [
            {"task": "t", "seed": i, "init_state": None, "success": bool(w)}
            for i, w in enumerate(wins[cfg.delay_steps])
        ]
        p = float(np.mean(wins[cfg.delay_steps]))
        return {"per_task_success": {"t": p}, "mean_success": p, "episodes": episodes, "config": {}}

    monkeypatch.setattr(evaluate, "evaluate", fake)
    monkeypatch.chdir(tmp_path)
    argv = ["vla-eval", f"checkpoint={ckpt}", "delays=[0,2,4]", "delay_modes=[inpaint,naive]", f"out_dir={tmp_path}"]
    monkeypatch.setattr(sys, "argv", argv)
    eval_main()
    assert [c[:2] for c in calls] == [(0, "inpaint"), (2, "inpaint"), (2, "naive"), (4, "inpaint"), (4, "naive")]
    assert [c[2] for c in calls][:3] == ["builtin", "builtin-delay2-inpaint", "builtin-delay2-naive"]
    table = capsys.readouterr().out.split("success against inference delay")[-1]
    assert "sync          0    75.0%   21.7" in table
    # paired: 0 - 1 on one episode of four -> -25.0 points, s.e. 25.0
    assert "inpaint       2    50.0%   25.0    -25.0   25.0" in table
    assert "naive         4    25.0%   21.7    -50.0   28.9" in table
    with pytest.raises(ValueError, match="distinct"):
        delay_sweep(evaluate.EvalConfig(), [2, 2], [])
    monkeypatch.setattr(sys, "argv", argv[:3] + ["eval.delay_steps=2"])
    with pytest.raises(SystemExit):
        eval_main()
    assert "set one or the other" in capsys.readouterr().err
