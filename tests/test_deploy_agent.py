"""The robot agent on a fake clock: merging, the degradation ladder, the safety filter and the
faults of docs/deploy.md, each ending in the specified state with nothing unsafe at the robot."""

import time

import numpy as np
import pytest
from deploy_helpers import FakeClient, FakeClock, FakePolicy, FakeRobot, spec

from deploy.agent import AgentConfig, DelayEstimator, Merge, Mode, MonotonicClock, RobotAgent
from deploy.client import Connected, Disconnected, ServerError
from deploy.protocol import ProtocolError, Reply
from deploy.safety import SafetyConfig, SafetyFilter, UnsafeAction

DT = 0.05  # 20 Hz


def make(merge=Merge.rtc, **kw):
    clock = FakeClock()
    client = FakeClient()
    robot = FakeRobot(clock)
    agent = RobotAgent(AgentConfig(merge=merge, **kw), client, robot, clock)
    agent.arm()
    return agent, client, robot, clock


def step(agent, clock, n=1):
    rows = []
    for _ in range(n):
        rows.append(agent.tick())
        clock.advance(DT)
    return rows


def test_normal_flow_and_rtc_prefix():
    agent, client, robot, clock = make()
    row = agent.tick()  # nothing planned yet: hold, and ask
    assert row["command"] == "hold" and agent.mode == Mode.HOLD and len(client.submitted) == 1
    assert client.submitted[0].reset and client.submitted[0].prefix_actions is None
    clock.advance(DT)
    client.push(client.answer())  # chunk for tick 0, arriving at tick 1
    rows = step(agent, clock, 4)
    assert [r["command"] for r in rows] == ["act"] * 4 and agent.mode == Mode.NORMAL
    # the robot held while the first chunk was computed: its action 0 runs first (nothing is skipped)
    np.testing.assert_allclose(rows[0]["action"][:6], 0.10, atol=1e-6)
    # the next request freezes what will run while it is in flight (this tick's and the delay's)
    req = client.submitted[-1]
    assert req.seq == 2 and req.prefix_actions is not None and not req.reset
    k = agent.log[-1]["k"]
    np.testing.assert_allclose(req.prefix_actions[0], agent.plan.actions.get(k, req.prefix_actions[0]))
    client.push(client.answer(value=0.5))  # a different policy output: the frozen prefix still runs first
    r = step(agent, clock, 1)[0]
    np.testing.assert_allclose(r["action"][:6], req.prefix_actions[1][:6], atol=1e-6)
    assert all(np.isfinite(a).all() for k_, a in robot.commands if a is not None)


def test_ladder_hold_then_safe_stop_then_explicit_rearm():
    agent, client, robot, clock = make()
    step(agent, clock, 1)
    client.push(client.answer())
    step(agent, clock, 1)
    assert agent.mode == Mode.NORMAL
    client.connected = False  # the server goes silent: no new requests, no replies
    modes = [r["mode"] for r in step(agent, clock, 30)]
    assert "DEGRADED" in modes and "HOLD" in modes and modes[-1] == "SAFE_STOP"
    first_hold = modes.index("HOLD")
    assert first_hold * DT <= 0.3 + DT  # 300 ms without a fresh chunk at most
    assert modes.index("SAFE_STOP") * DT == pytest.approx(1.0, abs=DT + 1e-9)
    assert "no fresh chunk" in agent.reason
    client.connected = True
    client.push(client.answer())  # a late reply cannot revive it
    step(agent, clock, 5)
    assert agent.mode == Mode.SAFE_STOP and robot.kinds()[-1] == "stop"
    agent.arm()
    assert agent.mode == Mode.NORMAL and agent.epoch == 2


def test_non_finite_chunk_is_discarded_and_holds():
    agent, client, robot, clock = make()
    step(agent, clock, 1)
    client.push(client.answer())
    while client.submitted[-1].seq == 1:
        step(agent, clock, 1)
    bad = client.answer()
    bad.actions[3, 0] = np.nan
    client.push(bad)
    rows = step(agent, clock, 2)
    assert agent.mode in (Mode.HOLD, Mode.SAFE_STOP) and agent.events["non_finite_chunk"] == 1
    assert [r["command"] for r in rows] == ["hold", "hold"]
    assert all(a is None or np.isfinite(a).all() for _, a in robot.commands)
    client.push(client.answer())  # a good chunk resumes
    assert step(agent, clock, 1)[0]["command"] == "act"


