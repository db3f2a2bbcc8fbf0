"""`vla-ablate`: does the decoding method matter? Success per decoding variant, same seeds.

Evaluates one masked-diffusion checkpoint under each sampler variant (confidence order,
number of steps, one-shot, temperature, secondary remasking: overrides of the checkpoint's own
sampler, each row labelled by the sampler it resolves to) and, optionally, an autoregressive
checkpoint trained the same way; prints a markdown table, writes JSON.
`--offline CACHE` instead compares each variant's decoded actions with the recorded ones on
frames of a zarr cache: open-loop, seconds per row, a diagnostic rather than a success rate.
`--offline CACHE --conditioning` measures what committed slots tell the masked ones, the
ceiling on what any decoding order can gain for the checkpoint (`offline_conditioning`).

Every row runs the same episodes (seeds, initial states), so each row is also compared with the
first one episode by episode: the paired difference's standard error is smaller than the
unpaired one when the rows succeed and fail on the same episodes. A row whose results are
already in `--out` with the same settings is reused, so a long ablation resumes where it was
interrupted.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from envs.evaluate import EvalConfig, evaluate
from envs.tables import episode_outcomes, paired_difference
from vla.configs import atomic_write_text

# Rows: a key (what --only matches, besides the label) and the sampler overrides. Each row runs
# the checkpoint's own sampler with its overrides, and is labelled by the sampler it resolves
# to (`describe`), so a row never claims a rule it does not run. The first row is the
# checkpoint's sampler unchanged; the others are compared with it.
VARIANTS: list[tuple[str, dict]] = [
    ("default", {}),
    ("margin", {"confidence": "margin"}),
    ("sampled_prob", {"confidence": "sampled_prob"}),
    ("random order", {"confidence": "random"}),
    ("one-shot", {"steps": 1}),
    ("T=2", {"steps": 2}),
    ("T=4", {"steps": 4}),
    ("T=8", {"steps": 8}),
    ("hard argmax", {"temperature": 0.0}),
    # The autoregressive baseline's order and greediness, with the masked-diffusion model.
    ("left-to-right", {"confidence": "left_to_right", "steps": 56, "temperature": 0.0}),
    ("threshold", {"remask_threshold": True}),
    ("residual", {"remask_delta": 0.3}),
    ("max_prob", {"confidence": "max_prob"}),
    # Easy-first with candidates still sampled at the last commits (the temperature held instead
    # of decayed to 0, where the argmax picks the saturated end bins: docs/libero.md).
    ("max_prob held", {"confidence": "max_prob", "temperature_schedule": "constant"}),
    ("T=4 max_prob held", {"confidence": "max_prob", "temperature_schedule": "constant", "steps": 4}),
    # Ordinal decoding: candidates by quantile (the median bin as the temperature reaches 0, not
    # the mode), and easy-first by how close together a slot's mass lies (vla/sampling.py).
    ("quantile", {"candidates": "quantile"}),
    ("max_prob quantile", {"confidence": "max_prob", "candidates": "quantile"}),
    ("spread quantile", {"confidence": "spread", "candidates": "quantile"}),
    ("spread", {"confidence": "spread"}),
    ("T=4 quantile", {"candidates": "quantile", "steps": 4}),
    ("T=4 max_prob quantile", {"confidence": "max_prob", "candidates": "quantile", "steps": 4}),
    ("T=4 spread quantile", {"confidence": "spread", "candidates": "quantile", "steps": 4}),
    ("one-shot quantile", {"candidates": "quantile", "steps": 1}),
    # Every commit at temperature 0, each slot's median: the passes differ from one pass only by
    # what the committed slots tell the rest, so the order is measured without the early commits'
    # sampling noise (the T=4 rows above draw their first commits at temperature 1).
    (
        "T=4 spread median",
        {"confidence": "spread", "candidates": "quantile", "steps": 4, "temperature": 0.0},
    ),
    ("T=4 median", {"candidates": "quantile", "steps": 4, "temperature": 0.0}),
    # Block-wise over time: slots are laid out time step by time step, so left to right commits
    # the earliest actions (the ones executed first, and the prefix real-time chunking freezes)
    # in the first passes, the later ones conditioned on them.
    ("T=4 earliest first", {"confidence": "left_to_right", "candidates": "quantile", "steps": 4}),
]

_ORDER = {"random": "random order", "left_to_right": "left-to-right order"}
_OWN = " (the checkpoint's sampler)"  # the first row's label ends so


def describe(sampler) -> str:
    """A row label that names every setting of `sampler` (a SamplerConfig) that decides decoding
    and differs from the library's defaults, after the order and the number of passes."""
    from vla.sampling import SamplerConfig

    base = SamplerConfig()
    parts = [
        "one-shot parallel, T=1"
        if sampler.steps == 1
        else f"{_ORDER.get(sampler.confidence, sampler.confidence)}, T={sampler.steps}"
    ]
    median = sampler.temperature == 0 and sampler.candidates == "quantile"
    if median:
        parts.append("each slot's median bin")
    elif sampler.temperature == 0:
        parts.append("hard argmax")
    elif sampler.temperature != base.temperature:
        parts.append(f"temperature {sampler.temperature:g}")
    if sampler.temperature_schedule != base.temperature_schedule and sampler.temperature != 0:
        parts.append(f"{sampler.temperature_schedule} temperature")
    if sampler.candidates != base.candidates and not median:
        parts.append(f"{sampler.candidates} candidates")
    if sampler.confidence_noise != base.confidence_noise and sampler.steps > 1:
        parts.append(f"order noise {sampler.confidence_noise:g}")
    label = ", ".join(parts)
    if sampler.remask_threshold:
        label += f" + threshold remasking (eta {sampler.remask_eta:g})"
    if sampler.remask_delta is not None:
        label += f" + residual-drop remasking (delta {sampler.remask_delta:g})"
    return label


