"""The network: VLM prefix + proprio token + action decoder; the loss and token prediction.

Training batch contract (built by `data.dataset.Collate` with the policy's `ObservationProcessor`,
in the loader's workers):
    vlm: the VLM processor's tensors for [images][instruction], plus "text_mask" (B, P) bool;
    state (B, S) normalised; instruction list[str]; actions (B, H, D) raw; action_is_pad (B, H).
`predict_tokens` takes the same `vlm` and `state` and returns action tokens (B, H, D).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

import torch
import torch.nn.functional as F
from torch import nn

from vla.action_tokenizer import ActionTokenizer, ActionTokenizerConfig
from vla.backbone import BackboneConfig, VLMBackbone, build_tiny_vlm, load_pretrained_vlm
from vla.configs import choice
from vla.decoder import ActionDecoder, DecoderConfig
from vla.embodiment import Embodiment
from vla.processor import ObservationProcessor, stat
from vla.sampling import DecodeTrace, SamplerConfig, autoregressive_decode, masked_diffusion_decode
from vla.unified import FrozenPrefixCache, UnifiedDecoder, slot_mask


class DecoderType(StrEnum):
    diffusion = "diffusion"  # masked diffusion over the action slots (docs/method.md section 5)
    autoregressive = "autoregressive"  # the baseline: left to right, causal, key/value cache


class DecoderArch(StrEnum):
    expert = "expert"  # a separate transformer over the slots, attending to the VLM's last hidden states
    unified = "unified"  # the slots are positions of the VLM's own language model (vla/unified.py)


@dataclass
class PolicyConfig:
    decoder_type: DecoderType = DecoderType.diffusion
    decoder_arch: DecoderArch = DecoderArch.expert  # `decoder` below sizes the expert only
    chunk_size: int = 8
    action_dim: int = 7
    state_dim: int = 8
    cameras: list[str] = field(default_factory=lambda: ["agentview", "wrist"])
    crop_area: float = 0.9  # evaluation centre crop; training uses a random crop of this area
    # camera -> [H, W] of the raw frames trained on (filled from the data by training); inference
    # refuses other sizes rather than stretch them. Empty: not recorded, any size accepted.
    camera_shapes: dict[str, list[int]] = field(default_factory=dict)
    # How the training frames were rendered, for simulated data ("libero" or "fast" for LIBERO
    # recordings; empty when unknown). Evaluation renders the same way unless told otherwise.
    render_mode: str = ""
    # What the policy acts on (robot, state/action names, action convention, control rate),
    # recorded by training from its data; empty fields are unknown.
    embodiment: Embodiment = field(default_factory=Embodiment)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    action_tokenizer: ActionTokenizerConfig = field(default_factory=ActionTokenizerConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    # Training-time action conditioning for real-time chunking: each training chunk gets a delay
    # d drawn uniformly from 0..prefix_max_steps, its first d steps given as clean tokens of the
    # actions taken (unsupervised), the rest masked as usual, so that decoding with a committed
    # prefix (`infer(fixed_actions=)`, delayed execution) is what the model was trained on. 0: off.
    prefix_max_steps: int = 0
    # The share of training chunks given no prefix (d = 0, supervised as without the option);
    # the rest draw d uniformly from 1..prefix_max_steps. None: d uniform on 0..prefix_max_steps.
    # Uniform leaves the first slots, the ones a synchronous decode executes, supervised on one
    # chunk in prefix_max_steps + 1 (slot 0 only when d = 0).
    prefix_zero_prob: float | None = None
    # Auxiliary goal head (training only): from the prefix, predict the end-effector position at
    # the demonstration's next `goal_aux_events` gripper events (where it grasps, where it
    # releases) relative to the current one, in units of `goal_aux_scale` (the state's position
    # units, metres for LIBERO) under a Huber loss added with this weight. A target only the
    # images can give once placements vary, so the backbone must locate things. 0: off.
    goal_aux_weight: float = 0.0
    goal_aux_events: int = 2
    goal_aux_scale: float = 0.02

    def __post_init__(self) -> None:
        self.decoder_type = choice(DecoderType, self.decoder_type, "policy.decoder_type")
        self.decoder_arch = choice(DecoderArch, self.decoder_arch, "policy.decoder_arch")
        for name in ("chunk_size", "action_dim", "state_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"policy.{name} must be >= 1, got {getattr(self, name)}")
        if not self.cameras:
            raise ValueError("policy.cameras must name at least one camera")
        if not 0.1 <= self.crop_area <= 1.0:
            raise ValueError(f"policy.crop_area must be in [0.1, 1], got {self.crop_area}")
        self.camera_shapes = _checked_camera_shapes(self.camera_shapes, self.cameras)
        self.embodiment.check_widths(self.state_dim, self.action_dim)
        if self.decoder_type == "diffusion":  # the autoregressive decoder has no refinement steps
            self.sampler.check_steps(self.chunk_size * self.action_dim, "policy.sampler")
        if not 0 <= self.prefix_max_steps < self.chunk_size:
            raise ValueError(
                f"policy.prefix_max_steps must be in [0, chunk_size={self.chunk_size}), got {self.prefix_max_steps}"
            )
        if self.prefix_zero_prob is not None and not (self.prefix_max_steps and 0.0 <= self.prefix_zero_prob < 1.0):
            raise ValueError(
                "policy.prefix_zero_prob is the share of training chunks without a prefix: a number in "
                f"[0, 1) with policy.prefix_max_steps >= 1, got {self.prefix_zero_prob} with "
                f"prefix_max_steps={self.prefix_max_steps} (null: d uniform on 0..prefix_max_steps)"
            )
        if self.prefix_max_steps and self.decoder_type != "diffusion":
            raise ValueError(
                "policy.prefix_max_steps conditions a masked decoder on a clean prefix; the autoregressive "
                "decoder always conditions each step on the ones before it: leave it at 0"
            )
        if not (math.isfinite(self.goal_aux_weight) and self.goal_aux_weight >= 0):
            raise ValueError(f"policy.goal_aux_weight must be a finite number >= 0, got {self.goal_aux_weight}")
        if self.goal_aux_events < 1 or not (math.isfinite(self.goal_aux_scale) and self.goal_aux_scale > 0):
            raise ValueError(
                f"policy.goal_aux_events must be >= 1 and policy.goal_aux_scale > 0, got "
                f"{self.goal_aux_events} and {self.goal_aux_scale}"
            )

    @property
    def image_size(self) -> int:
        return self.backbone.image_size

    def goal_dims(self) -> tuple[tuple[int, int, int], int]:
        """(state dimensions of the end-effector's x, y, z; the action's gripper dimension), found
        by name in the embodiment: what the goal head's targets are computed from."""
        state, action = self.embodiment.state_names, self.embodiment.action_names
        for names in (("eef_x", "eef_y", "eef_z"), ("x", "y", "z")):
            if all(n in state for n in names) and "gripper" in action:
                return tuple(state.index(n) for n in names), action.index("gripper")
        raise ValueError(
            "policy.goal_aux_weight > 0 needs the state's end-effector position named eef_x, eef_y, eef_z "
            f"(or x, y, z) and an action named gripper in policy.embodiment; it has state {state or 'unnamed'} "
            f"and action {action or 'unnamed'}: set policy.embodiment.state_names / action_names, or turn it off"
        )


