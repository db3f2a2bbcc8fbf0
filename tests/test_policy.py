import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import model_batch, tiny_policy_config, tiny_stats

from vla.action_tokenizer import ActionTokenizerConfig
from vla.contract import ObservationError
from vla.model import VLAModel, check_compatible
from vla.policy import VLAPolicy
from vla.sampling import DecodeTrace


def batch(b=3, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "images": torch.rand(b, 1, 3, size, size, generator=g),
        "state": torch.randn(b, 2, generator=g),
        "instruction": ["pick up the red cube", "put the cube on the plate", "lift"][:b],
        "actions": torch.rand(b, 4, 3, generator=g) * 2 - 1,
        "action_is_pad": torch.zeros(b, 4, dtype=torch.bool),
    }


def observation(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "images": {"agentview": rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)},
        "state": rng.normal(size=2).astype(np.float32),
        "instruction": "pick up the red cube",
    }


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return VLAModel(tiny_policy_config(), tiny_stats()).eval()


@pytest.fixture(scope="module")
def policy(model):
    return VLAPolicy(model)


def test_prefix_cache_gives_the_same_logits_and_tokens(model):
    b = model_batch(model, batch())
    prefix, mask = model.encode_prefix(b)
    cache = model.decoder_cache(prefix, mask)
    d = model.decoder
    tokens = torch.randint(0, d.mask_id + 1, (3, d.num_slots))  # bins and [MASK]
    cached = model.decoder(tokens, cache)
    p2, m2 = model.encode_prefix(b)
    fresh = model.decoder(tokens, model.decoder_cache(p2, m2))
    torch.testing.assert_close(cached, fresh, rtol=1e-5, atol=1e-5)
    with_cache = model.predict_tokens(b, torch.Generator().manual_seed(7), use_cache=True)
    without = model.predict_tokens(b, torch.Generator().manual_seed(7), use_cache=False)
    assert torch.equal(with_cache, without)


def test_autoregressive_kv_cache_matches_full_causal_pass():
    torch.manual_seed(0)
    pol = VLAModel(tiny_policy_config(decoder_type="autoregressive"), tiny_stats()).eval()
    prefix, mask = pol.encode_prefix(model_batch(pol, batch()))
    cache = pol.decoder_cache(prefix, mask)
    n = pol.decoder.num_slots
    seq = torch.randint(0, pol.decoder.bins, (3, n))
    inp = torch.cat([torch.full((3, 1), pol.decoder.bos_id), seq[:, :-1]], dim=1)
    full = pol.decoder(inp, cache, causal=True)
    past = None
    for i in range(n):
        step_logits, past = pol.decoder.step(inp[:, i : i + 1], i, cache, past)
        torch.testing.assert_close(step_logits, full[:, i], rtol=1e-5, atol=1e-5)


def test_prefix_never_sees_action_slots(model):
    """Changing action tokens must not change the prefix cache (prefix-LM mask)."""
    prefix, mask = model.encode_prefix(model_batch(model, batch()))
    cache = model.decoder_cache(prefix, mask)
    d = model.decoder
    a = d(torch.full((3, d.num_slots), d.mask_id), cache)
    b2 = d(torch.randint(0, d.bins, (3, d.num_slots)), cache)
    assert not torch.allclose(a, b2)  # slots do see each other
    k0 = cache["kv"][0][0].clone()
    d(torch.randint(0, d.bins, (3, d.num_slots)), cache)
    assert torch.equal(k0, cache["kv"][0][0])


def test_losses_are_finite_and_ignore_padding():
    for kind in ("diffusion", "autoregressive"):
        pol = VLAModel(tiny_policy_config(decoder_type=kind), tiny_stats())
        bt = model_batch(pol, batch())
        bt["action_is_pad"][:, 2:] = True
        loss, metrics = pol.compute_loss(bt, torch.Generator().manual_seed(0))
        loss.backward()
        assert torch.isfinite(loss) and 0 <= metrics["masked_acc"] <= 1
        # Padded steps neither count in the loss nor show through as input (inference starts
        # from an all-[MASK] chunk): other values there give exactly the same loss.
        other = {**bt, "actions": bt["actions"].clone()}
        other["actions"][:, 2:] = -bt["actions"][:, 2:]
        again, _ = pol.compute_loss(other, torch.Generator().manual_seed(0))
        assert torch.equal(loss.detach(), again.detach()), kind


