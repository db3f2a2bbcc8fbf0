import torch

from vla.sampling import DecodeTrace, SamplerConfig, masked_after_step, masked_diffusion_decode

MASK = 16


def fake_logits(seed=0, bins=16):
    """Deterministic logits that depend on the current tokens (like a real model)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(1, 56, bins, generator=g) * 3

    def fn(tokens):
        ctx = (tokens != MASK).float().mean(1, keepdim=True)[..., None]  # (B, 1, 1)
        return base.expand(tokens.shape[0], -1, -1) + ctx * torch.linspace(-1, 1, bins)

    return fn


def decode(cfg, seed=0, trace=None, logits=None, **kw):
    gen = torch.Generator().manual_seed(seed)
    return masked_diffusion_decode(logits or fake_logits(), 2, 56, MASK, cfg, generator=gen, trace=trace, **kw)


def test_cosine_schedule_matches_the_method_numbers():
    committed = [56 - masked_after_step(56, s, 12) for s in range(12)]
    assert committed == [1, 2, 5, 8, 12, 17, 22, 28, 35, 42, 49, 56]


def test_per_step_counts_fill_and_stability():
    cfg = SamplerConfig(steps=12)
    trace = DecodeTrace([], [], [])
    tokens = decode(cfg, trace=trace)
    assert (tokens != MASK).all() and tokens.max() < MASK
    for s, masked in enumerate(trace.masked):
        assert (masked.sum(1) == masked_after_step(56, s, 12)).all()
    for prev, cur, remasked in zip(trace.tokens, trace.tokens[1:], trace.remasked[1:], strict=False):
        committed = prev != MASK
        assert not remasked.any()
        assert torch.equal(cur[committed], prev[committed])  # committed tokens never change


def test_one_step_is_one_shot_argmax():
    fn = fake_logits()
    tokens = decode(SamplerConfig(steps=1), logits=fn)
    assert torch.equal(tokens, fn(torch.full((2, 56), MASK)).argmax(-1))


def test_deterministic_given_generator():
    for conf in ("max_prob", "margin", "sampled_prob", "random", "left_to_right"):
        cfg = SamplerConfig(steps=8, confidence=conf)
        assert torch.equal(decode(cfg, seed=3), decode(cfg, seed=3))
    assert not torch.equal(decode(SamplerConfig(steps=8), seed=3), decode(SamplerConfig(steps=8), seed=4))


def test_left_to_right_commits_slots_in_index_order():
    trace = DecodeTrace([], [], [])
    decode(SamplerConfig(steps=12, confidence="left_to_right"), trace=trace)
    for masked in trace.masked:  # after every step the masked slots are a suffix
        first = (~masked).sum(1, keepdim=True)
        assert torch.equal(masked, torch.arange(56)[None] >= first)
    assert [int((~m[0]).sum()) for m in trace.masked][:3] == [1, 2, 5]


def test_inpainting_keeps_fixed_slots():
    fixed = torch.full((2, 56), MASK)
    fixed[:, :14] = 5
    trace = DecodeTrace([], [], [])
    tokens = decode(
        SamplerConfig(steps=6, remask_threshold=True, remask_delta=0.05),
        trace=trace,
        fixed_tokens=fixed,
        fixed_mask=fixed != MASK,
    )
    assert (tokens[:, :14] == 5).all() and (tokens != MASK).all()
    for masked in trace.masked:
        assert not masked[:, :14].any()


def test_secondary_remasking_returns_low_confidence_slots():
    bins = 16

    def flip(tokens):  # confident in bin 0 at first; once 3+ tokens are visible, in bin 1
        logits = torch.zeros(tokens.shape[0], 56, bins)
        late = ((tokens != MASK).sum(1) >= 3)[:, None]
        logits[..., 1] = torch.where(late, 8.0, 0.0)
        logits[..., 0] = torch.where(late, 0.0, 8.0)
        return logits

    trace = DecodeTrace([], [], [])
    tokens = decode(SamplerConfig(steps=12, temperature=0.0, remask_delta=0.5), trace=trace, logits=flip)
    assert any(r.any() for r in trace.remasked)
    assert (tokens == 1).all()  # every slot ends on the token the model now believes
    for s, masked in enumerate(trace.masked):  # counts still follow the schedule
        assert (masked.sum(1) == masked_after_step(56, s, 12)).all()


def test_threshold_remasking_uses_eta_schedule():
    def flat(tokens):  # max-prob 1/16 everywhere: below any eta > 1/16 late in decoding
        return torch.zeros(tokens.shape[0], 56, 16)

    trace = DecodeTrace([], [], [])
    decode(SamplerConfig(steps=8, remask_threshold=True, remask_eta=0.9), trace=trace, logits=flat)
    assert not trace.remasked[0].any()  # eta_0 = 0: loose at the start
    assert any(r.any() for r in trace.remasked[1:])


def test_remasking_judges_committed_slots_where_the_head_is_trained():
    """The head is trained at [MASK] inputs only; at a slot whose own token is visible its output
    means nothing. A model confident at masked slots and flat at visible ones must not have its
    committed slots remasked (they were, before the probe pass: 2% success in the ablation)."""

    def own_blind(tokens):
        logits = torch.zeros(tokens.shape[0], 56, 16)
        logits[..., 3] = torch.where(tokens == MASK, 8.0, 0.0)
        return logits

    trace = DecodeTrace([], [], [])
    cfg = SamplerConfig(steps=8, temperature=0.0, remask_threshold=True, remask_eta=0.9, remask_delta=0.3)
    tokens = decode(cfg, trace=trace, logits=own_blind)
    assert not any(r.any() for r in trace.remasked)
    assert (tokens == 3).all()


def _spike_and_spread(bins=64, slots=2):
    """Slot 0: 0.3 of the mass in the top bin (a saturated command), 0.7 spread evenly over bins
    20-29; slot 1: 0.9 in bin 40, 0.05 in each neighbour. Mode of slot 0: the top bin; median: 27
    (cumulative 0.49 at bin 26, 0.56 at 27)."""
    p = torch.full((1, slots, bins), 1e-12, dtype=torch.float64)
    p[0, 0, -1], p[0, 0, 20:30] = 0.3, 0.07
    if slots > 1:
        p[0, 1, 39:42] = torch.tensor([0.05, 0.9, 0.05], dtype=torch.float64)
    logits = (p / p.sum(-1, keepdim=True)).log().float()
    return lambda tokens: logits.expand(tokens.shape[0], -1, -1)


def test_quantile_candidates_commit_the_median_bin_at_zero_temperature():
    fn = _spike_and_spread()
    run = lambda cfg: masked_diffusion_decode(fn, 1, 2, 64, cfg, generator=torch.Generator().manual_seed(0))  # noqa: E731
    assert run(SamplerConfig(steps=1)).tolist() == [[63, 40]]  # the mode: the saturated spike
    assert run(SamplerConfig(steps=1, candidates="quantile")).tolist() == [[27, 40]]  # the median


def test_quantile_candidates_at_temperature_one_sample_the_distribution():
    fn = _spike_and_spread(slots=1)
    cfg = SamplerConfig(steps=1, candidates="quantile", temperature=1.0, temperature_schedule="constant")
    gen = torch.Generator().manual_seed(0)
    draws = torch.cat([masked_diffusion_decode(fn, 500, 1, 64, cfg, generator=gen) for _ in range(8)])
    share = torch.bincount(draws.flatten(), minlength=64).double() / draws.numel()
    assert abs(share[63].item() - 0.3) < 0.03 and abs(share[20:30].sum().item() - 0.7) < 0.03
    assert abs(share[20:30] - 0.07).max().item() < 0.02


def test_spread_order_commits_the_slot_whose_mass_lies_together_first():
    """Slot 0: a 0.6 spike in the top bin and 0.4 spread over ten far bins; slot 1: 0.5 with a
    0.25 either side. max_prob commits slot 0 first (its peak is higher), spread slot 1."""
    bins = 64
    p = torch.full((1, 2, bins), 1e-12, dtype=torch.float64)
    p[0, 0, -1], p[0, 0, 10:20] = 0.6, 0.04  # a spike and a wide spread
    p[0, 1, 30:33] = torch.tensor([0.25, 0.5, 0.25], dtype=torch.float64)  # together, lower peak
    logits = (p / p.sum(-1, keepdim=True)).log().float()

    def first_committed(confidence):
        trace = DecodeTrace([], [], [])
        cfg = SamplerConfig(steps=2, confidence=confidence, temperature=0.0)
        masked_diffusion_decode(
            lambda t: logits, 1, 2, bins, cfg, generator=torch.Generator().manual_seed(0), trace=trace
        )
        return (~trace.masked[0][0]).nonzero().flatten().tolist()

    assert first_committed("max_prob") == [0] and first_committed("spread") == [1]


def test_an_unknown_candidate_rule_is_named():
    import pytest

    with pytest.raises(ValueError, match="sampler.candidates"):
        SamplerConfig(candidates="mode")
