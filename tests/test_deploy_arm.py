"""The lerobot arm adapter against a mock robot that implements lerobot's `Robot` interface
(SO-101's joints and a camera): mapping, holding, the vendor cap, driver faults."""

from dataclasses import dataclass

import numpy as np
import pytest
from deploy_helpers import FakeClient, FakeClock, spec
from lerobot.robots import Robot, RobotConfig

from deploy.agent import AgentConfig, Mode, RobotAgent
from deploy.lerobot_arm import SO101_JOINTS, ArmConfig, LeRobotArm
from deploy.protocol import Reply


@RobotConfig.register_subclass("mock_so101_for_tests")
@dataclass
class MockArmConfig(RobotConfig):
    height: int = 16
    width: int = 16


class MockArm(Robot):
    """Joints move a fraction of the way to their goal per command; the camera shows noise that
    depends on the joints (a frozen camera can be injected); errors can be injected."""

    config_class = MockArmConfig
    name = "mock_so101_for_tests"

    def __init__(self, config: MockArmConfig) -> None:
        super().__init__(config)
        self.cfg = config
        self.q = {j: 0.0 for j in SO101_JOINTS}
        self.sent: list[dict] = []
        self.connected = False
        self.fail_read = self.frozen = False
        self._frame = np.zeros((config.height, config.width, 3), np.uint8)
        self._rng = np.random.default_rng(0)

    @property
    def observation_features(self) -> dict:
        return {**{f"{j}.pos": float for j in SO101_JOINTS}, "front": (self.cfg.height, self.cfg.width, 3)}

    @property
    def action_features(self) -> dict:
        return {f"{j}.pos": float for j in SO101_JOINTS}

    @property
    def is_connected(self) -> bool:
        return self.connected

    def connect(self, calibrate: bool = True) -> None:
        self.connected = True

    @property
    def is_calibrated(self) -> bool:
        return True

    def calibrate(self) -> None:
        pass

    def configure(self) -> None:
        pass

    def get_observation(self) -> dict:
        if self.fail_read:
            raise ConnectionError("[TxRxResult] There is no status packet!")
        if not self.frozen:
            self._frame = self._rng.integers(0, 255, self._frame.shape, dtype=np.uint8)
        return {**{f"{j}.pos": v for j, v in self.q.items()}, "front": self._frame.copy()}

    def send_action(self, action: dict) -> dict:
        self.sent.append(dict(action))
        for k, v in action.items():
            j = k.removesuffix(".pos")
            self.q[j] += 0.5 * (v - self.q[j])
        return action

    def disconnect(self) -> None:
        self.connected = False


def arm_spec():
    return spec(
        cameras={"front": [16, 16]},
        state_names=[f"{j}.pos" for j in SO101_JOINTS],
        action_names=[f"{j}.pos" for j in SO101_JOINTS],
        action_space="joint_pos",
        binary_dims=[],
        action_low=[-100.0] * 6,
        action_high=[100.0] * 6,
    )


def make(tmp_path, **arm_kw):
    clock = FakeClock()
    mock = MockArm(MockArmConfig(id="t", calibration_dir=tmp_path))
    mock.connect()
    arm = LeRobotArm(mock, ArmConfig(instruction="pick up the cube", **arm_kw), clock)
    client = FakeClient(arm_spec())
    agent = RobotAgent(AgentConfig(), client, arm, clock)
    agent.arm()
    return agent, client, arm, mock, clock


def answer(client, value):
    obs = client.submitted[-1]
    return Reply(np.full((8, 6), value, np.float32), obs.seq, obs.epoch, 1.0)


def test_policy_actions_reach_the_joints_in_order_and_holds_keep_the_pose(tmp_path):
    agent, client, arm, mock, clock = make(tmp_path)
    agent.tick()
    assert client.submitted[-1].images["front"].shape == (16, 16, 3)
    np.testing.assert_array_equal(client.submitted[-1].state, np.zeros(6))
    client.push(answer(client, 10.0))
    clock.advance(0.05)
    agent.tick()
    assert mock.sent[-1] == {f"{j}.pos": 10.0 for j in SO101_JOINTS}
    before = len(mock.sent)
    client.connected = False
    for _ in range(10):  # no fresh chunks: hold = the measured pose as the goal
        clock.advance(0.05)
        agent.tick()
    assert agent.mode == Mode.HOLD
    held = mock.sent[-1]
    assert len(mock.sent) > before and all(held[f"{j}.pos"] == pytest.approx(mock.q[j], abs=3.0) for j in SO101_JOINTS)


def test_driver_error_safe_stops(tmp_path):
    agent, client, arm, mock, clock = make(tmp_path)
    agent.tick()
    client.push(answer(client, 1.0))
    clock.advance(0.05)
    agent.tick()
    mock.fail_read = True
    clock.advance(0.05)
    agent.tick()
    clock.advance(0.05)
    agent.tick()
    assert agent.mode == Mode.SAFE_STOP and "no status packet" in agent.reason


