"""SimplerEnv Bridge's conventions as this stack uses them, with no simulator import: the tasks
and their step limits, the protocol's layout count, the policy's camera, state and action names
and spaces (the environment, `envs.simpler.env`, says what each means)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

CAMERA = "image"  # the policy's name for ManiSkill's 3rd_view_camera
STATE_NAMES = ["eef_x", "eef_y", "eef_z", "eef_rx", "eef_ry", "eef_rz", "gripper_open"]
# The state's rotation is the end effector's orientation relative to the gripper pointing
# straight down (Ry(pi/2) in the base frame, (w, x, y, z)), as a rotation vector: continuous
# over the workspace, where Euler angles sit at pitch ~ pi/2 (gimbal lock) and roll, yaw ~ +-pi.
DOWN = np.array([math.cos(math.pi / 4), 0.0, math.sin(math.pi / 4), 0.0])
ACTION_NAMES = ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]  # gripper: +1 opens, -1 closes
LAYOUTS = 24  # the protocol's episodes per task
FPS = 5.0
FINGER_CLOSED, FINGER_OPEN = 0.015, 0.037  # the gripper joint's range (ManiSkill's WidowX controller)
INSTALL_HINT = "install the project's simpler extra: pip install -e '.[simpler]' (bash .ci/setup does)"


@dataclass(frozen=True)
class BridgeTask:
    env_id: str
    max_steps: int
    jitter: float  # metres, the bound of a fresh placement's offset in x and y
    instruction: str  # ManiSkill's get_language_instruction(), known without building the scene
    move_target: bool = True  # False: the target is an invisible success region fixed to the scene


TASKS = {
    "put_carrot_on_plate": BridgeTask("PutCarrotOnPlateInScene-v1", 60, 0.03, "put carrot on plate"),
    "put_spoon_on_towel": BridgeTask("PutSpoonOnTableClothInScene-v1", 60, 0.03, "put the spoon on the towel"),
    "stack_green_cube_on_yellow_cube": BridgeTask(
        "StackGreenCubeOnYellowCubeBakedTexInScene-v1", 60, 0.03, "stack the green block on the yellow block"
    ),
    "put_eggplant_in_basket": BridgeTask(
        "PutEggplantInBasketScene-v1", 120, 0.015, "put eggplant into yellow basket", move_target=False
    ),
}


def spaces(image_size: int) -> tuple[gym.spaces.Dict, gym.spaces.Box]:
    img = gym.spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
    state = gym.spaces.Box(-np.inf, np.inf, (len(STATE_NAMES),), np.float32)
    high = np.array([0.05, 0.05, 0.05, math.pi / 2, math.pi / 2, math.pi / 2, 1.0], dtype=np.float32)
    return gym.spaces.Dict({CAMERA: img, "state": state}), gym.spaces.Box(-high, high, dtype=np.float32)


# ------------------------------------------------------------------ the BridgeData V2 ports
# The LeRobot ports of BridgeData V2 (IPEC-COMMUNITY/bridge_orig_lerobot, made from OXE's
# `bridge_orig` by openx2lerobot) store, at 5 Hz:
#   observation.state (8): x, y, z, roll, pitch, yaw, pad (always 0), gripper (0 closed .. 1 open)
#   action (7): the next state's x..yaw minus this one's, then the gripper command (0 close, 1 open)
# Position is the end effector (ee_gripper_link) in the robot's base frame, as here. The angles
# are extrinsic X-then-Y-then-Z Euler angles (R = Rz Ry Rx) of the end effector's rotation
# relative to the gripper pointing straight down (bridge_data_robot's DEFAULT_ROTATION, which is
# DOWN), so they turn into this suite's rotation vector with no offset. The action's angle
# differences are taken as the step's rotation deltas, as SimplerEnv's Bridge policies send them
# (near the downward pose and at 5 Hz the two agree to first order).
BRIDGE_PORT_STATE_DIM = 8


def from_bridge_port(state: np.ndarray, actions: np.ndarray, where: str = "") -> tuple[np.ndarray, np.ndarray]:
    """A Bridge port episode's (T, 8) states and (T, 7) actions in this suite's conventions:
    (T, 7) states (position, rotation vector from pointing down, gripper opening) and (T, 7)
    actions (the deltas as they are, the gripper command 0/1 -> -1/+1)."""
    state, actions = np.asarray(state, dtype=np.float64), np.asarray(actions, dtype=np.float64)
    if state.ndim != 2 or state.shape[1] != BRIDGE_PORT_STATE_DIM or actions.shape != (len(state), 7):
        raise ValueError(
            f"{where}: a BridgeData V2 port has (T, 8) states and (T, 7) actions, got {state.shape} and "
            f"{actions.shape}; is data.convert=bridge_port meant for this dataset?"
        )
    rotation = rotvec_from_euler_xyz(state[:, 3:6])
    out_state = np.concatenate([state[:, :3], rotation, state[:, 7:8]], axis=1)
    out_actions = np.concatenate([actions[:, :6], 2.0 * actions[:, 6:7] - 1.0], axis=1)
    return out_state.astype(np.float32), out_actions.astype(np.float32)


def rotvec_from_euler_xyz(angles: np.ndarray) -> np.ndarray:
    """(..., 3) extrinsic X, Y, Z Euler angles (R = Rz(yaw) Ry(pitch) Rx(roll), transforms3d's
    'sxyz') -> rotation vectors with angle in [0, pi]."""
    half = np.asarray(angles, dtype=np.float64) / 2
    cr, cp, cy = np.cos(half[..., 0]), np.cos(half[..., 1]), np.cos(half[..., 2])
    sr, sp, sy = np.sin(half[..., 0]), np.sin(half[..., 1]), np.sin(half[..., 2])
    # q = qz * qy * qx, (w, x, y, z)
    q = np.stack(
        [
            cy * cp * cr + sy * sp * sr,
            cy * cp * sr - sy * sp * cr,
            cy * sp * cr + sy * cp * sr,
            sy * cp * cr - cy * sp * sr,
        ],
        axis=-1,
    )
    q = np.where(q[..., :1] < 0, -q, q)  # q and -q are one rotation: take w >= 0, angle <= pi
    s = np.linalg.norm(q[..., 1:], axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(s, q[..., :1])
    return np.where(s > 1e-12, q[..., 1:] / np.maximum(s, 1e-12) * angle, 0.0)
