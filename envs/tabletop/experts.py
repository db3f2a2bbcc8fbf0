"""Scripted experts: privileged object poses + the env's delta end-effector controller.

The expert is a state-feedback law, not a phase machine: its action is a function of what the
policy can observe (hand pose and finger opening in the state, object poses in the images), so
a reactive policy can imitate it and demonstrations show how to recover from any state.
- Approach: a funnel. The hand aims above the grasp point at a height that shrinks with the
  horizontal misalignment, so it descends as it lines up and rises again if it drifts off.
- Grasp: close when the cube is between the fingers; hold still until they have closed on it.
- Lift (and for place: carry above the plate, lower through the same kind of funnel, release,
  rise clear). Fingers closed on nothing (a missed grasp) open again while the hand follows
  the approach funnel 2 cm higher, so the approach restarts.
Moves are proportional (gain GAIN) so labels are smooth in the observed pose. Recording perturbs
what is executed while the recorded label stays the clean one (DART-style): `noise` on the
translation, and `faults` now and then, for a few steps, either pushes the hand in a random
direction or inverts the gripper command. Per-step noise averages out under the expert's
feedback and keeps demonstrations in a narrow funnel; faults put them several centimetres off
it, or closed on nothing, or with a dropped cube, and the labels show the recovery that a learnt
policy needs when it drifts there itself.
"""

from __future__ import annotations

import numpy as np

from envs.rotations import mat_to_rotvec
from envs.tabletop.env import POS_SCALE, ROT_SCALE, TabletopEnv
from envs.tabletop.scene import CUBE_HALF, FINGER_TRAVEL

# Each step moves the target by this fraction of the remaining error (capped by the action
# range): smooth labels; gains at or above 1 give bang-bang, overshooting labels.
GAIN = 0.5
HOVER = 0.1  # approach height above the grasp point when far off horizontally (m)
FUNNEL = 3.0  # approach height per metre of horizontal misalignment
ALIGNED = 0.006  # horizontal misalignment that counts as lined up (m)
OPEN = 2 * FINGER_TRAVEL  # finger opening (sum of both fingers) when fully open (m)
SAFE_Z = 0.15  # carry height (m)
BETWEEN_XY, BETWEEN_Z = 0.015, 0.02  # grasp-point offsets (m) at which the cube counts as between the fingers
HELD_OPENING = 0.025  # finger opening (m) above which closed fingers are stopped by a cube (4 cm wide)
RETRY_LIFT = 0.02  # after a missed grasp the fingers re-open this far (m) above the approach funnel
HELD_NEAR = 0.04  # the target cube is within this distance (m) of the grasp point when it is held
DOWN = np.array([[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0]])  # gripper z down, x backwards


def _funnel(target: np.ndarray, eef: np.ndarray) -> np.ndarray:
    """A point above `target` at a height growing with the hand's horizontal offset from it."""
    off = np.linalg.norm((eef - target)[:2])
    return target + np.array([0.0, 0.0, min(HOVER, FUNNEL * max(0.0, off - ALIGNED))])


