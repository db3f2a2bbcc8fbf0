"""Decoding: MaskGIT-style masked-diffusion refinement and the autoregressive baseline.

`masked_diffusion_decode` is a pure function of a logits callable, in the style of LLaDA's
`generate`: all the sampling arithmetic (softmax, Gumbel noise, confidences) is done in
float64 on purpose, so that near-ties are ranked the same on every device.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import torch

from vla.configs import choice
from vla.contract import NonFiniteError


def _margin(logp, cand_logp, generator):
    top2 = logp.topk(2, dim=-1).values.exp()
    return (top2[..., 0] - top2[..., 1]).clamp_min(1e-30).log()


def quantile_bin(probs: torch.Tensor, u: torch.Tensor | float) -> torch.Tensor:
    """(B, L) the first bin whose cumulative probability reaches u (a number or (B, L))."""
    u = torch.as_tensor(u, dtype=probs.dtype, device=probs.device)
    return (probs.cumsum(-1) < u[..., None]).sum(-1).clamp(max=probs.shape[-1] - 1)


def _spread(logp, cand_logp, generator):
    # Bins are ordered values: a slot is sure of its action when its mass is close together,
    # whatever its peak. Mean absolute distance (in bins) from the median, on a log scale so the
    # order's Gumbel noise means what it does for log-probabilities. A saturated spike in an end
    # bin beside mass spread over the interior is far apart, so it is not committed first.
    probs = logp.exp()
    bins = torch.arange(probs.shape[-1], device=logp.device, dtype=torch.float64)
    mad = (probs * (bins - quantile_bin(probs, 0.5)[..., None].double()).abs()).sum(-1)
    return -torch.log1p(mad)


def _left_to_right(logp, cand_logp, generator):
    b, n = logp.shape[:2]
    return -torch.arange(n, device=logp.device, dtype=torch.float64).expand(b, n)


def _random(logp, cand_logp, generator):  # only the order matters
    return torch.rand(logp.shape[:2], generator=generator, device=logp.device, dtype=torch.float64)


# Confidence rule -> score (B, L) from log-probs (B, L, K) and the candidates' log-probs (B, L).
# left_to_right is no confidence but a fixed order (the AR baseline's), for ablations.
CONFIDENCE_RULES = {
    "max_prob": lambda logp, cand_logp, generator: logp.amax(-1),
    "margin": _margin,
    "sampled_prob": lambda logp, cand_logp, generator: cand_logp,
    "spread": _spread,
    "random": _random,
    "left_to_right": _left_to_right,
}
Confidence = StrEnum("Confidence", {name: name for name in CONFIDENCE_RULES})


class Candidates(StrEnum):
    # gumbel_max: sample from the tempered distribution (its argmax, the mode, at temperature 0).
    # quantile: the inverse CDF at a uniform draw pulled toward one half by the temperature,
    # u = 0.5 + t (U - 0.5): exact sampling at t = 1 and the median bin at t = 0, where the mode
    # would pick a spike of saturated commands in an end bin over mass spread on the interior
    # (docs/libero.md, "Decoding on this policy"). For a two-valued gripper both pick the side
    # holding most of the mass.
    gumbel_max = "gumbel_max"
    quantile = "quantile"


class Schedule(StrEnum):
    linear = "linear"
    constant = "constant"


def checked_logits(logits: torch.Tensor, where: str) -> torch.Tensor:
    """Pass `logits` through, or raise: argmax over NaN picks bin 0, a finite but arbitrary action."""
    if not torch.isfinite(logits).all():
        bad = (~torch.isfinite(logits)).sum().item()
        raise NonFiniteError(
            f"{where}: {bad} of {logits.numel()} logits are NaN or Inf; refusing to turn them into actions "
            "(diverged weights, or an observation far outside the training data)"
        )
    return logits


@dataclass
class SamplerConfig:
    steps: int = 12
    confidence: Confidence = Confidence.max_prob
    temperature: float = 1.0  # Gumbel temperature at the first step
    temperature_schedule: Schedule = Schedule.linear  # linear: decays to 0 at the last step
    candidates: Candidates = Candidates.gumbel_max  # how a masked slot's candidate bin is drawn
    confidence_noise: float = 1.0  # scale of Gumbel noise on log-confidence (times temperature)
    remask_threshold: bool = False  # threshold check: committed slot with max-prob < eta_s -> [MASK]
    remask_eta: float = 0.5  # eta at the last step
    remask_eta_schedule: Schedule = Schedule.linear  # linear: eta_s = remask_eta * s / T (loose early); constant
    # residual-drop check: confidence fell by > delta -> [MASK]. The head is only trained at
    # [MASK] inputs (method.md section 4), so both checks judge a committed slot from an extra
    # pass in which a random `remask_probe` fraction of the committed slots is masked again.
    remask_delta: float | None = None
    remask_probe: float = 0.5

    def __post_init__(self) -> None:
        # Every number is checked here, where hydra, eval.sampler_overrides and checkpoints all
        # pass: NaN compares false with everything, so an unchecked temperature=nan decoded
        # greedily and inf uniformly. The upper bound of `steps` needs the chunk: PolicyConfig
        # checks it (`check_steps`), and masked_diffusion_decode refuses more steps than slots.
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"sampler.steps={self.steps!r}: must be an integer >= 1")
        self.confidence = choice(Confidence, self.confidence, "sampler.confidence")
        self.candidates = choice(Candidates, self.candidates, "sampler.candidates")
        for name in ("temperature_schedule", "remask_eta_schedule"):
            setattr(self, name, choice(Schedule, getattr(self, name), f"sampler.{name}"))
        _check_number(self, "temperature", 0.0, math.inf, "a finite number >= 0")
        _check_number(self, "confidence_noise", 0.0, math.inf, "a finite number >= 0")
        # eta and delta compare against probabilities: outside [0, 1] a check fires always or never.
        _check_number(self, "remask_eta", 0.0, 1.0, "a number in [0, 1]")
        if self.remask_delta is not None:
            _check_number(self, "remask_delta", 0.0, 1.0, "None or a number in (0, 1]", low_open=True)
        _check_number(self, "remask_probe", 0.0, 1.0, "a number in (0, 1]", low_open=True)
        if not isinstance(self.remask_threshold, bool):
            raise ValueError(f"sampler.remask_threshold={self.remask_threshold!r}: must be true or false")

    def check_steps(self, num_slots: int, where: str = "sampler") -> None:
        """Refuse more refinement steps than the chunk has action slots: each step commits at
        least one slot, so further steps only repeat passes (and an absurd count would allocate
        its whole schedule up front)."""
        if self.steps > num_slots:
            raise ValueError(
                f"{where}.steps={self.steps}: must be between 1 and the chunk's {num_slots} action tokens "
                "(chunk_size x action_dim)"
            )


def _check_number(cfg: SamplerConfig, name: str, low: float, high: float, what: str, low_open: bool = False) -> None:
    """`cfg.name` is a finite real number in [low, high] ((low, high] when `low_open`), or raise naming it."""
    v = getattr(cfg, name)
    ok = (
        not isinstance(v, bool)
        and isinstance(v, (int, float))
        and math.isfinite(v)
        and (low < v if low_open else low <= v)
        and v <= high
    )
    if not ok:
        raise ValueError(f"sampler.{name}={v!r}: must be {what}")


def masked_after_step(num_free: int, step: int, steps: int) -> int:
    """Cosine schedule: how many free slots are still masked after `step` (0-based)."""
    if step >= steps - 1:
        return 0
    n = math.floor(num_free * math.cos(math.pi / 2 * (step + 1) / steps))
    return min(max(n, 1), max(num_free - 1, 0))


def temperature_at(cfg: SamplerConfig, step: int) -> float:
    if cfg.temperature_schedule == "constant":
        return cfg.temperature
    if cfg.steps == 1:
        return 0.0
    return cfg.temperature * (1.0 - step / (cfg.steps - 1))


def eta_at(cfg: SamplerConfig, step: int) -> float:
    if cfg.remask_eta_schedule == "constant":
        return cfg.remask_eta
    return cfg.remask_eta * step / cfg.steps


def _gumbel(shape, generator, device) -> torch.Tensor:
    u = torch.rand(shape, generator=generator, device=device, dtype=torch.float64)
    return -torch.log(-torch.log(u.clamp(1e-20, 1.0 - 1e-12)))


@dataclass
class DecodeTrace:
    """Per step: tokens after the step (B, L) and the mask after the step (B, L), for tests/analysis."""

    tokens: list[torch.Tensor]
    masked: list[torch.Tensor]
    remasked: list[torch.Tensor]


def masked_diffusion_decode(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int,
    num_slots: int,
    mask_id: int,
    cfg: SamplerConfig,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    fixed_tokens: torch.Tensor | None = None,
    fixed_mask: torch.Tensor | None = None,
    trace: DecodeTrace | None = None,
) -> torch.Tensor:
    """Decode (B, L) tokens from all-[MASK]. logits_fn: (B, L) ids -> (B, L, bins).

    fixed_mask (B, L) bool marks pre-committed slots (inpainting) whose ids come from
    fixed_tokens; they are never resampled or remasked.
    """
    b, n = batch_size, num_slots
    cfg.check_steps(n)
    tokens = torch.full((b, n), mask_id, dtype=torch.long, device=device)
    if fixed_mask is None:
        fixed_mask = torch.zeros(b, n, dtype=torch.bool, device=device)
    else:
        if fixed_tokens is None or fixed_tokens.shape != (b, n) or fixed_mask.shape != (b, n):
            raise ValueError(f"fixed_tokens and fixed_mask must both be ({b}, {n})")
        tokens = torch.where(fixed_mask, fixed_tokens.to(device), tokens)
    free = (~fixed_mask).sum(1).tolist()  # per sample
    # How many free slots stay masked after each step, per sample: (T, B), known up front.
    keep_after = torch.tensor(
        [[masked_after_step(f, s, cfg.steps) for f in free] for s in range(cfg.steps)], device=device
    )
    masked = ~fixed_mask
    commit_conf = torch.zeros(b, n, dtype=torch.float64, device=device)
    confidence = CONFIDENCE_RULES[cfg.confidence]  # chosen once, not per step
    noisy_order = cfg.confidence not in ("random", "left_to_right")  # orders that are not scores
    remasking = cfg.remask_threshold or cfg.remask_delta is not None

    for s in range(cfg.steps):
        last = s == cfg.steps - 1
        # Secondary remasking of committed (not fixed) slots. The head's output at a slot whose
        # own token is visible is untrained, so a random subset of committed slots is masked
        # again in a probe pass and judged there, the others staying visible as context; remasked
        # slots then get new candidates from the step's own pass, read at [MASK] like every other.
        remask = None
        committed = ~masked & ~fixed_mask
        if remasking and not last and committed.any():
            draw = torch.rand((b, n), generator=generator, device=device, dtype=torch.float64)
            probe = committed & (draw < cfg.remask_probe)
            probe_logits = checked_logits(logits_fn(torch.where(probe, mask_id, tokens)), "remasking probe pass")
            probe_logp = torch.log_softmax(probe_logits.double(), dim=-1)
            remask = torch.zeros_like(masked)
            if cfg.remask_threshold:
                remask |= probe & (probe_logp.amax(-1).exp() < eta_at(cfg, s))
            if cfg.remask_delta is not None:
                own = probe_logp.gather(-1, tokens.clamp(max=probe_logp.shape[-1] - 1)[..., None])[..., 0].exp()
                remask |= probe & (commit_conf - own > cfg.remask_delta)
            tokens = torch.where(remask, mask_id, tokens)
            masked = masked | remask

        logp = torch.log_softmax(
            checked_logits(logits_fn(tokens), f"refinement step {s}").double(), dim=-1
        )  # (B, L, K)
        tau = temperature_at(cfg, s)

        # Candidates for every masked slot (cfg.candidates: see Candidates).
        if cfg.candidates == "quantile":
            u = 0.5 + tau * (torch.rand((b, n), generator=generator, device=device, dtype=torch.float64) - 0.5)
            cand = quantile_bin(logp.exp(), u)  # (B, L)
        else:  # tempered Gumbel-max: the argmax once tau reaches 0
            noisy = logp + tau * _gumbel(logp.shape, generator, device) if tau > 0 else logp
            cand = noisy.argmax(-1)  # (B, L)
        cand_logp = logp.gather(-1, cand[..., None])[..., 0]  # log-prob of the candidate
        score = confidence(logp, cand_logp, generator)  # (B, L) float64, higher = commit sooner
        if tau > 0 and cfg.confidence_noise > 0 and noisy_order:
            score = score + cfg.confidence_noise * tau * _gumbel(score.shape, generator, device)

        # Easy first: the lowest-scoring masked slots stay masked, the schedule says how many.
        score = torch.where(masked, score, torch.inf)
        rank = score.argsort(dim=1).argsort(dim=1)  # 0 = least confident
        stay = masked & (rank < keep_after[s][:, None])
        commit = masked & ~stay
        tokens = torch.where(commit, cand, tokens)
        if cfg.remask_delta is not None:
            commit_conf = torch.where(commit, cand_logp.exp(), commit_conf)
        masked = stay
        if trace is not None:
            trace.tokens.append(tokens.clone())
            trace.masked.append(masked.clone())
            trace.remasked.append(torch.zeros_like(masked) if remask is None else remask.clone())
    return tokens


def autoregressive_decode(
    step_fn: Callable[[torch.Tensor, int, object], tuple[torch.Tensor, object]],
    batch_size: int,
    num_slots: int,
    bos_id: int,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Greedy left-to-right decoding, one slot per pass with a key/value cache."""
    prev = torch.full((batch_size, 1), bos_id, dtype=torch.long, device=device)
    past = None
    out = []
    for i in range(num_slots):
        logits, past = step_fn(prev, i, past)  # (B, bins)
        checked_logits(logits, f"autoregressive slot {i}")
        prev = logits.argmax(-1, keepdim=True)
        out.append(prev)
    return torch.cat(out, dim=1)  # (B, L)
