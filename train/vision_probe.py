"""`vla-probe-vision`: can a backbone locate, from its images, what a demonstration reaches for?

A policy trained from random initialisation on scripted demonstrations can succeed while barely
looking (docs/libero.md: another frame's images change 1-3% of its actions), and then fails as
soon as objects sit elsewhere. This probe isolates the seeing: for each backbone variant it
trains a fresh prefix (the backbone, the state token) and the goal head (`vla.model.GoalHead`)
on one target only, the hand's offset to where the demonstration next closes or opens the
gripper (`data.dataset.goal_targets`, events=1), on the training episodes of a zarr cache, and
measures on held-out episodes:

- ``err``: the mean distance (cm) of the prediction from the target, own images;
- ``err_swapped``: the same model given the images of another episode of the same task (held
  out or not), at the same point of its episode (state and instruction its own): what it can do without
  seeing where this scene's objects are;
- ``seeing``: err_swapped - err, per frame, with its standard error: what the images are worth.

The policy's configuration (cameras, state, embodiment, crop, image size) is that of a saved
checkpoint (`--like`); each `--variant NAME:key=value,...` overrides fields of its
`policy.backbone` (for example ``conv16:vision_stem=conv`` or ``p8:patch_size=8``). Every
variant trains on the same batches (same seeds) and is measured on the same frames. Writes
``results.json`` and prints a markdown table; a variant already in ``--out`` with the same
settings is reused.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)


def parse_variant(text: str) -> tuple[str, dict]:
    """ "name:key=value,key=value" -> (name, {key: value}); values are parsed as JSON when they can be."""
    name, _, body = text.partition(":")
    if not name:
        raise ValueError(f"--variant {text!r}: give it a name, as NAME:key=value,...")
    overrides = {}
    for item in filter(None, body.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"--variant {text!r}: {item!r} is not key=value")
        try:
            overrides[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key.strip()] = value.strip()
    return name, overrides


def split_episodes(num_episodes: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded permutation of the episodes -> (training episodes, held-out episodes), both non-empty."""
    if num_episodes < 2:
        raise ValueError(f"the cache has {num_episodes} episode(s); the probe needs two or more to hold some out")
    order = np.random.default_rng(seed).permutation(num_episodes)
    n_out = min(num_episodes - 1, max(1, round(holdout * num_episodes)))
    return np.sort(order[n_out:]), np.sort(order[:n_out])


