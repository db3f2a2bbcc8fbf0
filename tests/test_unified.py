"""The unified decoder (policy.decoder_arch=unified): action slots decoded by the VLM's own
language model, on the built-in LLaVA and on tiny saved models of every other supported family."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import model_batch, tiny_policy_config, tiny_stats
from tiny_vlms import FAMILIES

from vla.model import VLAModel
from vla.policy import VLAPolicy

ALL = ["tiny", *sorted(FAMILIES)]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Every family with two language-model layers: a cached prefix that differs from the
    recomputed one only shows from the second layer on."""
    root = tmp_path_factory.mktemp("unified_families")
    return {"tiny": "tiny", **{f: str(FAMILIES[f](root / f, layers=2)) for f in FAMILIES}}


def unified(source: str, **overrides) -> VLAModel:
    base = tiny_policy_config()
    backbone = replace(base.backbone, source=source, layers=2)
    torch.manual_seed(0)
    return VLAModel(tiny_policy_config(decoder_arch="unified", backbone=backbone, **overrides), tiny_stats())


def batch(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "images": torch.rand(3, 1, 3, 32, 32, generator=g),
        "state": torch.randn(3, 2, generator=g),
        # Different lengths: the shorter prompts are padded.
        "instruction": ["pick up the red cube", "put the cube on the plate", "lift"],
        "actions": torch.rand(3, 4, 3, generator=g) * 2 - 1,
        "action_is_pad": torch.zeros(3, 4, dtype=torch.bool),
    }


def full_pass_logits(model: VLAModel, inputs: dict, tokens: torch.Tensor, causal: bool) -> torch.Tensor:
    """Reference without any cache: ONE language-model pass over [prefix ; state ; slots] with the
    attention pattern written out here: the prefix as the family has it (causal; bidirectional
    for PaliGemma's prompt), the state token and the slots seeing the real prefix positions, the
    slots seeing the state and each other (causally for the autoregressive form)."""
    lm = model.backbone.language_model
    seen = {}
    handle = lm.register_forward_pre_hook(lambda m, a, kw: seen.update(kw), with_kwargs=True)
    try:
        hidden, _ = model.backbone(inputs["vlm"])
    finally:
        handle.remove()
    prefix = seen["inputs_embeds"]  # the VLM's merged image and text embeddings
    real = inputs["vlm"]["attention_mask"].bool()
    b, p = real.shape
    n = tokens.shape[1]
    pos = seen.get("position_ids")
    pos = torch.arange(p).expand(b, p) if pos is None else pos.expand(*pos.shape[:-2], b, p)
    flat = pos.amax(0) if pos.ndim == 3 else pos
    nxt = flat.masked_fill(~real, -1).amax(1)[:, None] + 1 + torch.arange(1 + n)  # (B, 1 + n)
    positions = torch.cat([pos, nxt.expand(*pos.shape[:-2], b, 1 + n)], dim=-1)

    state_tok = model._state(inputs)
    cond = model.decoder.cond_proj(torch.cat([model._text_token(inputs, hidden), state_tok], -1))
    slots = model.decoder.token_emb(tokens) + model.decoder.slot_embedding() + cond[:, None]
    embeds = torch.cat([prefix, state_tok[:, None], slots], dim=1)

    t = p + 1 + n
    q = torch.arange(t)[:, None]
    k = torch.arange(t)[None, :]
    key_real = torch.cat([real, torch.ones(b, 1 + n, dtype=torch.bool)], dim=1)[:, None, :]  # (B, 1, T)
    bidirectional_prefix = model.backbone.model_type == "paligemma"
    prefix_rows = (k < p) & ((k <= q) | bidirectional_prefix)
    state_row = (k <= p) & (q == p)
    slot_keys = (k <= q) if causal else torch.ones(t, t, dtype=torch.bool)
    slot_rows = (q > p) & ((k <= p) | slot_keys)
    allowed = (torch.where(q < p, prefix_rows, torch.where(q == p, state_row, slot_rows))[None] & key_real)[:, None]
    mask = torch.where(allowed, 0.0, torch.finfo(torch.float32).min)
    out = lm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=False)
    return model.decoder.head(out.last_hidden_state[:, p + 1 :])