def test_stale_duplicate_reordered_and_late_replies_are_dropped():
    agent, client, robot, clock = make()
    step(agent, clock, 1)
    first = client.submitted[-1]
    client.push(client.answer())
    step(agent, clock, 4)
    second = client.submitted[-1]
    assert second.seq == 2
    client.push(client.answer(second), client.answer(first), client.answer(second))  # newer, reordered older, duplicate
    step(agent, clock, 1)
    assert agent.events["merged"] == 2 and agent.events["dropped_stale"] == 2
    client.push(Reply(np.zeros((8, 7), np.float32), 99, agent.epoch, 1.0))  # never asked for
    client.push(Reply(np.zeros((8, 7), np.float32), 3, agent.epoch - 1, 1.0))  # previous episode
    step(agent, clock, 1)
    assert agent.events["dropped_unknown"] == 1 and agent.events["dropped_other_epoch"] == 1
    # a reply so late that its whole chunk lies in the past
    agent2, client2, _, clock2 = make(hold_after_s=0.9, safe_stop_after_s=2.0)
    step(agent2, clock2, 1)
    obs = client2.submitted[-1]
    step(agent2, clock2, 9)
    client2.push(client2.answer(obs))
    step(agent2, clock2, 1)
    assert agent2.events["dropped_late"] == 1 and agent2.events["merged"] == 0


def test_reset_while_inference_in_flight_drops_the_old_episode_reply():
    agent, client, robot, clock = make()
    step(agent, clock, 1)
    old = client.submitted[-1]
    agent.arm()  # reset mid-inference
    client.push(client.answer(old))
    step(agent, clock, 1)
    assert agent.events["dropped_other_epoch"] == 1 and agent.events["merged"] == 0


def test_seam_check_keeps_the_old_chunk():
    agent, client, robot, clock = make(merge=Merge.naive)
    step(agent, clock, 1)
    client.push(client.answer(value=0.0))
    step(agent, clock, 3)
    client.push(client.answer(value=0.95))  # continuous dims jump by ~0.95 of a range of 2 ... within 0.5 of range
    step(agent, clock, 1)
    assert agent.events["seam_rejected"] == 0
    agent.cfg.seam_limit = 0.2
    step(agent, clock, 2)
    client.push(client.answer(value=-0.9))
    before = dict(agent.plan.actions)
    step(agent, clock, 1)
    assert agent.events["seam_rejected"] == 1
    assert all(np.array_equal(agent.plan.actions[t], before[t]) for t in agent.plan.actions)


def test_temporal_ensembling_averages_overlapping_chunks():
    agent, client, robot, clock = make(merge=Merge.ensemble, ensemble_decay=0.0)
    step(agent, clock, 1)
    a = client.submitted[-1]
    client.push(client.answer(a, value=0.0))  # arrives at tick 1, the robot having held: its action 0 is for tick 1
    step(agent, clock, 4)
    b = client.submitted[-1]
    assert b.seq == 2
    client.push(client.answer(b, value=0.4))
    r = step(agent, clock, 1)[0]
    k = r["k"]
    want = ((0.0 + 0.01 * (k - 1)) + (0.4 + 0.01 * (k - agent._sent[b.seq][1]))) / 2
    np.testing.assert_allclose(r["action"][0], want, atol=1e-5)


def test_delay_estimate_recovers_from_a_warm_up_spike():
    d = DelayEstimator(window=20, percentile=90, initial=0.1)
    for _ in range(4):
        d.add(3.0)  # the first calls compile / warm caches
    for _ in range(15):
        d.add(0.05)
    assert d.value > 1.0  # still inside the window: the estimate stays cautious
    for _ in range(5):
        d.add(0.05)
    assert d.value == pytest.approx(0.05)  # aged out: an all-time max would stay at 3 s


