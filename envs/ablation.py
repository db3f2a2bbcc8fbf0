"""`vla-ablate`: does the decoding method matter? Success per decoding variant, same seeds.

Evaluates one masked-diffusion checkpoint under each sampler variant (confidence order,
number of steps, one-shot, temperature, secondary remasking) and, optionally, an
autoregressive checkpoint trained the same way; prints a markdown table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from envs.evaluate import EvalConfig, evaluate
from vla.configs import atomic_write_text

VARIANTS: list[tuple[str, dict]] = [
    ("max_prob, T=12 (default)", {}),
    ("margin, T=12", {"confidence": "margin"}),
    ("sampled_prob, T=12", {"confidence": "sampled_prob"}),
    ("random order, T=12", {"confidence": "random"}),
    ("one-shot parallel, T=1", {"steps": 1}),
    ("max_prob, T=2", {"steps": 2}),
    ("max_prob, T=4", {"steps": 4}),
    ("max_prob, T=8", {"steps": 8}),
    ("max_prob, T=12, hard argmax (no Gumbel)", {"temperature": 0.0}),
    # The autoregressive baseline's order and greediness, with the masked-diffusion model.
    ("left-to-right order, T=56, hard argmax", {"confidence": "left_to_right", "steps": 56, "temperature": 0.0}),
    ("max_prob, T=12 + threshold remasking (eta 0.5)", {"remask_threshold": True}),
    ("max_prob, T=12 + residual-drop remasking (delta 0.3)", {"remask_delta": 0.3}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", required=True, help="masked-diffusion policy checkpoint folder")
    parser.add_argument("--ar-checkpoint", default="", help="autoregressive baseline checkpoint folder")
    parser.add_argument("--episodes", type=int, default=10, help="episodes per task per variant")
    parser.add_argument("--execute-steps", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--suite", default="builtin", help="builtin or a LIBERO suite (libero_object, ...)")
    parser.add_argument("--tasks", default="", help="comma-separated tasks (default: every task of the suite)")
    parser.add_argument("--out", default="runs/ablation")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated name fragments: run just the matching rows "
        "(e.g. 'remasking'; 'autoregressive' with --ar-checkpoint runs only that row)",
    )
    args = parser.parse_args()
    out = Path(args.out)
    only = [f.strip() for f in args.only.split(",") if f.strip()]
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    runs = [(name, args.checkpoint, over) for name, over in VARIANTS if not only or any(f in name for f in only)]
    if args.ar_checkpoint:
        runs.append(("autoregressive baseline (KV cache)", args.ar_checkpoint, {}))
    rows = []
    for i, (name, ckpt, over) in enumerate(runs):
        cfg = EvalConfig(
            episodes_per_task=args.episodes,
            execute_steps=args.execute_steps,
            workers=args.workers,
            videos_per_task=0,
            sampler_overrides=over,
            tasks=tasks,
            suite=args.suite,
        )
        res = evaluate(ckpt, cfg, out / f"variant_{i:02d}", progress=False)
        rows.append({"variant": name, "overrides": over, **{k: res[k] for k in ("mean_success", "per_task_success")}})
        print(f"{name:<45} {100 * res['mean_success']:5.1f}%", flush=True)
    tasks = list(rows[0]["per_task_success"])
    n = args.episodes * len(tasks)
    same = "same initial states" if args.suite != "builtin" else "same seeds"
    lines = [
        f"| decoding ({n} episodes each, {same}) | mean | s.e. | " + " | ".join(tasks) + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in tasks) + " |",
    ]
    for row in rows:
        p = row["mean_success"]
        row["standard_error"] = (p * (1 - p) / n) ** 0.5  # binomial, over all episodes of the row
        per = " | ".join(f"{100 * row['per_task_success'][t]:.0f}" for t in tasks)
        lines.append(f"| {row['variant']} | {100 * p:.1f} | {100 * row['standard_error']:.1f} | {per} |")
    table = "\n".join(lines)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "ablation.json", json.dumps(rows, indent=2))
    atomic_write_text(out / "ablation.md", table + "\n")
    print(table)


if __name__ == "__main__":
    main()