def resolved_rows(checkpoint: str, variants: list[tuple[str, dict]]) -> list[tuple[str, str, dict]]:
    """(label, key, overrides) per variant: the checkpoint's sampler with the row's
    overrides, validated, and labelled by what it resolves to."""
    from envs.evaluate import sampler_with_overrides
    from vla.checkpoint import Checkpoint

    saved = Checkpoint(checkpoint).policy_config.sampler
    rows = []
    for key, over in variants:
        label = describe(sampler_with_overrides(saved, over))
        rows.append((label + (_OWN if not over else ""), key, over))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", required=True, help="masked-diffusion policy checkpoint folder")
    parser.add_argument("--ar-checkpoint", default="", help="autoregressive baseline checkpoint folder")
    parser.add_argument("--episodes", type=int, default=10, help="episodes per task per variant")
    parser.add_argument("--execute-steps", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--suite", default="builtin", help="builtin or a LIBERO suite (libero_object, ...)")
    parser.add_argument("--tasks", default="", help="comma-separated tasks (default: every task of the suite)")
    parser.add_argument(
        "--split",
        default="test",
        choices=["test", "validation"],
        help="validation selects settings (LIBERO: fresh placements, never the official initial states); "
        "test measures the chosen one (eval.split)",
    )
    parser.add_argument("--out", default="runs/ablation")
    parser.add_argument(
        "--offline",
        default="",
        help="a zarr cache: instead of episodes, compare each variant's decoded actions with the cache's "
        "recorded ones on --frames frames (seconds per row; open-loop, a diagnostic, not success)",
    )
    parser.add_argument("--frames", type=int, default=200, help="--offline: frames drawn from the cache")
    parser.add_argument(
        "--prefix-steps",
        type=int,
        default=0,
        help="--offline: give the recorded first N actions as a committed prefix (delayed execution) "
        "and compare the actions after them",
    )
    parser.add_argument(
        "--swap-images",
        action="store_true",
        help="--offline: decode each frame with another frame's camera images (does the decode look at the scene?)",
    )
    parser.add_argument(
        "--conditioning",
        action="store_true",
        help="--offline: what committed slots tell the masked ones (half the chunk given as nothing, the "
        "model's own medians or draws, or the recorded tokens), the ceiling on what a decoding order can gain",
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated name fragments: run just the matching rows "
        "(e.g. 'remasking'; 'autoregressive' with --ar-checkpoint runs only that row)",
    )
    args = parser.parse_args()
    out = Path(args.out)
    if args.conditioning:
        if not args.offline:
            parser.error("--conditioning reads recorded frames: give --offline CACHE")
        conditioning_table(args.checkpoint, args.offline, args.frames, out)
        return
    only = [f.strip() for f in args.only.split(",") if f.strip()]
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    # Row folders are named by the variant's place in VARIANTS, so `--only` never renames them.
    runs, seen = [], set()
    for i, (label, key, over) in enumerate(resolved_rows(args.checkpoint, VARIANTS)):
        if only and not any(f in label or f in key for f in only):
            continue
        # A row that resolves to an earlier row's sampler (max_prob on a max_prob checkpoint)
        # would run the same episodes again for the same outcomes.
        sampler = label.removesuffix(_OWN)
        if sampler in seen:
            print(f"{label:<45} skipped: the same sampler as an earlier row", flush=True)
            continue
        seen.add(sampler)
        runs.append((label, args.checkpoint, over, f"variant_{i:02d}"))
    if args.ar_checkpoint:
        runs.append(("autoregressive baseline (KV cache)", args.ar_checkpoint, {}, "autoregressive"))
    if args.offline:
        offline_table(runs, args.offline, args.frames, args.execute_steps, out, args.prefix_steps, args.swap_images)
        return
    if args.prefix_steps or args.swap_images:
        parser.error("--prefix-steps and --swap-images go with --offline (closed loop: vla-eval eval.delay_steps=N)")
    rows = []
    for name, ckpt, over, folder in runs:
        cfg = EvalConfig(
            episodes_per_task=args.episodes,
            execute_steps=args.execute_steps,
            workers=args.workers,
            videos_per_task=0,
            sampler_overrides=over,
            tasks=tasks,
            suite=args.suite,
            split=args.split,
        )
        res = _saved(out / folder, ckpt, cfg)
        if res is None:
            res = evaluate(ckpt, cfg, out / folder, desc=name)
        else:
            print(f"{name:<45} reused {out / folder / 'results.json'}", flush=True)
        rows.append(
            {
                "variant": name,
                "overrides": over,
                **{k: res[k] for k in ("mean_success", "per_task_success")},
                "outcomes": episode_outcomes(res),
            }
        )
        print(f"{name:<45} {100 * res['mean_success']:5.1f}%", flush=True)
    tasks = list(rows[0]["per_task_success"])
    n = args.episodes * len(tasks)
    if args.split == "validation":
        same = "validation split, same fresh placements"
    else:
        same = "same initial states" if args.suite != "builtin" else "same seeds"
    lines = [
        f"| decoding ({n} episodes each, {same}) | mean | s.e. | vs first row (paired s.e.) | "
        + " | ".join(tasks)
        + " |",
        "| --- | --- | --- | --- | " + " | ".join("---" for _ in tasks) + " |",
    ]
    for row in rows:
        p = row["mean_success"]
        row["standard_error"] = (p * (1 - p) / n) ** 0.5  # binomial, over all episodes of the row
        row["vs_first"] = paired_difference(row["outcomes"], rows[0]["outcomes"])
        d = row["vs_first"]
        vs = "" if row is rows[0] else f"{100 * d['difference']:+.1f} ({100 * d['standard_error']:.1f})"
        per = " | ".join(f"{100 * row['per_task_success'][t]:.0f}" for t in tasks)
        lines.append(f"| {row['variant']} | {100 * p:.1f} | {100 * row['standard_error']:.1f} | {vs} | {per} |")
    table = "\n".join(lines)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "ablation.json", json.dumps(rows, indent=2))
    atomic_write_text(out / "ablation.md", table + "\n")
    print(table)


