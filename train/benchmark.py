"""`vla-bench-train`: where a training step's time and arithmetic go, for a policy and its data.

On a saved checkpoint's policy config (`--checkpoint`) and a zarr cache of demonstrations
(`--cache`), each `--variant NAME:path=value,...` overrides fields of the policy config by dotted
path (``decoder.layers=2``, ``backbone.vision_stem=conv``, ``backbone.image_size=128``) and builds
a fresh model of that shape; the first row is the checkpoint's own config. Every row runs the same
batches (same frames, same augmentation draws) and reports:

- the arithmetic of one step, forward and backward, per sample (torch's FlopCounterMode; the CPU
  attention kernel, which it does not know, is counted as its matrix products), and the forward
  pass's share by part of the model: vision tower, language model, action decoder, the rest;
- wall time per step of the forward pass, the backward pass and the optimiser (fused AdamW, as
  training uses), after `--warmup` untimed steps, and the samples per second they allow;
- the loader's work per batch: reading the samples from the cache and collating them (crop,
  resize, colour jitter, the VLM's processor), which training runs in a worker process beside
  the model.

A machine with 2 cores shares them between that worker and the model's threads, so the
figures say what a step costs, not what a training run with a loader beside it reaches.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Sequence

import numpy as np
import torch

PARTS = ("vision", "language model", "decoder", "other")


def with_overrides(cfg, overrides: dict, where: str = "policy"):
    """A copy of the dataclass `cfg` with dotted-path `overrides` ({"decoder.layers": 2}); an
    unknown path is an error that lists the fields it could be."""
    nested: dict[str, dict] = {}
    direct = {}
    for path, value in overrides.items():
        head, _, rest = path.partition(".")
        if head not in {f.name for f in dataclasses.fields(cfg)}:
            raise ValueError(
                f"{where} has no field {head!r} (in {path!r}); it has {sorted(f.name for f in dataclasses.fields(cfg))}"
            )
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            direct[head] = value
    for head, sub in nested.items():
        child = getattr(cfg, head)
        if not dataclasses.is_dataclass(child):
            raise ValueError(f"{where}.{head} is a {type(child).__name__}, not a config with fields")
        direct[head] = with_overrides(child, sub, f"{where}.{head}")
    return dataclasses.replace(cfg, **direct)


def part_of(module_path: str) -> str:
    """Which part of the model a module path (as FlopCounterMode names it) belongs to."""
    if "vision" in module_path or "multi_modal_projector" in module_path or "connector" in module_path:
        return "vision"
    if "language_model" in module_path or "text_model" in module_path:
        return "language model"
    if module_path.split(".")[1:2] == ["decoder"]:
        return "decoder"
    return "other"


def _sdpa_shapes(q, k, v):
    b, h, s_q, d = q[0], q[-3], q[-2], q[-1]
    return b * h, s_q, k[-2], d, v[-1]


def _cpu_sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    bh, s_q, s_k, d, d_v = _sdpa_shapes(query_shape, key_shape, value_shape)
    return 2 * bh * s_q * s_k * (d + d_v)  # scores, then scores @ values


def _cpu_sdpa_backward(grad_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    bh, s_q, s_k, d, d_v = _sdpa_shapes(query_shape, key_shape, value_shape)
    return 2 * bh * s_q * s_k * (3 * d + 2 * d_v)  # scores again; grads of values, scores, queries, keys


def _flop_counter():
    """torch's FlopCounterMode that also credits each operation to the innermost module running
    it (`innermost`): a module's own count includes its submodules' but not a submodule called
    outside its forward (the decoder's prefix cache, say), so parts are summed from this."""
    from torch.utils.flop_counter import FlopCounterMode

    class Counter(FlopCounterMode):
        def __init__(self, **kwargs) -> None:
            super().__init__(**kwargs)
            self.innermost: dict[str, int] = {}

        def _count_flops(self, func_packet, out, args, kwargs):  # torch's hook per counted operation
            if func_packet in self.flop_registry:
                flops = self.flop_registry[func_packet](*args, **kwargs, out_val=out)
                owner = max(self.mod_tracker.parents, key=lambda name: (name != "Global", name.count(".")))
                self.innermost[owner] = self.innermost.get(owner, 0) + flops
            return super()._count_flops(func_packet, out, args, kwargs)

    aten = torch.ops.aten
    mapping = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_sdpa
        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = _cpu_sdpa_backward
    return Counter(display=False, custom_mapping=mapping)


def count_flops(model, batch: dict) -> dict:
    """{"step": forward + backward FLOPs, "forward": {part: FLOPs}, "forward_total"} for one batch."""
    with _flop_counter() as fc:
        loss, _ = model(batch)
        loss.backward()
    step = fc.get_total_flops()
    model.zero_grad(set_to_none=True)
    with _flop_counter() as fc, torch.no_grad():
        model(batch)
    forward = dict.fromkeys(PARTS, 0)
    for name, flops in fc.innermost.items():
        forward[part_of(name)] += flops
    total = fc.get_total_flops()
    if sum(forward.values()) != total:
        raise RuntimeError(f"FLOPs credited to modules ({sum(forward.values())}) differ from the total ({total})")
    return {"step": step, "forward": forward, "forward_total": total}


def measure(cfg, stats, dataset, collate_batches: list, args) -> dict:
    """One variant's row: parameters, FLOPs, and timed steps over `collate_batches` (lists of
    samples, the same for every variant)."""
    from data.dataset import Collate, LoaderConfig
    from vla.model import VLAModel

    torch.manual_seed(args.seed)
    model = VLAModel(cfg, stats)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=True)
    collate = Collate(LoaderConfig(batch_size=args.batch), model.processor, train=True)
    times = {"read": [], "collate": [], "forward": [], "backward": [], "optimiser": []}
    flops = None
    for i, idx in enumerate(collate_batches):
        t0 = time.perf_counter()
        samples = [dataset[(int(j), args.seed * 100_003 + i)] for j in idx]
        t1 = time.perf_counter()
        batch = collate(samples)
        t2 = time.perf_counter()
        if flops is None:
            flops = count_flops(model, batch)
        t3 = time.perf_counter()
        loss, _ = model(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at benchmark step {i}: the variant's config does not train")
        t4 = time.perf_counter()
        loss.backward()
        t5 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t6 = time.perf_counter()
        if i >= args.warmup:
            for key, a, b in (("read", t0, t1), ("collate", t1, t2), ("forward", t3, t4), ("backward", t4, t5)):
                times[key].append(b - a)
            times["optimiser"].append(t6 - t5)
    ms = {k: 1000 * float(np.median(v)) for k, v in times.items()}
    model_ms = ms["forward"] + ms["backward"] + ms["optimiser"]
    return {
        "parameters": sum(p.numel() for p in params),
        "gflop_per_sample": flops["step"] / args.batch / 1e9,
        "forward_share": {k: v / flops["forward_total"] for k, v in flops["forward"].items()},
        "ms": ms,
        "samples_per_s": 1000 * args.batch / model_ms,
    }


def table(rows: Sequence[dict], batch: int) -> str:
    head = (
        "| variant | overrides | parameters | GFLOP per sample (fwd+bwd) | forward: vision / language model / "
        f"decoder / other | ms per step of {batch}: forward | backward | optimiser | samples/s (model) | "
        "loader ms per batch: read | collate |"
    )
    lines = [head, "| " + " | ".join(["---"] * 11) + " |"]
    for r in rows:
        over = ", ".join(f"{k}={v}" for k, v in r["overrides"].items()) or "(the checkpoint's)"
        share = " / ".join(f"{100 * r['forward_share'][p]:.0f}%" for p in PARTS)
        ms = r["ms"]
        lines.append(
            f"| {r['name']} | {over} | {r['parameters']:,} | {r['gflop_per_sample']:.3f} | {share} | "
            f"{ms['forward']:.1f} | {ms['backward']:.1f} | {ms['optimiser']:.1f} | {r['samples_per_s']:.0f} | "
            f"{ms['read']:.1f} | {ms['collate']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from data.cache import ZarrCache
    from data.dataset import ChunkDataset
    from train.vision_probe import parse_variant
    from vla.checkpoint import saved_policy_config
    from vla.model import check_compatible

    p = argparse.ArgumentParser(prog="vla-bench-train", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a checkpoint whose policy config the rows start from")
    p.add_argument("--cache", required=True, help="zarr cache of demonstrations the policy trains on")
    p.add_argument("--variant", action="append", default=[], help="NAME:path=value,... over the policy config")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=10, help="timed steps per row")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before them")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.batch < 1 or args.steps < 1 or args.warmup < 0:
        p.error("--batch and --steps must be >= 1 and --warmup >= 0")
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    base = saved_policy_config(args.checkpoint)
    cache = ZarrCache(args.cache, in_memory=False)
    try:
        variants = [("checkpoint", {})] + [parse_variant(v) for v in args.variant]
    except ValueError as e:
        p.error(str(e))
    names = [n for n, _ in variants]
    if len(set(names)) != len(names):
        p.error(f"variant names must differ, got {names}")
    configs = []
    for name, overrides in variants:
        try:
            cfg = with_overrides(base, overrides)
        except (ValueError, TypeError) as e:
            raise SystemExit(f"vla-bench-train: --variant {name}: {e}") from e
        check_compatible(cfg, cache.action.shape[1], cache.state.shape[1], cache.cameras)
        configs.append(cfg)
    dataset = ChunkDataset(cache, base.chunk_size, base.cameras)
    if any(cfg.chunk_size != base.chunk_size or cfg.cameras != base.cameras for cfg in configs):
        raise SystemExit("vla-bench-train: variants share the checkpoint's batches, so chunk_size and cameras stay")
    rng = np.random.default_rng(args.seed)
    batches = [rng.integers(0, len(dataset), args.batch) for _ in range(args.warmup + args.steps)]
    rows = []
    for (name, overrides), cfg in zip(variants, configs, strict=True):
        row = measure(cfg, cache.stats, dataset, batches, args)
        rows.append({"name": name, "overrides": overrides, **row})
    print(
        f"{args.checkpoint} on {args.cache}: batch {args.batch}, {args.steps} timed steps after {args.warmup}, "
        f"{torch.get_num_threads()} torch threads; medians per step"
    )
    print(table(rows, args.batch))


if __name__ == "__main__":
    main()
