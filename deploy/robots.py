"""Hardware adapters: what the robot agent commands, behind one interface (`Robot`).

- `SimRobot`: a task of the built-in suite as a robot, stepped once per command tick, so the
  agent's loop paces it in real time.
- `LeRobotArm` (`deploy.lerobot_arm`): a real arm through lerobot's `Robot` interface.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass
class RobotObservation:
    images: dict[str, np.ndarray]  # camera -> uint8 (H, W, 3), named as the policy names them
    state: np.ndarray  # float (S,), in the policy's state order
    stamp: float  # when it was captured, on the agent's monotonic clock


class Robot(ABC):
    """What `deploy.agent.RobotAgent` drives. A subclass that leaves out a method cannot be
    built (TypeError naming it), so an adapter is complete before it reaches hardware."""

    instruction: str = ""  # the task's instruction when the robot knows it (a simulator does)
    done: bool = False  # the episode ended (a simulator's success or time limit)
    success: bool = False
    # True for a simulator: a slow motion renders as the same pixels, so an unchanged frame is
    # not a frozen camera.
    deterministic_frames: bool = False
    # The end effector's box ((x, y, z) low, high) for the safety filter, when the adapter knows it.
    workspace: tuple | None = None

    @abstractmethod
    def check_spec(self, spec) -> None:
        """Raise ValueError when the policy (its handshake spec) does not fit this robot."""

    @abstractmethod
    def reset(self) -> None:
        """A new episode."""

    @abstractmethod
    def observe(self) -> RobotObservation: ...

    @abstractmethod
    def act(self, action: np.ndarray) -> None:
        """Send one command (already through the safety filter)."""

    @abstractmethod
    def hold_action(self) -> np.ndarray | None:
        """The command equivalent to holding the current pose (None: not known yet)."""

    @abstractmethod
    def hold(self) -> None:
        """Decelerate and keep the current pose."""

    @abstractmethod
    def stop(self) -> None:
        """SAFE_STOP: hold and latch."""

    @abstractmethod
    def fault(self) -> str | None:
        """A driver error or e-stop, else None."""

    @abstractmethod
    def close(self) -> None:
        """Release the hardware."""


class SimRobot(Robot):
    """A built-in suite task as a robot (delta end-effector actions, LIBERO's convention)."""

    action_space = "delta_eef_libero"
    deterministic_frames = True  # no sensor noise: an unchanged frame is not a frozen camera
    # End-effector box (state x, y, z) for the safety filter: the main job's demonstrations span
    # x 0.09-0.71, y -0.32-0.34, z 0.005-0.39 m (docs/deploy.md); this adds margins.
    workspace = ((0.05, -0.45, 0.0), (0.80, 0.45, 0.45))

    def __init__(self, task: str, image_size: int, clock, seed: int = 0) -> None:
        from envs.registry import make_env

        self.env = make_env("builtin", task, image_size)
        self.clock, self.seed, self.episode = clock, seed, -1
        self.instruction = ""
        self.done = self.success = False
        self.injected_fault: str | None = None
        self.commands: list[tuple[str, np.ndarray | None]] = []  # what reached the "hardware", bounded
        self._gripper = -1.0
        self.lock = threading.Lock()  # held while the simulator steps (a reader may snapshot it)

    def check_spec(self, spec) -> None:
        if spec.action_space != self.action_space or spec.action_dim != 7:
            raise ValueError(
                f"SimRobot takes {self.action_space} 7-D actions; the policy has {spec.action_space} {spec.action_dim}-D"
            )

    def reset(self) -> None:
        self.episode += 1
        with self.lock:
            self._obs, _ = self.env.reset(seed=self.seed + self.episode)
        self.instruction = self.env.unwrapped.instruction
        self.done = self.success = False
        self._gripper = -1.0
        self._stamp = self.clock.now()

    def observe(self) -> RobotObservation:
        o = self._obs
        return RobotObservation({c: o[c] for c in ("agentview", "wrist")}, o["state"], self._stamp)

    def _step(self, action: np.ndarray, kind: str) -> None:
        self._record(kind, action)
        if self.done:
            return
        with self.lock:
            self._obs, _, success, truncated, _ = self.env.step(action)
        self._stamp = self.clock.now()
        self.success = self.success or bool(success)
        self.done = bool(success or truncated)

    def _record(self, kind: str, action) -> None:
        if len(self.commands) >= 100_000:
            del self.commands[:50_000]
        self.commands.append((kind, None if action is None else np.array(action)))

    def act(self, action: np.ndarray) -> None:
        self._gripper = 1.0 if action[6] > 0 else -1.0
        self._step(np.asarray(action, np.float64), "act")

    def hold_action(self) -> np.ndarray:
        a = np.zeros(7)
        a[6] = self._gripper
        return a

    def hold(self) -> None:  # a zero delta keeps the target pose (envs.tabletop), the gripper as it is
        self._step(self.hold_action(), "hold")

    def stop(self) -> None:
        self._step(self.hold_action(), "stop")

    def fault(self) -> str | None:
        return self.injected_fault

    def close(self) -> None:
        self.env.close()
