"""The policy server over real WebSockets: handshake, health, strict input handling, sessions,
tokens, and the agent through a fault-injecting proxy (real clock, seconds)."""

import pickle
import time
import urllib.error
import urllib.request

import msgpack
import numpy as np
import pytest
import websockets
from deploy_helpers import FakePolicy, FakeRobot, FaultProxy, observation
from websockets.sync.client import connect

from deploy.agent import AgentConfig, Mode, MonotonicClock, RobotAgent
from deploy.client import HandshakeError, PolicyClient
from deploy.protocol import PolicySpec, check_reply, parse_error
from deploy.server import PolicyServer, ServerConfig, ServerThread
from deploy.wire import decode, encode


def start(policy=None, **cfg):
    policy = policy or FakePolicy()
    server = PolicyServer(policy, ServerConfig(port=0, warmup=cfg.pop("warmup", 1), **cfg))
    thread = ServerThread(server)
    return thread, thread.start(), policy


def connect_eventually(url: str, seconds: float = 10.0) -> PolicyClient:
    """A new session once the server has released the previous one (it does so when that
    connection's closing handshake ends, a moment after the client saw it close)."""
    deadline = time.monotonic() + seconds
    while True:
        client = PolicyClient(url)
        try:
            client.connect()
            return client
        except HandshakeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def health(port) -> int:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).status
    except urllib.error.HTTPError as e:
        return e.code


def test_handshake_health_and_replies():
    thread, port, policy = start()
    try:
        assert health(port) == 200
        with connect(f"ws://127.0.0.1:{port}", compression=None) as ws:
            meta = PolicySpec.from_wire(decode(ws.recv(), 1 << 18))
            assert meta == policy.spec
            for seq in (5, 6):
                ws.send(encode(observation(meta, seq=seq).to_wire()))
                r = check_reply(decode(ws.recv(), 1 << 18), meta)
                assert r.seq == seq and r.infer_ms >= 0 and r.actions.shape == (8, 7)
        assert policy.resets == [0, 1]  # warm-up, then the session's first epoch
    finally:
        thread.stop()


def test_health_is_ready_only_after_warm_up():
    import threading

    slow = FakePolicy(delay_s=0.5)
    server = PolicyServer(slow, ServerConfig(port=0, warmup=2))
    thread = ServerThread(server)
    t = threading.Thread(target=thread.start, daemon=True)
    t.start()
    while server.port is None:
        time.sleep(0.01)
    assert health(server.port) == 503
    t.join(10)
    assert health(server.port) == 200 and slow.calls == 2
    thread.stop()


def test_bad_messages_get_error_replies_and_the_session_goes_on():
    thread, port, policy = start()
    s = policy.spec
    good = observation(s, seq=1).to_wire()
    bad = {
        "text frame": "hello",
        "pickle": pickle.dumps(good),
        "random bytes": bytes(range(256)) * 4,
        "truncated": encode(good)[:-10],
        "missing camera": encode({**good, "images": {"agentview": good["images"]["agentview"]}}),
        "extra camera": encode({**good, "images": {**good["images"], "side": good["images"]["wrist"]}}),
        "wrong resolution": encode({**good, "images": {**good["images"], "wrist": np.zeros((8, 8, 3), np.uint8)}}),
        "state width": encode({**good, "state": np.zeros(3, np.float32)}),
        "NaN state": encode({**good, "state": np.full(8, np.nan, np.float32)}),
        "object dtype": msgpack.packb(
            {
                **{k: v for k, v in good.items() if k != "state"},
                "state": {b"__ndarray__": True, b"data": b"x" * 8, b"dtype": "|O", b"shape": [1]},
            },
            default=lambda a: encode(a),
        ),
        "huge shape": msgpack.packb(
            {
                "images": {
                    "agentview": {b"__ndarray__": True, b"data": b"", b"dtype": "|u1", b"shape": [10**6, 10**6, 3]}
                }
            }
        ),
    }
    try:
        with connect(f"ws://127.0.0.1:{port}", compression=None, max_size=None) as ws:
            ws.recv()
            for name, msg in bad.items():
                ws.send(msg)
                reply = ws.recv(timeout=10)
                assert isinstance(reply, str), name
                err = parse_error(reply)
                assert err.code != "server_error" and "Traceback" not in reply, (name, reply)
            ws.send(encode(good))  # still serving this session
            assert check_reply(decode(ws.recv(), 1 << 18), s).seq == 1
        assert policy.calls == 2  # warm-up + the good one: nothing bad reached the model
    finally:
        thread.stop()