@pytest.mark.parametrize("merge", [Merge.rtc, Merge.naive, Merge.ensemble])
def test_a_chunk_that_arrives_while_the_robot_held_starts_at_its_action_0(merge):
    """A peer bug: the first chunk arrives d ticks after its observation, the robot having held
    meanwhile; aligning it to the observation's tick skips its first d actions, motions never
    made (with delta actions the arm ends short by them)."""
    agent, client, robot, clock = make(merge=merge)
    rows = step(agent, clock, 3)  # nothing planned: holding, the first request in flight
    assert [r["command"] for r in rows] == ["hold"] * 3 and len(client.submitted) == 1
    client.push(client.answer())
    rows = step(agent, clock, 2)
    assert [r["command"] for r in rows] == ["act", "act"]
    np.testing.assert_allclose(rows[0]["action"][:6], 0.10, atol=1e-6)  # action 0, not action 3
    np.testing.assert_allclose(rows[1]["action"][:6], 0.11, atol=1e-6)


def test_the_rtc_prefix_is_what_runs_from_the_observed_tick_never_padded():
    """Peer bugs: a prefix padded with zeros to a fixed length (zeros decode to the data's mean)
    and a prefix shifted by the observed delay. Over a run with replies 3 ticks late, every row
    of every prefix sent is the action the robot executes at the request's tick + row."""
    agent, client, robot, clock = make(initial_delay_s=0.15)
    sent_at, due, executed = {}, [], {}
    for _ in range(80):
        for obs in [o for when, o in due if when == agent.k]:
            client.push(client.answer(obs, value=0.1 + 0.05 * (obs.seq % 3)))  # chunks that differ
        n = len(client.submitted)
        row = agent.tick()
        if row["command"] == "act":
            executed[row["k"]] = row["action"]
        for obs in client.submitted[n:]:
            sent_at[obs.seq] = row["k"]
            due.append((row["k"] + 3, obs))
        clock.advance(DT)
    prefixed = [o for o in client.submitted if o.prefix_actions is not None]
    assert len(prefixed) >= 10 and agent.events["merged"] >= 10
    for obs in [o for o in prefixed if sent_at[o.seq] + 4 < 80]:  # the run covers the prefix's ticks
        k = sent_at[obs.seq]
        assert 0 < len(obs.prefix_actions) <= 4  # this tick's and the delay's (3 ticks), no padding
        for i, a in enumerate(obs.prefix_actions):
            np.testing.assert_allclose(a, executed[k + i], atol=1e-6, err_msg=f"request {obs.seq}, row {i}")


@pytest.mark.parametrize(("trained", "longest"), [(0, 6), (2, 2)])
def test_the_prefix_is_no_longer_than_the_policy_was_trained_for(trained, longest):
    """The handshake's prefix_trained_steps caps the rtc prefix (a longer one is a case the policy
    never saw in training); 0 (no prefix training) leaves the delay to decide, up to the chunk's
    length less one. A delay of 5 ticks would freeze 6 actions."""
    clock = FakeClock()
    client = FakeClient(spec(prefix_trained_steps=trained))
    agent = RobotAgent(AgentConfig(), client, FakeRobot(clock, client.spec), clock)
    agent.arm()
    step(agent, clock, 5)
    client.push(client.answer())  # a round trip of 5 ticks: the estimate the next request uses
    step(agent, clock, 1)
    prefixes = [len(o.prefix_actions) for o in client.submitted if o.prefix_actions is not None]
    assert prefixes and max(prefixes) == longest


