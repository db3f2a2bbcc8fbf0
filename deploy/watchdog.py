"""The observation watchdog: every observation the agent acts on is fresh, of the policy's state
width, finite, and from cameras that are not frozen. A failed check raises `ValueError`; the
agent turns it into SAFE_STOP."""

from __future__ import annotations

import hashlib

import numpy as np


class ObservationWatchdog:
    def __init__(self, state_dim: int, stale_after_s: float, frozen_frames: int, deterministic_frames: bool) -> None:
        """`frozen_frames`: a camera frame unchanged this many observations while the state moved
        is frozen (0: off; off too for a robot with `deterministic_frames`, a simulator that
        renders a slow motion as the same pixels)."""
        self.state_dim, self.stale_after_s = state_dim, stale_after_s
        self.frozen_frames = 0 if deterministic_frames else frozen_frames
        self.reset()

    def reset(self) -> None:
        self._frames: dict[str, tuple[bytes, int]] = {}
        self._prev_state: np.ndarray | None = None

    def check(self, obs, now: float) -> None:
        if now - obs.stamp > self.stale_after_s:
            raise ValueError(f"observation is {now - obs.stamp:.3f} s old (limit {self.stale_after_s} s)")
        state = np.asarray(obs.state)
        if state.shape != (self.state_dim,) or not np.isfinite(state).all():
            raise ValueError(f"robot state must be {self.state_dim} finite values, got {state.tolist()}")
        moved = self._prev_state is not None and not np.allclose(state, self._prev_state, atol=1e-6)
        self._prev_state = state.copy()
        if not self.frozen_frames:
            return
        for cam, frame in obs.images.items():
            h = hashlib.blake2b(np.ascontiguousarray(frame).data, digest_size=16).digest()
            prev, n = self._frames.get(cam, (b"", 0))
            n = (n + 1 if moved else n) if h == prev else 0
            self._frames[cam] = (h, n)
            if n >= self.frozen_frames:
                raise ValueError(f"camera {cam!r} is frozen: the same frame for {n} ticks while the robot moved")
