"""The observation contract's shared rules and the two errors a policy raises, without torch: the
policy's processor (`vla.processor`) and the deploy node's protocol (`deploy.protocol`, which the
robot side imports without torch) apply the same rules, so the server refuses in the protocol
what the model would refuse.
"""

from __future__ import annotations

import numpy as np

# LIBERO and Bridge instructions are under 200 characters; a cap keeps a runaway string from
# costing seconds and gigabytes in the tokenizer.
MAX_INSTRUCTION_CHARS = 1000


class ObservationError(ValueError):
    """An observation that does not match the policy's contract; the message names the field."""


class NonFiniteError(RuntimeError):
    """The model produced NaN or Inf (diverged weights, an out-of-range input): no action may be
    derived from it. The deploy node answers `non_finite_output`, and the agent holds."""


def check_instruction(text: object, where: str = "instruction") -> str:
    if not isinstance(text, str):
        raise ObservationError(f"observation {where}: expected a string, got {type(text).__name__}")
    if not text.strip():
        raise ObservationError(f"observation {where}: empty instruction")
    if len(text) > MAX_INSTRUCTION_CHARS:
        raise ObservationError(
            f"observation {where}: {len(text)} characters, more than the {MAX_INSTRUCTION_CHARS} allowed"
        )
    return text


def action_range_bounds(low, high, binary) -> tuple[np.ndarray, np.ndarray]:
    """The actions a tokenizer of range [low, high] (D,) represents, as float32 values in float64
    (D,): each continuous dim widened by 1e-6 of its range (the float32 rounding of a decoded edge
    bin's centre, with room) and rounded outward, so an action clipped to them stays inside after
    a cast to float32; a binary dim: [-1, 1]."""
    low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
    slack = 1e-6 * (high - low)
    lo = np.where(binary, -1.0, low - slack)
    hi = np.where(binary, 1.0, high + slack)
    lo32, hi32 = lo.astype(np.float32), hi.astype(np.float32)
    lo32 = np.where(lo32 > lo, np.nextafter(lo32, np.float32(-np.inf)), lo32)
    hi32 = np.where(hi32 < hi, np.nextafter(hi32, np.float32(np.inf)), hi32)
    return lo32.astype(np.float64), hi32.astype(np.float64)


def first_outside(values: np.ndarray, low: np.ndarray, high: np.ndarray) -> tuple[tuple[int, ...], float] | None:
    """The index and value of the first entry of `values` (..., D) outside [low, high] (D,), or
    None; NaN counts as outside."""
    out = np.argwhere(~((values >= low) & (values <= high)))
    if not len(out):
        return None
    index = tuple(int(i) for i in out[0])
    return index, float(values[index])