def frames_of(episodes: np.ndarray, starts: np.ndarray, ends: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Frame indices of `episodes` whose next gripper event exists."""
    idx = np.concatenate([np.arange(starts[e], ends[e]) for e in episodes])
    return idx[valid[idx, 0]]


def _policy_config(cfg, overrides: dict):
    """The checkpoint's policy config `cfg` with `overrides` on its backbone and the goal head on."""
    fields = {f.name for f in dataclasses.fields(cfg.backbone)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"policy.backbone has no fields {unknown}; it has {sorted(fields)}")
    backbone = dataclasses.replace(cfg.backbone, **overrides)
    # The goal head alone: one event ahead, in the same units as training uses.
    return dataclasses.replace(cfg, backbone=backbone, goal_aux_weight=1.0, goal_aux_events=1)


def swap_partners(
    frames: np.ndarray, episodes: np.ndarray, starts: np.ndarray, ends: np.ndarray, task_index: np.ndarray, seed: int
) -> np.ndarray:
    """For each frame, a frame of another episode among `episodes` with the same task, as far
    into its episode as the frame is (clipped to its length): same instruction, same phase,
    other placements. A frame whose task has no other episode gets -1."""
    rng = np.random.default_rng(seed)
    ep_of = np.searchsorted(ends, frames, side="right")
    out = np.full(len(frames), -1, dtype=np.int64)
    for k, (f, e) in enumerate(zip(frames, ep_of, strict=True)):
        others = episodes[(task_index[episodes] == task_index[e]) & (episodes != e)]
        if len(others):
            o = int(rng.choice(others))
            out[k] = starts[o] + min(int(f - starts[e]), int(ends[o] - starts[o]) - 1)
    return out


def probe_variant(args, cfg, name: str, cache, dataset, train_frames, eval_frames, partners) -> dict:
    """Train `cfg` (a `_policy_config`) on `train_frames`, measure it on `eval_frames`: the row's figures."""
    from data.dataset import Collate, LoaderConfig
    from vla.model import VLAModel

    torch.manual_seed(args.seed)
    model = VLAModel(cfg, cache.stats)
    model.decoder = None  # the action decoder takes no part; nothing may train it by accident
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 100) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps)))
    )
    collate_train = Collate(LoaderConfig(), model.processor, train=True)
    collate_eval = Collate(LoaderConfig(), model.processor, train=False)
    rng = np.random.default_rng(args.seed)
    model.train()
    start = time.perf_counter()
    losses = []
    for step in range(args.steps):
        idx = rng.choice(train_frames, args.batch, replace=False)
        batch = collate_train([dataset[(int(i), args.seed * 100_003 + step)] for i in idx])
        prefix, mask = model.encode_prefix(batch)
        loss, err = model._goal_loss(prefix, mask, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"variant {name}: non-finite goal loss at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(float(err))
        if args.progress and (step + 1) % args.progress == 0:
            log.info("%s step %d: training err %.2f cm", name, step + 1, 100 * np.mean(losses[-args.progress :]))
    seconds = time.perf_counter() - start

    model.eval()
    own, swapped = [], []
    with torch.no_grad():
        for lo in range(0, len(eval_frames), args.batch):
            idx, other = eval_frames[lo : lo + args.batch], partners[lo : lo + args.batch]
            samples = [dataset[int(i)] for i in idx]
            target = torch.from_numpy(np.stack([s["goal"][0] for s in samples]))  # (B, 3)
            moved = [{**s, "images": dataset[int(o)]["images"]} for s, o in zip(samples, other, strict=True)]
            for out, samples_in in ((own, samples), (swapped, moved)):
                batch = collate_eval(samples_in)
                pred = model.goal_head(*model.encode_prefix(batch))[:, 0] * cfg.goal_aux_scale
                out.append((pred - target).norm(dim=-1))
    own_t, swapped_t = torch.cat(own).double(), torch.cat(swapped).double()
    diff = swapped_t - own_t
    return {
        "parameters": sum(p.numel() for p in params),
        "seconds_per_step": seconds / args.steps,
        "train_err_cm": 100 * float(np.mean(losses[-max(1, args.steps // 10) :])),
        "err_cm": 100 * float(own_t.mean()),
        "err_swapped_cm": 100 * float(swapped_t.mean()),
        "seeing_cm": 100 * float(diff.mean()),
        "seeing_se_cm": 100 * float(diff.std() / math.sqrt(len(diff))),
        "frames": len(own_t),
    }


def _settings(args) -> dict:
    keys = ("like", "cache", "steps", "batch", "lr", "seed", "holdout", "eval_frames")
    return {**{k: getattr(args, k) for k in keys}, "swap": "same task, other episode, same phase"}


def table(rows: list[dict]) -> str:
    lines = [
        "| variant | backbone overrides | parameters | s/step | train err (cm) | held-out err (cm) | "
        "other images (cm) | what the images are worth (cm, s.e.) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        over = ", ".join(f"{k}={v}" for k, v in r["overrides"].items()) or "(the checkpoint's)"
        lines.append(
            f"| {r['name']} | {over} | {r['parameters']:,} | {r['seconds_per_step']:.3f} | {r['train_err_cm']:.2f} | "
            f"{r['err_cm']:.2f} | {r['err_swapped_cm']:.2f} | {r['seeing_cm']:.2f} ({r['seeing_se_cm']:.2f}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from data.cache import ZarrCache
    from data.dataset import ChunkDataset, GoalTargets
    from vla.checkpoint import saved_policy_config
    from vla.configs import atomic_write_text
    from vla.model import check_compatible

    p = argparse.ArgumentParser(prog="vla-probe-vision", description=__doc__.split("\n\n")[0])
    p.add_argument("--like", required=True, help="a checkpoint whose policy config the variants start from")
    p.add_argument("--cache", required=True, help="zarr cache of demonstrations (end-effector positions named)")
    p.add_argument("--variant", action="append", default=[], help="NAME:key=value,... over policy.backbone")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--holdout", type=float, default=0.2, help="share of episodes held out for measuring")
    p.add_argument("--eval-frames", type=int, default=1024, help="held-out frames measured (evenly spaced)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--progress", type=int, default=250, help="log the training error every N steps (0: never)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    for key in ("steps", "batch", "eval_frames"):
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    if not (0 < args.holdout < 1 and math.isfinite(args.lr) and args.lr > 0):
        p.error(f"--holdout must be in (0, 1) and --lr > 0, got {args.holdout} and {args.lr}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = [parse_variant(v) for v in args.variant] or [("checkpoint", {})]
    names = [n for n, _ in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"--variant names repeat: {names}")
    base = saved_policy_config(args.like)
    configs = {name: _policy_config(base, over) for name, over in variants}  # all checked before any trains

    cache = ZarrCache(args.cache)
    check_compatible(base, cache.action.shape[1], cache.state.shape[1], cache.cameras)
    position_dims, gripper_dim = base.goal_dims()
    dataset = ChunkDataset(cache, 1, list(base.cameras), goal=GoalTargets(position_dims, gripper_dim, 1))
    train_eps, eval_eps = split_episodes(cache.num_episodes, args.holdout, args.seed)
    train_frames = frames_of(train_eps, cache.episode_starts, cache.episode_ends, dataset.goal_valid)
    if len(train_frames) < args.batch:
        raise ValueError(
            f"{args.cache}: {len(train_frames)} training frames with a gripper event ahead, fewer than --batch "
            f"{args.batch}; lower --batch or use a larger recording"
        )
    eval_all = frames_of(eval_eps, cache.episode_starts, cache.episode_ends, dataset.goal_valid)
    if not len(eval_all):
        raise ValueError(
            f"{args.cache}: the held-out episodes have no frame with a gripper event ahead; raise --holdout"
        )
    eval_frames = eval_all[np.linspace(0, len(eval_all) - 1, min(args.eval_frames, len(eval_all))).astype(int)]
    partners = swap_partners(
        eval_frames,
        np.arange(cache.num_episodes),
        cache.episode_starts,
        cache.episode_ends,
        cache.task_index,
        args.seed,
    )
    if (partners < 0).any():
        tasks = sorted(
            {
                cache.tasks[cache.task_index[e]]
                for e in np.searchsorted(cache.episode_ends, eval_frames[partners < 0], side="right")
            }
        )
        raise ValueError(
            f"tasks with one episode only, so no other placement to swap in: {tasks}; record more episodes per task"
        )
    log.info(
        "%d training episodes (%d frames), %d held out (%d frames measured)",
        len(train_eps),
        len(train_frames),
        len(eval_eps),
        len(eval_frames),
    )

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    done = {r["name"]: r for r in json.loads(path.read_text())} if path.exists() else {}
    rows = []
    for name, overrides in variants:
        old = done.get(name)
        if old and old["overrides"] == overrides and old["settings"] == _settings(args):
            log.info("%s: reusing %s", name, path)
            rows.append(old)
            continue
        measured = probe_variant(args, configs[name], name, cache, dataset, train_frames, eval_frames, partners)
        rows.append({"name": name, "overrides": overrides, "settings": _settings(args), **measured})
        done[name] = rows[-1]
        atomic_write_text(path, json.dumps(list(done.values()), indent=2))
        log.info("%s: held-out err %.2f cm", name, rows[-1]["err_cm"])
    print(table(rows))


if __name__ == "__main__":
    main()
