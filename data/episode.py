"""The in-memory episode contract shared by every reader and the cache builder."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Per-frame recording-fault flag as our LeRobot recordings store it (data/record.py, data/readers.py).
PERTURBED_KEY = "perturbed"


@dataclass
class Episode:
    images: dict[str, np.ndarray]  # camera -> uint8 (T, H, W, 3)
    state: np.ndarray  # float32 (T, S)
    actions: np.ndarray  # float32 (T, D)
    task: str
    source: str = ""  # file / dataset and episode, for error messages
    # bool (T,): the action executed at t was not the label (a recording fault), so states
    # after t follow a perturbation; None when the source does not say (treated as all False).
    perturbed: np.ndarray | None = None

    def validate(self) -> Episode:
        where = self.source or "episode"
        t = len(self.actions)
        if t == 0:
            raise ValueError(f"{where}: empty episode (no frames)")
        if self.actions.ndim != 2 or self.state.ndim != 2:
            raise ValueError(f"{where}: actions {self.actions.shape} and state {self.state.shape} must be 2-D (T, dim)")
        if len(self.state) != t:
            raise ValueError(f"{where}: state has {len(self.state)} frames but actions have {t}")
        if self.perturbed is not None and (self.perturbed.shape != (t,) or self.perturbed.dtype != np.bool_):
            raise ValueError(
                f"{where}: perturbed flags must be bool ({t},), got {self.perturbed.dtype} {self.perturbed.shape}"
            )
        for cam, img in self.images.items():
            if img.ndim != 4 or img.shape[-1] != 3 or img.dtype != np.uint8:
                raise ValueError(f"{where}: camera {cam!r} must be uint8 (T, H, W, 3), got {img.dtype} {img.shape}")
            if len(img) != t:
                raise ValueError(f"{where}: camera {cam!r} has {len(img)} frames but actions have {t}")
        for key, arr in (("actions", self.actions), ("state", self.state)):
            bad = ~np.isfinite(arr)
            if bad.any():
                frame = int(np.argwhere(bad)[0][0])
                raise ValueError(f"{where}: {key} contain NaN or Inf (first at frame {frame})")
        if not self.task:
            raise ValueError(f"{where}: missing task/instruction text")
        return self
