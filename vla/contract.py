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


def first_outside(values: np.ndarray, low: np.ndarray, high: np.ndarray) -> tuple[tuple[int, ...], float] | None:
    """The index and value of the first entry of `values` (..., D) outside [low, high] (D,), or
    None; NaN counts as outside."""
    out = np.argwhere(~((values >= low) & (values <= high)))
    if not len(out):
        return None
    index = tuple(int(i) for i in out[0])
    return index, float(values[index])
