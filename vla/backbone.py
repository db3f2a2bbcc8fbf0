"""Adapter over Hugging Face vision-language models that yields the prefix hidden states.

The prefix is [vision tokens of every camera] [instruction tokens], run through the VLM with
its own processor and native attention; the policy appends a proprioceptive-state token. The
same code path serves the built-in tiny model (a LLaVA: SigLIP vision + Llama language model,
built from a config here, random init) and pretrained models loaded by path or hub id.
"""

from __future__ import annotations

import itertools
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

# Text that stands for one image in a prompt, per model family (config.model_type); families
# not listed use the processor's own `image_token`.
_IMAGE_PROMPT = {
    "qwen2_5_vl": "<|vision_start|><|image_pad|><|vision_end|>",
    "qwen2_vl": "<|vision_start|><|image_pad|><|vision_end|>",
}


@dataclass
class BackboneConfig:
    # "tiny" builds the built-in LLaVA from the sizes below; otherwise a local path or hub id.
    source: str = "tiny"
    image_size: int = 128
    patch_size: int = 16
    # How the built-in model's vision tower turns pixels into patch tokens: "patch" is SigLIP's
    # own (one strided convolution per patch), "conv" a stack of stride-2 3x3 convolutions
    # (`ConvStem`). Only for source="tiny"; a pretrained model keeps its own.
    vision_stem: str = "patch"
    vision_hidden: int = 64
    vision_layers: int = 2
    vision_heads: int = 2
    hidden_size: int = 128
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    text_vocab: int = 512
    freeze_vision: bool = False
    freeze_language: bool = False
    lora_rank: int = 0
    lora_alpha: int = 16
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(
                f"backbone.image_size ({self.image_size}) must be a multiple of backbone.patch_size ({self.patch_size})"
            )
        if self.hidden_size % self.heads:
            raise ValueError(f"backbone.hidden_size ({self.hidden_size}) must divide by backbone.heads ({self.heads})")
        if self.lora_rank < 0:
            raise ValueError(f"backbone.lora_rank must be >= 0, got {self.lora_rank}")
        if self.vision_stem not in VISION_STEMS:
            raise ValueError(f"backbone.vision_stem must be one of {VISION_STEMS}, got {self.vision_stem!r}")
        if self.vision_stem == "conv" and self.source != "tiny":
            raise ValueError(
                f"backbone.vision_stem=conv builds the built-in model's vision tower; backbone.source={self.source!r} "
                "keeps its own pretrained patch embedding: leave backbone.vision_stem=patch"
            )
        if self.vision_stem == "conv" and (self.patch_size < 2 or self.patch_size & (self.patch_size - 1)):
            raise ValueError(
                f"backbone.vision_stem=conv halves the image per layer, so backbone.patch_size must be a power of "
                f"two >= 2, got {self.patch_size}"
            )


VISION_STEMS = ("patch", "conv")


class ConvStem(nn.Module):
    """Pixels (B, 3, H, W) -> patch features (B, hidden, H / patch, W / patch), the shape of the
    strided convolution it replaces in SigLIP's embeddings: log2(patch) stride-2 3x3 convolutions
    (GroupNorm, GELU), widths 16, 32, ... up to `hidden`, then a 1x1 projection to `hidden`.

    A ViT trained from random initialisation on a few thousand demonstrations sees each 16 px
    patch through one linear map and has to learn locality from its position embeddings; early
    convolutions give it that bias (Xiao et al. 2021, "Early convolutions help transformers see
    better"). GroupNorm, not BatchNorm: training batches are small and inference sees one frame.
    """

    def __init__(self, hidden: int, patch: int) -> None:
        super().__init__()
        widths = [3] + [min(hidden, 16 * 2**i) for i in range(patch.bit_length() - 1)]
        layers: list[nn.Module] = []
        for cin, cout in itertools.pairwise(widths):
            layers += [
                nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
                nn.GroupNorm(8 if cout % 8 == 0 else 1, cout),
                nn.GELU(),
            ]
        layers.append(nn.Conv2d(widths[-1], hidden, 1))
        self.net = nn.Sequential(*layers)

    @property
    def weight(self) -> torch.Tensor:
        # SiglipVisionEmbeddings casts its input to `patch_embedding.weight.dtype`.
        return self.net[-1].weight

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.net(pixels)


