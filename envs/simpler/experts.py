"""A scripted WidowX expert for the four Bridge tasks, from privileged state (object poses and
sizes), for recording demonstrations.

One pick-and-place plan serves all four: over the source object with the gripper turned across
its long side, down, close, lift, over the target, down to just above it, open, up. Moves are
straight lines in the robot base frame at a bounded speed, issued as ManiSkill's target deltas
(`delta_eef_widowx`); a phase that needs the arm to have arrived (closing, opening) waits until
the end effector is within `ARRIVED` of its target.

    python -m envs.simpler.experts --episodes 10        # success per task from fresh placements
    python -m envs.simpler.experts --noise 0.1 --faults 0.03   # with the recording's perturbations
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

import numpy as np

from envs.rotations import mul_quat_wxyz, rotate_by_quat_wxyz
from envs.simpler.conventions import DOWN, TASKS

SPEED = 0.025  # metres per step (5 Hz): 12.5 cm/s
TURN = 0.25  # radians per step
ARRIVED = 0.008  # metres between the end effector and its target before the gripper acts
GRIP_STEPS = 3  # steps the gripper is given to close or open
STALL_STEPS = 3  # steps without 2 mm of progress after which a settling move counts as arrived
CLEARANCE = 0.06  # metres above an object's top for the moves between
DROPPED = 0.03  # metres the held object may move against the hand during a carry before it counts as dropped
REPLANS = 2  # plans started again from the object's new pose after a drop, per episode
# Steps held at the last waypoint before the plan counts as done and a recording ends: a chunk
# (8 steps) of hovering above the placed object, what the policy should do until the step limit.
END_STEPS = 8


@dataclass(frozen=True)
class Waypoint:
    position: np.ndarray  # base frame, metres
    yaw: float  # radians about the base z, 0: the start pose's
    gripper: float  # +1 open, -1 closed
    settle: bool = False  # wait until the end effector arrives, then hold GRIP_STEPS steps


def _yaw_of(q: np.ndarray) -> float:
    """The end effector's turn about the base z from pointing down (its quaternion q, base frame)."""
    rel = mul_quat_wxyz(q, DOWN * np.array([1, -1, -1, -1]))
    return 2 * math.atan2(rel[3], rel[0])