@pytest.mark.parametrize("family", ALL)
def test_cached_steps_equal_one_uncached_pass_and_never_touch_the_prefix(family, sources):
    model = unified(sources[family]).eval()
    inputs = model_batch(model, batch())
    cache = model.chunk_cache(inputs)
    d = model.decoder
    keys = [layer.keys.clone() for layer in cache["kv"].layers]
    with torch.no_grad():
        for causal in (False, True):
            for seed in range(2):  # two refinement steps over one cache
                tokens = torch.randint(
                    0, d.mask_id + 1, (3, d.num_slots), generator=torch.Generator().manual_seed(seed)
                )
                cached = d(tokens, cache, causal=causal)
                reference = full_pass_logits(model, inputs, tokens, causal)
                torch.testing.assert_close(cached, reference, rtol=1e-4, atol=1e-4)
    # The prefix's keys never change, and never depend on the slots (the prefix cannot see them).
    for before, layer in zip(keys, cache["kv"].layers, strict=True):
        assert torch.equal(before, layer.keys)
    assert cache["kv"].get_seq_length() == inputs["vlm"]["attention_mask"].shape[1] + 1  # prefix + state


@pytest.mark.parametrize("family", ALL)
def test_slots_continue_the_family_position_scheme(family, sources):
    """For one unpadded prompt, the state token takes the position the family itself would give
    the next generated token: P for LLaVA and Idefics3, P + 1 for PaliGemma (1-indexed), P +
    rope_deltas for Qwen2.5-VL's multimodal rotary positions."""
    model = unified(sources[family]).eval()
    one = {k: v[:1] for k, v in batch().items()}
    inputs = model_batch(model, one)
    p = inputs["vlm"]["input_ids"].shape[1]
    with torch.no_grad():
        cache = model.chunk_cache(inputs)
    state_position = int(cache["next_position"][0]) - 1
    base = model.backbone.vlm
    expected = {"paligemma": p + 1, "qwen2_5_vl": p + int(getattr(base, "rope_deltas", torch.zeros(1)).flatten()[0])}
    assert state_position == expected.get(model.backbone.model_type, p)
    if model.backbone.model_type == "qwen2_5_vl":
        assert state_position < p  # the image's grid positions are compressed: mrope is in use


@pytest.mark.parametrize("family", ALL)
def test_autoregressive_unified_steps_match_the_causal_pass(family, sources):
    model = unified(sources[family], decoder_type="autoregressive").eval()
    inputs = model_batch(model, batch())
    d = model.decoder
    with torch.no_grad():
        cache = model.chunk_cache(inputs)
        seq = torch.randint(0, d.bins, (3, d.num_slots), generator=torch.Generator().manual_seed(3))
        inp = torch.cat([torch.full((3, 1), d.bos_id), seq[:, :-1]], dim=1)
        full = d(inp, cache, causal=True)
        past = None
        for i in range(d.num_slots):
            logits, past = d.step(inp[:, i : i + 1], i, cache, past)
            torch.testing.assert_close(logits, full[:, i], rtol=1e-4, atol=1e-4)
        # The fork kept the decoded slots; the chunk's own cache still holds the prefix only.
        assert past.get_seq_length() == cache["kv"].get_seq_length() + d.num_slots
        tokens = model.predict_tokens(inputs)
    assert tokens.shape == (3, 4, 3)


@pytest.mark.parametrize("family", ALL)
def test_unified_learns_a_batch_and_round_trips(family, sources, tmp_path):
    model = unified(sources[family]).train()
    b = model_batch(model, batch())
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for step in range(50):
        loss, _ = model.compute_loss(b, torch.Generator().manual_seed(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5]), losses
    assert model.decoder.token_emb.weight.grad is not None
    # Checkpoint round trip: the same chunk from the loaded policy, inpainting included.
    policy = VLAPolicy(model.eval())
    policy.save(tmp_path / "ckpt")
    loaded = VLAPolicy.load(tmp_path / "ckpt")
    assert loaded.cfg.decoder_arch == "unified"
    obs = {
        "images": {"agentview": np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)},
        "state": np.zeros(2, np.float32),
        "instruction": "put the bowl on the plate",
    }
    fixed = np.array([[0.5, -0.5, 1.0]], np.float32)
    for p in (policy, loaded):
        p.reset(3)
    a, b2 = policy.infer(obs, fixed_actions=fixed), loaded.infer(obs, fixed_actions=fixed)
    np.testing.assert_array_equal(a, b2)
    tok = policy.model.action_tokenizer
    np.testing.assert_array_equal(a[:1], tok.decode(tok.encode(torch.from_numpy(fixed)[None]))[0].numpy())