def test_safety_filter_limits_delta_cap_workspace_and_escalation():
    s = spec()
    f = SafetyFilter(
        SafetyConfig(max_delta=0.25, workspace_low=[-0.1, -0.1, 0.0], workspace_high=[0.1, 0.1, 0.3]), s, fps=20
    )
    state = np.zeros(8)
    out, clamped = f(np.array([3.0, 0, 0, 0, 0, 0, 1.0]), state)  # no previous command: limits only
    assert out[0] == 1.0 and clamped
    out, clamped = f(np.array([-1.0, 0, 0, 0, 0, 0, -1.0]), state)  # delta cap 0.25 * range 2 = 0.5; gripper exempt
    assert out[0] == pytest.approx(0.5) and out[6] == -1.0 and clamped
    state[:3] = [0.1, 0.0, 0.0]  # at the box's +x face, on the floor
    out, clamped = f(np.array([0.5, 0.2, -0.3, 0, 0, 0, -1.0]), state)
    assert out[0] == 0.0 and out[1] == pytest.approx(0.2) and out[2] == 0.0 and clamped
    with pytest.raises(UnsafeAction, match="NaN"):
        f(np.array([np.nan, 0, 0, 0, 0, 0, 0]), state)
    with pytest.raises(UnsafeAction, match="shape"):
        f(np.zeros(6), state)
    with pytest.raises(ValueError, match="low < high"):
        SafetyFilter(SafetyConfig(low=[0.0] * 7, high=[0.0] * 7), s, fps=20)
    # the agent holds when more than 20% of the last second's ticks were clamped
    agent, client, robot, clock = make(safety=SafetyConfig(high=[0.05] * 6 + [1.0], low=[-1.0] * 7))
    step(agent, clock, 1)
    for _ in range(40):
        if agent.in_flight:
            client.push(client.answer())
        step(agent, clock, 1)
        if agent.events["clamp_escalation"]:
            break
    assert agent.events["clamp_escalation"] == 1 and agent.mode == Mode.HOLD
    assert all(a is None or a[0] <= 0.05 for _, a in robot.commands)


@pytest.mark.parametrize("fault", ["frozen", "stale", "driver", "estop"])
def test_sensor_and_hardware_faults_safe_stop(fault):
    agent, client, robot, clock = make()
    step(agent, clock, 1)
    for _ in range(15):
        if agent.in_flight:
            client.push(client.answer())
        if fault == "frozen":
            robot.frozen = True
        elif fault == "stale":
            robot.stamp_lag = 0.5
        elif fault == "driver":
            robot.injected_fault = "overload on joint 3"
        else:
            agent.estop()
        step(agent, clock, 1)
    assert agent.mode == Mode.SAFE_STOP, fault
    assert {"frozen": "frozen", "stale": "old", "driver": "overload", "estop": "e-stop"}[fault] in agent.reason
    assert robot.kinds()[-1] == "stop"


def test_disconnect_flushes_the_plan_and_a_changed_server_safe_stops():
    agent, client, robot, clock = make()
    step(agent, clock, 1)
    client.push(client.answer())
    step(agent, clock, 1)
    assert agent.plan.actions
    client.push(Disconnected("connection lost"))
    step(agent, clock, 1)
    assert not agent.plan.actions and agent.mode == Mode.HOLD
    client.push(Connected(client.spec, same=True))
    step(agent, clock, 1)
    assert agent.mode != Mode.SAFE_STOP
    client.push(Connected(spec(fps=50.0), same=False))
    step(agent, clock, 1)
    assert agent.mode == Mode.SAFE_STOP and "another policy" in agent.reason


def test_server_error_frees_the_request_slot():
    agent, client, robot, clock = make()
    step(agent, clock, 1)
    seq = client.submitted[-1].seq
    client.push(ServerError(ProtocolError("inference_failed", "boom", seq)))
    step(agent, clock, 1)
    assert agent.events["server_error:inference_failed"] == 1 and client.submitted[-1].seq == seq + 1


def test_handshake_mismatch_refuses_to_arm():
    with pytest.raises(ValueError, match="action_space"):
        RobotAgent(
            AgentConfig(expect={"action_space": "joint_pos", "fps": 20}),
            FakeClient(),
            FakeRobot(FakeClock()),
            FakeClock(),
        )


def test_loop_runs_on_absolute_deadlines_and_skips_when_late():
    agent, client, robot, clock = make()
    orig = agent.tick

    def slow_tick():
        row = orig()
        if row["k"] == 3:
            clock.advance(0.2)  # one tick overran by four periods
        if agent.in_flight:
            client.push(client.answer())
        return row

    agent.tick = slow_tick
    out = agent.run(20, until_done=False)
    assert out["overruns"] >= 2 and out["steps"] < 20
    times = [r["t"] for r in agent.log]
    assert all(abs(((t - times[0]) / DT) - round((t - times[0]) / DT)) < 1e-6 for t in times)  # on the grid