def test_a_100_mb_message_is_refused_and_the_server_keeps_serving():
    thread, port, policy = start()
    try:
        with connect(f"ws://127.0.0.1:{port}", compression=None, max_size=None) as ws:
            ws.recv()
            ws.send(b"\0" * (100 * 2**20))
            with pytest.raises(websockets.ConnectionClosed) as e:
                ws.recv(timeout=10)
            assert e.value.rcvd.code == 1009  # message too big
        connect_eventually(f"ws://127.0.0.1:{port}").close()
    finally:
        thread.stop()


def test_one_session_at_a_time():
    thread, port, _ = start()
    try:
        first = PolicyClient(f"ws://127.0.0.1:{port}", reconnect=False)
        first.connect()
        with pytest.raises(HandshakeError, match="409.*another session"):
            PolicyClient(f"ws://127.0.0.1:{port}").connect()
        first.close()
        connect_eventually(f"ws://127.0.0.1:{port}").close()
    finally:
        thread.stop()


def test_tokens():
    with pytest.raises(ValueError, match="token"):
        PolicyServer(FakePolicy(), ServerConfig(host="0.0.0.0", port=0))
    thread, port, _ = start(token="s3cret")
    try:
        for token in ("", "wrong"):
            with pytest.raises(HandshakeError, match="401"):
                PolicyClient(f"ws://127.0.0.1:{port}", token=token).connect()
        c = PolicyClient(f"ws://127.0.0.1:{port}", token="s3cret")
        c.connect()
        c.close()
    finally:
        thread.stop()


def test_model_faults_become_error_replies():
    policy = FakePolicy()
    thread, port, _ = start(policy)
    try:
        with connect(f"ws://127.0.0.1:{port}", compression=None) as ws:
            ws.recv()
            policy.nan = True
            ws.send(encode(observation(policy.spec, seq=1).to_wire()))
            assert parse_error(ws.recv()).code == "non_finite_output"
            policy.nan, policy.shape = False, (3, 7)
            ws.send(encode(observation(policy.spec, seq=2).to_wire()))
            err = parse_error(ws.recv())
            assert err.code == "inference_failed" and err.seq == 2 and "shape" in str(err)
    finally:
        thread.stop()


# ------------------------------------------------------------------ agent + proxy + server
def run_agent(proxy_port, seconds, cfg=None, during=None):
    clock = MonotonicClock()
    client = connect_eventually(f"ws://127.0.0.1:{proxy_port}")  # after a previous run's session ended
    robot = FakeRobot(clock)
    agent = RobotAgent(cfg or AgentConfig(), client, robot, clock)
    agent.arm()
    modes = []
    start_t = clock.now()
    k = 0
    while clock.now() - start_t < seconds:
        clock.sleep_until(start_t + k * agent.period)
        if during:
            during(clock.now() - start_t, agent)
        modes.append(agent.tick()["mode"])
        k += 1
    client.close()
    assert all(a is None or np.isfinite(a).all() for _, a in robot.commands)
    return agent, modes


@pytest.fixture
def served():
    thread, port, policy = start(FakePolicy(delay_s=0.01))
    proxy = FaultProxy(port)
    proxy.start()
    yield thread, port, policy, proxy
    thread.stop()


def test_latency_with_jitter_keeps_running(served):
    _, _, _, proxy = served
    proxy.delay_s, proxy.jitter_s = 0.05, 0.1  # 1x-10x the model time, jittered
    agent, modes = run_agent(proxy.port, 2.0)
    assert modes[-1] in ("NORMAL", "DEGRADED") and agent.events["merged"] >= 5 and "SAFE_STOP" not in modes


