"""The safety filter: the last stage between the policy's actions and the hardware adapter.

Per command tick, in order: a non-finite or wrongly shaped action is refused (`UnsafeAction`;
the agent discards the chunk and holds); every dimension is clamped to its limits (the
policy's own action range by default, shrunk by `margin`); the change from the previous
command is capped per tick, and optionally the change of that change (an acceleration limit
that slows the approach to a command, never overshoots it; binary dimensions such as the
gripper are exempt from both); a workspace box
on the end-effector position (read from the state) zeroes delta components that push further
out, or clamps absolute targets into it. Each tick reports whether anything was clamped, and
`escalate` turns true when more than `clamp_fraction` of the ticks in the last
`clamp_window_s` were clamped: the agent then holds. No torch here.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np


class UnsafeAction(ValueError):
    pass


@dataclass
class SafetyConfig:
    low: list[float] = field(default_factory=list)  # action limits; empty: the policy's action range
    high: list[float] = field(default_factory=list)
    margin: float = 0.0  # shrink the limits by this fraction of each range
    max_delta: float = 0.5  # per-tick change cap, fraction of each dim's range; 0 = off (binary dims exempt)
    max_accel: float = 0.0  # cap on the change of that change per tick, fraction of each range; 0 = off
    workspace_low: list[float] = field(default_factory=list)  # end-effector box (state units); empty: off
    workspace_high: list[float] = field(default_factory=list)
    position_state_dims: list[int] = field(default_factory=lambda: [0, 1, 2])
    position_action_dims: list[int] = field(default_factory=lambda: [0, 1, 2])
    clamp_window_s: float = 1.0
    clamp_fraction: float = 0.2

    def __post_init__(self) -> None:
        if len(self.low) != len(self.high):
            raise ValueError(f"safety.low and safety.high differ in length ({len(self.low)} vs {len(self.high)})")
        if len(self.workspace_low) != len(self.workspace_high) or (
            self.workspace_low and len(self.workspace_low) != len(self.position_state_dims)
        ):
            raise ValueError("safety.workspace_low/high need one bound per safety.position_state_dims entry")
        if len(self.position_state_dims) != len(self.position_action_dims):
            raise ValueError("safety.position_state_dims and position_action_dims must pair up")
        if not 0 <= self.margin < 0.5 or self.max_delta < 0 or self.max_accel < 0 or not 0 < self.clamp_fraction <= 1:
            raise ValueError("safety: need 0 <= margin < 0.5, max_delta >= 0, max_accel >= 0, 0 < clamp_fraction <= 1")


class SafetyFilter:
    def __init__(self, cfg: SafetyConfig, spec, fps: float) -> None:
        low = np.asarray(cfg.low or spec.action_low, np.float64)
        high = np.asarray(cfg.high or spec.action_high, np.float64)
        d = spec.action_dim
        if low.shape != (d,) or high.shape != (d,) or not (low < high).all() or not np.isfinite([low, high]).all():
            raise ValueError(
                f"safety limits must be {d} finite pairs with low < high; got low={low.tolist()} high={high.tolist()}"
            )
        span = high - low
        self.low, self.high = low + cfg.margin * span, high - cfg.margin * span
        self.binary = np.zeros(d, bool)
        self.binary[list(spec.binary_dims)] = True
        self.max_step = np.where(self.binary, np.inf, cfg.max_delta * span) if cfg.max_delta > 0 else np.full(d, np.inf)
        self.max_accel = (
            np.where(self.binary, np.inf, cfg.max_accel * span) if cfg.max_accel > 0 else np.full(d, np.inf)
        )
        self.cfg, self.dim, self.state_dim = cfg, d, spec.state_dim
        self.delta = spec.action_space.startswith("delta")
        self.box = (np.asarray(cfg.workspace_low), np.asarray(cfg.workspace_high)) if cfg.workspace_low else None
        bad = [i for i in cfg.position_action_dims if not 0 <= i < d] + [
            i for i in cfg.position_state_dims if not 0 <= i < spec.state_dim
        ]
        if self.box is not None and bad:
            raise ValueError(
                f"safety position dims {bad} are outside the action ({d}) or state ({spec.state_dim}) width"
            )
        self._window: deque[bool] = deque(maxlen=max(1, round(cfg.clamp_window_s * fps)))
        self.previous: np.ndarray | None = None
        self.velocity: np.ndarray | None = None  # previous - the command before it

    def reset(self, previous: np.ndarray | None = None) -> None:
        """After a hold or at arming: the next command is capped against `previous` (None: not capped)."""
        self.previous = None if previous is None else np.asarray(previous, np.float64)
        self.velocity = None if previous is None else np.zeros_like(self.previous)  # holding: at rest

    @staticmethod
    def check_finite(chunk: np.ndarray) -> None:
        if not np.isfinite(chunk).all():
            raise UnsafeAction("the policy's actions contain NaN or Inf")

    def __call__(self, action, state) -> tuple[np.ndarray, bool]:
        a = np.asarray(action, np.float64)
        if a.shape != (self.dim,):
            raise UnsafeAction(f"action has shape {a.shape}, the robot takes ({self.dim},)")
        if not np.isfinite(a).all():
            raise UnsafeAction(f"action contains NaN or Inf: {a.tolist()}")
        out = np.clip(a, self.low, self.high)
        if self.previous is not None:
            out = np.clip(out, self.previous - self.max_step, self.previous + self.max_step)
            if self.velocity is not None:
                expected = self.previous + self.velocity
                limited = np.clip(out, expected - self.max_accel, expected + self.max_accel)
                # never past the command: a slowed approach, not an overshoot
                out = np.clip(limited, np.minimum(self.previous, out), np.maximum(self.previous, out))
        if self.box is not None:
            pos = np.asarray(state, np.float64)[self.cfg.position_state_dims]
            lo, hi = self.box
            idx = self.cfg.position_action_dims
            if self.delta:
                push_out = ((pos >= hi) & (out[idx] > 0)) | ((pos <= lo) & (out[idx] < 0))
                out[idx] = np.where(push_out, 0.0, out[idx])
            else:
                out[idx] = np.clip(out[idx], lo, hi)
        clamped = not np.allclose(out, a, rtol=0, atol=1e-9)
        self._window.append(clamped)
        self.velocity = None if self.previous is None else out - self.previous
        self.previous = out
        return out.astype(np.float32), clamped

    @property
    def escalate(self) -> bool:
        w = self._window
        return len(w) == w.maxlen and sum(w) > self.cfg.clamp_fraction * len(w)

    def clear_window(self) -> None:
        self._window.clear()