def _checked_camera_shapes(shapes, cameras: list[str]) -> dict[str, list[int]]:
    """`policy.camera_shapes` as {camera: [H, W]} of positive ints for cameras of the policy, or a
    ValueError naming the entry (inference compares frames against these, so a malformed entry
    would otherwise fail there, mid-episode, with an IndexError)."""
    hint = "expected {camera: [height, width]} of positive integers, as training records it"
    if not isinstance(shapes, dict):
        raise ValueError(f"policy.camera_shapes={shapes!r}: {hint}")
    out = {}
    for cam, shape in shapes.items():
        where = f"policy.camera_shapes[{cam!r}]"
        if cam not in cameras:
            raise ValueError(f"{where}: not one of policy.cameras {cameras}; {hint}")
        ok = (
            isinstance(shape, (list, tuple))
            and len(shape) == 2
            and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)
        )
        if not ok:
            raise ValueError(f"{where}={shape!r}: {hint}")
        out[cam] = list(shape)  # lists, as JSON round trips them: configs compare equal after a save
    return out


class GoalHead(nn.Module):
    """One learned query attends over the prefix (image, text and state positions), then an MLP
    gives (events, 3) offsets: where the gripper next closes or opens, relative to the hand."""

    def __init__(self, hidden: int, events: int) -> None:
        super().__init__()
        self.events = events
        self.query = nn.Parameter(torch.randn(1, 1, hidden) * 0.02)
        self.attn = nn.MultiheadAttention(hidden, 4 if hidden % 4 == 0 else 1, batch_first=True)
        self.out = nn.Sequential(
            nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, events * 3)
        )

    def forward(self, prefix: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        prefix = prefix.float()
        pooled, _ = self.attn(self.query.expand(len(prefix), -1, -1), prefix, prefix, key_padding_mask=~mask.bool())
        return self.out(pooled[:, 0]).view(len(prefix), self.events, 3)


class VLAModel(nn.Module):
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
            q01 = stat(stats, "action", "q01", cfg.action_dim)
            q99 = stat(stats, "action", "q99", cfg.action_dim)
            self.action_tokenizer = ActionTokenizer(cfg.action_tokenizer, q01, q99)
        else:
            self.action_tokenizer = ActionTokenizer.from_state_dict(tokenizer_state)
        if self.action_tokenizer.action_dim != cfg.action_dim:
            raise ValueError(
                f"action tokenizer width {self.action_tokenizer.action_dim} != policy.action_dim {cfg.action_dim}"
            )
        self.processor = ObservationProcessor.from_config(cfg, stats, self.backbone.prompter)  # checks the stats
        hidden = self.backbone.hidden_size
        self.state_proj = nn.Sequential(nn.Linear(cfg.state_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        bins = cfg.action_tokenizer.bins
        self.unified = cfg.decoder_arch == DecoderArch.unified
        self.autoregressive = cfg.decoder_type == DecoderType.autoregressive
        if self.unified:
            self.decoder = UnifiedDecoder(
                hidden, cfg.chunk_size, cfg.action_dim, bins, cond_dim=2 * hidden, embed_std=self.backbone.embed_std
            )
        else:
            self.decoder = ActionDecoder(cfg.decoder, hidden, cfg.chunk_size, cfg.action_dim, bins, cond_dim=2 * hidden)
        self.goal_head = GoalHead(hidden, cfg.goal_aux_events) if cfg.goal_aux_weight > 0 else None
        # The variant is read where it matters: the architecture in `chunk_cache`, the decoder
        # type in `compute_loss`, `fully_masked_accuracy` and `predict_tokens`.

    @property
    def device(self) -> torch.device:
        return self.state_proj[0].weight.device

    def inputs(self, images: torch.Tensor, state: torch.Tensor, instructions: list[str]) -> dict:
        """Transformed images (B, N, 3, S, S), raw state, instructions -> `vlm` and `state` inputs."""
        return self.processor.model_inputs(images, state, instructions)

    # ----------------------------------------------------------------------------- prefix
    # `chunk_cache(inputs)` computes everything a chunk's refinement steps share;
    # `self.decoder(tokens, cache)` is then one step.
    def chunk_cache(self, inputs: dict) -> dict:
        return self._cache_and_prefix(inputs)[0]

    def _cache_and_prefix(self, inputs: dict) -> tuple[dict, torch.Tensor, torch.Tensor]:
        """The chunk cache, and the prefix hidden states (B, P, hidden) with their mask (the goal head's input)."""
        if self.unified:
            return self._unified_prefix(inputs)
        prefix, mask = self.encode_prefix(inputs)
        return self.decoder_cache(prefix, mask), prefix, mask

    def _state(self, inputs: dict) -> torch.Tensor:
        state = inputs["state"]
        if state.shape[-1] != self.cfg.state_dim:
            raise ValueError(f"state has width {state.shape[-1]}, this policy expects {self.cfg.state_dim}")
        return self.state_proj(state.to(self.device).float())  # (B, hidden)

    @staticmethod
    def _text_token(inputs: dict, hidden: torch.Tensor) -> torch.Tensor:
        """Mean of the prefix's text positions (B, hidden): the instruction, which a randomly
        initialised backbone would otherwise bury among hundreds of image tokens."""
        text = inputs["vlm"]["text_mask"][..., None].to(hidden.device, hidden.dtype)  # (B, P, 1)
        return (hidden * text).sum(1) / text.sum(1).clamp_min(1.0)

    def encode_prefix(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs["vlm"], inputs["state"] (B, S) normalised -> prefix (B, P + 2, hidden), mask (B, P + 2).

        The prefix is the backbone's hidden states, then the text token (`_text_token`), then the
        proprio token. The last two also condition every action slot.
        """
        state_tok = self._state(inputs)
        hidden, mask = self.backbone(inputs["vlm"])
        text_tok = self._text_token(inputs, hidden)
        prefix = torch.cat([hidden, text_tok[:, None], state_tok[:, None].to(hidden.dtype)], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :2])], dim=1)
        return prefix, mask

    def decoder_cache(self, prefix: torch.Tensor, mask: torch.Tensor) -> dict:
        """The action expert's per-chunk cache; every slot is conditioned on the text and state tokens."""
        return self.decoder.prefix_cache(prefix, mask, cond=prefix[:, -2:].flatten(1))

    def _unified_prefix(self, inputs: dict) -> tuple[dict, torch.Tensor, torch.Tensor]:
        """The VLM's prefix pass with its cache kept, then the state token as one more prefix
        position of the language model; the slots are conditioned on the text and state tokens.
        -> (the cache, the VLM's hidden states (B, P, hidden), their mask)."""
        state_tok = self._state(inputs)
        hidden, mask, kv, next_position = self.backbone.prefix_cache(inputs["vlm"])
        lm = self.backbone.language_model
        lm(
            inputs_embeds=state_tok[:, None].to(hidden.dtype),
            attention_mask=slot_mask(mask, kv.get_seq_length(), 1, False, hidden.dtype),
            position_ids=next_position[:, None],
            past_key_values=kv,
            use_cache=True,
        )
        cond = torch.cat([self._text_token(inputs, hidden).float(), state_tok], dim=-1)
        return (
            {
                "lm": lm,
                "kv": FrozenPrefixCache.from_cache(kv),
                "mask": mask,
                "next_position": next_position + 1,  # the slots follow the state token
                "cond": self.decoder.cond_proj(cond)[:, None],  # (B, 1, hidden)
                "dtype": hidden.dtype,
            },
            hidden,
            mask,
        )

    # ----------------------------------------------------------------------------- training
    def forward(self, batch: dict, generator: torch.Generator | None = None):
        """Training forward (what DDP wraps): the loss and its metrics."""
        return self.compute_loss(batch, generator)

    def targets(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """-> action tokens (B, L) and which slots are supervised (B, L), L = H x D."""
        tokens = self.action_tokenizer.encode(batch["actions"].to(self.device))  # (B, H, D)
        b, h, d = tokens.shape
        if h != self.cfg.chunk_size:
            raise ValueError(f"action chunk has {h} steps, this policy expects {self.cfg.chunk_size}")
        valid = (~batch["action_is_pad"].to(self.device))[:, :, None].expand(b, h, d)
        return tokens.reshape(b, h * d), valid.reshape(b, h * d)

    def compute_loss(self, batch: dict, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
        """Masked-diffusion objective (docs/method.md section 4) or next-slot cross-entropy, plus
        the goal head's loss when on (`PolicyConfig.goal_aux_weight`)."""
        cache, prefix, prefix_mask = self._cache_and_prefix(batch)
        tokens, valid = self.targets(batch)
        slot_logits = self._causal_logits if self.autoregressive else self._masked_logits
        logits, target_mask = slot_logits(tokens, valid, cache, generator)
        loss = F.cross_entropy(logits[target_mask].float(), tokens[target_mask])
        with torch.no_grad():
            acc = (logits.argmax(-1) == tokens)[target_mask].float().mean()
        metrics = {"loss": loss.detach(), "masked_acc": acc}
        if self.goal_head is not None:
            goal_loss, goal_err = self._goal_loss(prefix, prefix_mask, batch)
            loss = loss + self.cfg.goal_aux_weight * goal_loss
            # "loss" is what is optimised (the non-finite guard reads it); the parts beside it
            metrics.update(
                loss=loss.detach(), action_loss=metrics["loss"], goal_loss=goal_loss.detach(), goal_err=goal_err
            )
        return loss, metrics

    def _goal_loss(self, prefix: torch.Tensor, mask: torch.Tensor, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The goal head's Huber loss (offsets in goal_aux_scale units, summed over x, y, z) over the
        events that exist, and its mean distance from them in the state's units (0 when none do)."""
        if "goal" not in batch:
            raise KeyError(
                "policy.goal_aux_weight > 0 but the batch has no 'goal' targets: build the ChunkDataset with "
                "GoalTargets (train.loop does, from policy.goal_dims())"
            )
        goal = batch["goal"].to(self.device).float()  # (B, events, 3)
        have = batch["goal_valid"].to(self.device).bool()  # (B, events)
        pred = self.goal_head(prefix, mask)
        if not have.any():
            zero = pred.sum() * 0.0  # keeps the head in the graph (DDP expects every parameter used)
            return zero, zero.detach()
        target = goal[have] / self.cfg.goal_aux_scale  # (K, 3)
        # Huber: quadratic within one scale unit, linear beyond, so the first steps' errors of tens
        # of centimetres do not swamp the action loss while the last centimetres still pull.
        loss = F.smooth_l1_loss(pred[have], target, reduction="none").sum(-1).mean()
        return loss, (pred[have].detach() - target).norm(dim=-1).mean() * self.cfg.goal_aux_scale

    def _masked_logits(self, tokens, valid, cache, generator):
        prefix = self._training_prefix(*tokens.shape, generator)
        target_mask = self._training_mask(*tokens.shape, generator, prefix) & valid
        # Unsupervised slots are [MASK] in the input too: inference starts from an all-[MASK]
        # chunk, and their labels (a recovery from an unforeseeable push) must not leak in. A
        # training prefix is the exception: those actions were taken, and are given.
        given = prefix.to(self.device) & valid if prefix is not None else torch.zeros_like(valid)
        inp = torch.where((target_mask | ~valid) & ~given, self.decoder.mask_id, tokens)
        return self.decoder(inp, cache), target_mask

    def _training_prefix(self, b: int, n: int, generator: torch.Generator | None) -> torch.Tensor | None:
        """(B, L) slots of each chunk's first d steps, on the CPU like the masking draws; None when
        off. d ~ uniform on 0..prefix_max_steps, or 0 with probability prefix_zero_prob and
        uniform on 1..prefix_max_steps otherwise."""
        top = self.cfg.prefix_max_steps
        if not top:
            return None
        if self.cfg.prefix_zero_prob is None:
            d = torch.randint(0, top + 1, (b,), generator=generator)
        else:
            d = torch.randint(1, top + 1, (b,), generator=generator)
            d[torch.rand(b, generator=generator) < self.cfg.prefix_zero_prob] = 0
        step = torch.arange(n) // self.cfg.action_dim
        return step[None] < d[:, None]

    def _causal_logits(self, tokens, valid, cache, generator):
        inp = torch.cat([torch.full_like(tokens[:, :1], self.decoder.bos_id), tokens[:, :-1]], dim=1)
        return self.decoder(inp, cache, causal=True), valid

    def _training_mask(
        self, b: int, n: int, generator: torch.Generator | None, prefix: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Cosine mask ratio g = cos(pi r / 2), k = max(1, round(L' g)) slots chosen uniformly
        among the L' slots outside the training prefix (all L when there is none)."""
        r = torch.rand(b, generator=generator)
        free = torch.full((b,), float(n)) if prefix is None else n - prefix.sum(1).float()
        k = torch.clamp(torch.round(free * torch.cos(math.pi * r / 2)), min=1).long()  # (B,)
        noise = torch.rand(b, n, generator=generator)
        if prefix is not None:  # prefix slots rank after every other: never among the k
            noise = noise + prefix.float()
        order = noise.argsort(1).argsort(1)
        return (order < k[:, None]).to(self.device)

    @torch.no_grad()
    def fully_masked_accuracy(self, batch: dict) -> torch.Tensor:
        """Token accuracy from one pass with every slot masked (diffusion) or greedy decoding (AR)."""
        tokens, valid = self.targets(batch)
        cache = self.chunk_cache(batch)
        if self.autoregressive:
            pred = self._autoregressive(cache, tokens.shape[0])
        else:
            pred = self.decoder(torch.full_like(tokens, self.decoder.mask_id), cache).argmax(-1)
        return (pred == tokens)[valid].float().mean()

    # ----------------------------------------------------------------------------- decoding
    @torch.no_grad()
    def predict_tokens(
        self,
        inputs: dict,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        fixed_actions: torch.Tensor | None = None,
        trace: DecodeTrace | None = None,
    ) -> torch.Tensor:
        """inputs["vlm"], inputs["state"] -> tokens (B, H, D). fixed_actions (B, k, D): the first k
        steps are pre-committed (inpainting). use_cache=False recomputes the prefix every step."""
        cache = self.chunk_cache(inputs)
        b = inputs["state"].shape[0]
        if self.autoregressive:
            if fixed_actions is not None:
                raise ValueError("inpainting (fixed_actions) needs decoder_type='diffusion'")
            tokens = self._autoregressive(cache, b)
        else:
            tokens = self._decode_masked(inputs, cache, b, generator, use_cache, fixed_actions, trace)
        return tokens.reshape(b, self.cfg.chunk_size, self.cfg.action_dim)

    def _autoregressive(self, cache: dict, b: int) -> torch.Tensor:
        def step(prev, i, past):
            return self.decoder.step(prev, i, cache, past)

        return autoregressive_decode(step, b, self.decoder.num_slots, self.decoder.bos_id, self.device)

    def _decode_masked(self, inputs, cache, b, generator, use_cache, fixed_actions, trace):
        def logits_cached(tokens):
            return self.decoder(tokens, cache)

        def logits_recomputed(tokens):  # reference path: the prefix is recomputed every step
            return self.decoder(tokens, self.chunk_cache(inputs))

        fixed_tokens = fixed_mask = None
        n = self.decoder.num_slots
        if fixed_actions is not None:
            k = fixed_actions.shape[1]
            if not 0 < k < self.cfg.chunk_size:
                raise ValueError(f"fixed_actions must fix 1..{self.cfg.chunk_size - 1} steps, got {k}")
            fixed_tokens = torch.full((b, n), self.decoder.mask_id, dtype=torch.long, device=self.device)
            fixed = self.action_tokenizer.encode(fixed_actions.to(self.device))  # (B, k, D)
            fixed_tokens[:, : k * self.cfg.action_dim] = fixed.reshape(b, -1)
            fixed_mask = fixed_tokens != self.decoder.mask_id
        return masked_diffusion_decode(
            logits_cached if use_cache else logits_recomputed,
            b,
            n,
            self.decoder.mask_id,
            self.cfg.sampler,
            generator=generator,
            device=self.device,
            fixed_tokens=fixed_tokens,
            fixed_mask=fixed_mask,
            trace=trace,
        )

    def compile_decoder(self, **options) -> None:
        """Run every decoder pass (a refinement step, both decoders) through torch.compile: for
        inference, where it cuts the per-step overhead (docs/benchmarks.md); equal to eager
        within float tolerance (tests/test_unified.py). The first pass compiles (seconds to a
        minute on CPU); a prompt of another length compiles once more, then the prefix length is
        treated as dynamic (torch.compile's default). `options` go to torch.compile, e.g.
        mode="reduce-overhead" for CUDA graphs on a GPU."""
        self.decoder.forward = torch.compile(self.decoder.forward, **options)


def check_compatible(cfg: PolicyConfig, action_dim: int, state_dim: int, cameras: list[str]) -> None:
    """Refuse data or environments whose widths or cameras differ from the checkpoint's."""
    problems = []
    if action_dim != cfg.action_dim:
        problems.append(f"action width {action_dim} != checkpoint's {cfg.action_dim}")
    if state_dim != cfg.state_dim:
        problems.append(f"state width {state_dim} != checkpoint's {cfg.state_dim}")
    missing = [c for c in cfg.cameras if c not in cameras]
    if missing:
        problems.append(f"cameras {missing} required by the checkpoint are not provided (have {cameras})")
    if problems:
        raise ValueError("checkpoint does not match the data/environment: " + "; ".join(problems))
