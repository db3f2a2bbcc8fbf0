"""Camera frames drawn on demand, for the simulators whose observation is cameras plus "state"."""

from __future__ import annotations

import gymnasium as gym


class FramesOnDemand:
    """With `cameras` off, reset() and step() observe the state alone and `observe()` draws the
    cameras when a frame is needed: evaluation draws the steps a policy reads, not every step.
    A subclass sets `_with_cameras` (the full observation space) and defines `observe()` (every
    camera and the state) and `proprio()`."""

    cameras: bool = True

    @property
    def observation_space(self) -> gym.spaces.Dict:
        """What reset() and step() return: the cameras and the state, or the state alone."""
        if self.cameras:
            return self._with_cameras
        return gym.spaces.Dict({"state": self._with_cameras["state"]})

    def _observation(self) -> dict:
        return self.observe() if self.cameras else {"state": self.proprio()}
