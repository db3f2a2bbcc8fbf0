"""Issue #36 ("Nothing lost, nothing silent, round two"), the deploy node's items: one test per
item, each of which failed on the code before its fix (a8e1fbb):

1. `test_documented_commands_compose`: docs/so101.md's `vla-robot ... 'agent.expect={...}'
   'arm.cameras={...}'` failed composition (hydra's struct mode wanted a `+`).
2. `test_a_state_far_outside_the_recorded_range_is_refused`: a state of -1e6 (1e20 with the
   unified decoder) gave an ordinary chunk from `infer`, and a reply from the server. (`infer`
   and the server check with `state_margin`, 10 scales of each dimension by default.)
3. `test_the_handshake_says_whether_the_policy_takes_prefix_actions`: the handshake had no such
   field; an autoregressive policy behind `merge=rtc` answered `inference_failed` to every
   request that carried a prefix, and the agent armed anyway.
4. `test_a_frozen_client_frees_the_session_within_the_liveness_timeout`: a client that stopped
   reading held the only session for the library's 20 + 20 s ping; no setting shortened it.
5. `test_configs_refuse_values_out_of_range`: `vla-serve policy.fps=-5 policy.action_space=anything`, a
   handshake with fps <= 0 and `vla-robot episodes=-1 max_steps=-5` were accepted.
6. `test_prefix_and_fixed_actions_out_of_range_and_float32_overflow_are_refused`: prefix and
   fixed actions outside the action tokenizer's range were clipped silently; a float64 1e39 on
   the wire became Inf at the float32 cast and reached the policy.
"""

from __future__ import annotations

import base64
import math
import os
import re
import shlex
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from deploy_helpers import FakeClient, FakeClock, FakePolicy, FakeRobot, observation, spec
from deploy_helpers import tiny_checkpoint as deploy_tiny_checkpoint
from helpers import tiny_stats
from websockets.sync.client import connect

from deploy.agent import AgentConfig, Merge, RobotAgent
from deploy.client import HandshakeError, PolicyClient, ServerError
from deploy.protocol import PolicySpec, ProtocolError, check_observation, check_reply, parse_error
from deploy.server import CheckpointPolicy, CheckpointPolicyConfig, PolicyServer, ServerConfig, ServerThread
from deploy.wire import decode, encode
from vla.contract import ObservationError

