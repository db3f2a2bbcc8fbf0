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