def test_frozen_camera_safe_stops(tmp_path):
    agent, client, arm, mock, clock = make(tmp_path)
    mock.frozen = True
    for i in range(20):
        if agent.in_flight:
            client.push(answer(client, 5.0 + i))
        clock.advance(0.05)
        agent.tick()
    assert agent.mode == Mode.SAFE_STOP and "frozen" in agent.reason


def test_mapping_mismatches_are_named(tmp_path):
    clock = FakeClock()
    mock = MockArm(MockArmConfig(id="t", calibration_dir=tmp_path))
    with pytest.raises(ValueError, match="no action keys"):
        LeRobotArm(mock, ArmConfig(action_keys=["elbow.pos"]), clock)
    arm = LeRobotArm(mock, ArmConfig(), clock)
    with pytest.raises(ValueError, match="camera_map"):
        arm.check_spec(
            spec(
                action_space="joint_pos",
                action_names=[f"{j}.pos" for j in SO101_JOINTS],
                state_names=[f"{j}.pos" for j in SO101_JOINTS],
                binary_dims=[],
            )
        )
    with pytest.raises(ValueError, match="delta_eef_libero"):
        arm.check_spec(spec())


def _write_so101_dataset(root, episodes=2, t=6):
    """A LeRobotDataset v3 in lerobot-record's SO-101 layout, written with lerobot's API."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    names = [f"{j}.pos" for j in SO101_JOINTS]
    features = {
        "observation.images.front": {"dtype": "image", "shape": (16, 16, 3), "names": ["height", "width", "channels"]},
        "observation.state": {"dtype": "float32", "shape": (6,), "names": names},
        "action": {"dtype": "float32", "shape": (6,), "names": names},
    }
    ds = LeRobotDataset.create("local/so101", 30, features, root=root, use_videos=False)
    rng = np.random.default_rng(0)
    for _ in range(episodes):
        q = rng.uniform(-20, 20, 6).astype(np.float32)
        for _ in range(t):
            target = q + rng.normal(0, 2, 6).astype(np.float32)
            ds.add_frame(
                {
                    "observation.images.front": rng.integers(0, 255, (16, 16, 3), dtype=np.uint8),
                    "observation.state": q,
                    "action": target,
                    "task": "pick up the cube",
                }
            )
            q = target
        ds.save_episode()
    ds.finalize()
    return root


def test_so101_page_end_to_end(tmp_path):
    """docs/so101.md's commands: train on an SO-101 recording, serve with fps and action space,
    drive the arm adapter (a mock lerobot robot) through server and agent."""
    from helpers import composed

    from deploy.agent import MonotonicClock
    from deploy.client import PolicyClient
    from deploy.server import CheckpointPolicy, CheckpointPolicyConfig, PolicyServer, ServerConfig, ServerThread
    from train.hydra_app import to_train_config
    from train.loop import train

    root = _write_so101_dataset(tmp_path / "so101")
    cfg = to_train_config(
        composed(
            [
                "experiment=debug",
                f"run_dir={tmp_path / 'run'}",
                "data.source=lerobot",
                f"data.root={root}",
                "data.camera_keys={front: observation.images.front}",
                "policy.cameras=[front]",
                "policy.state_dim=6",
                "policy.action_dim=6",
                "policy.action_tokenizer.binary_dims=[]",
                "eval_at_end=false",
                "data.loader.batch_size=4",
            ]
        )
    )
    train(cfg)
    ckpt = tmp_path / "run" / "checkpoints" / "latest"
    policy = CheckpointPolicy(CheckpointPolicyConfig(checkpoint=str(ckpt), fps=30, action_space="joint_pos"))
    assert policy.spec.cameras == {"front": [16, 16]} and policy.spec.action_dim == 6 and policy.spec.binary_dims == []
    thread = ServerThread(PolicyServer(policy, ServerConfig(port=0, warmup=1)))
    port = thread.start()
    clock = MonotonicClock()
    mock = MockArm(MockArmConfig(id="t", calibration_dir=tmp_path))
    mock.connect()
    # start where the recording was (the server refuses states far outside it): the middle of its range
    low, high = policy.state_bounds
    mock.q = {j: float(v) for j, v in zip(SO101_JOINTS, (low + high) / 2, strict=True)}
    try:
        client = PolicyClient(f"ws://127.0.0.1:{port}")
        client.connect()
        arm = LeRobotArm(mock, ArmConfig(instruction="pick up the cube"), clock)
        agent = RobotAgent(
            AgentConfig(expect={"action_space": "joint_pos", "fps": 30}, hold_after_s=0.6, safe_stop_after_s=2.0),
            client,
            arm,
            clock,
        )
        agent.arm()
        out = agent.run(30, until_done=False)
        client.close()
    finally:
        thread.stop()
    assert out["events"].get("merged", 0) >= 2 and agent.mode != Mode.SAFE_STOP, out
    acts = [a for a in mock.sent if a]
    assert acts and all(
        set(a) == {f"{j}.pos" for j in SO101_JOINTS} and all(np.isfinite(list(a.values()))) for a in acts
    )
