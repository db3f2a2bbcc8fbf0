"""The policy that evaluation, benchmarks and the deploy node hold: raw observation in, action
chunk out. It owns the network (`vla.model.VLAModel`), the observation processor built from the
checkpoint, and the decoding RNG; checkpoint I/O lives in `vla.checkpoint`.

    policy = VLAPolicy.load("runs/builtin/checkpoints/latest")
    policy.reset(seed=0)                       # a new episode: decoding randomness restarts
    chunk = policy.infer(observation)          # (H, D) un-normalised, or (B, H, D) for a batch

Observation contract: see `vla.processor`. `infer` raises `ObservationError` naming the field for
an observation outside it (including fixed actions the action tokenizer cannot represent, and
a state far outside the training states: `state_margin`), and `NonFiniteError`
rather than return a chunk derived from NaN.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from vla.checkpoint import Checkpoint, save_checkpoint
from vla.contract import NonFiniteError, action_range_bounds
from vla.model import PolicyConfig, VLAModel
from vla.processor import ObservationProcessor
from vla.sampling import SamplerConfig

STATE_MARGIN = 10.0  # VLAPolicy's and vla-serve's default range check on the state


class VLAPolicy:
    """`state_margin`: `infer` refuses a state beyond the training states' [min, max] by more than
    this many times the dimension's scale (`ObservationProcessor.state_bounds`: its recorded
    width, magnitude or 1, whichever is largest), with an `ObservationError` naming the dimension
    and the allowed range. The default, 10, refuses states in other units or garbage and admits
    what a policy reaches in closed loop; inf turns the check off."""

    def __init__(self, model: VLAModel, state_margin: float = STATE_MARGIN) -> None:
        if not state_margin >= 0:  # also refuses NaN
            raise ValueError(f"state_margin must be >= 0 (inf: no range check), got {state_margin}")
        self.model = model.eval()
        self.state_margin = float(state_margin)
        self.reset()

    @classmethod
    def load(
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        state_margin: float = STATE_MARGIN,
        allow_unverified: bool = False,
    ) -> VLAPolicy:
        """`allow_unverified`: load a checkpoint that has no manifest.json (saved by hand, or by a
        version before manifests), with a warning; otherwise that is a `CheckpointError`."""
        return cls(Checkpoint(path, allow_unverified).load_model(device), state_margin)

    def save(self, path: str | Path) -> Path:
        return save_checkpoint(self.model, path)

    @property
    def cfg(self) -> PolicyConfig:
        return self.model.cfg

    @property
    def processor(self) -> ObservationProcessor:
        return self.model.processor

    def with_sampler(self, sampler: SamplerConfig) -> VLAPolicy:
        """Decode with another sampler config (ablations); the network is shared, not copied."""
        self.model.cfg = replace(self.model.cfg, sampler=sampler)
        return self

    def reset(self, seed: int = 0) -> None:
        """Start a new episode: decoding randomness restarts from `seed`."""
        self.generator = torch.Generator(device=self.model.device)
        self.generator.manual_seed(seed)

    @property
    def takes_fixed_actions(self) -> bool:
        """Whether `infer(fixed_actions=...)` works: inpainting needs the masked-diffusion decoder
        (either architecture); the autoregressive one decodes left to right from nothing."""
        return self.cfg.decoder_type == "diffusion"

    @property
    def state_bounds(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The states `infer` accepts, float64 (S,) low and high; None: no check (an infinite
        `state_margin`, or a checkpoint that records no range)."""
        if self.state_margin == math.inf:
            return None
        return self.processor.state_bounds(self.state_margin)

    @property
    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The fixed actions `infer` accepts, float64 (D,) low and high: what the action tokenizer
        represents. A continuous dim: its [low, high] (to float32 rounding), outside which it clips;
        a binary dim: [-1, 1] (it decodes to -1 / +1 and encodes by sign). Both bounds are float32
        values, so an action clipped to them is still inside after `infer`'s cast to float32."""
        tok = self.model.action_tokenizer
        low = tok.low.double().numpy()
        return action_range_bounds(low, low + tok.span.double().numpy(), tok.binary.numpy())

    def preprocess(self, observation: dict) -> tuple[dict, bool]:
        """Raw observation (single or batched) -> the network's inputs, and whether it was single."""
        return self.processor(observation, None if self.state_margin == math.inf else self.state_margin)

    @torch.no_grad()
    def infer(self, observation: dict, fixed_actions: np.ndarray | None = None) -> np.ndarray:
        """Raw observation -> un-normalised action chunk (H, D), or (B, H, D) for a batch.

        fixed_actions (k, D) or (B, k, D): the first k actions are pre-committed (inpainting)."""
        inputs, single = self.preprocess(observation)
        fixed = None
        if fixed_actions is not None:
            batch = inputs["state"].shape[0]
            fixed = self.processor.fixed_actions(
                fixed_actions, single, batch, self.cfg.chunk_size, self.cfg.action_dim, self.action_bounds
            )
        tokens = self.model.predict_tokens(inputs, generator=self.generator, fixed_actions=fixed)
        actions = self.model.action_tokenizer.decode(tokens).cpu().numpy()
        if not np.isfinite(actions).all():
            raise NonFiniteError("decoded actions contain NaN or Inf; check the action tokenizer bounds")
        return actions[0] if single else actions