@pytest.mark.parametrize("seconds", [0.2, 0.4])
def test_short_partition_holds_then_recovers(served, seconds):
    """Replies held for 200 / 400 ms: the plan covers the first (or the robot holds briefly);
    400 ms outlasts the 300 ms HOLD threshold. Both resume, neither stops."""
    _, _, _, proxy = served
    agent, modes = run_agent(proxy.port, 1.5, during=lambda t, a: proxy.partition(seconds) if 0.5 <= t < 0.55 else None)
    assert modes[-1] in ("NORMAL", "DEGRADED") and "SAFE_STOP" not in modes
    if seconds > agent.cfg.hold_after_s:
        assert "HOLD" in modes[10:]


@pytest.mark.parametrize("seconds", [2.0, 30.0])
def test_long_partition_safe_stops_within_a_second(served, seconds):
    """Both end the same way after 1 s without a fresh chunk; the test stops at 2.5 s."""
    _, _, _, proxy = served
    agent, modes = run_agent(proxy.port, 2.5, during=lambda t, a: proxy.partition(seconds) if 0.5 <= t < 0.55 else None)
    assert modes[-1] == "SAFE_STOP" and "no fresh chunk" in agent.reason
    stop = modes.index("SAFE_STOP")
    assert modes[stop:] == ["SAFE_STOP"] * (len(modes) - stop)  # latched
    # 1 s after the last fresh chunk, which came up to a few ticks before the partition began
    assert 0.5 - 0.3 + 1.0 <= stop * agent.period <= 0.5 + 1.0 + 0.5


def test_duplicated_and_reordered_replies_are_dropped(served):
    _, _, _, proxy = served
    proxy.duplicate = True
    agent, modes = run_agent(proxy.port, 1.0)
    assert agent.events["dropped_stale"] >= 3 and agent.events["merged"] >= 3
    # one request is in flight at a time, so replies cross only after a request timed out:
    # the proxy holds each reply until the next, which overtakes it
    proxy.duplicate, proxy.reorder = False, True
    agent, modes = run_agent(proxy.port, 1.5, AgentConfig(reply_timeout_s=0.2, hold_after_s=0.5))
    assert agent.events["request_timeout"] >= 2 and agent.events["merged"] >= 2 and agent.events["dropped_stale"] >= 2


def test_server_killed_mid_inference_and_restarted():
    policy = FakePolicy(delay_s=0.02)
    thread, port, _ = start(policy)
    state = {"restarted": None}

    def during(t, agent):
        if 0.5 <= t and state["restarted"] is None:
            thread.stop()  # killed; its session is gone
            state["restarted"] = False
        if 0.7 <= t and state["restarted"] is False:
            new = PolicyServer(policy, ServerConfig(port=port, warmup=1))
            state["thread"] = ServerThread(new)
            state["thread"].start()
            state["restarted"] = True

    # a 2 s ladder: reconnecting (with backoff) must not race the SAFE_STOP clock on a busy machine
    agent, modes = run_agent(port, 2.5, AgentConfig(safe_stop_after_s=2.0), during)
    state["thread"].stop()
    assert agent.events["disconnected"] >= 1 and agent.events["reconnected"] == 1
    assert "HOLD" in modes and modes[-1] in ("NORMAL", "DEGRADED")  # 0.2 s down: resumed
    assert agent.mode != Mode.SAFE_STOP


def test_soak_keeps_every_buffer_bounded(served):
    """Seconds at the policy rate (the benchmark runs minutes): the agent's logs, send records and the
    client's queues stay bounded; nothing accumulates per tick."""
    _, _, _, proxy = served
    cfg = AgentConfig(log_ticks=50)
    agent, modes = run_agent(proxy.port, 3.0, cfg)
    assert agent.events["merged"] >= 10 and len(modes) >= 55
    assert len(agent.log) == 50 and len(agent._sent) <= 65 and len(agent._prefix) <= 65
    assert len(agent.delay.samples) <= cfg.delay_window and len(agent.plan.actions) <= 8
