"""Scripted experts: privileged object poses + the env's delta end-effector controller.

Each expert is a small phase machine (above -> descend -> grasp -> lift [-> carry -> lower ->
release]). `noise` perturbs the executed action (the recorded label stays the clean expert
action, DART-style), so demonstrations cover recoveries from small errors.
"""

from __future__ import annotations

import numpy as np

from envs.scene import CUBE_HALF
from envs.tabletop import POS_SCALE, ROT_SCALE, TabletopEnv, _mat_to_rotvec

GRIP_CLOSE_STEPS = 8
# Proportional gain: each step moves the target by this fraction of the remaining error (capped
# by the action range). Below 1 the approach is smooth, so labels are a smooth function of the
# observed pose; gains at or above 1 make bang-bang, overshooting labels that are hard to imitate.
GAIN = 0.5
DOWN = np.array([[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0]])  # gripper z down, x backwards


class ScriptedExpert:
    def __init__(self, env: TabletopEnv) -> None:
        self.env = env
        self.reset()

    def reset(self) -> None:
        self.phase = "above"
        self.count = 0
        self.grasp_at: np.ndarray | None = None

    def _move(self, target: np.ndarray, grip: float) -> np.ndarray:
        delta = (target - self.env.eef_pos()) / POS_SCALE * GAIN
        return np.concatenate([np.clip(delta, -1, 1), self._hold_orientation(), [grip]])

    def _hold_orientation(self) -> np.ndarray:
        """Rotation that brings the controller's target to 'gripper straight down' (then zero:
        the controller holds its target). Cubes are yawed by at most 0.25 rad, which the open
        gripper tolerates, so the expert does not turn to them."""
        err = _mat_to_rotvec(DOWN @ self.env._target_rot.T)
        return np.clip(err / ROT_SCALE, -1, 1)

    def act(self) -> np.ndarray:
        env, task = self.env, self.env.task
        cube = env.object_pos(f"{task.target_cube}_cube")
        eef = env.eef_pos()
        above = cube + np.array([0, 0, 0.1])
        grasp = cube + np.array([0, 0, 0.005])
        if self.phase == "above":
            aligned = np.abs(self._hold_orientation()).max() * ROT_SCALE < 0.05
            if np.linalg.norm((eef - above)[:2]) < 0.015 and abs(eef[2] - above[2]) < 0.03 and aligned:
                self.phase = "descend"
            return self._move(above, -1.0)
        if self.phase == "descend":
            if np.linalg.norm(eef - grasp) < 0.01:
                self.phase, self.count = "grasp", 0
                self.grasp_at = grasp
            return self._move(grasp, -1.0)
        if self.phase == "grasp":
            self.count += 1
            if self.count >= GRIP_CLOSE_STEPS:
                self.phase = "lift"
            return self._move(self.grasp_at, 1.0)
        if self.phase == "lift":
            lift_to = np.array([eef[0], eef[1], 0.2])
            if task.kind == "place" and eef[2] > 0.14:
                self.phase = "carry"
            return self._move(lift_to, 1.0)
        plate = env.object_pos(f"{task.target_plate}_plate")
        carry = np.array([plate[0], plate[1], 0.15])
        lower = np.array([plate[0], plate[1], CUBE_HALF + 0.025])
        if self.phase == "carry":
            if np.linalg.norm((eef - carry)[:2]) < 0.012:
                self.phase = "lower"
            return self._move(carry, 1.0)
        if self.phase == "lower":
            if eef[2] - lower[2] < 0.01:
                self.phase, self.count = "release", 0
            return self._move(lower, 1.0)
        # release, then rise clear of the cube
        self.count += 1
        return self._move(np.array([eef[0], eef[1], 0.2]), -1.0) if self.count > 3 else self._move(eef, -1.0)


def run_expert_episode(env: TabletopEnv, seed: int, noise: float = 0.0, rng: np.random.Generator | None = None):
    """Roll out the expert once. Returns (frames, success); frames hold obs + clean action."""
    rng = rng or np.random.default_rng(seed)
    expert = ScriptedExpert(env)
    obs, info = env.reset(seed=seed)
    frames = []
    success = False
    for _ in range(env.task.max_episode_steps):
        action = expert.act().astype(np.float32)
        frames.append({**obs, "action": action})
        executed = action.copy()
        if noise > 0:
            # Translation only: rotation noise would move the controller's (unobserved) target
            # orientation, and the expert's corrections of it become unpredictable labels.
            executed[:3] = np.clip(executed[:3] + rng.normal(0, noise, 3), -1, 1)
        obs, _, terminated, truncated, info = env.step(executed)
        if terminated:
            success = True
            break
        if truncated:
            break
    return frames, success
