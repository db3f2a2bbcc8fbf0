"""What a policy acts on: the robot its data came from, the names of the state and action
dimensions, the action convention and the control rate. Recorded at training time from the
data source (`data.source.embodiment_of`), saved in the checkpoint as part of the policy config,
and read by evaluation (which suites fit) and the policy server (its handshake), so that neither
needs to know where the data came from. Cameras, their frame sizes and the chunk length are the
policy config's own fields. No torch here: the deploy node's torch-free parts import it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

# Action conventions a policy can declare (the handshake's `action_space`).
ACTION_SPACES = {
    "delta_eef_libero": "7-D delta end effector in [-1, 1], -1 opens the gripper (the built-in suite, LIBERO)",
    "delta_eef_widowx": "7-D WidowX end-effector target delta: metres, XYZ Euler radians, then +1 opens and -1 closes "
    "the gripper (SimplerEnv's Bridge tasks in ManiSkill 3)",
    "joint_pos": "absolute joint goal positions in the robot's units (lerobot arms, SO-101)",
}


@dataclass
class Embodiment:
    robot: str = ""  # "tabletop" (the built-in suite), "libero", a dataset's robot_type; "" unknown
    state_names: list[str] = field(default_factory=list)  # empty: unknown (state_0, state_1, ...)
    action_names: list[str] = field(default_factory=list)
    action_space: str = ""  # one of ACTION_SPACES; "" unknown
    fps: float = 0.0  # control rate of the recorded actions, Hz; 0 unknown

    def __post_init__(self) -> None:
        if self.action_space and self.action_space not in ACTION_SPACES:
            raise ValueError(
                f"policy.embodiment.action_space={self.action_space!r}; choose one of {sorted(ACTION_SPACES)} "
                "(or leave it empty when unknown)"
            )
        if not (math.isfinite(self.fps) and self.fps >= 0):
            raise ValueError(f"policy.embodiment.fps={self.fps!r}: must be a finite rate in Hz (0: unknown)")

    def check_widths(self, state_dim: int, action_dim: int) -> None:
        for kind, names, dim in (("state", self.state_names, state_dim), ("action", self.action_names, action_dim)):
            if names and len(names) != dim:
                raise ValueError(
                    f"policy.embodiment.{kind}_names has {len(names)} names for a {kind} of width {dim}: {names}"
                )

    def names(self, state_dim: int, action_dim: int) -> tuple[list[str], list[str]]:
        """The state and action names, generic ones where not recorded."""
        return (
            list(self.state_names) or [f"state_{i}" for i in range(state_dim)],
            list(self.action_names) or [f"action_{i}" for i in range(action_dim)],
        )
