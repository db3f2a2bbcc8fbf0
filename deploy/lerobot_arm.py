"""A real arm as the agent's robot, through lerobot's `Robot` interface (SO-100/SO-101 follower
and any other lerobot robot whose actions are joint targets).

    arm = LeRobotArm.from_config(ArmConfig(type="so101_follower", port="/dev/ttyACM0",
                                           cameras={"front": {"index_or_path": 0, "width": 640, "height": 480}}),
                                 clock)

The mapping between the policy and the robot lives in `ArmConfig`: which robot observation
keys form the policy's state (in the policy's order), which robot action keys its actions
drive, and which robot camera feeds each policy camera. The vendor's own limits stay on
(`max_relative_target` on the follower). Holding sends the last measured joint positions as the
goal; a driver exception latches a fault, which the agent turns into SAFE_STOP.

Importing lerobot's robot classes loads torch; this adapter is the only deploy module that does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from deploy.robots import Robot, RobotObservation

ACTION_SPACE = "joint_pos"  # absolute joint targets, in the robot's own units (degrees on SO-101)
SO101_JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]


@dataclass
class ArmConfig:
    type: str = "so101_follower"  # a lerobot RobotConfig name
    port: str = "/dev/ttyACM0"
    id: str = "follower"  # lerobot's calibration id
    # robot camera name -> lerobot OpenCV camera settings (index_or_path, width, height, fps)
    cameras: dict[str, dict] = field(default_factory=dict)
    max_relative_target: float | None = 10.0  # the follower's own per-command cap (degrees); None = off
    state_keys: list[str] = field(default_factory=lambda: [f"{j}.pos" for j in SO101_JOINTS])
    action_keys: list[str] = field(default_factory=lambda: [f"{j}.pos" for j in SO101_JOINTS])
    camera_map: dict[str, str] = field(default_factory=dict)  # policy camera -> robot camera; empty: same names
    instruction: str = ""


class LeRobotArm(Robot):
    action_space = ACTION_SPACE
    deterministic_frames = False  # real cameras: an identical frame means a frozen camera

    def __init__(self, robot, cfg: ArmConfig, clock) -> None:
        self.robot, self.cfg, self.clock = robot, cfg, clock
        self.instruction = cfg.instruction
        self.done = self.success = False
        self._fault: str | None = None
        self._measured: dict[str, float] = {}
        missing = [k for k in cfg.action_keys if k not in robot.action_features]
        if missing:
            raise ValueError(f"{robot}: no action keys {missing}; it takes {sorted(robot.action_features)}")
        features = robot.observation_features
        missing = [k for k in cfg.state_keys if k not in features]
        if missing:
            raise ValueError(f"{robot}: no observation keys {missing}; it gives {sorted(features)}")

    @classmethod
    def from_config(cls, cfg: ArmConfig, clock) -> LeRobotArm:
        from lerobot.cameras.opencv import OpenCVCameraConfig
        from lerobot.robots import RobotConfig
        from lerobot.robots.utils import make_robot_from_config

        try:
            config_cls = RobotConfig.get_choice_class(cfg.type)
        except KeyError as e:
            raise ValueError(f"lerobot has no robot type {cfg.type!r}") from e
        cams = {name: OpenCVCameraConfig(**c) for name, c in cfg.cameras.items()}
        robot = make_robot_from_config(
            config_cls(port=cfg.port, id=cfg.id, cameras=cams, max_relative_target=cfg.max_relative_target)
        )
        robot.connect()
        return cls(robot, cfg, clock)

    def check_spec(self, spec) -> None:
        problems = []
        if spec.action_space != self.action_space:
            problems.append(f"the policy's actions are {spec.action_space!r}, this arm takes {self.action_space!r}")
        if spec.action_dim != len(self.cfg.action_keys):
            problems.append(
                f"the policy has {spec.action_dim} action dims, arm.action_keys has {len(self.cfg.action_keys)}"
            )
        if spec.state_dim != len(self.cfg.state_keys):
            problems.append(
                f"the policy has {spec.state_dim} state dims, arm.state_keys has {len(self.cfg.state_keys)}"
            )
        for cam in spec.cameras:
            robot_cam = self.cfg.camera_map.get(cam, cam)
            shape = self.robot.observation_features.get(robot_cam)
            h, w = spec.cameras[cam]
            if shape is None:
                problems.append(f"policy camera {cam!r} has no robot camera {robot_cam!r} (set arm.camera_map)")
            elif tuple(shape[:2]) != (h, w):
                problems.append(
                    f"camera {robot_cam!r} gives {shape[0]}x{shape[1]}, the policy takes {h}x{w}: set its width/height"
                )
        if problems:
            raise ValueError("this arm does not fit the policy: " + "; ".join(problems))
        self.spec = spec

    def reset(self) -> None:
        self.done = self.success = False

    def _guard(self, what: str, fn, *args):
        try:
            return fn(*args)
        except Exception as e:  # noqa: BLE001  (any driver error is a fault the agent must see)
            self._fault = f"{what}: {type(e).__name__}: {e}"
            raise RuntimeError(self._fault) from e

    def observe(self) -> RobotObservation:
        obs = self._guard("get_observation", self.robot.get_observation)
        self._measured = {k: float(obs[k]) for k in self.cfg.state_keys if k in obs}
        state = np.array([obs[k] for k in self.cfg.state_keys], np.float32)
        images = {cam: np.asarray(obs[self.cfg.camera_map.get(cam, cam)]) for cam in self.spec.cameras}
        return RobotObservation(images, state, self.clock.now())

    def act(self, action: np.ndarray) -> None:
        self._guard(
            "send_action",
            self.robot.send_action,
            {k: float(v) for k, v in zip(self.cfg.action_keys, action, strict=True)},
        )

    def hold_action(self) -> np.ndarray | None:
        if not all(k in self._measured for k in self.cfg.action_keys):
            return None
        return np.array([self._measured[k] for k in self.cfg.action_keys], np.float32)

    def hold(self) -> None:
        held = self.hold_action()
        if held is not None and self._fault is None:
            try:
                self.act(held)
            except RuntimeError:
                pass  # latched; the agent stops on the next tick

    def stop(self) -> None:
        self.hold()

    def fault(self) -> str | None:
        return self._fault

    def close(self) -> None:
        if self.robot.is_connected:
            self.robot.disconnect()