class ScriptedExpert:
    def __init__(self, env: TabletopEnv) -> None:
        self.env = env

    def move_to(self, target: np.ndarray, grip: float) -> np.ndarray:
        delta = (target - self.env.eef_pos()) / POS_SCALE * GAIN
        return np.concatenate([np.clip(delta, -1, 1), self._hold_orientation(), [grip]])

    def _hold_orientation(self) -> np.ndarray:
        """Rotation that brings the controller's target to 'gripper straight down' (then zero:
        the controller holds its target). Cubes are yawed by at most 0.25 rad, which the open
        gripper tolerates, so the expert does not turn to them."""
        err = mat_to_rotvec(DOWN @ self.env.target_rotation.T)
        return np.clip(err / ROT_SCALE, -1, 1)

    def act(self) -> np.ndarray:
        env, task = self.env, self.env.task
        cube = env.object_pos(f"{task.target_cube}_cube")
        eef = env.eef_pos()
        opening = env.gripper_opening()
        grasp = cube + np.array([0.0, 0.0, 0.005])
        rel = eef - grasp
        # Deliberately tighter than what the pads physically hold: closing only when well centred
        # keeps grasps repeatable (a looser box was tried: docs/experiment-log.md).
        between = bool(np.linalg.norm(rel[:2]) < BETWEEN_XY and abs(rel[2]) < BETWEEN_Z)
        # Holding is read from the fingers, which the state shows exactly: closed but stopped
        # apart by something, with the target cube near the grasp point. Judging it from the
        # tight `between` box instead made the labels of a cube gripped 1-1.5 cm off centre flip
        # between "lift" and "missed grasp: open", a distinction the policy cannot see.
        holding = HELD_OPENING < opening < OPEN - 0.02 and bool(np.linalg.norm(rel) < HELD_NEAR)
        if task.kind == "place":
            plate = env.object_pos(f"{task.target_plate}_plate")
            drop = np.array([plate[0], plate[1], CUBE_HALF + 0.025])
            if np.linalg.norm(cube[:2] - plate[:2]) < 0.03 and cube[2] < CUBE_HALF + 0.035:
                # Low over the plate: open, then rise clear once the fingers are apart.
                if opening < OPEN - 0.01 and eef[2] < cube[2] + 0.04:
                    return self.move_to(eef, -1.0)
                return self.move_to(np.array([eef[0], eef[1], 0.2]), -1.0)
            if holding and cube[2] > CUBE_HALF + 0.015:
                # Carrying: rise first, then travel at a safe height and lower through a funnel.
                if np.linalg.norm((eef - drop)[:2]) > 0.04 and eef[2] < SAFE_Z - 0.03:
                    return self.move_to(np.array([eef[0], eef[1], SAFE_Z]), 1.0)
                return self.move_to(_funnel(drop, eef), 1.0)
        if holding:
            if opening > 0.05:  # still closing on the cube: hold still
                return self.move_to(eef, 1.0)
            return self.move_to(np.array([eef[0], eef[1], 0.2]), 1.0)
        if between and opening < OPEN - 0.005:
            return self.move_to(grasp, 1.0)  # fingers on their way in
        if np.linalg.norm(rel) < 0.01:
            return self.move_to(grasp, 1.0)  # at the grasp point: close
        if opening < OPEN - 0.005:
            # Fingers closed on nothing (a missed grasp): open while following the approach
            # funnel 2 cm higher. (Backing straight up, dx = dy = 0, made one exact action a
            # sixth of all labels, and decoded policies snapped to it far from any missed grasp.)
            return self.move_to(_funnel(grasp, eef) + np.array([0.0, 0.0, RETRY_LIFT]), -1.0)
        return self.move_to(_funnel(grasp, eef), -1.0)


FAULT_STEPS = (3, 8)  # a fault lasts this many steps (inclusive)


def run_expert_episode(
    env,
    seed: int,
    noise: float = 0.0,
    faults: float = 0.0,
    rng: np.random.Generator | None = None,
    expert=None,
    translation_scale: float = 1.0,
):
    """Roll out the expert once. Returns (frames, success); frames hold obs + clean action +
    `perturbed` (a fault replaced the executed action at that frame).

    `noise`: std of Gaussian noise on the executed translation. `faults`: per-step
    probability that a fault starts; for FAULT_STEPS steps it replaces the executed translation
    by a random constant push, or (half of the faults) inverts the executed gripper command.
    `expert`: the built-in suite's by default; another suite's expert has `start()` (called
    after the reset) and `act()`, and its env a `max_episode_steps`. An expert with `finished()`
    ends the episode when it has done its plan or at the step limit, judged by the env's
    `info["success"]` then (for suites that judge at the last step instead of terminating). `translation_scale`: what 1 is in
    the action's translation units (noise, fault pushes and the clip scale with it)."""
    rng = rng or np.random.default_rng(seed)
    expert = expert or ScriptedExpert(env)
    obs, info = env.reset(seed=seed)
    if hasattr(expert, "start"):
        expert.start()
    frames = []
    success = False
    fault_left, push = 0, None
    limit = getattr(env, "max_episode_steps", None) or env.task.max_episode_steps
    for _ in range(limit):
        action = expert.act().astype(np.float32)
        executed = action.copy()
        if noise > 0:
            # Translation only: rotation noise would move the controller's (unobserved) target
            # orientation, and the expert's corrections of it become unpredictable labels.
            scale = translation_scale
            executed[:3] = np.clip(executed[:3] + rng.normal(0, noise * scale, 3), -scale, scale)
        if fault_left == 0 and faults > 0 and rng.random() < faults:
            fault_left = int(rng.integers(FAULT_STEPS[0], FAULT_STEPS[1] + 1))
            # None: gripper fault
            push = rng.uniform(-translation_scale, translation_scale, 3) if rng.random() < 0.5 else None
        faulted = fault_left > 0
        if faulted:
            if push is None:
                executed[6] = -executed[6]
            else:
                executed[:3] = push
            fault_left -= 1
        # `perturbed`: a fault replaced what was executed, so the next states (and their labels)
        # follow a push the policy cannot foresee; chunk targets stop before them (data/dataset.py).
        frames.append({**obs, "action": action, "perturbed": faulted})
        obs, _, terminated, truncated, info = env.step(executed)
        if terminated:
            success = True
            break
        if hasattr(expert, "finished") and (expert.finished() or truncated):
            success = bool(info["success"])  # judged now, as such a suite's protocol judges its last step
            break
        if truncated:
            break
    return frames, success