def apply_vision_stem(model: nn.Module, stem: str) -> nn.Module:
    """Give the built-in LLaVA's vision tower the stem `stem` names ("patch" leaves it as built)."""
    if stem == "patch":
        return model
    embeddings = model.vision_tower.vision_model.embeddings
    old = embeddings.patch_embedding
    if not isinstance(old, nn.Conv2d):
        raise TypeError(
            f"vision_stem={stem!r}: the vision tower's patch embedding is a {type(old).__name__}, not a Conv2d"
        )
    embeddings.patch_embedding = ConvStem(old.out_channels, old.kernel_size[0]).to(old.weight.device)
    return model


def build_tiny_vlm(cfg: BackboneConfig):
    """The built-in default: a random-init LLaVA (SigLIP + Llama) and a processor built here."""
    from transformers import (
        LlamaConfig,
        LlavaConfig,
        LlavaModel,
        LlavaProcessor,
        SiglipImageProcessor,
        SiglipVisionConfig,
    )

    from vla.text_tokenizer import build_text_tokenizer

    tokenizer = build_text_tokenizer(cfg.text_vocab)
    image_processor = SiglipImageProcessor(
        size={"height": cfg.image_size, "width": cfg.image_size},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=cfg.patch_size,
        vision_feature_select_strategy="full",
        num_additional_image_tokens=0,
        image_token="<image>",
    )
    n_patches = (cfg.image_size // cfg.patch_size) ** 2
    config = LlavaConfig(
        vision_config=SiglipVisionConfig(
            hidden_size=cfg.vision_hidden,
            intermediate_size=4 * cfg.vision_hidden,
            num_hidden_layers=cfg.vision_layers,
            num_attention_heads=cfg.vision_heads,
            image_size=cfg.image_size,
            patch_size=cfg.patch_size,
        ),
        text_config=LlamaConfig(
            hidden_size=cfg.hidden_size,
            intermediate_size=4 * cfg.hidden_size,
            num_hidden_layers=cfg.layers,
            num_attention_heads=cfg.heads,
            num_key_value_heads=cfg.kv_heads,
            vocab_size=len(tokenizer),
            max_position_embeddings=2048,
            pad_token_id=tokenizer.pad_token_id,
        ),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_seq_length=n_patches,
        projector_hidden_act="gelu",
    )
    model = LlavaModel(config)
    # Llama's N(0, 0.02) embedding init suits wide pretrained models; in this narrow random one
    # the instruction's token embeddings would be ~3% of a residual stream dominated by image
    # features, and the policy would take thousands of steps to notice which cube was asked for.
    nn.init.normal_(model.get_input_embeddings().weight, std=1.0)
    # For the same reason the image tokens must enter at that scale too: with the 0.02 init the
    # projector's output has a per-token norm ~50x below the text embeddings', and the first
    # attention layer overwrites the image positions with text. Variance-preserving init instead.
    for layer in (model.multi_modal_projector.linear_1, model.multi_modal_projector.linear_2):
        nn.init.normal_(layer.weight, std=(2.0 / layer.in_features) ** 0.5)
        nn.init.zeros_(layer.bias)
    return apply_vision_stem(model, cfg.vision_stem), processor


def load_pretrained_vlm(source: str, local_files_only: bool = False):
    """Any transformers VLM by local folder or hub id, as its base model (no LM head)."""
    from transformers import AutoModel, AutoProcessor

    if Path(source).exists() is False and "/" not in source:
        raise FileNotFoundError(
            f"backbone.source={source!r} is neither the built-in 'tiny', a local folder, nor a hub id (owner/name)"
        )
    processor = AutoProcessor.from_pretrained(source, local_files_only=local_files_only)
    model = AutoModel.from_pretrained(source, local_files_only=local_files_only)
    return model, processor


def model_from_saved_config(folder: str | Path, vision_stem: str = "patch"):
    """Rebuild the architecture saved with a checkpoint (weights come from the checkpoint); the
    built-in model's `vision_stem` is the policy config's, not the VLM's own config's."""
    from transformers import AutoConfig, AutoModel, AutoProcessor

    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    return apply_vision_stem(AutoModel.from_config(config), vision_stem), processor


def _special_token_pattern(processor) -> re.Pattern | None:
    """A regex over the tokenizer's special and added tokens that are markup, not words."""
    tok = getattr(processor, "tokenizer", processor)
    strings = set(getattr(tok, "all_special_tokens", []) or [])
    strings |= {t.content for t in (getattr(tok, "added_tokens_decoder", {}) or {}).values()}
    for attr in ("image_token", "video_token", "boi_token", "eoi_token", "fake_image_token", "global_image_token"):
        value = getattr(processor, attr, None)
        if isinstance(value, str):
            strings.add(value)
    strings = sorted((t for t in strings if len(t) > 1 and not t.isalnum() and t.strip()), key=len, reverse=True)
    return re.compile("|".join(map(re.escape, strings))) if strings else None


def _text_config(model) -> object:
    cfg = model.config
    return getattr(cfg, "text_config", cfg)


class VLMPrompter:
    """The VLM's own input processing, outside the network so that it runs where the data is
    prepared (the loader's workers in training): prompt text, the HF processor, and the mask of
    the text positions. images (B, N, 3, H, W) in [0, 1] + instructions -> the model's tensors."""

    def __init__(self, processor, model_type: str, image_token_ids: list[int]) -> None:
        self.processor = processor
        self.model_type = model_type
        self.image_token_ids = image_token_ids
        self._specials = _special_token_pattern(processor)

    def prompt(self, instruction: str, num_images: int) -> str:
        image = _IMAGE_PROMPT.get(self.model_type) or self.processor.image_token
        return image * num_images + self.neutralise(instruction.strip().lower())

    def neutralise(self, text: str) -> str:
        """Instructions are text: a special token's string in one ("look at the <image> tag") would
        become that token (an extra image placeholder crashes the processor). A space after its
        first character keeps the words and makes it plain text."""
        if self._specials is None:
            return text
        return self._specials.sub(lambda m: m[0][0] + " " + m[0][1:], text)

    def __call__(self, images: torch.Tensor, instructions: list[str]) -> dict[str, torch.Tensor]:
        """Run the model's own processor; adds "text_mask" (B, P) bool to its tensors."""
        if images.ndim != 5 or images.shape[2] != 3:
            raise ValueError(f"images must be (B, N, 3, H, W), got {tuple(images.shape)}")
        if len(instructions) != images.shape[0]:
            raise ValueError(f"{len(instructions)} instructions for a batch of {images.shape[0]} images")
        num_images = images.shape[1]
        text = [self.prompt(s, num_images) for s in instructions]
        batch = [list(sample) for sample in images.float().cpu()]
        kwargs = {"do_rescale": False}
        if self.model_type == "paligemma":
            kwargs["suffix"] = None
        inputs = dict(self.processor(text=text, images=batch, return_tensors="pt", padding=True, **kwargs))
        inputs["text_mask"] = self.text_mask(inputs)
        return inputs

    def text_mask(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, P) bool: attended positions that are not image placeholders (prompt and instruction)."""
        ids = inputs["input_ids"]
        image = torch.isin(ids, torch.tensor(self.image_token_ids, dtype=ids.dtype, device=ids.device))
        return inputs["attention_mask"].bool() & ~image


class VLMBackbone(nn.Module):
    """The VLM's tensors (from `VLMPrompter`) -> prefix hidden states (B, P, hidden), mask (B, P)."""

    def __init__(self, model: nn.Module, processor, cfg: BackboneConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.processor = processor
        self.model_type = model.config.model_type
        self.hidden_size = int(_text_config(model).hidden_size)
        # Ids of image placeholder tokens: the text mask excludes them (and padding).
        ids = {getattr(model.config, a, None) for a in ("image_token_id", "image_token_index")}
        ids |= {getattr(processor, "image_token_id", None)}
        self.prompter = VLMPrompter(processor, self.model_type, sorted(i for i in ids if isinstance(i, int)))
        self.vlm = self._maybe_lora(model)  # LoRA first: it freezes base weights, adds adapters
        self._apply_freezing(model)  # then a frozen tower freezes its adapters too

    @property
    def image_token_ids(self) -> list[int]:
        return self.prompter.image_token_ids

    def _apply_freezing(self, model: nn.Module) -> None:
        for name, module in model.named_children():
            is_vision = any(k in name for k in ("vision", "visual"))
            is_language = "language" in name or name in ("text_model", "model")
            if (is_vision and self.cfg.freeze_vision) or (is_language and self.cfg.freeze_language):
                module.requires_grad_(False)
                log.info("froze backbone submodule %s", name)

    def _maybe_lora(self, model: nn.Module) -> nn.Module:
        if self.cfg.lora_rank == 0:
            return model
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError as e:  # pragma: no cover - peft is a core dependency
            raise ImportError("backbone.lora_rank > 0 needs peft: pip install peft") from e
        lora = LoraConfig(r=self.cfg.lora_rank, lora_alpha=self.cfg.lora_alpha, target_modules=self.cfg.lora_targets)
        return get_peft_model(model, lora)

    def _vlm_inputs(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        device = next(self.vlm.parameters()).device
        inputs = {k: v.to(device) for k, v in inputs.items() if k != "text_mask"}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(next(self.vlm.parameters()).dtype)
        return inputs

    def forward(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs: the prompter's tensors ("text_mask" is not passed to the VLM)."""
        inputs = self._vlm_inputs(inputs)
        out = self.vlm(**inputs, use_cache=False)
        hidden = out.last_hidden_state  # (B, P, hidden)
        mask = inputs["attention_mask"].bool()  # (B, P)
        return hidden, mask

    @property
    def language_model(self) -> nn.Module:
        """The VLM's language model (its decoder layers, no LM head), under LoRA too."""
        base = self.vlm.get_base_model() if hasattr(self.vlm, "get_base_model") else self.vlm
        for name in ("language_model", "text_model"):
            lm = getattr(base, name, None)
            if isinstance(lm, nn.Module):
                return lm
        raise NotImplementedError(
            f"decoder_arch=unified needs the language model of the VLM ({self.model_type}) as a "
            "`language_model` or `text_model` submodule; this one has neither: use decoder_arch=expert"
        )

    @property
    def embed_std(self) -> float:
        """Spread of the language model's token embeddings (new embeddings start at this scale)."""
        return float(self.language_model.get_input_embeddings().weight.detach().float().std())

    def prefix_cache(self, inputs: dict[str, torch.Tensor]):
        """Run the prefix like `forward`, keeping the language model's key/value cache.

        -> hidden (B, P, hidden), mask (B, P), the cache (the model's own type), and the next
        position id of each sample (B,): one past the largest position the VLM gave a real token,
        read from its own call to the language model, so PaliGemma's 1-indexed positions and
        Qwen2.5-VL's multimodal rotary positions (text after the prompt advances every axis from
        the largest) are continued as the family does for generated text."""
        inputs = self._vlm_inputs(inputs)
        seen: dict = {}

        def grab(module, args, kwargs):
            seen["position_ids"] = kwargs.get("position_ids")

        handle = self.language_model.register_forward_pre_hook(grab, with_kwargs=True)
        try:
            out = self.vlm(**inputs, use_cache=True)
        finally:
            handle.remove()
        hidden = out.last_hidden_state
        mask = inputs["attention_mask"].bool()
        b, p = mask.shape
        pos = seen.get("position_ids")
        if pos is None:  # the language model's default: cache positions 0..P-1
            pos = torch.arange(p, device=mask.device)
        pos = pos.to(mask.device)
        if pos.ndim == 3:  # (axes, B, P) rotary positions: the largest over the axes
            pos = pos.amax(0)
        pos = pos.expand(b, p)
        next_position = pos.masked_fill(~mask, torch.iinfo(pos.dtype).min).amax(1) + 1  # (B,)
        return hidden, mask, out.past_key_values, next_position