def _saved(folder: Path, checkpoint: str, cfg: EvalConfig) -> dict | None:
    """A finished row in `folder` run with the same weights and settings, else None."""
    path = folder / "results.json"
    if not path.is_file():
        return None
    res = json.loads(path.read_text())
    # Worker count does not change outcomes; initial states and render mode are resolved from
    # the same settings and the checkpoint when the row runs.
    skip = ("workers", "init_states", "render_mode")
    ran = {k: v for k, v in res["config"].items() if k not in skip}
    wanted = {k: v for k, v in json.loads(json.dumps(cfg.__dict__)).items() if k not in skip}
    if "weights_sha256" in res:  # the same weights wherever they are (results name them since 2026-12-05)
        from vla.checkpoint import Checkpoint

        same = res["weights_sha256"] == Checkpoint(checkpoint).sha256("model.safetensors")
    else:
        same = res["checkpoint"] == str(checkpoint)
    return res if same and ran == wanted else None


def _draw_frames(cache, span: int, frames: int, rng):
    """Up to `frames` sorted frames of `cache` whose next `span` recorded actions lie in their own
    episode, drawn with `rng`, and each frame's episode index."""
    import numpy as np

    starts, ends = cache.episode_starts, cache.episode_ends
    valid = np.concatenate([np.arange(a, b - span + 1) for a, b in zip(starts, ends, strict=True) if b - a >= span])
    picks = np.sort(rng.choice(valid, min(frames, len(valid)), replace=False))
    return picks, np.searchsorted(ends, picks, side="right")


