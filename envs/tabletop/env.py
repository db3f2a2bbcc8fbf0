"""The built-in language-conditioned tabletop suite (gymnasium API, LIBERO conventions).

Action: delta end-effector pose (dx, dy, dz, droll, dpitch, dyaw) + gripper, all in [-1, 1],
at 20 Hz; -1 opens, +1 closes the gripper (robosuite/LIBERO convention). The delta moves a target pose (so a
zero action holds the pose exactly, without drift); a damped least-squares step on MuJoCo's
site Jacobian turns the remaining pose error into joint targets for position servos. Observation: `agentview` and `wrist` RGB (uint8) and an 8-D state
(end-effector position 3, axis-angle 3, finger positions 2), like LIBERO's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import gymnasium as gym
import mujoco
import numpy as np

from envs.frames import FramesOnDemand
from envs.rendering import offscreen_renderer
from envs.rotations import canonical_axis_angle, mat_to_rotvec, rotvec_to_mat
from envs.tabletop.scene import ARM_JOINTS, CUBE_HALF, FINGER_TRAVEL, HOME_QPOS, PLATE_RADIUS, scene_xml

CONTROL_HZ = 20
POS_SCALE = 0.03  # metres per unit action per control step
ROT_SCALE = 0.3  # radians per unit action per control step
# Like LIBERO, every object starts in its own small init region of a fixed scene layout:
# name -> (centre x, centre y), and each episode jitters it uniformly by up to REGION_HALF.
# The instruction picks the target among objects that are always present.
LAYOUT = {
    "red_cube": (0.50, -0.13),
    "green_cube": (0.50, 0.0),
    "blue_cube": (0.50, 0.13),
    "yellow_plate": (0.56, -0.12),
    "purple_plate": (0.56, 0.12),
}
PLACE_CUBE_XY = (0.42, 0.0)  # the place scene's single cube starts in front of both plates
REGION_HALF = {"cube": (0.03, 0.02), "plate": (0.02, 0.02)}
CAMERAS = ("agentview", "wrist")
STATE_NAMES = ["x", "y", "z", "ax", "ay", "az", "fl", "fr"]  # eef position, axis-angle, fingers
ACTION_NAMES = ["dx", "dy", "dz", "drx", "dry", "drz", "gripper"]


def spaces(image_size: int) -> tuple[gym.spaces.Dict, gym.spaces.Box]:
    """(observation space, action space): the suite's contract, which the recorder's schema follows."""
    img = gym.spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
    state = gym.spaces.Box(-np.inf, np.inf, (len(STATE_NAMES),), np.float32)
    observation = gym.spaces.Dict({**{cam: img for cam in CAMERAS}, "state": state})
    return observation, gym.spaces.Box(-1.0, 1.0, (len(ACTION_NAMES),), np.float32)


@dataclass
class TaskSpec:
    name: str
    instruction: str
    kind: str  # "lift" or "place"
    target_cube: str
    cubes: list[str] = field(default_factory=list)
    plates: list[str] = field(default_factory=list)
    target_plate: str | None = None
    max_episode_steps: int = 80


TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in [
        TaskSpec("lift_red", "pick up the red cube", "lift", "red", ["red", "green", "blue"]),
        TaskSpec("lift_green", "pick up the green cube", "lift", "green", ["red", "green", "blue"]),
        TaskSpec("lift_blue", "pick up the blue cube", "lift", "blue", ["red", "green", "blue"]),
        TaskSpec(
            "place_yellow",
            "put the red cube on the yellow plate",
            "place",
            "red",
            ["red"],
            ["yellow", "purple"],
            "yellow",
            120,
        ),
        TaskSpec(
            "place_purple",
            "put the red cube on the purple plate",
            "place",
            "red",
            ["red"],
            ["yellow", "purple"],
            "purple",
            120,
        ),
    ]
}


class TabletopEnv(FramesOnDemand, gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_HZ}

    def __init__(self, task: str = "lift_red", image_size: int = 128, render_mode: str | None = "rgb_array") -> None:
        if task not in TASKS:
            raise KeyError(f"unknown built-in task {task!r}; available: {sorted(TASKS)}")
        self.task = TASKS[task]
        self.image_size = image_size
        self.render_mode = render_mode
        self.model = mujoco.MjModel.from_xml_string(scene_xml(self.task.cubes, self.task.plates, image_size))
        self.data = mujoco.MjData(self.model)
        self._renderer: mujoco.Renderer | None = None
        self._view: mujoco.Renderer | None = None  # render_view's, at its own size
        self._site = self.model.site("grip").id
        self._arm_qpos = np.array([self.model.joint(j).qposadr[0] for j in ARM_JOINTS])
        self._arm_dof = np.array([self.model.joint(j).dofadr[0] for j in ARM_JOINTS])
        self._fingers = np.array([self.model.joint(n).qposadr[0] for n in ("f_l", "f_r")])
        self._substeps = round(1.0 / CONTROL_HZ / self.model.opt.timestep)
        self._jacp = np.zeros((3, self.model.nv))
        self._jacr = np.zeros((3, self.model.nv))
        self._with_cameras, self.action_space = spaces(image_size)
        self.cameras = True  # FramesOnDemand: False observes the state alone
        self._steps = 0
        self._ended = True  # step() needs a reset() first

    @property
    def instruction(self) -> str:
        return self.task.instruction

    # ------------------------------------------------------------------ reset
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[self._arm_qpos] = HOME_QPOS + self.np_random.uniform(-0.05, 0.05, 7)
        self.data.qpos[self._fingers] = FINGER_TRAVEL
        self.data.ctrl[:7] = self.data.qpos[self._arm_qpos]
        self.data.ctrl[7:9] = FINGER_TRAVEL
        for name in [f"{c}_cube" for c in self.task.cubes] + [f"{p}_plate" for p in self.task.plates]:
            xy = self._init_xy(name)
            body = self.model.body(name)
            if name.endswith("cube"):
                adr = self.model.joint(f"{name}_joint").qposadr[0]
                yaw = self.np_random.uniform(-0.25, 0.25)
                self.data.qpos[adr : adr + 7] = [*xy, CUBE_HALF, np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)]
            else:
                self.model.body_pos[body.id][:2] = xy
        mujoco.mj_forward(self.model, self.data)
        self._target_pos = self.eef_pos()
        self._target_rot = self.data.site_xmat[self._site].reshape(3, 3).copy()
        self._steps = 0
        self._ended = False
        return self._observation(), self._info()

    def _init_xy(self, name: str) -> np.ndarray:
        kind = name.split("_")[1]
        centre = PLACE_CUBE_XY if self.task.kind == "place" and kind == "cube" else LAYOUT[name]
        half = np.array(REGION_HALF[kind])
        return np.asarray(centre) + self.np_random.uniform(-half, half)

    # ------------------------------------------------------------------ step
    def step(self, action):
        if self._ended:
            raise RuntimeError(
                f"{self.task.name}: step() after the episode ended (success or the {self.task.max_episode_steps}-step "
                "limit) or before the first reset(); call reset() to start an episode"
            )
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (7,):
            raise ValueError(f"action must have shape (7,), got {action.shape}")
        if not np.isfinite(action).all():
            raise ValueError(f"action contains NaN or Inf: {action}")
        self.simulate(np.clip(action, -1.0, 1.0))
        self._steps += 1
        success = self.is_success()
        truncated = self._steps >= self.task.max_episode_steps
        self._ended = success or truncated
        return self._observation(), float(success), success, truncated, self._info()

    def simulate(self, action: np.ndarray) -> None:
        """Controller + physics for one 20 Hz control step (no rendering)."""
        eef = self.eef_pos()
        # Anti-windup: the target never runs more than two steps ahead of the hand.
        self._target_pos = eef + np.clip(self._target_pos + action[:3] * POS_SCALE - eef, -0.06, 0.06)
        self._target_rot = rotvec_to_mat(action[3:6] * ROT_SCALE) @ self._target_rot
        current = self.data.site_xmat[self._site].reshape(3, 3)
        rot_err = mat_to_rotvec(self._target_rot @ current.T)
        self.data.ctrl[:7] = self._ik_targets(self._target_pos - eef, rot_err)
        self.data.ctrl[7:9] = 0.0 if action[6] > 0 else FINGER_TRAVEL
        mujoco.mj_step(self.model, self.data, nstep=self._substeps)

    def _ik_targets(self, dpos: np.ndarray, drot: np.ndarray) -> np.ndarray:
        """One damped least-squares step from the current joints towards the displaced pose."""
        mujoco.mj_jacSite(self.model, self.data, self._jacp, self._jacr, self._site)
        jac = np.vstack([self._jacp[:, self._arm_dof], self._jacr[:, self._arm_dof]])  # (6, 7)
        err = np.concatenate([dpos, drot])
        jjt = jac @ jac.T
        dq = jac.T @ np.linalg.solve(jjt + 1e-3 * np.eye(6), err)
        q = self.data.qpos[self._arm_qpos]
        # Posture bias towards home in the (nearly exact) nullspace, so it does not pull the hand.
        null = np.eye(7) - jac.T @ np.linalg.solve(jjt + 1e-6 * np.eye(6), jac)
        dq += null @ (0.05 * (np.asarray(HOME_QPOS) - q))
        lo, hi = self.model.actuator_ctrlrange[:7].T
        return np.clip(q + dq, lo, hi)

    # ------------------------------------------------------------------ state
    def object_pos(self, name: str) -> np.ndarray:
        return self.data.body(name).xpos.copy()

    @property
    def target_rotation(self) -> np.ndarray:
        """(3, 3) the orientation the controller holds the hand at (a zero action keeps it)."""
        return self._target_rot.copy()

    def eef_pos(self) -> np.ndarray:
        return self.data.site_xpos[self._site].copy()

    def gripper_opening(self) -> float:
        return float(self.data.qpos[self._fingers].sum())

    def proprio(self) -> np.ndarray:
        axis_angle = canonical_axis_angle(mat_to_rotvec(self.data.site_xmat[self._site].reshape(3, 3)))
        return np.concatenate([self.eef_pos(), axis_angle, self.data.qpos[self._fingers]]).astype(np.float32)

    def is_success(self) -> bool:
        cube = self.object_pos(f"{self.task.target_cube}_cube")
        if self.task.kind == "lift":
            return bool(cube[2] > 0.1)
        plate = self.object_pos(f"{self.task.target_plate}_plate")
        on_plate = np.linalg.norm(cube[:2] - plate[:2]) < PLATE_RADIUS and cube[2] < CUBE_HALF + 0.01
        released = self.gripper_opening() > 0.06 and self.eef_pos()[2] > cube[2] + 0.04
        return bool(on_plate and released)

    def _info(self) -> dict:
        return {"instruction": self.instruction, "task": self.task.name, "success": self.is_success()}

    # ------------------------------------------------------------------ rendering
    def render_camera(self, camera: str) -> np.ndarray:
        if self._renderer is None:
            self._renderer = offscreen_renderer(self.model, self.image_size, self.image_size)
        self._renderer.update_scene(self.data, camera=camera)
        return self._renderer.render().copy()

    def observe(self) -> dict:
        """The current observation with every camera drawn, whatever `cameras` says."""
        obs = {cam: self.render_camera(cam) for cam in CAMERAS}
        obs["state"] = self.proprio()
        return obs

    def render(self):
        return self.render_camera("agentview")

    def render_view(self, size: int) -> dict[str, np.ndarray]:
        """Every camera drawn at `size` pixels for viewing (rollout videos), apart from the
        policy's renderer; the scene's offscreen buffer is sized for the policy's frames, so this
        draws from a copy of the model with a buffer of its own."""
        if self._view is None or self._view.height != size:
            import copy

            if self._view is not None:
                self._view.close()
            model = copy.copy(self.model)
            model.vis.global_.offwidth = max(model.vis.global_.offwidth, size)
            model.vis.global_.offheight = max(model.vis.global_.offheight, size)
            self._view = offscreen_renderer(model, size, size)
        out = {}
        for cam in CAMERAS:
            self._view.update_scene(self.data, camera=cam)
            out[cam] = self._view.render().copy()
        return out

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        if self._view is not None:
            self._view.close()
            self._view = None