def test_infer_inpainting_keeps_fixed_actions(policy):
    fixed = np.array([[0.5, -0.5, 1.0]], dtype=np.float32)
    actions = policy.infer(observation(), fixed_actions=fixed)
    assert actions.shape == (4, 3)
    tok = policy.model.action_tokenizer
    np.testing.assert_allclose(actions[0], tok.decode(tok.encode(torch.tensor(fixed)))[0].numpy())


def test_checkpoint_round_trip_gives_identical_actions(policy, tmp_path):
    policy.save(tmp_path / "ckpt")
    loaded = VLAPolicy.load(tmp_path / "ckpt")
    policy.reset(3)
    loaded.reset(3)
    np.testing.assert_array_equal(policy.infer(observation()), loaded.infer(observation()))
    for name in ("config.json", "model.safetensors", "action_tokenizer.json", "stats.json", "backbone"):
        assert (tmp_path / "ckpt" / name).exists()


def test_checkpoint_errors_name_the_problem(policy, tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing does not exist"):
        VLAPolicy.load(tmp_path / "nothing")
    policy.save(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "stats.json").unlink()
    with pytest.raises(ValueError, match="not a complete policy checkpoint: stats.json is missing"):
        VLAPolicy.load(tmp_path / "ckpt")
    with pytest.raises(ValueError, match="action width 7 != checkpoint's 3"):
        check_compatible(policy.cfg, 7, 2, ["agentview"])
    with pytest.raises(ValueError, match="expects 2"):
        policy.model.inputs(torch.rand(1, 1, 3, 32, 32), torch.zeros(1, 5), ["x"])
    bad = observation()
    bad["state"][0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        policy.infer(bad)
    with pytest.raises(ValueError, match="missing cameras"):
        policy.infer({**observation(), "images": {"wrist": observation()["images"]["agentview"]}})
    stats = tiny_stats()
    stats["state"]["std"] = [float("nan"), 1.0]
    with pytest.raises(ValueError, match="state.std contain NaN"):
        VLAModel(tiny_policy_config(), stats)


def fit(pol: VLAModel, sample, gen: torch.Generator, steps: int = 300) -> None:
    """Train `pol` on batches of 32 from `sample(n, gen)`, then switch it to eval mode."""
    opt = torch.optim.AdamW(pol.parameters(), lr=2e-3)
    for _ in range(steps):
        loss, _ = pol.compute_loss(sample(32, gen), gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    pol.eval()


def test_learns_a_language_and_image_conditioned_task():
    """Action = f(image colour, instruction): fully-masked decoding must get > 90% of tokens."""
    torch.manual_seed(0)
    cfg = tiny_policy_config(action_tokenizer=ActionTokenizerConfig(bins=16, binary_dims=[]))
    pol = VLAModel(cfg, tiny_stats())
    colours = torch.tensor([[1.0, 0.1, 0.1], [0.1, 1.0, 0.1], [0.1, 0.1, 1.0]])
    words = ["go left", "go right"]
    table = torch.rand(3, 2, 4, 3, generator=torch.Generator().manual_seed(1)) * 1.8 - 0.9  # per (colour, word)

    def sample(n, gen):
        c = torch.randint(0, 3, (n,), generator=gen)
        w = torch.randint(0, 2, (n,), generator=gen)
        img = colours[c][:, None, :, None, None].expand(n, 1, 3, 32, 32).clone()
        img += 0.05 * torch.rand(img.shape, generator=gen)
        return model_batch(
            pol,
            {
                "images": img.clamp(0, 1),
                "state": torch.zeros(n, 2),
                "instruction": [words[i] for i in w],
                "actions": table[c, w],
                "action_is_pad": torch.zeros(n, 4, dtype=torch.bool),
            },
        )

    gen = torch.Generator().manual_seed(0)
    fit(pol, sample, gen)
    assert pol.fully_masked_accuracy(sample(128, gen)) > 0.9


def test_prefix_trained_policy_follows_the_scene_when_the_prefix_disagrees():
    """The prefix-shortcut guard: trained with policy.prefix_max_steps on chunks whose taken
    prefix predicts the rest 70% of the time (the scene changed in the others), the decoded
    continuation must follow the image, not the prefix: given one colour's prefix and another
    colour's image, the last steps decode to the image's colour's actions."""
    torch.manual_seed(0)
    cfg = tiny_policy_config(prefix_max_steps=2, action_tokenizer=ActionTokenizerConfig(bins=16, binary_dims=[]))
    pol = VLAModel(cfg, tiny_stats())
    colours = torch.tensor([[1.0, 0.1, 0.1], [0.1, 1.0, 0.1], [0.1, 0.1, 1.0]])
    table = torch.rand(3, 4, 3, generator=torch.Generator().manual_seed(1)) * 1.8 - 0.9  # a chunk per colour

    def images(c, gen):
        img = colours[c][:, None, :, None, None].expand(len(c), 1, 3, 32, 32).clone()
        return (img + 0.05 * torch.rand(img.shape, generator=gen)).clamp(0, 1)

    def sample(n, gen):
        c = torch.randint(0, 3, (n,), generator=gen)
        changed = torch.rand(n, generator=gen) < 0.3
        before = torch.where(changed, (c + torch.randint(1, 3, (n,), generator=gen)) % 3, c)
        actions = torch.cat([table[before, :2], table[c, 2:]], dim=1)  # prefix from the scene before
        raw = {"images": images(c, gen), "state": torch.zeros(n, 2), "instruction": ["go"] * n}
        return model_batch(pol, {**raw, "actions": actions, "action_is_pad": torch.zeros(n, 4, dtype=torch.bool)})

    gen = torch.Generator().manual_seed(0)
    fit(pol, sample, gen)
    prefix_colour = torch.tensor([0, 0, 1, 1, 2, 2] * 8)
    scene_colour = (prefix_colour + torch.tensor([1, 2] * 24)) % 3  # always another colour
    inputs = model_batch(
        pol, {"images": images(scene_colour, gen), "state": torch.zeros(48, 2), "instruction": ["go"] * 48}
    )
    tokens = pol.predict_tokens(inputs, gen, fixed_actions=table[prefix_colour, :2])
    tok = pol.action_tokenizer
    follows_scene = (tokens[:, 2:] == tok.encode(table[scene_colour, 2:])).float().mean()
    follows_prefix = (tokens[:, 2:] == tok.encode(table[prefix_colour, 2:])).float().mean()
    assert follows_scene > 0.9 and follows_prefix < 0.2, (follows_scene, follows_prefix)


def test_decode_trace_through_policy(model):
    trace = DecodeTrace([], [], [])
    tokens = model.predict_tokens(model_batch(model, batch()), trace=trace)
    assert len(trace.tokens) == model.cfg.sampler.steps and tokens.shape == (3, 4, 3)


@pytest.mark.parametrize("arch", ["expert", "unified"])
def test_training_prefix_gives_the_first_steps_clean_and_never_supervises_them(arch, monkeypatch):
    """policy.prefix_max_steps (training-time action conditioning): the first d steps of each
    chunk go in as the actions taken and carry no loss, the rest are masked as usual; off, the
    loss is what it was (same random draws)."""
    base = tiny_policy_config(decoder_arch=arch)
    torch.manual_seed(0)
    off = VLAModel(base, tiny_stats())
    torch.manual_seed(0)
    on = VLAModel(replace(base, prefix_max_steps=3), tiny_stats())
    on.load_state_dict(off.state_dict())
    bt = model_batch(off, batch())
    seen = {}
    decoder_forward = type(on.decoder).forward

    def spy(self, inp, *args, **kwargs):
        seen["inp"] = inp.clone()
        return decoder_forward(self, inp, *args, **kwargs)

    monkeypatch.setattr(type(on.decoder), "forward", spy)
    tokens, valid = on.targets(bt)
    d_seen = set()
    for seed in range(12):
        _, target = on._masked_logits(tokens, valid, on.chunk_cache(bt), torch.Generator().manual_seed(seed))
        gen = torch.Generator().manual_seed(seed)
        d = torch.randint(0, 4, (tokens.shape[0],), generator=gen)  # the draw _training_prefix makes first
        for row in range(tokens.shape[0]):
            k = int(d[row]) * on.cfg.action_dim
            d_seen.add(int(d[row]))
            assert torch.equal(seen["inp"][row, :k], tokens[row, :k])  # given clean
            assert not target[row, :k].any() and target[row, k:].any()  # never supervised; the rest is
            assert (seen["inp"][row, k:][target[row, k:]] == on.decoder.mask_id).all()
    assert d_seen == {0, 1, 2, 3}
    # Off: the mask is the cosine schedule over all slots, from the same two draws as before the option.
    gen, ref = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    b, n = tokens.shape
    r = torch.rand(b, generator=ref)
    k = torch.clamp(torch.round(n * torch.cos(math.pi * r / 2)), min=1).long()
    expected = torch.rand(b, n, generator=ref).argsort(1).argsort(1) < k[:, None]
    assert off._training_prefix(b, n, gen) is None
    assert torch.equal(off._training_mask(b, n, gen), expected)
    with pytest.raises(ValueError, match="prefix_max_steps must be in"):
        tiny_policy_config(prefix_max_steps=4)
    with pytest.raises(ValueError, match="autoregressive decoder always conditions"):
        tiny_policy_config(prefix_max_steps=1, decoder_type="autoregressive")


def test_training_prefix_zero_prob_sets_the_share_of_chunks_without_a_prefix():
    """policy.prefix_zero_prob: that share of training chunks get d = 0 (decoded as without the
    option), the others d uniform on 1..prefix_max_steps; values outside [0, 1) are refused."""
    model = VLAModel(tiny_policy_config(prefix_max_steps=3, prefix_zero_prob=0.6), tiny_stats())
    n = 4 * model.cfg.action_dim
    prefix = model._training_prefix(20000, n, torch.Generator().manual_seed(0))
    d = prefix.sum(1) // model.cfg.action_dim
    share = torch.bincount(d, minlength=4).float() / d.numel()
    assert abs(share[0] - 0.6) < 0.02
    assert torch.allclose(share[1:], torch.full((3,), 0.4 / 3), atol=0.02)
    # Each row's prefix is its first d steps, whole.
    step = torch.arange(n) // model.cfg.action_dim
    assert torch.equal(prefix, step[None] < d[:, None])
    for bad in ({"prefix_max_steps": 3, "prefix_zero_prob": 1.0}, {"prefix_max_steps": 0, "prefix_zero_prob": 0.5}):
        with pytest.raises(ValueError, match="prefix_zero_prob is the share"):
            tiny_policy_config(**bad)


def test_actions_clipped_to_action_bounds_are_accepted_as_fixed_actions(policy):
    """`action_bounds` are float32 values: an action clipped to them is still inside after
    `infer`'s cast to float32 (LIBERO-Object's tokenizer bound -0.0225833 was refused when clipped
    to its float64 bound), and the next float32 outside is still refused."""
    tok = policy.model.action_tokenizer
    tok.low = torch.tensor([-0.0225833, -0.7, -1.0])
    tok.span = torch.tensor([0.0498144, 1.3, 2.0])
    low, high = policy.action_bounds
    assert (low.astype(np.float32).astype(np.float64) == low).all()
    assert (high.astype(np.float32).astype(np.float64) == high).all()
    far = np.array([[-5.0, -5.0, -5.0], [5.0, 5.0, 5.0]])
    assert policy.infer(observation(), fixed_actions=np.clip(far, low, high)).shape == (4, 3)
    beyond = np.float32(low[0])
    beyond = np.nextafter(beyond, np.float32(-np.inf))
    with pytest.raises(ObservationError, match=r"fixed_actions\[0, 0\]"):
        policy.infer(observation(), fixed_actions=np.array([[beyond, 0.0, 0.0]], np.float32))


def goal_sample(pol, n, gen):
    """Images with a bright square in one of four quadrants; the goal is the quadrant's (row,
    column) in scale units, which only the image shows."""
    cell = torch.randint(0, 2, (n, 2), generator=gen)
    img = 0.1 * torch.rand(n, 1, 3, 32, 32, generator=gen)
    for i, (r, c) in enumerate(cell.tolist()):
        img[i, 0, :, 16 * r : 16 * r + 16, 16 * c : 16 * c + 16] = 1.0
    goal = torch.cat([cell.float(), torch.zeros(n, 1)], 1)[:, None] * pol.cfg.goal_aux_scale  # (n, 1, 3)
    raw = {"images": img, "state": torch.zeros(n, 2), "instruction": ["go"] * n}
    actions = {"actions": torch.zeros(n, 4, 3), "action_is_pad": torch.zeros(n, 4, dtype=torch.bool)}
    return {**model_batch(pol, {**raw, **actions}), "goal": goal, "goal_valid": torch.ones(n, 1, dtype=torch.bool)}


def test_goal_head_locates_what_only_the_image_shows():
    """policy.goal_aux_weight: the head must learn a target that state and instruction say
    nothing of far better than the best blind guess."""
    torch.manual_seed(0)
    pol = VLAModel(tiny_policy_config(goal_aux_weight=1.0, goal_aux_events=1), tiny_stats())
    gen = torch.Generator().manual_seed(0)
    fit(pol, lambda n, g: goal_sample(pol, n, g), gen)
    with torch.no_grad():
        _, metrics = pol.compute_loss(goal_sample(pol, 256, gen), gen)
    blind = math.hypot(0.5, 0.5) * pol.cfg.goal_aux_scale  # always answering the centre
    assert metrics["goal_err"] < 0.4 * blind, (float(metrics["goal_err"]), blind)


@pytest.mark.parametrize("arch", ["expert", "unified"])
def test_goal_loss_reaches_the_head_and_needs_its_targets(arch):
    pol = VLAModel(tiny_policy_config(decoder_arch=arch, goal_aux_weight=0.5), tiny_stats())
    gen = torch.Generator().manual_seed(0)
    batch = goal_sample(pol, 4, gen)
    batch = {**batch, "goal": batch["goal"].repeat(1, 2, 1), "goal_valid": torch.tensor([[True, False]] * 4)}
    loss, metrics = pol.compute_loss(batch, gen)
    assert loss.item() == pytest.approx((metrics["action_loss"] + 0.5 * metrics["goal_loss"]).item(), rel=1e-5)
    loss.backward()
    assert pol.goal_head.query.grad.abs().sum() > 0
    with pytest.raises(KeyError, match="goal"):
        pol.compute_loss({k: v for k, v in batch.items() if k != "goal"}, gen)
    assert VLAModel(tiny_policy_config(decoder_arch=arch), tiny_stats()).goal_head is None


def test_goal_head_settings_are_checked_and_find_the_position_by_name():
    from vla.embodiment import Embodiment

    with pytest.raises(ValueError, match="goal_aux_weight"):
        tiny_policy_config(goal_aux_weight=-1.0)
    with pytest.raises(ValueError, match="goal_aux_scale"):
        tiny_policy_config(goal_aux_scale=0.0)
    with pytest.raises(ValueError, match="eef_x"):
        tiny_policy_config(goal_aux_weight=1.0).goal_dims()  # the embodiment names nothing
    named = Embodiment(state_names=["q", "eef_x", "eef_y", "eef_z"], action_names=["dx", "gripper", "dz"])
    cfg = tiny_policy_config(state_dim=4, embodiment=named)
    assert cfg.goal_dims() == ((1, 2, 3), 1)
