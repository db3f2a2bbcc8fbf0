"""The policy that evaluation, benchmarks and the deploy node hold: raw observation in, action
chunk out. It owns the network (`vla.model.VLAModel`), the observation processor built from the
checkpoint, and the decoding RNG; checkpoint I/O lives in `vla.checkpoint`.

    policy = VLAPolicy.load("runs/builtin/checkpoints/latest")
    policy.reset(seed=0)                       # a new episode: decoding randomness restarts
    chunk = policy.infer(observation)          # (H, D) un-normalised, or (B, H, D) for a batch

Observation contract: see `vla.processor`. `infer` raises `ObservationError` naming the field for
an observation outside it, and `NonFiniteError` rather than return a chunk derived from NaN.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from vla.checkpoint import (  # noqa: F401  (re-exported: the public checkpoint API)
    CheckpointError,
    check_checkpoint,
    load_model,
    save_checkpoint,
    verify_manifest,
)
from vla.model import PolicyConfig, VLAModel  # noqa: F401  (PolicyConfig re-exported)
from vla.processor import ObservationProcessor
from vla.sampling import NonFiniteError, SamplerConfig


class VLAPolicy:
    def __init__(self, model: VLAModel) -> None:
        self.model = model.eval()
        self.reset()

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> VLAPolicy:
        return cls(load_model(path, device))

    check_checkpoint = staticmethod(check_checkpoint)

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

    def preprocess(self, observation: dict) -> tuple[dict, bool]:
        """Raw observation (single or batched) -> the network's inputs, and whether it was single."""
        return self.processor(observation)

    @torch.no_grad()
    def infer(self, observation: dict, fixed_actions: np.ndarray | None = None) -> np.ndarray:
        """Raw observation -> un-normalised action chunk (H, D), or (B, H, D) for a batch.

        fixed_actions (k, D) or (B, k, D): the first k actions are pre-committed (inpainting)."""
        inputs, single = self.preprocess(observation)
        fixed = None
        if fixed_actions is not None:
            batch = inputs["state"].shape[0]
            fixed = self.processor.fixed_actions(fixed_actions, single, batch, self.cfg.chunk_size, self.cfg.action_dim)
        tokens = self.model.predict_tokens(inputs, generator=self.generator, fixed_actions=fixed)
        actions = self.model.action_tokenizer.decode(tokens).cpu().numpy()
        if not np.isfinite(actions).all():
            raise NonFiniteError("decoded actions contain NaN or Inf; check the action tokenizer bounds")
        return actions[0] if single else actions

    def check_compatible(self, action_dim: int, state_dim: int, cameras: list[str]) -> None:
        self.model.check_compatible(action_dim, state_dim, cameras)