ROOT = Path(__file__).resolve().parent.parent
APPS = {"vla-train": "vla_train", "vla-eval": "vla_eval", "vla-serve": "vla_serve", "vla-robot": "vla_robot"}
# the training states of the tiny checkpoints below: dim 0 in [-0.5, 0.5], dim 1 constant 2.0, ...
STATE_MIN = np.array([-0.5, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
STATE_MAX = np.array([0.5, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])


# ------------------------------------------------------------------ helpers
def documented_commands() -> list[tuple[str, str, list[str]]]:
    """Every `vla-train` / `vla-eval` / `vla-serve` / `vla-robot` command in an indented code
    block of README.md and docs/*.md, as (file:line, app, arguments): continuation lines joined,
    quotes removed and comments dropped as the shell does, a bare `...` (more arguments) left out.
    Commands quoted in running text are not included: they elide freely (`experiment=...`)."""
    found = []
    pattern = re.compile(r"(^|\s)(" + "|".join(APPS) + r")(\s|$)")
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        lines = doc.read_text().splitlines()
        i = 0
        while i < len(lines):
            line, first = lines[i], i
            if line.startswith("    ") and pattern.search(line):
                while line.endswith("\\") and i + 1 < len(lines):
                    i += 1
                    line = line[:-1] + " " + lines[i].strip()
                words = shlex.split(line, comments=True)
                at = next(j for j, w in enumerate(words) if w in APPS)  # after any VAR=... prefix
                found.append((f"{doc.name}:{first + 1}", words[at], [w for w in words[at + 1 :] if w != "..."]))
            i += 1
    return found


def compose_command(app: str, args: list[str]):
    """The config `app` would run with `args`: hydra composition, then the dataclasses' own checks
    (`OmegaConf.to_object`). A multirun (`-m`) composes its first job."""
    from hydra import compose, initialize
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf, open_dict

    from train import deploy_app, hydra_app

    if "-m" in args:
        args = [
            f"{o.get_key_element()}={next(o.sweep_string_iterator())}" if o.is_sweep_override() else o.input_line
            for o in OverridesParser.create().parse_overrides([a for a in args if a != "-m"])
        ]
    (hydra_app if app in ("vla-train", "vla-eval") else deploy_app).register_configs()
    hydra_keys = any(a.lstrip("+~").startswith("hydra") for a in args)
    GlobalHydra.instance().clear()
    with initialize(version_base=None, config_path=None):
        cfg = compose(config_name=APPS[app], overrides=args, return_hydra_config=hydra_keys)
    if hydra_keys:
        with open_dict(cfg):
            del cfg["hydra"]
    return OmegaConf.to_object(cfg)


def tiny_checkpoint(path: Path, **policy) -> Path:
    """A test-sized checkpoint whose stats record the training states' range (STATE_MIN/MAX)."""
    stats = tiny_stats(7, 8)
    stats["state"].update(min=STATE_MIN.tolist(), max=STATE_MAX.tolist())
    return deploy_tiny_checkpoint(path, image=16, stats=stats, **policy)


def serve(policy, **cfg) -> tuple[ServerThread, int]:
    thread = ServerThread(PolicyServer(policy, ServerConfig(port=0, warmup=1, **cfg)))
    return thread, thread.start()


def ask(port: int, msg) -> tuple[str, object]:
    """One observation over a fresh session -> ("reply", Reply) or ("error", ProtocolError)."""
    with connect(f"ws://127.0.0.1:{port}", compression=None, max_size=None) as ws:
        s = PolicySpec.from_wire(decode(ws.recv(), 1 << 18))
        ws.send(msg if isinstance(msg, bytes) else encode(msg))
        out = ws.recv(timeout=30)
    return ("error", parse_error(out)) if isinstance(out, str) else ("reply", check_reply(decode(out, 1 << 18), s))


def wire_observation(s: PolicySpec, state, prefix=None) -> dict:
    msg = observation(s).to_wire()
    msg["state"] = np.asarray(state)
    if prefix is not None:
        msg["prefix_actions"] = np.asarray(prefix)
    return msg


# ------------------------------------------------------------------ 1. documented commands compose
COMMANDS = documented_commands()


def test_the_extraction_finds_the_documented_commands():
    """Guards the test below against passing on nothing: the SO-101 page's commands are found
    whole (its vla-robot command spans eight lines)."""
    apps = {app for _, app, _ in COMMANDS}
    assert apps == set(APPS), apps
    robot = [args for where, app, args in COMMANDS if where.startswith("so101.md") and app == "vla-robot"]
    assert robot and "agent.expect={action_space: joint_pos, fps: 30}" in robot[0]
    assert any(a.startswith("arm.cameras={front:") for a in robot[0]) and "arm.max_relative_target=5" in robot[0]


@pytest.mark.parametrize("where, app, args", COMMANDS, ids=[f"{w} {a}" for w, a, _ in COMMANDS])
def test_documented_commands_compose(where, app, args):
    """Every documented command composes and passes its config's checks (no hardware, no network).
    Free-form maps need no `+` in `vla-robot`, as in `vla-train`."""
    cfg = compose_command(app, args)
    if where.startswith("so101.md") and app == "vla-robot":
        assert cfg.agent.expect == {"action_space": "joint_pos", "fps": 30}
        assert cfg.arm.cameras["wrist"] == {"index_or_path": 2, "width": 640, "height": 480, "fps": 30}
        assert cfg.arm.instruction == "pick up the cube and put it in the bowl"
    # the map the page mentions in passing (`arm.camera_map={front: top}`) composes too
    if app == "vla-robot":
        assert compose_command(app, [*args, "arm.camera_map={front: top}"]).arm.camera_map == {"front": "top"}


# ------------------------------------------------------------------ 2. state range
@pytest.mark.parametrize("arch, absurd", [("expert", -1e6), ("unified", 1e20)])
def test_a_state_far_outside_the_recorded_range_is_refused(tmp_path, arch, absurd):
    from vla.policy import VLAPolicy

    ckpt = tiny_checkpoint(tmp_path / "ckpt", decoder_arch=arch)
    far = STATE_MAX.copy()
    far[3] = absurd
    # the server refuses it in its protocol checks, as a bad state, before inference
    served = CheckpointPolicy(CheckpointPolicyConfig(checkpoint=str(ckpt), fps=20, action_space="delta_eef_libero"))
    thread, port = serve(served)
    try:
        kind, err = ask(port, wire_observation(served.spec, far.astype(np.float32)))
        assert kind == "error" and err.code == "bad_state", (kind, err)
        assert "state[3] (state_3)" in str(err) and "outside [-10, 11]" in str(err)
        kind, reply = ask(port, wire_observation(served.spec, STATE_MAX.astype(np.float32)))
        assert kind == "reply" and reply.actions.shape == (8, 7)
    finally:
        thread.stop()
    # and so does the policy it serves (state_margin 10, the default of both), in `infer`
    policy = served.policy
    assert policy.state_margin == VLAPolicy.load(ckpt).state_margin == CheckpointPolicyConfig().state_margin == 10
    obs = {"images": observation(spec()).images, "instruction": "pick up the cube"}
    with pytest.raises(ObservationError, match=r"observation\['state'\]\[3\] = [-0-9.e+]+ is outside \[-10, 11\]"):
        policy.infer({**obs, "state": far.astype(np.float32)})
    # every recorded state, and one 9 scales (here 1 or 2: width, magnitude or 1) beyond, is taken:
    # a failing policy in closed loop leaves the demonstrations' range by far more than their width
    for state in (STATE_MIN, STATE_MAX, (STATE_MIN + STATE_MAX) / 2, STATE_MIN - 9):
        assert policy.infer({**obs, "state": state.astype(np.float32)}).shape == (8, 7)
    # a dimension that never varied (dim 1, always 2.0) has its magnitude, 2, as scale
    near = STATE_MAX.copy()
    near[1] = 2.0 + 19.9
    policy.infer({**obs, "state": near.astype(np.float32)})
    near[1] = 2.0 + 20.1
    with pytest.raises(ObservationError, match=r"\[1\] = 22.1 is outside \[-18, 22\]"):
        policy.infer({**obs, "state": near.astype(np.float32)})
    # the margin is vla-serve's to set, and the policy's
    wide = STATE_MAX + 12
    with pytest.raises(ObservationError, match="state_margin=10"):
        policy.infer({**obs, "state": wide.astype(np.float32)})
    assert VLAPolicy.load(ckpt, state_margin=30.0).infer({**obs, "state": wide.astype(np.float32)}).shape == (8, 7)
    served = CheckpointPolicy(
        CheckpointPolicyConfig(checkpoint=str(ckpt), fps=20, action_space="delta_eef_libero", state_margin=3.0)
    )
    assert served.policy.state_margin == 3.0 and served.state_bounds[1][3] == 4.0
    # the agent that keeps getting bad_state stops on the ladder, and says why
    clock = FakeClock()
    client = FakeClient()
    agent = RobotAgent(AgentConfig(), client, FakeRobot(clock), clock)
    agent.arm()
    while agent.mode != "SAFE_STOP":
        agent.tick()
        if client.submitted:
            client.push(ServerError(ProtocolError("bad_state", "state[3] (s3) = -1e+06 is outside [-1, 2]", 1)))
        clock.advance(0.05)
    assert "no fresh chunk" in agent.reason and "last error: bad_state: state[3]" in agent.reason, agent.reason


# ------------------------------------------------------------------ 3. prefix actions in the handshake
def test_the_handshake_says_whether_the_policy_takes_prefix_actions(tmp_path):
    served = {
        kind: CheckpointPolicy(
            CheckpointPolicyConfig(
                checkpoint=str(tiny_checkpoint(tmp_path / kind, decoder_type=kind)),
                fps=20,
                action_space="delta_eef_libero",
            )
        )
        for kind in ("diffusion", "autoregressive")
    }
    assert served["diffusion"].spec.takes_prefix_actions is True
    assert served["autoregressive"].spec.takes_prefix_actions is False
    ar = served["autoregressive"]
    thread, port = serve(ar)
    try:
        client = PolicyClient(f"ws://127.0.0.1:{port}", reconnect=False)
        assert client.connect().takes_prefix_actions is False  # through the wire
        client.close()
        # a prefix is refused in the protocol, naming the field and what to do
        prefix = np.zeros((2, 7), np.float32)
        kind, err = ask(port, wire_observation(ar.spec, STATE_MAX.astype(np.float32), prefix))
        assert kind == "error" and err.code == "bad_prefix" and "agent.merge=naive" in str(err), (kind, err)
        kind, reply = ask(port, wire_observation(ar.spec, STATE_MAX.astype(np.float32)))
        assert kind == "reply"
    finally:
        thread.stop()

    # the agent: merge=rtc refuses to arm (by default), or falls back to the configured mode
    no_prefix = spec(takes_prefix_actions=False)
    clock = FakeClock()
    with pytest.raises(ValueError, match=r"does not take\b.*agent\.merge=naive, ensemble or sync"):
        RobotAgent(AgentConfig(), FakeClient(no_prefix), FakeRobot(clock, no_prefix), clock)
    client = FakeClient(no_prefix)
    agent = RobotAgent(AgentConfig(on_no_prefix="naive"), client, FakeRobot(clock, no_prefix), clock)
    assert agent.cfg.merge == Merge.naive
    agent.arm()
    for _ in range(12):
        agent.tick()
        if client.submitted:
            client.push(client.answer(policy=FakePolicy(no_prefix)))
        clock.advance(0.05)
    assert len(client.submitted) >= 2 and all(o.prefix_actions is None for o in client.submitted)
    assert agent.events["merged"] >= 2
    # modes that send no prefix arm as before
    RobotAgent(AgentConfig(merge="sync"), FakeClient(no_prefix), FakeRobot(clock, no_prefix), clock)


# ------------------------------------------------------------------ 4. liveness
def frozen_client(port: int) -> socket.socket:
    """A WebSocket session opened by hand that then never reads again: it answers no ping."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    assert sock.recv(12) == b"HTTP/1.1 101"  # switched: the session is this socket's
    return sock


def test_a_frozen_client_frees_the_session_within_the_liveness_timeout():
    interval, timeout = 0.2, 0.4
    thread, port = serve(FakePolicy(), ping_interval_s=interval, ping_timeout_s=timeout)
    sock = frozen_client(port)
    try:
        frozen_at = time.monotonic()
        with pytest.raises(HandshakeError, match="409"):  # it holds the session
            PolicyClient(f"ws://127.0.0.1:{port}", reconnect=False).connect()
        while True:  # a reconnecting robot
            try:
                client = PolicyClient(f"ws://127.0.0.1:{port}", reconnect=False)
                client.connect()
                break
            except HandshakeError:
                assert time.monotonic() - frozen_at < interval + 2 * timeout + 2.0, "the frozen client still holds it"
                time.sleep(0.05)
        assert time.monotonic() - frozen_at >= timeout  # released by the ping timeout, not at once
        client.submit(observation(client.spec, seq=1))
        deadline = time.monotonic() + 5
        while not (events := client.poll()) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert events and events[0].seq == 1  # the new session is served
        client.close()
    finally:
        sock.close()
        thread.stop()


# ------------------------------------------------------------------ 5. config validation
def test_configs_refuse_values_out_of_range():
    from train.deploy_app import RobotAppConfig

    bad_policy = {
        "fps=-5": (dict(fps=-5.0), r"policy.fps must be > 0"),
        "fps=nan": (dict(fps=math.nan), r"policy.fps must be > 0"),
        "action_space": (
            dict(action_space="anything"),
            r"policy.action_space must be one of \['delta_eef_libero', 'delta_eef_widowx', 'joint_pos'\]",
        ),
        "state_margin": (dict(state_margin=-1.0), r"policy.state_margin must be >= 0"),
    }
    for kw, message in bad_policy.values():
        with pytest.raises(ValueError, match=message):
            CheckpointPolicyConfig(**kw)
    CheckpointPolicyConfig(fps=30, action_space="joint_pos", state_margin=math.inf)  # inf: no range check
    with pytest.raises(ValueError, match=r"server.ping_timeout_s must be"):
        ServerConfig(ping_timeout_s=0.0)
    # as the command line gives them
    with pytest.raises(ValueError, match="policy.fps must be > 0"):
        compose_command("vla-serve", ["policy.checkpoint=x", "policy.fps=-5"])
    with pytest.raises(ValueError, match="policy.action_space must be one of"):
        compose_command("vla-serve", ["policy.checkpoint=x", "policy.action_space=anything"])
    with pytest.raises(ValueError, match="server.port must be in"):
        compose_command("vla-serve", ["policy.checkpoint=x", "server.port=70000"])
    with pytest.raises(ValueError, match="episodes must be >= 1, got -1"):
        compose_command("vla-robot", ["episodes=-1"])
    with pytest.raises(ValueError, match="max_steps must be >= 0"):
        compose_command("vla-robot", ["max_steps=-5"])
    with pytest.raises(ValueError, match=r"robot must be one of \['sim', 'arm'\]"):
        RobotAppConfig(robot="ur5")
    for kw, message in [
        (dict(reply_timeout_s=0.0), r"agent.reply_timeout_s must be > 0, got 0.0"),
        (dict(delay_percentile=150.0), r"agent.delay_percentile must be in \[0, 100\]"),
        (dict(execute_steps=0), r"agent.execute_steps must be >= 1"),
        (dict(merge="fast"), r"agent.merge must be one of \['rtc', 'naive', 'ensemble', 'sync'\]"),
        (dict(on_no_prefix="rtc"), r"agent.on_no_prefix must be 'refuse' or one of"),
    ]:
        with pytest.raises(ValueError, match=message):
            AgentConfig(**kw)
    # the agent's side of the handshake: a server advertising fps <= 0 is refused at connection
    for fps in (0, -5, math.inf):
        with pytest.raises(ProtocolError, match="fps must be a finite number > 0") as e:
            PolicySpec.from_wire({**spec().to_wire(), "fps": fps})
        assert e.value.code == "bad_handshake"


# ------------------------------------------------------------------ 6. action range, float32
def test_prefix_and_fixed_actions_out_of_range_and_float32_overflow_are_refused(tmp_path):
    s = spec()  # actions in [-1, 1], gripper (dim 6) binary
    state = np.zeros(8, np.float32)
    # the protocol: the range the tokenizer represents, edges included; outside it is refused
    edges = np.array([[1, -1, 1, -1, 1, -1, 1], [-1, 1, 0, 0, 0, 0, -1]], np.float32)
    np.testing.assert_array_equal(check_observation(wire_observation(s, state, edges), s).prefix_actions, edges)
    for index, value, name in [((0, 0), 1.5, "dx"), ((1, 3), -7.0, "drx"), ((0, 6), 2.0, "gripper")]:
        prefix = edges.copy()
        prefix[index] = value
        with pytest.raises(ProtocolError, match=rf"prefix_actions\[{index[0]}, {index[1]}\] \({name}\) = ") as e:
            check_observation(wire_observation(s, state, prefix), s)
        assert e.value.code == "bad_prefix" and "outside [-1, 1]" in str(e.value)
    # wire values that do not survive the float32 cast, named
    big = np.zeros(8, np.float64)
    big[5] = 1e39
    with pytest.raises(ProtocolError, match=r"state\[5\] \(s5\) = 1e\+39 is not a finite float32") as e:
        check_observation(wire_observation(s, big), s)
    assert e.value.code == "bad_state"
    prefix = np.zeros((1, 7), np.float64)
    prefix[0, 2] = -1e39
    with pytest.raises(ProtocolError, match=r"prefix_actions\[0, 2\] \(dz\) = -1e\+39 is not a finite float32") as e:
        check_observation(wire_observation(s, state, prefix), s)
    # over a real session: error replies with the field named, nothing reaches the policy
    policy = FakePolicy()
    thread, port = serve(policy)
    try:
        for msg, code, field in [
            (wire_observation(s, big), "bad_state", "state[5]"),
            (wire_observation(s, state, prefix), "bad_prefix", "prefix_actions[0, 2]"),
            (wire_observation(s, state, np.full((1, 7), 3.0, np.float32)), "bad_prefix", "prefix_actions[0, 0]"),
        ]:
            kind, err = ask(port, msg)
            assert kind == "error" and err.code == code and field in str(err), (kind, err)
        assert policy.calls == 1  # the warm-up only
    finally:
        thread.stop()

    # VLAPolicy.infer refuses fixed actions outside the tokenizer's range instead of clipping them
    from vla.policy import VLAPolicy

    policy = VLAPolicy.load(tiny_checkpoint(tmp_path / "ckpt"))
    obs = {"images": observation(s).images, "state": STATE_MAX.astype(np.float32), "instruction": "pick it up"}
    assert policy.infer(obs, fixed_actions=edges).shape == (8, 7)
    with pytest.raises(ObservationError, match=r"fixed_actions\[1, 4\] = 5 is outside \[-1, 1\]"):
        policy.infer(obs, fixed_actions=np.where(np.arange(7) == 4, [[0.0] * 7, [5.0] * 7], 0.0))
    with pytest.raises(ObservationError, match=r"fixed_actions\[0, 6\] = -3 is outside \[-1, 1\]"):
        policy.infer(obs, fixed_actions=np.array([[0, 0, 0, 0, 0, 0, -3.0]]))