def offline_action_error(
    checkpoint: str,
    overrides: dict,
    cache,
    frames: int,
    horizon: int,
    seed: int = 0,
    prefix_steps: int = 0,
    swap_images: bool = False,
) -> dict[str, float]:
    """Decode at `frames` frames of `cache` (drawn with `seed`, each decode seeded by its index)
    and compare the chunk's first `horizon` actions (0: all) with the recorded ones: mean absolute error
    of the arm dimensions (all but the last) and of all, the arm actions' magnitude against the
    recorded ones', and how often the gripper (the last dimension) has the recorded sign.

    prefix_steps = d: the recorded first d actions are given as a committed prefix (what delayed
    execution hands the decoder) and the `horizon` actions after them are compared. swap_images:
    every frame is decoded with the camera images of another drawn frame (state, instruction and
    prefix its own), so the error's rise says how much the decode looks at the scene rather than
    continuing the prefix (the prefix shortcut)."""
    import numpy as np

    from envs.evaluate import sampler_with_overrides
    from vla.model import check_compatible
    from vla.policy import VLAPolicy

    policy = VLAPolicy.load(checkpoint)
    policy.with_sampler(sampler_with_overrides(policy.cfg.sampler, overrides))
    check_compatible(policy.cfg, cache.action.shape[1], cache.state.shape[1], cache.cameras)
    chunk = policy.cfg.chunk_size
    if not 0 <= prefix_steps < chunk:
        raise ValueError(f"prefix_steps must be in [0, {chunk}) for the policy's chunk of {chunk}, got {prefix_steps}")
    horizon = horizon or chunk - prefix_steps  # 0: the whole chunk, as eval.execute_steps=0 executes
    if prefix_steps + horizon > chunk:
        raise ValueError(f"horizon {horizon} after {prefix_steps} prefix steps exceeds the policy's chunk of {chunk}")
    # Frames whose next prefix_steps + horizon recorded actions lie in the same episode.
    span = prefix_steps + horizon
    picks, episode = _draw_frames(cache, span, frames, np.random.default_rng(seed))
    # The images of a frame drawn from another episode wherever the recording has more than one.
    seen = np.roll(picks, len(picks) // 2) if swap_images else picks
    predicted, recorded, unswapped = [], [], []
    for j, (i, ep) in enumerate(zip(picks, episode, strict=True)):
        # Clipped to the tokenizer's range, as training targets are: recorded actions past its
        # quantile bounds are the edge bins' to the decoder.
        given = np.clip(cache.action[i : i + prefix_steps], *policy.action_bounds) if prefix_steps else None
        state, instruction = cache.state[i], cache.tasks[int(cache.task_index[ep])]
        targets = ([(i, unswapped)] if swap_images else []) + [(seen[j], predicted)]
        for frame, into in targets:
            policy.reset(j)  # the same draws for the frame's own images and the swapped ones
            images = {c: np.asarray(cache.images[c][frame]) for c in policy.cfg.cameras}
            obs = {"images": images, "state": state, "instruction": instruction}
            into.append(policy.infer(obs, fixed_actions=given)[prefix_steps:span])
        recorded.append(cache.action[i + prefix_steps : i + span])
    p, r = np.stack(predicted), np.stack(recorded)
    # With the decode's random draws fixed, the share of action values that another frame's
    # images change at all: near 0 means the decode does not look at the scene.
    changed = {"changed_by_swap": float((np.abs(p - np.stack(unswapped)) > 1e-6).mean())} if swap_images else {}
    return {
        **changed,
        "frames": len(picks),
        "arm_l1": float(np.abs(p[..., :-1] - r[..., :-1]).mean()),
        "all_l1": float(np.abs(p - r).mean()),
        "arm_magnitude_ratio": float(np.abs(p[..., :-1]).mean() / max(np.abs(r[..., :-1]).mean(), 1e-12)),
        "gripper_sign_agreement": float((np.sign(p[..., -1]) == np.sign(r[..., -1])).mean()),
    }


GIVEN = ("nothing (one pass)", "own one-pass medians", "own one-pass draws", "recorded tokens (oracle)")
SPLITS = ("random half", "surer half by spread")


def offline_conditioning(checkpoint: str, cache, frames: int, seed: int = 0) -> dict:
    """What committed slots tell the masked ones: the ceiling on what a decoding order can gain.

    At each of `frames` frames of `cache` half of the chunk's slots is given and the other half
    read off one decoder pass, as a decode's later passes read them. Which half: a random one (what
    random order commits first) or the surer half by the `spread` rule (what easy-first commits
    first). What the given half holds, row by row: nothing (the one pass), the model's own
    one-pass medians (commits at temperature 0), draws from its one-pass distributions (commits
    at temperature 1), or the recorded tokens (an oracle: the information the chunk's joint
    holds). The hidden half's median bins are decoded to actions and scored against the recorded
    arm actions (L1 over the arm dimensions), with the distance in bins and the negative log
    probability of the recorded bin. An order gains only by what its commits tell the other
    slots: where the own-median and own-draw rows do not fall below the first row of their split,
    no order beats another in expectation, and the oracle row says what a decode told the right
    values could gain. Differences are paired by frame (the same frames and slots in every row of
    a split), standard errors over frames."""
    import numpy as np
    import torch

    from vla.model import check_compatible
    from vla.policy import VLAPolicy
    from vla.sampling import CONFIDENCE_RULES, checked_logits, quantile_bin

    policy = VLAPolicy.load(checkpoint)
    model = policy.model
    if model.autoregressive:
        raise ValueError(f"{checkpoint}: --conditioning reads a masked-diffusion decoder; this one is autoregressive")
    check_compatible(policy.cfg, cache.action.shape[1], cache.state.shape[1], cache.cameras)
    chunk, dims = policy.cfg.chunk_size, policy.cfg.action_dim
    n, mask_id = model.decoder.num_slots, model.decoder.mask_id
    rng = np.random.default_rng(seed)
    picks, episode = _draw_frames(cache, chunk, frames, rng)
    # Slots are time-major (step t, dimension d at t * dims + d); the last dimension is the gripper.
    arm = torch.tensor([d < dims - 1 for _ in range(chunk) for d in range(dims)])
    scores = {(split, given): {"l1": [], "bins": [], "nll": []} for split in SPLITS for given in GIVEN}
    generator = torch.Generator().manual_seed(seed)
    spread = CONFIDENCE_RULES["spread"]

    def probs_for(tokens: torch.Tensor, kv: dict) -> torch.Tensor:  # (n,) ids -> (n, bins), one decoder pass
        logits = checked_logits(model.decoder(tokens[None], kv), "conditioning pass")[0]
        return torch.softmax(logits.double(), -1)

    def decode_slots(bins: torch.Tensor) -> torch.Tensor:  # (n,) bins -> (n,) action values
        return model.action_tokenizer.decode(bins.reshape(1, chunk, dims)).reshape(n)

    with torch.no_grad():
        for i, ep in zip(picks, episode, strict=True):
            images = {c: np.asarray(cache.images[c][i]) for c in policy.cfg.cameras}
            obs = {"images": images, "state": cache.state[i], "instruction": cache.tasks[int(cache.task_index[ep])]}
            inputs, _ = policy.preprocess(obs)
            kv = model.chunk_cache(inputs)
            clipped = np.clip(cache.action[i : i + chunk], *policy.action_bounds)  # as training targets are
            truth = model.action_tokenizer.encode(torch.as_tensor(clipped, dtype=torch.float32)).reshape(n)
            recorded = torch.as_tensor(cache.action[i : i + chunk], dtype=torch.float32).reshape(n)

            masked = torch.full((n,), mask_id, dtype=torch.long)
            p0 = probs_for(masked, kv)
            fills = (None, quantile_bin(p0, 0.5), quantile_bin(p0, torch.rand(n, generator=generator).double()), truth)
            surer = torch.zeros(n, dtype=torch.bool)
            surer[torch.argsort(spread(torch.log(p0.clamp_min(1e-300)), None, None), descending=True)[: n // 2]] = True
            for split, given in zip(SPLITS, (torch.from_numpy(rng.permutation(n) < n // 2), surer), strict=True):
                scored = ~given & arm
                for name, fill in zip(GIVEN, fills, strict=True):
                    p = p0 if fill is None else probs_for(torch.where(given, fill, masked), kv)
                    guess = quantile_bin(p, 0.5)
                    into = scores[(split, name)]
                    into["l1"].append(float((decode_slots(guess) - recorded).abs()[scored].mean()))
                    into["bins"].append(float((guess - truth).abs()[scored].double().mean()))
                    into["nll"].append(
                        float(-torch.log(p.gather(-1, truth[:, None])[:, 0].clamp_min(1e-12))[scored].mean())
                    )

    rows = []
    for split in SPLITS:
        base = np.array(scores[(split, GIVEN[0])]["l1"])
        for name in GIVEN:
            got = scores[(split, name)]
            d = np.array(got["l1"]) - base
            rows.append(
                {
                    "scored": f"the other half of a {split}",
                    "split": split,
                    "given": name,
                    "arm_l1": float(np.mean(got["l1"])),
                    "vs_nothing": float(d.mean()),
                    "vs_nothing_se": float(d.std(ddof=1) / len(d) ** 0.5) if len(d) > 1 else 0.0,
                    "bins_off": float(np.mean(got["bins"])),
                    "nll": float(np.mean(got["nll"])),
                }
            )
    return {"frames": len(picks), "rows": rows}


def conditioning_table(checkpoint: str, cache_path: str, frames: int, out: Path) -> dict:
    from data.cache import ZarrCache

    res = offline_conditioning(checkpoint, ZarrCache(cache_path, in_memory=False), frames)
    lines = [
        f"| half of the slots given ({res['frames']} frames of {cache_path}) | what it holds | arm L1 of the other "
        "half | vs nothing given (s.e. over frames) | bins off | -log p(recorded bin) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['split']} | {r['given']} | {r['arm_l1']:.4f} | {r['vs_nothing']:+.4f} ({r['vs_nothing_se']:.4f}) | "
        f"{r['bins_off']:.2f} | {r['nll']:.3f} |"
        for r in res["rows"]
    ]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "conditioning.json", json.dumps(res, indent=2))
    atomic_write_text(out / "conditioning.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return res


def offline_table(
    runs: list, cache_path: str, frames: int, horizon: int, out: Path, prefix_steps: int = 0, swap_images: bool = False
) -> list[dict]:
    from data.cache import ZarrCache

    cache = ZarrCache(cache_path, in_memory=False)
    rows = []
    for name, ckpt, over, _ in runs:
        err = offline_action_error(
            ckpt, over, cache, frames, horizon, prefix_steps=prefix_steps, swap_images=swap_images
        )
        r = {"variant": name, "overrides": over, "prefix_steps": prefix_steps, "swap_images": swap_images, **err}
        rows.append(r)
        print(f"{name:<45} arm L1 {r['arm_l1']:.4f}", flush=True)
    swapped = "changed_by_swap" in rows[0]
    which = f"first {horizon or 'all'} actions"
    if prefix_steps:
        which = f"{horizon or 'all'} actions after the recorded first {prefix_steps} given"
    which += ", images of another frame" if swap_images else ""
    lines = [
        f"| decoding ({rows[0]['frames']} frames of {cache_path}, {which}) | arm L1 | all L1 | "
        "arm magnitude / recorded | gripper sign agrees |" + (" action values the swap changes |" if swapped else ""),
        "| --- | --- | --- | --- | --- |" + (" --- |" if swapped else ""),
    ]
    lines += [
        f"| {r['variant']} | {r['arm_l1']:.4f} | {r['all_l1']:.4f} | {r['arm_magnitude_ratio']:.3f} | "
        f"{r['gripper_sign_agreement']:.3f} |" + (f" {r['changed_by_swap']:.3f} |" if swapped else "")
        for r in rows
    ]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "offline.json", json.dumps(rows, indent=2))
    atomic_write_text(out / "offline.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return rows


if __name__ == "__main__":
    main()
