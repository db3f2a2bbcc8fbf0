"""SimplerEnv's four Bridge (WidowX) tasks, run by ManiSkill 3 on the CPU, as this stack's suite
`simpler_bridge`.

The protocol (SimplerEnv's visual matching, as ManiSkill 3 registers it): 24 episode layouts
per task (`init_state` 0-23, ManiSkill's `episode_id`), 5 Hz control, 60 steps (the eggplant 120),
every episode run to its step limit and judged by the success predicate at the last step;
`partial` is whether the source object was ever grasped, reported beside success and never
mixed into it. The camera is the Bridge dataset's third-person view (640 x 480, a real photo
behind the rendered robot and objects), resized to square frames for the policy as the
public Bridge ports store them (256 x 256, stretched).

Actions are ManiSkill's WidowX end-effector convention (`delta_eef_widowx`): a translation in
metres and an XYZ Euler rotation in radians of the end-effector target in the robot's base
frame, then the gripper in [-1, 1] with +1 open. The state is the end effector's position in
the base frame, its orientation relative to pointing straight down (a rotation vector) and
the gripper's opening (0 closed, 1 open).

Fresh placements (validation, recordings; never the protocol's layouts): a layout chosen by
the seed, the objects moved by up to the task's `jitter` in x and y (the eggplant task's target,
an invisible region in the basket, stays) and the source object turned by up to 30 degrees
about z, then settled by ManiSkill's own reset.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np

from envs.simpler.conventions import (
    ACTION_NAMES,
    CAMERA,
    DOWN,
    FINGER_CLOSED,
    FINGER_OPEN,
    LAYOUTS,
    TASKS,
    spaces,
)

FRESH_TRIES = 10


def _resize(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(frame).resize((width, height), Image.BILINEAR))


class SimplerBridgeEnv(gym.Env):
    """One Bridge task. `reset(seed, options={"init_state": i})` starts the protocol's layout i;
    without it, a fresh placement drawn from the seed."""

    metadata = {"render_modes": []}

    def __init__(self, task: str, image_size: int = 128, asset_dir: str | None = None):
        if task not in TASKS:
            raise KeyError(f"unknown task {task!r} in suite 'simpler_bridge'; available: {list(TASKS)}")
        from envs.simpler.setup import make_maniskill

        self.task, self.spec_ = task, TASKS[task]
        self.image_size = image_size
        self.observation_space, self.action_space = spaces(image_size)
        self.max_episode_steps = self.spec_.max_steps
        self._env, self.standins = make_maniskill(self.spec_.env_id, asset_dir)
        self.instruction = self.spec_.instruction
        self._steps, self._success_once, self._grasped, self._last = 0, False, False, None

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        import torch

        super().reset(seed=seed)
        state = (options or {}).get("init_state")
        base = self._env.unwrapped
        if state is not None:
            if not 0 <= int(state) < LAYOUTS:
                raise IndexError(f"simpler_bridge/{self.task}: init_state {state} out of range 0..{LAYOUTS - 1}")
            obs, _ = self._env.reset(seed=seed, options={"episode_id": torch.tensor([int(state)])})
        else:
            rng = np.random.default_rng(seed)
            for _ in range(FRESH_TRIES):
                xyz, quat = self._fresh_layout(rng)
                saved = base.xyz_configs, base.quat_configs
                base.xyz_configs, base.quat_configs = xyz[None], quat[None]
                try:
                    obs, _ = self._env.reset(seed=seed, options={"episode_id": torch.tensor([0])})
                finally:
                    base.xyz_configs, base.quat_configs = saved
                # A turned object can roll off where it was put (out of the sink): draw again.
                settled = base.objs[base.source_obj_name].pose.p[0].double()
                if torch.linalg.norm(settled[:2] - xyz[0, :2].double()) < 0.03 and settled[2] > xyz[0, 2] - 0.03:
                    break
            else:
                raise RuntimeError(f"simpler_bridge/{self.task}: no fresh placement settled in {FRESH_TRIES} draws")
        self._steps, self._success_once, self._grasped = 0, False, False
        self._last = obs
        return self._observation(obs), {"success": False, "partial": False}

    def step(self, action):
        import torch

        action = np.asarray(action, dtype=np.float32).reshape(-1)
        if action.shape != (len(ACTION_NAMES),) or not np.isfinite(action).all():
            raise ValueError(f"simpler_bridge/{self.task}: action must be 7 finite numbers, got {action}")
        obs, _, _, _, info = self._env.step(torch.from_numpy(action)[None])
        self._steps += 1
        self._last = obs
        success = bool(info["success"][0])
        self._success_once |= success
        self._grasped |= bool(info["is_src_obj_grasped"][0])
        truncated = self._steps >= self.max_episode_steps
        out = {"success": success, "success_once": self._success_once, "partial": self._grasped}
        return self._observation(obs), 0.0, False, truncated, out

    def close(self):
        self._env.close()

    # ------------------------------------------------------------------ views
    def render_view(self, size: int) -> dict[str, np.ndarray]:
        """The camera at `size` pixels high, its own 4:3 aspect, an even width (H.264's 4:2:0 video)."""
        frame = self._last["sensor_data"]["3rd_view_camera"]["rgb"][0].numpy()
        return {CAMERA: _resize(frame, size, 2 * round(size * frame.shape[1] / frame.shape[0] / 2))}

    def _observation(self, obs) -> dict[str, np.ndarray]:
        from envs.rotations import axis_angle_from_quat_wxyz, mul_quat_wxyz

        frame = obs["sensor_data"]["3rd_view_camera"]["rgb"][0].numpy()
        agent = self._env.unwrapped.agent
        pose = agent.controller.controllers["arm"].ee_pose_at_base
        p, q = pose.p[0].numpy(), pose.q[0].numpy()
        finger = float(agent.robot.get_qpos()[0, -2])
        opening = (finger - FINGER_CLOSED) / (FINGER_OPEN - FINGER_CLOSED)
        relative = mul_quat_wxyz(q, DOWN * np.array([1, -1, -1, -1]))  # q * DOWN^-1
        state = np.array([*p, *axis_angle_from_quat_wxyz(relative), opening], dtype=np.float32)
        if not np.isfinite(state).all():
            raise FloatingPointError(f"simpler_bridge/{self.task}: non-finite robot state {state}")
        return {CAMERA: _resize(frame, self.image_size, self.image_size), "state": state}

    def _fresh_layout(self, rng: np.random.Generator):
        """A protocol layout chosen by `rng`, moved and turned as the module's docstring says."""
        import torch

        from envs.rotations import quat_wxyz_about_z

        base = self._env.unwrapped
        n_xyz, n_quat = len(base.xyz_configs), len(base.quat_configs)
        xyz = base.xyz_configs[rng.integers(n_xyz)].clone()
        quat = base.quat_configs[rng.integers(n_quat)].clone()
        moved = len(xyz) if self.spec_.move_target else 1  # row 0 is the source object
        offset = rng.uniform(-self.spec_.jitter, self.spec_.jitter, (moved, 2))
        xyz[:moved, :2] += torch.from_numpy(offset).to(xyz)
        turned = quat_wxyz_about_z(rng.uniform(-math.pi / 6, math.pi / 6), quat[0].double().numpy())
        quat[0] = torch.from_numpy(turned).to(quat)
        return xyz, quat
