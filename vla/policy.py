"""The policy: backbone prefix + proprio token + action decoder, with `infer` and checkpoints.

Observation contract (one sample; `infer` also takes a batch with a leading B on arrays and a
list of instructions):
    {"images": {camera: uint8 (H, W, 3)}, "state": float (S,), "instruction": str}
Training batch contract (built by data/):
    images float (B, N, 3, size, size) in [0, 1]; state (B, S); instruction list[str];
    actions (B, H, D); action_is_pad (B, H) bool.
`infer` returns un-normalised actions (H, D) (or (B, H, D)).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

from vla.action_tokenizer import ActionTokenizer, ActionTokenizerConfig
from vla.backbone import BackboneConfig, VLMBackbone, build_tiny_vlm, load_pretrained_vlm, model_from_saved_config
from vla.configs import ConfigError, atomic_dir, file_sha256, from_dict, load_json, save_json, to_dict
from vla.decoder import ActionDecoder, DecoderConfig
from vla.processor import ObservationProcessor
from vla.sampling import DecodeTrace, NonFiniteError, SamplerConfig, autoregressive_decode, masked_diffusion_decode

log = logging.getLogger(__name__)

DECODER_TYPES = ("diffusion", "autoregressive")
CHECKPOINT_FORMAT = "vla-policy"
CHECKPOINT_VERSION = 1
MANIFEST = "manifest.json"  # sha256 and size of every file of the checkpoint, written last


class CheckpointError(ValueError):
    """A checkpoint folder that is incomplete, corrupt, edited or inconsistent; names the file."""


@dataclass
class PolicyConfig:
    decoder_type: str = "diffusion"
    chunk_size: int = 8
    action_dim: int = 7
    state_dim: int = 8
    cameras: list[str] = field(default_factory=lambda: ["agentview", "wrist"])
    crop_area: float = 0.9  # evaluation centre crop; training uses a random crop of this area
    rotate_180: bool = False  # camera convention: LIBERO renders upside down
    # camera -> [H, W] of the raw frames trained on (filled from the data by training); inference
    # refuses other sizes rather than stretch them. Empty: not recorded, any size accepted.
    camera_shapes: dict[str, list[int]] = field(default_factory=dict)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    action_tokenizer: ActionTokenizerConfig = field(default_factory=ActionTokenizerConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)

    def __post_init__(self) -> None:
        if self.decoder_type not in DECODER_TYPES:
            raise ValueError(f"policy.decoder_type={self.decoder_type!r}; choose one of {DECODER_TYPES}")
        for name in ("chunk_size", "action_dim", "state_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"policy.{name} must be >= 1, got {getattr(self, name)}")
        if not self.cameras:
            raise ValueError("policy.cameras must name at least one camera")
        if not 0.1 <= self.crop_area <= 1.0:
            raise ValueError(f"policy.crop_area must be in [0.1, 1], got {self.crop_area}")

    @property
    def image_size(self) -> int:
        return self.backbone.image_size


def _stat(stats: dict, key: str, name: str, width: int) -> np.ndarray:
    try:
        value = np.asarray(stats[key][name], dtype=np.float64)
    except KeyError as e:
        raise KeyError(f"normalisation stats are missing {key}.{name}") from e
    if value.shape != (width,):
        raise ValueError(f"normalisation stats {key}.{name} has shape {value.shape}, expected ({width},)")
    if not np.isfinite(value).all():
        raise ValueError(f"normalisation stats {key}.{name} contain NaN or Inf")
    return value


class VLAPolicy(nn.Module):
    def __init__(self, cfg: PolicyConfig, stats: dict, vlm=None, tokenizer_state: dict | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.stats = stats
        if vlm is None:
            vlm = (
                build_tiny_vlm(cfg.backbone)
                if cfg.backbone.source == "tiny"
                else load_pretrained_vlm(cfg.backbone.source)
            )
        self.backbone = VLMBackbone(*vlm, cfg.backbone)
        if tokenizer_state is None:
            q01 = _stat(stats, "action", "q01", cfg.action_dim)
            q99 = _stat(stats, "action", "q99", cfg.action_dim)
            self.action_tokenizer = ActionTokenizer(cfg.action_tokenizer, q01, q99)
        else:
            self.action_tokenizer = ActionTokenizer.from_state_dict(tokenizer_state)
        if self.action_tokenizer.action_dim != cfg.action_dim:
            raise ValueError(
                f"action tokenizer width {self.action_tokenizer.action_dim} != policy.action_dim {cfg.action_dim}"
            )
        mean = _stat(stats, "state", "mean", cfg.state_dim)
        std = _stat(stats, "state", "std", cfg.state_dim)
        self.register_buffer("state_mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer(
            "state_std", torch.tensor(np.where(std > 1e-6, std, 1.0), dtype=torch.float32), persistent=False
        )
        hidden = self.backbone.hidden_size
        self.state_proj = nn.Sequential(nn.Linear(cfg.state_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.decoder = ActionDecoder(
            cfg.decoder, hidden, cfg.chunk_size, cfg.action_dim, cfg.action_tokenizer.bins, cond_dim=2 * hidden
        )
        self.processor = ObservationProcessor.from_config(cfg)
        self.generator = torch.Generator()
        self.reset()

    @property
    def device(self) -> torch.device:
        return self.state_proj[0].weight.device

    # ----------------------------------------------------------------------------- prefix
    def encode_prefix(self, images: torch.Tensor, state: torch.Tensor, instructions: list[str]):
        """images float (B, N, 3, S, S); state (B, S_dim) raw -> prefix (B, P + 2, hidden), mask.

        The prefix is the backbone's hidden states, then the mean of its text positions (the
        instruction, which a randomly initialised backbone would otherwise bury among hundreds of
        image tokens), then the proprio token. The last two also condition every action slot.
        """
        if state.shape[-1] != self.cfg.state_dim:
            raise ValueError(f"state has width {state.shape[-1]}, this policy expects {self.cfg.state_dim}")
        if images.shape[1] != len(self.cfg.cameras):
            raise ValueError(f"got {images.shape[1]} camera images, this policy expects {self.cfg.cameras}")
        inputs = self.backbone.prepare(images, instructions)
        hidden, mask = self.backbone(inputs)
        text = self.backbone.text_mask(inputs)[..., None].to(hidden.device, hidden.dtype)  # (B, P, 1)
        text_tok = (hidden * text).sum(1, keepdim=True) / text.sum(1, keepdim=True).clamp_min(1.0)
        s = (state.to(self.device).float() - self.state_mean) / self.state_std
        state_tok = self.state_proj(s)[:, None].to(hidden.dtype)  # (B, 1, hidden)
        prefix = torch.cat([hidden, text_tok, state_tok], dim=1)  # (B, P + 2, hidden)
        mask = torch.cat([mask, torch.ones_like(mask[:, :2])], dim=1)
        return prefix, mask

    def decoder_cache(self, prefix: torch.Tensor, mask: torch.Tensor) -> dict:
        """The decoder's per-chunk cache; every slot is conditioned on the text and state tokens."""
        return self.decoder.prefix_cache(prefix, mask, cond=prefix[:, -2:].flatten(1))

    # ----------------------------------------------------------------------------- training
    def compute_loss(self, batch: dict, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
        """Masked-diffusion objective (method.md section 4) or next-slot cross-entropy."""
        prefix, pmask = self.encode_prefix(batch["images"], batch["state"], batch["instruction"])
        cache = self.decoder_cache(prefix, pmask)
        tokens = self.action_tokenizer.encode(batch["actions"].to(self.device))  # (B, H, D)
        b, h, d = tokens.shape
        if h != self.cfg.chunk_size:
            raise ValueError(f"action chunk has {h} steps, this policy expects {self.cfg.chunk_size}")
        tokens = tokens.reshape(b, h * d)  # (B, L)
        valid = (~batch["action_is_pad"].to(self.device))[:, :, None].expand(b, h, d).reshape(b, h * d)
        if self.cfg.decoder_type == "autoregressive":
            inp = torch.cat([torch.full_like(tokens[:, :1], self.decoder.bos_id), tokens[:, :-1]], dim=1)
            logits = self.decoder(inp, cache, causal=True)
            target_mask = valid
        else:
            target_mask = self._training_mask(b, h * d, generator) & valid
            # Unsupervised slots are [MASK] in the input too: inference starts from an all-[MASK]
            # chunk, and their labels (a recovery from an unforeseeable push) must not leak in.
            inp = torch.where(target_mask | ~valid, self.decoder.mask_id, tokens)
            logits = self.decoder(inp, cache)
        loss = F.cross_entropy(logits[target_mask].float(), tokens[target_mask])
        with torch.no_grad():
            acc = (logits.argmax(-1) == tokens)[target_mask].float().mean()
        return loss, {"loss": loss.detach(), "masked_acc": acc}

    def _training_mask(self, b: int, n: int, generator: torch.Generator | None) -> torch.Tensor:
        """Cosine mask ratio g = cos(pi r / 2), k = max(1, round(L g)) slots chosen uniformly."""
        r = torch.rand(b, generator=generator)
        k = torch.clamp(torch.round(n * torch.cos(math.pi * r / 2)), min=1).long()  # (B,)
        order = torch.rand(b, n, generator=generator).argsort(1).argsort(1)
        return (order < k[:, None]).to(self.device)

    @torch.no_grad()
    def fully_masked_accuracy(self, batch: dict) -> torch.Tensor:
        """Token accuracy from one pass with every slot masked (diffusion) or greedy decoding (AR)."""
        prefix, pmask = self.encode_prefix(batch["images"], batch["state"], batch["instruction"])
        tokens = self.action_tokenizer.encode(batch["actions"].to(self.device))
        b, h, d = tokens.shape
        tokens = tokens.reshape(b, h * d)
        valid = (~batch["action_is_pad"].to(self.device))[:, :, None].expand(b, h, d).reshape(b, h * d)
        cache = self.decoder_cache(prefix, pmask)
        if self.cfg.decoder_type == "autoregressive":
            pred = self._decode_ar(cache, b)
        else:
            pred = self.decoder(torch.full_like(tokens, self.decoder.mask_id), cache).argmax(-1)
        return (pred == tokens)[valid].float().mean()

    # ----------------------------------------------------------------------------- decoding
    def _decode_ar(self, cache: dict, b: int) -> torch.Tensor:
        def step(prev, i, past):
            return self.decoder.step(prev, i, cache, past)

        return autoregressive_decode(step, b, self.decoder.num_slots, self.decoder.bos_id, self.device)

    @torch.no_grad()
    def predict_tokens(
        self,
        images: torch.Tensor,
        state: torch.Tensor,
        instructions: list[str],
        use_cache: bool = True,
        fixed_actions: torch.Tensor | None = None,
        trace: DecodeTrace | None = None,
    ) -> torch.Tensor:
        """-> tokens (B, H, D). fixed_actions (B, k, D): the first k steps are pre-committed."""
        b = images.shape[0]
        prefix, pmask = self.encode_prefix(images, state, instructions)
        cache = self.decoder_cache(prefix, pmask)
        if self.cfg.decoder_type == "autoregressive":
            if fixed_actions is not None:
                raise ValueError("inpainting (fixed_actions) needs decoder_type='diffusion'")
            return self._decode_ar(cache, b).reshape(b, self.cfg.chunk_size, self.cfg.action_dim)

        def logits_cached(tokens):
            return self.decoder(tokens, cache)

        def logits_recomputed(tokens):  # reference path: the prefix is recomputed every step
            p, m = self.encode_prefix(images, state, instructions)
            return self.decoder(tokens, self.decoder_cache(p, m))

        fixed_tokens = fixed_mask = None
        n = self.decoder.num_slots
        if fixed_actions is not None:
            k = fixed_actions.shape[1]
            if not 0 < k < self.cfg.chunk_size:
                raise ValueError(f"fixed_actions must fix 1..{self.cfg.chunk_size - 1} steps, got {k}")
            fixed_tokens = torch.full((b, n), self.decoder.mask_id, dtype=torch.long, device=self.device)
            fixed_tokens[:, : k * self.cfg.action_dim] = self.action_tokenizer.encode(
                fixed_actions.to(self.device)
            ).reshape(b, -1)
            fixed_mask = fixed_tokens != self.decoder.mask_id
        tokens = masked_diffusion_decode(
            logits_cached if use_cache else logits_recomputed,
            b,
            n,
            self.decoder.mask_id,
            self.cfg.sampler,
            generator=self.generator,
            device=self.device,
            fixed_tokens=fixed_tokens,
            fixed_mask=fixed_mask,
            trace=trace,
        )
        return tokens.reshape(b, self.cfg.chunk_size, self.cfg.action_dim)

    def preprocess(self, observation: dict) -> tuple[torch.Tensor, torch.Tensor, list[str], bool]:
        """Raw observation (single or batched) -> eval-transformed images, state, instructions."""
        return self.processor(observation)

    @torch.no_grad()
    def infer(self, observation: dict, fixed_actions: np.ndarray | None = None) -> np.ndarray:
        """Raw observation -> un-normalised action chunk (H, D), or (B, H, D) for a batch.

        Raises `ObservationError` for an observation outside the contract and `NonFiniteError`
        when the model's output is not finite: never a chunk derived from NaN."""
        images, state, instructions, single = self.preprocess(observation)
        fixed = None
        if fixed_actions is not None:
            fixed = self.processor.fixed_actions(
                fixed_actions, single, images.shape[0], self.cfg.chunk_size, self.cfg.action_dim
            )
        tokens = self.predict_tokens(images, state, instructions, fixed_actions=fixed)
        actions = self.action_tokenizer.decode(tokens).cpu().numpy()
        if not np.isfinite(actions).all():
            raise NonFiniteError("decoded actions contain NaN or Inf; check the action tokenizer bounds")
        return actions[0] if single else actions

    def reset(self, seed: int = 0) -> None:
        """Start a new episode: decoding randomness restarts from `seed`."""
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)

    # ----------------------------------------------------------------------------- checkpoints
    def forward(self, batch: dict, generator: torch.Generator | None = None):
        """Training forward (what DDP wraps): the loss and its metrics."""
        return self.compute_loss(batch, generator)

    def save(self, path: str | Path, extra: dict | None = None, write_more=None, state_dict=None) -> Path:
        """Write a self-describing checkpoint folder atomically (a crash leaves the old one).

        `write_more(folder)` may add files (e.g. training state) inside the same atomic write.
        `state_dict` replaces this module's own (e.g. the whole tensors of a sharded policy).
        """
        path = Path(path)
        with atomic_dir(path) as tmp:
            tmp.mkdir()
            state_dict = self.state_dict() if state_dict is None else state_dict
            seen, tensors = set(), {}
            for name, t in self.state_dict(keep_vars=True).items():  # tied parameters once (first name)
                if id(t) not in seen:
                    seen.add(id(t))
                    tensors[name] = state_dict[name].detach().cpu().contiguous()
            bad = [n for n, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
            if bad:
                raise NonFiniteError(
                    f"refusing to save {path}: {len(bad)} of {len(tensors)} tensors hold NaN or Inf "
                    f"(first: {bad[:3]}); the run diverged"
                )
            safetensors.torch.save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
            meta = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "policy": to_dict(self.cfg)}
            save_json(tmp / "config.json", {**meta, **(extra or {})})
            save_json(tmp / "action_tokenizer.json", self.action_tokenizer.state_dict())
            save_json(tmp / "stats.json", self.stats)
            vlm = self.backbone.vlm
            base = vlm.get_base_model() if hasattr(vlm, "get_base_model") else vlm
            base.config.save_pretrained(tmp / "backbone")
            self.backbone.processor.save_pretrained(tmp / "backbone")
            if write_more is not None:
                write_more(tmp)
            files = sorted(p for p in tmp.rglob("*") if p.is_file())
            manifest = {str(p.relative_to(tmp)): {"sha256": file_sha256(p), "bytes": p.stat().st_size} for p in files}
            save_json(tmp / MANIFEST, {"files": manifest})
        return path

    @staticmethod
    def check_checkpoint(path: str | Path, verify: bool = True) -> dict:
        """Raise `CheckpointError`, naming the file, unless `path` is a complete checkpoint whose
        files are those written at save (sha256 in manifest.json); returns its config.json."""
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        for name in ("config.json", "model.safetensors", "action_tokenizer.json", "stats.json", "backbone"):
            if not (path / name).exists():
                raise CheckpointError(f"{path} is not a complete policy checkpoint: {name} is missing")
        if verify:
            verify_manifest(path)
        try:
            meta = load_json(path / "config.json")
        except ValueError as e:
            raise CheckpointError(str(e)) from e
        if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{path / 'config.json'} is not a {CHECKPOINT_FORMAT} checkpoint")
        if "policy" not in meta:
            raise CheckpointError(f"{path / 'config.json'} has no 'policy' section")
        return meta

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> VLAPolicy:
        path = Path(path)
        meta = cls.check_checkpoint(path)
        try:
            cfg = from_dict(PolicyConfig, meta["policy"], "policy")
        except ConfigError as e:
            raise CheckpointError(f"{path / 'config.json'}: {e}") from e
        vlm = model_from_saved_config(path / "backbone")
        try:
            stats, tok = load_json(path / "stats.json"), load_json(path / "action_tokenizer.json")
            policy = cls(cfg, stats, vlm=vlm, tokenizer_state=tok)
        except (KeyError, ValueError, TypeError) as e:
            raise CheckpointError(f"{path}: stats.json or action_tokenizer.json do not fit the config: {e}") from e
        weights = path / "model.safetensors"
        try:
            tensors = safetensors.torch.load_file(str(weights))
        except Exception as e:  # safetensors raises its own error types for truncated or garbled files
            raise CheckpointError(f"{weights} cannot be read ({e}); the file is truncated or corrupt") from e
        bad = [n for n, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
        if bad:
            raise CheckpointError(
                f"{weights}: {len(bad)} of {len(tensors)} tensors hold NaN or Inf (first: {bad[:3]}); "
                "this checkpoint comes from a diverged run and would act on garbage"
            )
        missing, unexpected = policy.load_state_dict(tensors, strict=False)
        params = policy.state_dict(keep_vars=True)  # a tied parameter is saved once, under its first name
        loaded = {id(params[k]) for k in tensors if k in params}
        missing = [m for m in missing if id(params[m]) not in loaded]
        if missing or unexpected:
            raise CheckpointError(
                f"{weights} does not match the saved config: "
                f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
            )
        return policy.to(device).eval()

    def check_compatible(self, action_dim: int, state_dim: int, cameras: list[str]) -> None:
        """Refuse data or environments whose widths or cameras differ from the checkpoint's."""
        problems = []
        if action_dim != self.cfg.action_dim:
            problems.append(f"action width {action_dim} != checkpoint's {self.cfg.action_dim}")
        if state_dim != self.cfg.state_dim:
            problems.append(f"state width {state_dim} != checkpoint's {self.cfg.state_dim}")
        missing = [c for c in self.cfg.cameras if c not in cameras]
        if missing:
            problems.append(f"cameras {missing} required by the checkpoint are not provided (have {cameras})")
        if problems:
            raise ValueError("checkpoint does not match the data/environment: " + "; ".join(problems))


def verify_manifest(path: Path) -> None:
    """Check every file listed in `path/manifest.json` against its recorded size and sha256."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        log.warning("%s has no %s (saved by an older version): its files cannot be verified", path, MANIFEST)
        return
    try:
        files = load_json(manifest_path)["files"]
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{manifest_path} is unreadable ({e}); the checkpoint cannot be verified") from e
    for rel, want in files.items():
        f = path / rel
        if not f.is_file():
            raise CheckpointError(f"{f} is missing (listed in {manifest_path})")
        size = f.stat().st_size
        if size != want["bytes"]:
            raise CheckpointError(
                f"{f} has {size} bytes, {want['bytes']} were saved: the file was truncated or changed"
            )
        if file_sha256(f) != want["sha256"]:
            raise CheckpointError(
                f"{f} differs from the file saved with this checkpoint (sha256 mismatch): it was edited or "
                "corrupted. Restore it; to change evaluation settings use eval.* overrides, not the file"
            )


def checkpoint_digest(path: str | Path) -> str:
    """The weights' sha256 as recorded at save (the deploy handshake's model id)."""
    return load_json(Path(path) / MANIFEST)["files"]["model.safetensors"]["sha256"]