class BridgeExpert:
    """`start()` after a reset plans from the scene; `act()` gives the next action."""

    def __init__(self, env) -> None:
        self.env = env

    # -------------------------------------------------------------- scene, in the base frame
    def _base(self):
        pose = self.env._env.unwrapped.agent.robot.pose
        return pose.p[0].double().numpy(), pose.q[0].double().numpy()

    def _to_base(self, p_world: np.ndarray) -> np.ndarray:
        t, q = self._base()
        return rotate_by_quat_wxyz(q * np.array([1, -1, -1, -1]), p_world - t)

    def _object(self, name: str) -> tuple[np.ndarray, np.ndarray, float]:
        """(centre, half extents along the base axes, the long side's angle about the base z)."""
        base = self.env._env.unwrapped
        actor = base.objs[name]
        q = actor.pose.q[0].double().numpy()
        bbox = base.model_db[name]["bbox"]
        half = (np.array(bbox["max"]) - np.array(bbox["min"])) / 2 * base.episode_model_scales.get(name, 1.0)
        _, qb = self._base()
        q_base = mul_quat_wxyz(qb * np.array([1, -1, -1, -1]), q)
        axes = np.array([rotate_by_quat_wxyz(q_base, half[i] * np.eye(3)[i]) for i in range(3)])
        extent = np.abs(axes).sum(axis=0)
        flat = [i for i in range(3) if abs(axes[i][2]) < 0.7 * np.linalg.norm(axes[i])]  # axes lying flat
        long = max(flat, key=lambda i: half[i]) if flat else 0
        angle = math.atan2(axes[long][1], axes[long][0])
        return self._to_base(actor.pose.p[0].double().numpy()), extent, angle

    # -------------------------------------------------------------- plan and act
    def start(self) -> None:
        self.replans = 0
        self._plan()

    def _plan(self) -> None:
        """The pick-and-place from where the objects are now."""
        base = self.env._env.unwrapped
        src, src_half, angle = self._object(base.source_obj_name)
        tgt, tgt_half, _ = self._object(base.target_obj_name)
        yaw = (angle + math.pi / 2) % math.pi - math.pi / 2  # closing across the long side, the smaller turn
        grasp_z = max(src[2], src[2] - src_half[2] + 0.012)
        travel_z = max(src[2] + src_half[2], tgt[2] + tgt_half[2]) + CLEARANCE + 0.02
        place_z = tgt[2] + tgt_half[2] + (grasp_z - (src[2] - src_half[2])) + 0.01
        over = lambda p, z: np.array([p[0], p[1], z])  # noqa: E731
        self.plan = [
            Waypoint(over(src, src[2] + src_half[2] + CLEARANCE), yaw, 1.0),
            Waypoint(over(src, grasp_z), yaw, 1.0, settle=True),
            Waypoint(over(src, grasp_z), yaw, -1.0, settle=True),
            Waypoint(over(src, travel_z), yaw, -1.0),
            Waypoint(over(tgt, travel_z), yaw, -1.0),
            Waypoint(over(tgt, place_z), yaw, -1.0, settle=True),
            Waypoint(over(tgt, place_z), yaw, 1.0, settle=True),
            Waypoint(over(tgt, travel_z), yaw, 1.0),
        ]
        self.index, self.held, self.stalled, self.last, self.ended = 0, 0, 0, None, 0
        self.commanded = None  # the waypoint the last action put the target on
        self.grip = None  # the held object's offset from the hand when the gripper closed

    def finished(self) -> bool:
        """The plan is done: the target has stood at the last waypoint for END_STEPS steps."""
        return self.ended >= END_STEPS

    def _controller(self):
        return self.env._env.unwrapped.agent.controller.controllers["arm"]

    def act(self) -> np.ndarray:
        ctrl = self._controller()
        target_p = ctrl._target_pose.p[0].double().numpy()
        target_yaw = _yaw_of(ctrl._target_pose.q[0].double().numpy())
        actual = ctrl.ee_pose_at_base.p[0].double().numpy()
        if self._dropped(actual):
            # A fault opened the gripper or pushed the object out of it: start again from where
            # the object lies, so the recording shows the recovery.
            self.replans += 1
            self._plan()
        while True:
            wp = self.plan[min(self.index, len(self.plan) - 1)]
            # The target is on the waypoint: exactly when actions are executed as given, and when
            # the last action was meant to put it there (recording noise moved it a little).
            exact = np.linalg.norm(wp.position - target_p) < 1e-4 and abs(wp.yaw - target_yaw) < 1e-3
            moved = bool(exact or self.commanded == self.index)
            if self.index >= len(self.plan) - 1 or not moved:
                self.ended += int(self.index >= len(self.plan) - 1 and moved)
                break
            if wp.settle:
                # The arm arrives, or stops short against something (an object under a finger):
                # then the gripper acts where it is.
                gap = np.linalg.norm(actual - wp.position)
                progress = self.last is None or np.linalg.norm(actual - self.last) > 0.002
                self.stalled = 0 if progress else self.stalled + 1
                self.last = actual
                if self.held == 0 and gap > ARRIVED and self.stalled < STALL_STEPS:
                    break  # wait for the arm
                if self.held < GRIP_STEPS:
                    self.held += 1
                    break
            if wp.settle and wp.gripper < 0:  # the grasp is done: what the hand now holds
                self.grip = self._source() - actual
            self.index, self.held, self.stalled, self.last = self.index + 1, 0, 0, None
        step = wp.position - target_p
        distance = np.linalg.norm(step)
        if distance > SPEED:
            step *= SPEED / distance
        yaw_error = (wp.yaw - target_yaw + math.pi) % (2 * math.pi) - math.pi
        turn = float(np.clip(yaw_error, -TURN, TURN))
        self.commanded = self.index if distance <= SPEED and abs(yaw_error) <= TURN else None
        return np.array([*step, 0.0, 0.0, turn, wp.gripper], dtype=np.float32)

    def _source(self) -> np.ndarray:
        base = self.env._env.unwrapped
        return self._to_base(base.objs[base.source_obj_name].pose.p[0].double().numpy())

    def _dropped(self, hand: np.ndarray) -> bool:
        """During a carry (the gripper closed on the object, not yet opened over the target):
        the object has moved more than DROPPED against the hand."""
        carrying = self.grip is not None and self.plan[min(self.index, len(self.plan) - 1)].gripper < 0
        if not carrying or self.replans >= REPLANS:
            return False
        return bool(np.linalg.norm(self._source() - hand - self.grip) > DROPPED)


def run(task: str, seeds: list[int], noise: float = 0.0, faults: float = 0.0) -> list[bool]:
    """The expert from fresh placements, as a recording runs it: each episode judged when the plan
    ends (`BridgeExpert.finished`), with the recording's noise and faults."""
    from envs.simpler.env import SimplerBridgeEnv
    from envs.tabletop.experts import run_expert_episode

    env = SimplerBridgeEnv(task, image_size=64)
    expert = BridgeExpert(env)
    try:
        return [
            run_expert_episode(env, seed, noise=noise, faults=faults, expert=expert, translation_scale=SPEED)[1]
            for seed in seeds
        ]
    finally:
        env.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--tasks", nargs="*", default=list(TASKS))
    parser.add_argument("--noise", type=float, default=0.0, help="the recording's translation noise (0.1 there)")
    parser.add_argument("--faults", type=float, default=0.0, help="the recording's fault rate (0.03 there)")
    args = parser.parse_args()
    for task in args.tasks:
        ok = run(task, list(range(args.episodes)), args.noise, args.faults)
        print(f"{task:<34}{sum(ok):>3}/{len(ok)}", flush=True)


if __name__ == "__main__":
    main()
