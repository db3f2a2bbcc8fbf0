"""LIBERO's conventions as this stack uses them, with no simulator import: the suites and their
step limits, the policy's cameras, state and action names, the rendering modes, the single
definition of image orientation, the observation and action spaces, and this project's LIBERO
cache folder. The environment (`envs.libero.env`), the renderer (`envs.libero.render`), the
experts and the data readers all take them from here.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path

import gymnasium as gym
import numpy as np

SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")
# Step limits of the published protocol (OpenVLA's evaluation, used by the paper's tables).
MAX_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520, "libero_90": 400}
SETTLE_STEPS = 10  # no-op steps after every reset so that objects come to rest
NOOP = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float64)  # hold the pose, gripper open
# The policy's camera names -> LIBERO's camera names.
CAMERAS = {"agentview": "agentview", "wrist": "robot0_eye_in_hand"}
STATE_NAMES = ["eef_x", "eef_y", "eef_z", "eef_ax", "eef_ay", "eef_az", "finger_l", "finger_r"]
ACTION_NAMES = ["dx", "dy", "dz", "drx", "dry", "drz", "gripper"]  # gripper: -1 opens, +1 closes
INSTALL_HINT = "install the project's libero extra: pip install -e '.[libero]' (bash .ci/setup does)"


class RenderMode(StrEnum):
    libero = "libero"  # LIBERO's own look (shadows, 4x multisampling): for policies trained on public data
    fast = "fast"  # shadows, multisampling and reflections off, meshes simplified: recordings made here


# ---------------------------------------------------------------------------------- orientation
# The single definition of LIBERO image orientation. The public LeRobot ports (and openpi's
# LIBERO example) store robosuite's raw camera frame rotated by 180 degrees. robosuite 1.4
# returns OpenGL's bottom-up buffer, i.e. the true view flipped vertically; mujoco.Renderer
# returns the true view. So the ports' frame is the true view mirrored left-right
# (tests/test_libero.py checks both identities pixel for pixel).


def frame_from_renderer(frame: np.ndarray) -> np.ndarray:
    """`mujoco.Renderer` frames (..., H, W, 3), the true view -> the ports' orientation."""
    return np.ascontiguousarray(frame[..., :, ::-1, :])


def frame_from_robosuite(frame: np.ndarray) -> np.ndarray:
    """robosuite/LIBERO raw camera frames (..., H, W, 3), as in LIBERO's original .hdf5 files ->
    the ports' orientation."""
    return np.ascontiguousarray(frame[..., ::-1, ::-1, :])


def spaces(image_size: int) -> tuple[gym.spaces.Dict, gym.spaces.Box]:
    """(observation space, action space): the policy contract of every LIBERO suite."""
    img = gym.spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
    state = gym.spaces.Box(-np.inf, np.inf, (len(STATE_NAMES),), np.float32)
    observation = gym.spaces.Dict({**{cam: img for cam in CAMERAS}, "state": state})
    return observation, gym.spaces.Box(-1.0, 1.0, (len(ACTION_NAMES),), np.float32)


def config_dir() -> Path:
    return Path(os.environ.get("VLA_CACHE", Path.home() / ".cache" / "vla-stack")) / "libero"