def test_unified_with_lora_and_frozen_towers(sources):
    backbone = replace(
        tiny_policy_config().backbone,
        source=sources["paligemma"],
        freeze_vision=True,
        lora_rank=4,
        lora_targets=["q_proj", "v_proj"],
    )
    torch.manual_seed(0)
    model = VLAModel(tiny_policy_config(decoder_arch="unified", backbone=backbone), tiny_stats())
    loss, _ = model.compute_loss(model_batch(model, batch()), torch.Generator().manual_seed(0))
    loss.backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    # The slots pass through the LoRA-adapted language model: its adapters learn from the actions.
    assert any("lora_" in n and "language_model" in n for n in grads)
    assert not any("vision_tower" in n for n in grads)
    assert {"decoder.token_emb.weight", "decoder.head.weight"} <= grads


def test_decoder_unified_composes_from_the_command_line():
    from helpers import composed

    from train.hydra_app import to_train_config

    cfg = to_train_config(composed(["decoder=unified"]))
    assert cfg.policy.decoder_arch == "unified" and cfg.policy.decoder_type == "diffusion"
    cfg = to_train_config(composed(["decoder=unified_autoregressive"]))
    assert cfg.policy.decoder_arch == "unified" and cfg.policy.decoder_type == "autoregressive"
    with pytest.raises(Exception, match="decoder_arch"):
        to_train_config(composed(["policy.decoder_arch=inside"]))


@pytest.mark.parametrize("arch", ["expert", "unified"])
def test_compiled_decoder_pass_equals_eager(arch):
    torch.manual_seed(0)
    model = VLAModel(tiny_policy_config(decoder_arch=arch), tiny_stats()).eval()
    inputs = model_batch(model, batch())
    d = model.decoder
    tokens = torch.randint(0, d.mask_id + 1, (3, d.num_slots), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        eager_logits = d(tokens, model.chunk_cache(inputs))
        eager = model.predict_tokens(inputs, torch.Generator().manual_seed(5))
        model.compile_decoder()
        compiled_logits = d(tokens, model.chunk_cache(inputs))
        compiled = model.predict_tokens(inputs, torch.Generator().manual_seed(5))
    torch.testing.assert_close(compiled_logits, eager_logits, rtol=1e-5, atol=1e-5)
    assert torch.equal(compiled, eager)


@pytest.mark.parametrize(
    "sampler",
    [
        {"steps": 1},
        {"confidence": "margin"},
        {"confidence": "sampled_prob"},
        {"confidence": "random"},
        {"remask_threshold": True},
        {"remask_delta": 0.3},
    ],
)
def test_every_sampler_option_decodes_with_the_unified_decoder(sampler):
    from vla.sampling import DecodeTrace

    torch.manual_seed(0)
    model = VLAModel(tiny_policy_config(decoder_arch="unified"), tiny_stats()).eval()
    model.cfg = replace(model.cfg, sampler=replace(model.cfg.sampler, **sampler))
    inputs = model_batch(model, batch())
    trace = DecodeTrace([], [], [])
    with torch.no_grad():
        tokens = model.predict_tokens(inputs, torch.Generator().manual_seed(0), trace=trace)
        again = model.predict_tokens(inputs, torch.Generator().manual_seed(0), use_cache=False)
    assert tokens.shape == (3, 4, 3) and int(tokens.max()) < model.decoder.bins
    assert len(trace.tokens) == model.cfg.sampler.steps and not trace.masked[-1].any()
    assert torch.equal(tokens, again)  # the cached prefix decodes exactly as the recomputed one
