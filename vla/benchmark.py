"""`vla-bench-decode`: per-chunk decode latency of the default policy on this machine.

Masked diffusion with and without the prefix cache, one-shot (T = 1), and the autoregressive
baseline with its key/value cache, all on the same backbone and an 8 x 7 chunk. Prints medians
and ratios from one run.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import numpy as np
import torch

from vla.model import PolicyConfig, VLAModel


def _stats(cfg: PolicyConfig) -> dict:
    return {
        "state": {"mean": [0.0] * cfg.state_dim, "std": [1.0] * cfg.state_dim},
        "action": {"q01": [-1.0] * cfg.action_dim, "q99": [1.0] * cfg.action_dim},
    }


def _time(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1000.0


def run(repeats: int = 20, steps: int = 12, threads: int = 0, decoder_width: int = 0) -> list[tuple[str, float]]:
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = PolicyConfig()
    if decoder_width:
        cfg = dataclasses.replace(cfg, decoder=dataclasses.replace(cfg.decoder, d_model=decoder_width))
    diffusion = VLAModel(cfg, _stats(cfg)).eval()
    ar_cfg = dataclasses.replace(cfg, decoder_type="autoregressive")
    ar = VLAModel(ar_cfg, _stats(ar_cfg)).eval()
    ar.load_state_dict(diffusion.state_dict())  # same backbone and decoder weights
    rng = np.random.default_rng(0)
    obs = {
        "images": {c: rng.integers(0, 255, (128, 128, 3), dtype=np.uint8) for c in cfg.cameras},
        "state": np.zeros(cfg.state_dim, np.float32),
        "instruction": "pick up the red cube",
    }
    inputs, _ = diffusion.processor(obs)

    # Every mode times what `infer` does: the observation processing, then decoding.
    def md(t: int, cache: bool):
        def decode():
            diffusion.cfg = dataclasses.replace(diffusion.cfg, sampler=dataclasses.replace(cfg.sampler, steps=t))
            return diffusion.predict_tokens(diffusion.processor(obs)[0], use_cache=cache)

        return decode

    rows = [
        (f"masked diffusion T={steps}, prefix cache", _time(md(steps, True), repeats)),
        (f"masked diffusion T={steps}, no cache", _time(md(steps, False), max(3, repeats // 4))),
        ("one-shot parallel (T=1)", _time(md(1, True), repeats)),
        ("autoregressive, KV cache (56 passes)", _time(lambda: ar.predict_tokens(ar.processor(obs)[0]), repeats)),
        ("  of which: observation processing", _time(lambda: diffusion.processor(obs), repeats)),
        ("  of which: prefix (backbone) only", _time(lambda: diffusion.encode_prefix(inputs), repeats)),
    ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--decoder-width", type=int, default=0, help="decoder d_model (0: the default policy's)")
    args = parser.parse_args()
    rows = run(args.repeats, args.steps, args.threads, args.decoder_width)
    ar_ms, prefix_ms = rows[3][1], rows[4][1] + rows[5][1]  # processing + backbone, shared by every mode
    default = PolicyConfig()
    width, slots = args.decoder_width or default.decoder.d_model, default.chunk_size * default.action_dim
    print(
        f"decode latency per {default.chunk_size}x{default.action_dim} chunk, default policy "
        f"(decoder d_model {width}), {torch.get_num_threads()} torch threads"
    )
    print(f"{'mode':<42}{'median ms':>10}{'AR / mode':>11}")
    for name, ms in rows:
        print(f"{name:<42}{ms:>10.1f}{ar_ms / ms:>10.2f}x")
    md_pass = (rows[0][1] - prefix_ms) / args.steps
    ar_pass = (ar_ms - prefix_ms) / slots
    print(
        f"per pass after the prefix: refinement step over {slots} slots {md_pass:.2f} ms, one AR slot {ar_pass:.2f} ms"
    )


if __name__ == "__main__":
    main()
