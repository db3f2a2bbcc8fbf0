"""Per-dimension uniform binning of continuous actions into discrete tokens.

Each dimension is normalised with robust bounds [q01, q99] from the training data to [-1, 1]
(clipped), then cut into `bins` equal bins. Bin i covers [-1 + i w, -1 + (i + 1) w) with
w = 2 / bins (the last bin also holds +1); decoding returns the bin centre. A lower edge
belongs to the bin above it: this is the convention the tests pin, since an off-by-one edge
between training and evaluation shifts every action by one bin.

Binary dimensions (grippers) skip normalisation: value > 0 -> token bins-1, else token 0;
decoding gives +1 or -1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class ActionTokenizerConfig:
    bins: int = 256
    binary_dims: list[int] = field(default_factory=lambda: [6])  # the gripper of a 7-D delta-pose action
    # The bounds are the data's 1st and 99th percentiles (`stats.json` q01, q99): no knob here.

    def __post_init__(self) -> None:
        if self.bins < 2:
            raise ValueError(f"action_tokenizer.bins must be >= 2, got {self.bins}")


class ActionTokenizer:
    """Vectorised encode/decode on (..., D) tensors; its state travels with the checkpoint."""

    def __init__(self, cfg: ActionTokenizerConfig, low: np.ndarray, high: np.ndarray) -> None:
        low = np.asarray(low, dtype=np.float64)
        high = np.asarray(high, dtype=np.float64)
        if low.ndim != 1 or low.shape != high.shape:
            raise ValueError(f"tokenizer bounds must be 1-D of equal width, got {low.shape} and {high.shape}")
        if not (np.isfinite(low).all() and np.isfinite(high).all()):
            raise ValueError("tokenizer bounds contain NaN or Inf: check the action statistics")
        bad = [d for d in cfg.binary_dims if not 0 <= d < low.shape[0]]
        if bad:
            raise ValueError(f"action_tokenizer.binary_dims {bad} out of range for action width {low.shape[0]}")
        self.cfg = cfg
        self.low = torch.tensor(low, dtype=torch.float32)
        # A constant dimension gets a unit span so that it round-trips to its constant.
        self.span = torch.tensor(np.where(high - low > 1e-8, high - low, 1.0), dtype=torch.float32)
        self.binary = torch.zeros(low.shape[0], dtype=torch.bool)
        self.binary[list(cfg.binary_dims)] = True

    @property
    def action_dim(self) -> int:
        return int(self.low.shape[0])

    @property
    def bins(self) -> int:
        return self.cfg.bins

    @property
    def bin_width(self) -> float:
        """Width of one bin in normalised [-1, 1] units."""
        return 2.0 / self.cfg.bins

    def _check(self, x: torch.Tensor, what: str) -> None:
        if x.shape[-1] != self.action_dim:
            raise ValueError(
                f"{what} has width {x.shape[-1]} but the action tokenizer was fit on width "
                f"{self.action_dim}: this checkpoint does not match the data"
            )

    def normalize(self, actions: torch.Tensor) -> torch.Tensor:
        self._check(actions, "actions")
        low, span = self.low.to(actions.device), self.span.to(actions.device)
        return (2.0 * (actions.float() - low) / span - 1.0).clamp(-1.0, 1.0)

    def encode(self, actions: torch.Tensor) -> torch.Tensor:
        """(..., D) float -> (..., D) int64 bin indices."""
        if not torch.isfinite(actions).all():
            raise ValueError("actions contain NaN or Inf")
        x = self.normalize(actions)
        idx = torch.floor((x + 1.0) / self.bin_width).long().clamp(0, self.bins - 1)
        binary = self.binary.to(actions.device)
        gripper = torch.where(actions > 0, self.bins - 1, 0)
        return torch.where(binary, gripper, idx)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """(..., D) int64 bin indices -> (..., D) float actions in the data's units."""
        self._check(tokens, "tokens")
        if tokens.min() < 0 or tokens.max() >= self.bins:
            raise ValueError(f"tokens out of range [0, {self.bins})")
        low, span = self.low.to(tokens.device), self.span.to(tokens.device)
        centre = -1.0 + (tokens.float() + 0.5) * self.bin_width
        x = (centre + 1.0) / 2.0 * span + low
        binary = self.binary.to(tokens.device)
        gripper = torch.where(tokens >= self.bins // 2, 1.0, -1.0)
        return torch.where(binary, gripper, x)

    def state_dict(self) -> dict:
        return {
            "bins": self.cfg.bins,
            "binary_dims": list(self.cfg.binary_dims),
            "low": self.low.tolist(),
            "high": (self.low + self.span).tolist(),
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> ActionTokenizer:
        missing = {"bins", "binary_dims", "low", "high"} - set(state)
        if missing:
            raise KeyError(f"action tokenizer state is missing {sorted(missing)}")
        cfg = ActionTokenizerConfig(bins=state["bins"], binary_dims=list(state["binary_dims"]))
        return cls(cfg, np.asarray(state["low"]), np.asarray(state["high"]))
