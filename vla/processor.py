"""Raw observations -> model inputs, one pipeline for training and inference.

The camera convention (which cameras, crop area, model image size) and the
frame shapes seen in training are the checkpoint's (`PolicyConfig`); both the training collate
(`data/dataset.py`) and `VLAPolicy.infer` go through this class, so they cannot disagree.

Raw observation contract (one sample; a batch has a leading B on every array and a list of
instructions):
    {"images": {camera: uint8 (H, W, 3)}, "state": float (S,), "instruction": str}
Every violation raises, naming the field and the expected and received shapes. With a
`state_margin` (`VLAPolicy.infer` passes one) a state far outside the recorded training states
raises too: a finite state in the wrong units would otherwise yield an ordinary-looking chunk.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from vla.contract import ObservationError, check_instruction, first_outside
from vla.image_transforms import center_crop, color_jitter, random_crop, to_float


def stat(stats: dict, key: str, name: str, width: int) -> np.ndarray:
    """One normalisation statistic, checked: present, of the right width, finite."""
    try:
        value = np.asarray(stats[key][name], dtype=np.float64)
    except (KeyError, TypeError) as e:
        raise KeyError(f"normalisation stats are missing {key}.{name}") from e
    if value.shape != (width,):
        raise ValueError(f"normalisation stats {key}.{name} has shape {value.shape}, expected ({width},)")
    if not np.isfinite(value).all():
        raise ValueError(f"normalisation stats {key}.{name} contain NaN or Inf")
    return value


def _index(index: tuple[int, ...]) -> str:
    return ", ".join(map(str, index))


@dataclass(frozen=True, eq=False)
class ObservationProcessor:
    cameras: tuple[str, ...]
    image_size: int
    crop_area: float
    state_dim: int
    # camera -> (H, W) of the frames trained on; empty: not recorded (any size is accepted)
    camera_shapes: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    state_mean: torch.Tensor | None = None  # (S,) float32; None: the state passes unnormalised
    state_std: torch.Tensor | None = None  # (S,) float32, near-constant dimensions at 1
    prompter: Callable | None = None  # the VLM's own text and image processing (`VLMPrompter`)
    # (min, max) float64 (S,) of the training states (stats.json state.min / state.max); None: not
    # recorded (stats written by another tool), and then no range check
    state_extent: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def from_config(cls, cfg, stats: dict | None = None, prompter: Callable | None = None) -> ObservationProcessor:
        """From a `PolicyConfig` (duck-typed to keep this module free of the model), the data's
        normalisation statistics and the backbone's prompter."""
        mean = std = extent = None
        if stats is not None:
            mean = torch.tensor(stat(stats, "state", "mean", cfg.state_dim), dtype=torch.float32)
            s = stat(stats, "state", "std", cfg.state_dim)
            std = torch.tensor(np.where(s > 1e-6, s, 1.0), dtype=torch.float32)
            if {"min", "max"} <= set(stats["state"]):
                extent = (stat(stats, "state", "min", cfg.state_dim), stat(stats, "state", "max", cfg.state_dim))
                if (extent[0] > extent[1]).any():
                    dims = np.flatnonzero(extent[0] > extent[1]).tolist()
                    raise ValueError(f"normalisation stats state.min exceeds state.max in dims {dims}")
        return cls(
            cameras=tuple(cfg.cameras),
            image_size=cfg.image_size,
            crop_area=cfg.crop_area,
            state_dim=cfg.state_dim,
            camera_shapes={c: tuple(s) for c, s in cfg.camera_shapes.items()},
            state_mean=mean,
            state_std=std,
            prompter=prompter,
            state_extent=extent,
        )

    def state_bounds(self, margin: float) -> tuple[np.ndarray, np.ndarray] | None:
        """The states `check` accepts with `margin` (float64 (S,) low, high): the recorded [min, max]
        widened on each side by `margin` times the dimension's scale, the largest of its recorded
        width, its largest recorded magnitude and 1 (a unit of the data: metre, radian).

        A guard against gross errors (other units, garbage, another robot's state), not an
        out-of-distribution test: a policy in closed loop reaches states the demonstrations never
        did (an orientation the expert held within 0.02 rad turns by a radian under a failing
        policy), and those must be scored, not refused. None: no range recorded."""
        if self.state_extent is None:
            return None
        lo, hi = self.state_extent
        scale = np.maximum.reduce([hi - lo, np.abs(lo), np.abs(hi), np.ones_like(lo)])
        return lo - margin * scale, hi + margin * scale

    # ------------------------------------------------------------------ model inputs
    def model_inputs(self, images: torch.Tensor, state: torch.Tensor, instructions: list[str]) -> dict:
        """Transformed images (B, N, 3, S, S), raw state (B, S), instructions -> the network's
        inputs: {"vlm": the VLM processor's tensors with "text_mask", "state": normalised (B, S)}."""
        if images.shape[1] != len(self.cameras):
            raise ObservationError(f"got {images.shape[1]} camera images, this policy expects {list(self.cameras)}")
        if state.shape[-1] != self.state_dim:
            raise ObservationError(f"state has width {state.shape[-1]}, this policy expects {self.state_dim}")
        state = state.float()
        if self.state_mean is not None:
            state = (state - self.state_mean) / self.state_std
        return {"vlm": self.prompter(images, instructions), "state": state}

    # ------------------------------------------------------------------ images
    def images(
        self, frames: torch.Tensor, augment: bool = False, jitter: float = 0.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """uint8 (B, N, H, W, 3) -> float (B, N, 3, size, size) in [0, 1]: the
        centre crop (inference) or a random crop of the same area plus colour jitter (training).
        Frames arrive in the data's orientation: readers and environments normalise it (for
        LIBERO, `envs.libero.conventions.frame_from_*`), the model never turns them."""
        x = to_float(frames)
        if augment:
            return color_jitter(random_crop(x, self.crop_area, self.image_size, generator), jitter, generator)
        return center_crop(x, self.crop_area, self.image_size)

    # ------------------------------------------------------------------ raw observations
    def __call__(self, observation: Mapping, state_margin: float | None = None) -> tuple[dict, bool]:
        """Raw observation -> (the network's inputs, whether it was a single observation)."""
        frames, state, instructions, single = self.check(observation, state_margin)
        return self.model_inputs(self.images(torch.from_numpy(frames)), torch.from_numpy(state), instructions), single

    def check(
        self, observation: Mapping, state_margin: float | None = None
    ) -> tuple[np.ndarray, np.ndarray, list[str], bool]:
        """Validate a raw observation; returns frames uint8 (B, N, H, W, 3), state float32 (B, S),
        instructions, and whether it was a single (unbatched) observation. With `state_margin`, a
        state outside `state_bounds(state_margin)` is refused."""
        if not isinstance(observation, Mapping):
            raise ObservationError(f"observation must be a dict, got {type(observation).__name__}")
        missing = [k for k in ("images", "state", "instruction") if k not in observation]
        if missing:
            raise ObservationError(f"observation is missing {missing}; expected keys images, state, instruction")
        cams = observation["images"]
        if not isinstance(cams, Mapping):
            raise ObservationError(f"observation['images'] must map camera name -> array, got {type(cams).__name__}")
        absent = [c for c in self.cameras if c not in cams]
        if absent:
            raise ObservationError(
                f"observation['images'] is missing cameras {absent}; this policy uses {list(self.cameras)}"
            )
        arrays = [self._frame(c, cams[c]) for c in self.cameras]
        single = arrays[0].ndim == 3
        batch = 1 if single else arrays[0].shape[0]
        for c, a in zip(self.cameras, arrays, strict=True):
            if (a.ndim == 3) != single or (not single and a.shape[0] != batch):
                raise ObservationError(
                    f"observation['images'][{c!r}] has shape {a.shape}, but images[{self.cameras[0]!r}] "
                    f"has {arrays[0].shape}: every camera needs the same batch size"
                )
        frames = np.stack([a[None] if single else a for a in arrays], axis=1)  # (B, N, H, W, 3)
        return (
            frames,
            self._state(observation["state"], single, batch, state_margin),
            self._instructions(observation["instruction"], single, batch),
            single,
        )

    def _frame(self, camera: str, value) -> np.ndarray:
        where = f"observation['images'][{camera!r}]"
        a = np.asarray(value)
        if a.dtype != np.uint8:
            raise ObservationError(f"{where}: expected uint8 RGB, got dtype {a.dtype}")
        if a.ndim not in (3, 4) or a.shape[-1] != 3:
            raise ObservationError(
                f"{where}: expected (H, W, 3) or a batch (B, H, W, 3) of RGB frames, got shape {a.shape}"
                + (" (grayscale or channels-first?)" if a.ndim in (2, 3) else "")
            )
        h, w = a.shape[-3:-1]
        if h == 0 or w == 0 or (a.ndim == 4 and a.shape[0] == 0):
            raise ObservationError(f"{where}: empty image, shape {a.shape}")
        want = self.camera_shapes.get(camera)
        if want is not None and (h, w) != tuple(want):
            raise ObservationError(
                f"{where}: frames are {h}x{w}, this policy was trained on {want[0]}x{want[1]} frames from this "
                "camera; resize or re-render at the training resolution (a stretched image shifts the scene)"
            )
        return a

    def _state(self, value, single: bool, batch: int, margin: float | None = None) -> np.ndarray:
        try:
            s = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise ObservationError(f"observation['state']: not numeric ({e})") from e
        want = (self.state_dim,) if single else (batch, self.state_dim)
        if s.shape != want:
            kind = "a single observation" if single else f"a batch of {batch}"
            raise ObservationError(f"observation['state']: expected shape {want} for {kind}, got {s.shape}")
        if not np.isfinite(s).all():
            raise ObservationError("observation['state'] contains NaN or Inf (after the cast to float32)")
        bounds = None if margin is None else self.state_bounds(margin)
        if bounds is not None and (bad := first_outside(s, *bounds)) is not None:
            index, v = bad
            d = index[-1]
            lo, hi = self.state_extent
            raise ObservationError(
                f"observation['state'][{_index(index)}] = {v:.6g} is outside [{bounds[0][d]:.6g}, {bounds[1][d]:.6g}]: "
                f"the training states' range of dimension {d}, [{lo[d]:.6g}, {hi[d]:.6g}], widened by "
                f"state_margin={margin:g} times its scale on each side. A state in other units, or from "
                "another robot? If it is right, raise state_margin (VLAPolicy(state_margin=...), vla-serve state_margin=...)"
            )
        return s[None] if single else s

    def _instructions(self, value, single: bool, batch: int) -> list[str]:
        if single:
            return [check_instruction(value)]
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise ObservationError(
                f"observation['instruction']: a batch of {batch} needs a list of {batch} strings, "
                f"got {type(value).__name__}"
            )
        if len(value) != batch:
            raise ObservationError(f"observation['instruction']: {len(value)} instructions for a batch of {batch}")
        return [check_instruction(t, f"instruction[{i}]") for i, t in enumerate(value)]

    def fixed_actions(
        self,
        value,
        single: bool,
        batch: int,
        chunk_size: int,
        action_dim: int,
        bounds: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> torch.Tensor:
        """Inpainting prefix: (k, D) for a single observation, (B, k, D) for a batch, 0 < k < H.
        `bounds` (low, high) (D,): the values the action tokenizer represents; any other is
        refused (the tokenizer would clip it, and the chunk would continue another action)."""
        a = np.asarray(value, dtype=np.float32)
        a = a[None] if single and a.ndim == 2 else a
        if a.ndim != 3 or a.shape[0] != batch or a.shape[2] != action_dim or not 0 < a.shape[1] < chunk_size:
            want = f"(k, {action_dim})" if single else f"({batch}, k, {action_dim})"
            raise ObservationError(
                f"fixed_actions: expected {want} with 0 < k < {chunk_size}, got shape {np.shape(value)}"
            )
        if not np.isfinite(a).all():
            raise ObservationError("fixed_actions contain NaN or Inf (after the cast to float32)")
        if bounds is not None and (bad := first_outside(a[0] if single else a, *bounds)) is not None:
            index, v = bad
            d = index[-1]
            raise ObservationError(
                f"fixed_actions[{_index(index)}] = {v:.6g} is outside [{bounds[0][d]:.6g}, {bounds[1][d]:.6g}], the "
                f"range of action dimension {d} the action tokenizer represents (it would be clipped): pass the "
                "actions the policy decoded, in the data's units"
            )
        return torch.from_numpy(a)