def test_wall_clock_jumps_do_not_matter(monkeypatch):
    """The loop reads only the monotonic clock: time.time() jumping a day does nothing."""
    clock = MonotonicClock()
    client, robot = FakeClient(), FakeRobot(clock)
    agent = RobotAgent(AgentConfig(), client, robot, clock)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 86400 * (len(agent.log) % 2))
    policy = FakePolicy()
    agent.arm()
    for _ in range(10):
        if agent.in_flight:
            client.push(client.answer(policy=policy))
        agent.tick()
        time.sleep(0.01)
    assert agent.mode in (Mode.NORMAL, Mode.DEGRADED)


def test_acceleration_limit():
    f = SafetyFilter(SafetyConfig(max_delta=0, max_accel=0.05), spec(), fps=20)  # 0.1 per tick per tick
    f.reset(np.zeros(7))  # from rest
    outs = [f(np.array([1.0, 0, 0, 0, 0, 0, 1.0]), np.zeros(8))[0][0] for _ in range(5)]
    np.testing.assert_allclose(outs, [0.1, 0.3, 0.6, 1.0, 1.0], atol=1e-6)  # speed ramps 0.1, 0.2, 0.3, 0.4


def test_sync_merge_holds_while_inferring_and_runs_from_action_zero():
    agent, client, robot, clock = make(merge=Merge.sync, execute_steps=4)
    step(agent, clock, 1)
    step(agent, clock, 2)  # the reply is slow: the robot holds, no second request
    assert robot.kinds() == ["hold"] * 3 and len(client.submitted) == 1
    client.push(client.answer(value=0.2))
    rows = step(agent, clock, 5)
    assert [r["command"] for r in rows] == ["act"] * 4 + ["hold"]  # the first 4 actions, then wait again
    np.testing.assert_allclose([r["action"][0] for r in rows[:4]], [0.2, 0.21, 0.22, 0.23], atol=1e-6)
    assert len(client.submitted) == 2 and client.submitted[-1].prefix_actions is None


def test_every_robot_adapter_implements_the_robot_interface():
    """The agent drives any `deploy.robots.Robot`; an adapter that leaves out a method cannot be
    built, naming the method, before it reaches the agent (or hardware)."""
    from deploy_helpers import FakeRobot

    from deploy.benchmark import NullRobot
    from deploy.lerobot_arm import LeRobotArm
    from deploy.robots import Robot, SimRobot

    for cls in (SimRobot, LeRobotArm, NullRobot, FakeRobot):
        assert issubclass(cls, Robot) and not cls.__abstractmethods__, cls

    class NoHold(Robot):
        def check_spec(self, spec): ...
        def reset(self): ...
        def observe(self): ...
        def act(self, action): ...
        def hold_action(self): ...
        def stop(self): ...
        def fault(self): ...
        def close(self): ...

    with pytest.raises(TypeError, match="hold"):
        NoHold()


@pytest.mark.parametrize("merge", [Merge.naive, Merge.rtc])
def test_degraded_slows_the_plan_keeps_the_path_and_the_promised_prefix(merge):
    """With agent.degraded_slowdown=2 and a server that stops answering, the plan left when the
    agent turns DEGRADED runs over twice the ticks at half the step (the same total motion, the
    gripper unchanged)."""
    slow = dict(degraded_slowdown=2, hold_after_s=1.0, safe_stop_after_s=2.0)
    agent, client, robot, clock = make(merge, **slow)
    step(agent, clock, 1)
    client.push(client.answer())  # the first chunk: 0.10 .. 0.17 on the continuous dims
    step(agent, clock, 1)  # the server never answers any later request
    rows = step(agent, clock, 30)
    acts = [r["action"] for r in [agent.log[1], *rows] if r["command"] == "act"]
    dx = np.array([a[0] for a in acts])
    assert agent.events["slowed"] == 1 and "DEGRADED" in [r["mode"] for r in rows]
    assert len(acts) > 8  # the chunk's 8 actions lasted longer than 8 ticks
    np.testing.assert_allclose(dx.sum(), sum(0.1 + 0.01 * i for i in range(8)), atol=1e-5)  # the same path
    assert all(a[6] == 1.0 for a in acts)  # the gripper is not re-timed
    halves = [x for x in dx if x < 0.09]
    assert len(halves) == 2 * (len(acts) - 8) and np.allclose(halves[0::2], halves[1::2])
    # off (the default): the same run keeps the rate and holds when the plan is used up
    agent, client, robot, clock = make(merge, hold_after_s=1.0, safe_stop_after_s=2.0)
    step(agent, clock, 1)
    client.push(client.answer())
    rows = step(agent, clock, 31)
    assert sum(r["command"] == "act" for r in rows) == 8 and agent.events["slowed"] == 0


