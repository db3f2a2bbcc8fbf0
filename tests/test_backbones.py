import shutil
from dataclasses import replace

import numpy as np
import pytest
import safetensors.torch
import torch
from helpers import tiny_policy_config, tiny_stats
from tiny_vlms import FAMILIES

from vla.model import VLAModel
from vla.policy import VLAPolicy


def obs():
    rng = np.random.default_rng(0)
    return {
        "images": {"agentview": rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)},
        "state": np.zeros(2, np.float32),
        "instruction": "put the bowl on the plate",
    }


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_pretrained_family_loads_by_path_and_round_trips(family, tmp_path):
    src = FAMILIES[family](tmp_path / family)
    cfg = tiny_policy_config(backbone=replace(tiny_policy_config().backbone, source=str(src)))
    model = VLAModel(cfg, tiny_stats())
    policy = VLAPolicy(model)
    assert model.backbone.model_type == family
    # The saved weights, not a fresh init, are in the backbone.
    saved = safetensors.torch.load_file(str(next(src.glob("*.safetensors"))))
    params = dict(model.backbone.vlm.named_parameters())
    matched = 0
    for key, value in saved.items():
        name = key.removeprefix("model.")
        if name in params:
            torch.testing.assert_close(params[name], value)
            matched += 1
    assert matched > 10
    # The instruction summary pools text positions only: never image placeholders or padding.
    inputs = model.backbone.prompter(torch.rand(2, 2, 3, 32, 32), ["pick up the red cube", "go"])
    text = inputs["text_mask"]
    image = torch.isin(inputs["input_ids"], torch.tensor(model.backbone.image_token_ids))
    assert model.backbone.image_token_ids and image.any() and not (text & image).any()
    assert not (text & ~inputs["attention_mask"].bool()).any() and (text.sum(1) > 0).all()
    assert text[0].sum() > text[1].sum()  # the longer instruction has more text positions
    # A policy checkpoint carries the architecture and processor: it loads without the source.
    policy.save(tmp_path / "ckpt")
    shutil.rmtree(src)
    loaded = VLAPolicy.load(tmp_path / "ckpt")
    policy.reset(1)
    loaded.reset(1)
    np.testing.assert_array_equal(policy.infer(obs()), loaded.infer(obs()))


def test_freeze_and_lora_options(tmp_path):
    src = FAMILIES["paligemma"](tmp_path / "pg")
    backbone = replace(
        tiny_policy_config().backbone,
        source=str(src),
        freeze_vision=True,
        lora_rank=4,
        lora_targets=["q_proj", "v_proj"],
    )
    model = VLAModel(tiny_policy_config(backbone=backbone), tiny_stats())
    trainable = {n for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert all(not p.requires_grad for n, p in model.backbone.named_parameters() if "vision_tower" in n)
    policy = VLAPolicy(model)
    policy.save(tmp_path / "ckpt")
    loaded = VLAPolicy.load(tmp_path / "ckpt")
    policy.reset(0)
    loaded.reset(0)
    np.testing.assert_array_equal(policy.infer(obs()), loaded.infer(obs()))


def test_unknown_backbone_source_is_explained():
    cfg = tiny_policy_config(backbone=replace(tiny_policy_config().backbone, source="not-a-model"))
    with pytest.raises(FileNotFoundError, match="neither the built-in 'tiny'"):
        VLAModel(cfg, tiny_stats())


def test_conv_stem_replaces_the_patch_embedding_and_round_trips(tmp_path):
    """backbone.vision_stem=conv: the built-in model's vision tower gets `ConvStem` (same token
    grid, trainable), and a saved policy rebuilds it from its config with the same outputs."""
    from vla.backbone import ConvStem

    cfg = tiny_policy_config(backbone=replace(tiny_policy_config().backbone, vision_stem="conv"))
    model = VLAModel(cfg, tiny_stats())
    stem = model.backbone.vlm.vision_tower.vision_model.embeddings.patch_embedding
    assert isinstance(stem, ConvStem)
    pixels = torch.rand(2, 3, 32, 32)
    assert stem(pixels).shape == (2, 32, 4, 4)  # 32 px / patch 8: the 4 x 4 grid the Conv2d gave
    policy = VLAPolicy(model)
    policy.save(tmp_path / "ckpt")
    saved = safetensors.torch.load_file(str(tmp_path / "ckpt" / "model.safetensors"))
    assert any("patch_embedding.net.0.weight" in k for k in saved)
    loaded = VLAPolicy.load(tmp_path / "ckpt")
    assert isinstance(loaded.model.backbone.vlm.vision_tower.vision_model.embeddings.patch_embedding, ConvStem)
    policy.reset(0)
    loaded.reset(0)
    np.testing.assert_array_equal(policy.infer(obs()), loaded.infer(obs()))
    # The images reach the actions through the stem.
    grads = torch.autograd.grad(
        model.backbone(model.inputs(torch.rand(1, 1, 3, 32, 32), torch.zeros(1, 2), ["x"])["vlm"])[0].sum(),
        stem.net[0].weight,
    )
    assert grads[0].abs().sum() > 0


@pytest.mark.parametrize(
    "over, message",
    [
        ({"vision_stem": "resnet"}, "vision_stem must be one of"),
        ({"vision_stem": "conv", "source": "/models/x"}, "keeps its own pretrained patch embedding"),
        ({"vision_stem": "conv", "patch_size": 12, "image_size": 36}, "power of two"),
    ],
)
def test_conv_stem_settings_are_checked(over, message):
    with pytest.raises(ValueError, match=message):
        replace(tiny_policy_config().backbone, **over)
