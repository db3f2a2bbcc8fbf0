"""Tiny random VLMs of real transformers families, saved the way hub checkpoints are saved
(one language-model layer unless `layers` says otherwise).

They stand in for pretrained weights (which cannot be downloaded here): the loading code under
test is exactly the one a user runs with a real model id or folder.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast


def _tokenizer(specials: list[str], **kw) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=specials,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(["pick up the red cube", "put the bowl on the plate"] * 5, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **kw)


def _llama(vocab: int, layers: int = 1, **kw):
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=vocab,
        max_position_embeddings=512,
        **kw,
    )


def save_paligemma(path: Path, layers: int = 1) -> Path:
    from transformers import (
        GemmaConfig,
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipImageProcessor,
        SiglipVisionConfig,
    )

    tok = _tokenizer(["<pad>", "<bos>", "<eos>", "<image>"], pad_token="<pad>", bos_token="<bos>", eos_token="<eos>")
    proc = PaliGemmaProcessor(
        image_processor=SiglipImageProcessor(size={"height": 32, "width": 32}, image_seq_length=16), tokenizer=tok
    )
    image_id = tok.convert_tokens_to_ids("<image>")
    cfg = PaliGemmaConfig(
        vision_config=SiglipVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
            projection_dim=32,
        ),
        text_config=GemmaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=layers,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            vocab_size=len(tok),
        ),
        image_token_id=image_id,
        projection_dim=32,
    )
    PaliGemmaForConditionalGeneration(cfg).save_pretrained(path)
    proc.save_pretrained(path)
    return path


def save_idefics3(path: Path, layers: int = 1) -> Path:
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
        Idefics3VisionConfig,
    )

    specials = ["<pad>", "<bos>", "<eos>", "<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>"]
    tok = _tokenizer(specials, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>")
    improc = Idefics3ImageProcessor(
        do_image_splitting=False, size={"longest_edge": 32}, max_image_size={"longest_edge": 32}
    )
    proc = Idefics3Processor(image_processor=improc, tokenizer=tok, image_seq_len=4)
    cfg = Idefics3Config(
        vision_config=Idefics3VisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        text_config=_llama(len(tok), layers),
        scale_factor=2,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
    )
    Idefics3ForConditionalGeneration(cfg).save_pretrained(path)
    proc.save_pretrained(path)
    return path


def save_qwen2_5_vl(path: Path, layers: int = 1) -> Path:
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    specials = ["<|endoftext|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tok = _tokenizer(specials, pad_token="<|endoftext|>", eos_token="<|endoftext|>")
    improc = Qwen2VLImageProcessor(min_pixels=32 * 32, max_pixels=32 * 32, patch_size=8, merge_size=2)
    proc = Qwen2_5_VLProcessor(
        image_processor=improc, tokenizer=tok, video_processor=Qwen2VLVideoProcessor(patch_size=8, merge_size=2)
    )
    ids = {t: tok.convert_tokens_to_ids(t) for t in specials}
    cfg = Qwen2_5_VLConfig(
        text_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": layers,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "vocab_size": len(tok),
            "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
        },
        vision_config={
            "depth": 1,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 32,
            "patch_size": 8,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "fullatt_block_indexes": [0],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    Qwen2_5_VLForConditionalGeneration(cfg).save_pretrained(path)
    proc.save_pretrained(path)
    return path


FAMILIES = {"paligemma": save_paligemma, "idefics3": save_idefics3, "qwen2_5_vl": save_qwen2_5_vl}
