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
