"""End to end: the built-in simulator as a robot, driven in real time through server + agent;
the agent's core without torch; openpi's unmodified client against the server."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from deploy_helpers import spec, tiny_checkpoint

from deploy.agent import AgentConfig, Mode, MonotonicClock, RobotAgent
from deploy.client import PolicyClient
from deploy.robots import SimRobot
from deploy.server import CheckpointPolicy, CheckpointPolicyConfig, PolicyServer, ServerConfig, ServerThread

ROOT = Path(__file__).resolve().parents[1]


class OracleSimRobot(SimRobot):
    """SimRobot that keeps a snapshot of the simulator at each observation (keyed by the state
    vector the agent sends), so the oracle plans from what was observed, not from wherever the
    robot has moved by the time the request is served (which depends on the machine's load)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.snapshots: dict[bytes, tuple] = {}

    def observe(self):
        import mujoco

        obs = super().observe()
        u = self.env.unwrapped
        with self.lock:
            data = mujoco.MjData(u.model)
            mujoco.mj_copyData(data, u.model, u.data)
            snap = (data, u._target_pos.copy(), u._target_rot.copy())
        self.snapshots[np.asarray(obs.state, np.float32).tobytes()] = snap
        while len(self.snapshots) > 64:
            self.snapshots.pop(next(iter(self.snapshots)))
        return obs


class ExpertPolicy:
    """The built-in suite's scripted expert served as a policy, an oracle: each chunk is the
    expert's plan from the observed simulator state, after the request's `prefix_actions` (the
    actions the robot runs while the request is in flight) have run on a private copy of the
    simulator. Success here tests the loop (server, agent, merging, safety), not a model."""

    def __init__(self, robot: OracleSimRobot) -> None:
        self.robot, self.spec = robot, spec(image=32)
        self.scratch = None

    def reset(self, seed: int) -> None:
        pass

    def infer(self, obs) -> np.ndarray:
        import mujoco

        from envs.registry import make_env
        from envs.tabletop.experts import ScriptedExpert

        if self.robot.episode < 0:  # the server's warm-up, before the robot's first episode
            return np.zeros((self.spec.chunk_size, self.spec.action_dim), np.float32)
        if self.scratch is None:
            self.scratch = make_env("builtin", self.robot.env.unwrapped.task.name, 32).unwrapped
            self.scratch.reset(seed=self.robot.seed + self.robot.episode)
        dst = self.scratch
        data, target_pos, target_rot = self.robot.snapshots[np.asarray(obs.state, np.float32).tobytes()]
        mujoco.mj_copyData(dst.data, dst.model, data)
        dst._target_pos, dst._target_rot = target_pos.copy(), target_rot.copy()
        chunk = [] if obs.prefix_actions is None else list(np.asarray(obs.prefix_actions, np.float32))
        for a in chunk:
            dst.simulate(a)
        expert = ScriptedExpert(dst)
        while len(chunk) < self.spec.chunk_size:
            chunk.append(expert.act().astype(np.float32))
            dst.simulate(chunk[-1])
        return np.stack(chunk)


def drive(policy, robot, clock, steps, cfg=None):
    thread = ServerThread(PolicyServer(policy, ServerConfig(port=0, warmup=1)))
    port = thread.start()
    try:
        client = PolicyClient(f"ws://127.0.0.1:{port}")
        client.connect()
        agent = RobotAgent(cfg or AgentConfig(), client, robot, clock)
        agent.arm()
        out = agent.run(steps)
        client.close()
    finally:
        thread.stop()
        robot.close()
    return agent, out


def test_sim_robot_completes_a_task_through_server_and_agent():
    clock = MonotonicClock()
    robot = OracleSimRobot("lift_red", 32, clock, seed=0)
    policy = ExpertPolicy(robot)
    agent, out = drive(policy, robot, clock, 200)
    assert out["success"], out
    assert out["events"]["merged"] >= 5 and out["mode"] != "SAFE_STOP"
    acts = [a for kind, a in robot.commands if kind == "act"]
    assert len(acts) >= 10 and all(np.isfinite(a).all() and np.abs(a).max() <= 1.0 for a in acts)


def test_a_checkpoint_drives_the_sim_robot(tmp_path):
    """A test-sized VLA checkpoint, served by `CheckpointPolicy` as `vla-serve` serves one."""
    tiny_checkpoint(tmp_path / "ckpt")
    with pytest.raises(ValueError, match="does not record its control rate or action convention"):
        CheckpointPolicy(CheckpointPolicyConfig(checkpoint=str(tmp_path / "ckpt")))
    policy = CheckpointPolicy(
        CheckpointPolicyConfig(checkpoint=str(tmp_path / "ckpt"), fps=20, action_space="delta_eef_libero")
    )
    assert policy.spec.weights_sha256 and policy.spec.cameras == {"agentview": [32, 32], "wrist": [32, 32]}
    assert policy.spec.prefix_trained_steps == 0  # trained without committed prefixes
    tiny_checkpoint(tmp_path / "prefixed", prefix_max_steps=3)
    prefixed = CheckpointPolicyConfig(checkpoint=str(tmp_path / "prefixed"), fps=20, action_space="delta_eef_libero")
    assert CheckpointPolicy(prefixed).spec.prefix_trained_steps == 3  # what the handshake tells the agent
    clock = MonotonicClock()
    robot = SimRobot("lift_red", 32, clock, seed=0)
    agent, out = drive(policy, robot, clock, 30, AgentConfig(hold_after_s=0.5, safe_stop_after_s=2.0))
    assert out["steps"] + out["overruns"] == 30 and out["events"]["merged"] >= 3 and agent.mode != Mode.SAFE_STOP, out
    assert all(np.isfinite(a).all() for _, a in robot.commands if a is not None)


def test_agent_core_imports_without_torch():
    code = textwrap.dedent(
        """
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked in this test")
        sys.meta_path.insert(0, Block())
        import deploy.agent, deploy.client, deploy.safety, deploy.protocol, deploy.wire, deploy.robots
        assert "torch" not in sys.modules
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def openpi_python() -> str:
    py = os.environ.get("VLA_OPENPI_PYTHON") or str(ROOT / ".venv-openpi" / "bin" / "python")
    if not Path(py).exists():
        pytest.fail(f"openpi-client's environment is missing ({py}); `bash .ci/setup` builds it (.venv-openpi)")
    return py


def test_unmodified_openpi_client_talks_to_the_server():
    """openpi-client 0.1.2 (numpy < 2, its own environment) connects, reads the metadata and
    calls infer; a bad observation comes back as its RuntimeError."""
    from deploy_helpers import FakePolicy

    policy = FakePolicy()
    thread = ServerThread(PolicyServer(policy, ServerConfig(port=0, warmup=1)))
    port = thread.start()
    code = textwrap.dedent(
        f"""
        import numpy as np
        from openpi_client.websocket_client_policy import WebsocketClientPolicy
        c = WebsocketClientPolicy("127.0.0.1", {port})
        meta = c.get_server_metadata()
        assert meta["protocol"] == "vla-deploy/1" and meta["chunk_size"] == 8, meta
        obs = {{"images": {{c_: np.zeros((h, w, 3), np.uint8) for c_, (h, w) in meta["cameras"].items()}},
               "state": np.zeros(len(meta["state_names"]), np.float32), "instruction": "pick up the cube",
               "seq": 3, "epoch": 1}}
        out = c.infer(obs)
        assert out["actions"].shape == (8, 7) and out["seq"] == 3 and out["server_timing"]["infer_ms"] >= 0
        plain = {{k: v for k, v in obs.items() if k not in ("seq", "epoch")}}  # as openpi's own examples send
        assert c.infer(plain)["seq"] == 0
        try:
            c.infer({{**obs, "state": np.zeros(2, np.float32)}})
        except RuntimeError as e:
            assert "bad_state" in str(e), e
        else:
            raise AssertionError("a bad observation was answered")
        print("ok", np.__version__)
        """
    )
    try:
        out = subprocess.run([openpi_python(), "-c", code], capture_output=True, text=True, timeout=120)
    finally:
        thread.stop()
    assert out.returncode == 0 and out.stdout.startswith("ok 1."), out.stdout + out.stderr


@pytest.mark.parametrize(
    "state_stats, error",
    [
        ({"mean": [float("nan")] * 8, "std": [1.0] * 8}, "state.mean contain NaN"),
        ({"mean": [0.0] * 5, "std": [1.0] * 5}, r"state.mean has shape \(5,\), expected \(8,\)"),
        ({"mean": [0.0] * 8, "std": [0.0] * 8}, None),  # constant state dims: divided by 1, not 0
    ],
    ids=["nan", "width", "std0"],
)
def test_norm_stats_are_checked_at_load(tmp_path, state_stats, error):
    """A checkpoint whose stats were written by another tool (manifest updated to match)."""
    import hashlib
    import json

    ckpt = tiny_checkpoint(tmp_path / "ckpt")
    stats = json.loads((ckpt / "stats.json").read_text())
    stats["state"] = state_stats
    (ckpt / "stats.json").write_text(json.dumps(stats))
    manifest = json.loads((ckpt / "manifest.json").read_text())
    data = (ckpt / "stats.json").read_bytes()
    manifest["files"]["stats.json"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (ckpt / "manifest.json").write_text(json.dumps(manifest))
    cfg = CheckpointPolicyConfig(checkpoint=str(ckpt), fps=20, action_space="delta_eef_libero")
    if error is None:
        policy = CheckpointPolicy(cfg)
        from deploy.server import warmup_observation

        assert np.isfinite(policy.infer(warmup_observation(policy.spec))).all()
    else:
        with pytest.raises(ValueError, match=error):
            CheckpointPolicy(cfg)


def test_console_scripts_serve_and_drive(tmp_path):
    """`vla-serve` and `vla-robot` as a user starts them (hydra command lines)."""
    import time
    import urllib.error
    import urllib.request

    from helpers import free_port

    ckpt = tiny_checkpoint(tmp_path / "ckpt")
    port = free_port()
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen(
        [
            str(bin_dir / "vla-serve"),
            f"policy.checkpoint={ckpt}",
            f"server.port={port}",
            "policy.fps=20",
            "policy.action_space=delta_eef_libero",
            "policy.threads=1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        for _ in range(600):
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).status == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        else:
            raise AssertionError("vla-serve never became healthy")
        out = subprocess.run(
            [
                str(bin_dir / "vla-robot"),
                f"server=ws://127.0.0.1:{port}",
                "robot=sim",
                "sim_task=lift_red",
                "episodes=2",
                "max_steps=15",
                "agent.hold_after_s=0.6",
                "agent.safe_stop_after_s=2.0",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        lines = out.stdout.strip().splitlines()
        assert lines[-3].split()[:2] == ["episode", "success"] and len(lines[-2].split()) >= 5, out.stdout
    finally:
        server.terminate()
        server.wait(30)
    log = server.stdout.read()
    assert "warm-up done" in log and "serving" in log, log