def test_stretch_retimes_deltas_and_absolute_targets():
    from deploy.merge import Plan, stretch

    binary = np.array([False, True])
    plan = Plan({5: np.array([0.4, 1.0]), 6: np.array([0.2, -1.0])})
    assert stretch(plan, 5, 2, True, binary, None) == 2
    assert sorted(plan.actions) == [5, 6, 7, 8]
    np.testing.assert_allclose([plan.actions[t] for t in range(5, 9)], [[0.2, 1], [0.2, 1], [0.1, -1], [0.1, -1]])
    # absolute targets: evenly spaced from the target before (the last executed one here)
    plan = Plan({5: np.array([1.0, 1.0]), 6: np.array([2.0, -1.0])})
    assert stretch(plan, 5, 2, False, binary, np.array([0.0, -1.0])) == 2
    np.testing.assert_allclose([plan.actions[t] for t in range(5, 9)], [[0.5, 1], [1, 1], [1.5, -1], [2, -1]])
    # from a later tick: what comes before keeps its ticks; an ensembled plan is left alone
    plan = Plan({5: np.array([0.4, 1.0]), 6: np.array([0.2, 1.0])})
    assert stretch(plan, 6, 3, True, binary, None) == 1 and sorted(plan.actions) == [5, 6, 7, 8]
    assert stretch(Plan({5: None}), 5, 2, True, binary, None) == 0


def test_slowed_playback_needs_to_know_the_action_space():
    clock = FakeClock()
    client = FakeClient(spec(action_space=""))
    robot = FakeRobot(clock)
    robot.action_space = ""
    with pytest.raises(ValueError, match="agent.degraded_slowdown=2 re-times the plan"):
        RobotAgent(AgentConfig(degraded_slowdown=2), client, robot, clock)
    RobotAgent(AgentConfig(), client, robot, clock)  # off: any action space
    with pytest.raises(ValueError, match="degraded_slowdown must be >= 1"):
        AgentConfig(degraded_slowdown=0)


def test_slowed_playback_keeps_the_actions_promised_to_the_request_in_flight():
    """rtc sent the actions that run while its request is in flight as the prefix the decoder
    keeps: when the link drops meanwhile (DEGRADED at once), those still run at their ticks and
    full size; only the plan after them is slowed."""
    agent, client, robot, clock = make(Merge.rtc, degraded_slowdown=2, hold_after_s=1.0, safe_stop_after_s=2.0)
    step(agent, clock, 3)  # the first reply takes 3 ticks: the delay estimate is 3 ticks
    client.push(client.answer())
    while len(client.submitted) < 2:
        step(agent, clock, 1)
    promised = agent._prefix[2]
    assert len(promised) == 4 and min(promised) == agent.k - 1  # this tick's action and the next 3
    client.connected = False  # no reply will come; the agent turns DEGRADED on its next tick
    step(agent, clock, 20)
    ran = {r["k"]: r["action"] for r in agent.log if r["command"] == "act"}
    assert agent.events["slowed"] == 1 and all(np.array_equal(ran[t], a) for t, a in promised.items())
    slowed = sorted(k for k, a in ran.items() if a[0] < 0.09)
    assert slowed[0] == max(promised) + 1 and len(slowed) == 2 * (len(ran) - 8)
