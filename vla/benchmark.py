"""`vla-bench-decode`: per-chunk decode latency, both decoders, on this machine.

For each decoder architecture (the action expert and the unified decoder inside the VLM): masked
diffusion with and without the prefix cache, one-shot (T = 1), and the autoregressive baseline
with its key/value cache, on the same backbone and an 8 x 7 chunk; then the shared parts (the
observation processing, the prefix pass) and the cost of one refinement step. Every mode times
what `infer` does, observation processing included. Prints medians and ratios from one run.

Runs unchanged on a GPU (`--device cuda --dtype bfloat16`; timings synchronise the device), and
on a backbone of a real model's shape with random weights (`--backbone smolvlm-256m`).
`--compile` times the decode step compiled with torch.compile next to eager.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import numpy as np
import torch

from vla.backbone import BackboneConfig
from vla.model import PolicyConfig, VLAModel
from vla.sampling import SamplerConfig


def _stats(cfg: PolicyConfig) -> dict:
    return {
        "state": {"mean": [0.0] * cfg.state_dim, "std": [1.0] * cfg.state_dim},
        "action": {"q01": [-1.0] * cfg.action_dim, "q99": [1.0] * cfg.action_dim},
    }


def smolvlm_256m_shape():
    """SmolVLM-256M's shape with random weights and a small local tokenizer: Idefics3 with
    SigLIP base-patch16-512 (its model card's vision encoder), pixel shuffle 4 (64 tokens per
    512 px image) and SmolLM2-135M's language model (30 layers, width 576, 9 heads, 3 key/value
    heads, vocabulary 49,280): 228M parameters. The shape, not the model."""
    from transformers import Idefics3Config, Idefics3Model, Idefics3Processor, Idefics3VisionConfig, LlamaConfig
    from transformers.models.idefics3 import Idefics3ImageProcessor

    from vla.text_tokenizer import SPECIAL_TOKENS, build_text_tokenizer

    markup = ["<fake_token_around_image>", "<global-img>", "<end_of_utterance>"]
    tokenizer = build_text_tokenizer(512, SPECIAL_TOKENS + markup)
    improc = Idefics3ImageProcessor(
        do_image_splitting=False, size={"longest_edge": 512}, max_image_size={"longest_edge": 512}
    )
    processor = Idefics3Processor(image_processor=improc, tokenizer=tokenizer, image_seq_len=64)
    config = Idefics3Config(
        vision_config=Idefics3VisionConfig(
            hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
            image_size=512, patch_size=16,
        ),
        text_config=LlamaConfig(
            hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
            num_key_value_heads=3, vocab_size=49280, max_position_embeddings=8192, rope_theta=100000.0,
        ),
        scale_factor=4,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
    )  # fmt: skip
    return Idefics3Model(config), processor


BACKBONES = {"default": None, "smolvlm-256m": smolvlm_256m_shape}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, repeats: int, device: torch.device, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1000.0


def _policy_config(arch: str, backbone: str, decoder_width: int) -> PolicyConfig:
    cfg = PolicyConfig(decoder_arch=arch)
    if decoder_width:
        cfg = dataclasses.replace(cfg, decoder=dataclasses.replace(cfg.decoder, d_model=decoder_width))
    if backbone != "default":
        cfg = dataclasses.replace(cfg, backbone=BackboneConfig(source=backbone, image_size=512, patch_size=16))
    return cfg


def _model(cfg: PolicyConfig, backbone: str, device: torch.device) -> VLAModel:
    torch.manual_seed(0)
    vlm = BACKBONES[backbone]() if BACKBONES[backbone] else None
    return VLAModel(cfg, _stats(cfg), vlm=vlm).eval().to(device)


def run(
    repeats: int = 20,
    steps: int = 12,
    threads: int = 0,
    decoder_width: int = 0,
    archs: tuple[str, ...] = ("expert", "unified"),
    backbone: str = "default",
    device: str = "cpu",
    dtype: str = "float32",
    compile_step: bool = False,
    compile_mode: str = "default",
    sampler: dict | None = None,
) -> list[tuple[str, str, float]]:
    """-> rows (architecture, mode, median ms). `sampler`: SamplerConfig fields for every masked
    diffusion row (the T=1 floor included), e.g. {"candidates": "quantile"}."""
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    dt = getattr(torch, dtype)
    rows = []
    for arch in archs:
        rows += _arch_rows(
            arch, repeats, steps, decoder_width, backbone, dev, dt, compile_step, compile_mode, sampler or {}
        )
    return rows


def _arch_rows(
    arch, repeats, steps, decoder_width, backbone, dev, dt, compile_step, compile_mode, sampler
) -> list[tuple[str, str, float]]:
    cfg = _policy_config(arch, backbone, decoder_width)
    diffusion = _model(cfg, backbone, dev)
    ar = _model(dataclasses.replace(cfg, decoder_type="autoregressive"), backbone, dev)
    ar.load_state_dict(diffusion.state_dict())  # same backbone and decoder weights
    size = cfg.backbone.image_size
    rng = np.random.default_rng(0)
    obs = {
        "images": {c: rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for c in cfg.cameras},
        "state": np.zeros(cfg.state_dim, np.float32),
        "instruction": "pick up the red cube",
    }
    inputs, _ = diffusion.processor(obs)

    def md(t: int, cache: bool):
        chosen = SamplerConfig(**{**dataclasses.asdict(cfg.sampler), **sampler, "steps": t})

        def decode():
            diffusion.cfg = dataclasses.replace(diffusion.cfg, sampler=chosen)
            return diffusion.predict_tokens(diffusion.processor(obs)[0], use_cache=cache)

        return decode

    rows = []
    # Reduced precision as deployments run it: autocast, the weights stay float32.
    with torch.no_grad(), torch.autocast(dev.type, dtype=dt, enabled=dt != torch.float32):
        cache = diffusion.chunk_cache(inputs)
        masked = torch.full((1, diffusion.decoder.num_slots), diffusion.decoder.mask_id, device=dev)

        def one_pass():
            return diffusion.decoder(masked, cache)

        rows += [
            (arch, f"masked diffusion T={steps}, prefix cache", _time(md(steps, True), repeats, dev)),
            (arch, f"masked diffusion T={steps}, no cache", _time(md(steps, False), max(3, repeats // 4), dev)),
            (arch, "one-shot parallel (T=1)", _time(md(1, True), repeats, dev)),
            (arch, "autoregressive, KV cache", _time(lambda: ar.predict_tokens(ar.processor(obs)[0]), repeats, dev)),
            (arch, "  observation processing", _time(lambda: diffusion.processor(obs), repeats, dev)),
            (arch, "  prefix pass (chunk cache)", _time(lambda: diffusion.chunk_cache(inputs), repeats, dev)),
            (arch, "  one decoder pass over the slots", _time(one_pass, repeats, dev)),
        ]
        if compile_step:
            diffusion.compile_decoder(mode=compile_mode)
            one_pass()  # compiles once, outside the timing
            rows += [
                (arch, f"masked diffusion T={steps}, compiled step", _time(md(steps, True), repeats, dev)),
                (arch, "one-shot parallel (T=1), compiled step", _time(md(1, True), repeats, dev)),
                (arch, "  one compiled decoder pass", _time(one_pass, repeats, dev)),
            ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--decoder-width", type=int, default=0, help="action expert d_model (0: the default's)")
    parser.add_argument("--arch", default="expert,unified", help="comma-separated: expert, unified")
    parser.add_argument("--backbone", default="default", choices=sorted(BACKBONES))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--compile", action="store_true", help="also time the torch.compile'd decode step")
    parser.add_argument("--confidence", default="", help="the masked-diffusion rows' order (default: the library's)")
    parser.add_argument("--candidates", default="", help="their candidate rule: gumbel_max or quantile")
    parser.add_argument(
        "--compile-mode", default="default", help="torch.compile mode, e.g. reduce-overhead (CUDA graphs on a GPU)"
    )
    args = parser.parse_args()
    archs = tuple(a.strip() for a in args.arch.split(",") if a.strip())
    rows = run(
        args.repeats, args.steps, args.threads, args.decoder_width, archs, args.backbone, args.device, args.dtype,
        args.compile, args.compile_mode,
        {k: v for k, v in (("confidence", args.confidence), ("candidates", args.candidates)) if v},
    )  # fmt: skip
    default = PolicyConfig()
    slots = default.chunk_size * default.action_dim
    print(
        f"decode latency per {default.chunk_size}x{default.action_dim} chunk, backbone {args.backbone}, "
        f"{args.device} {args.dtype}, {torch.get_num_threads()} torch threads, "
        f"order {args.confidence or default.sampler.confidence}, candidates {args.candidates or default.sampler.candidates}"
    )
    print(f"{'decoder':<9}{'mode':<42}{'median ms':>10}{'vs T=1':>8}{'AR / mode':>11}")
    for arch in archs:
        ms = {mode: t for a, mode, t in rows if a == arch}
        floor, ar_ms = ms["one-shot parallel (T=1)"], ms["autoregressive, KV cache"]
        for mode, t in ms.items():
            print(f"{arch:<9}{mode:<42}{t:>10.1f}{t / floor:>7.2f}x{ar_ms / t:>10.2f}x")
        shared = ms["  observation processing"] + ms["  prefix pass (chunk cache)"]
        md_pass = (ms[f"masked diffusion T={args.steps}, prefix cache"] - shared) / args.steps
        ar_pass = (ar_ms - shared) / slots
        print(
            f"{arch:<9}per pass after the prefix: refinement step over {slots} slots {md_pass:.2f} ms "
            f"(of which the network {ms['  one decoder pass over the slots']:.2f} ms), one AR slot {ar_pass:.2f} ms"
        )


if __name__ == "__main__":
    main()
