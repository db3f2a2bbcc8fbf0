"""The training loop: data preparation, AdamW + warm-up/cosine, EMA, accumulation, resumable
checkpoints, tensorboard logging, periodic and final evaluation in simulation.

Plain dataclasses in, no hydra here: `train/hydra_app.py` is the thin entry point.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import safetensors.torch
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from data.cache import ZarrCache, build_cache
from data.dataset import ChunkDataset, Collate, ResumableBatches
from train.config import DataConfig, TrainConfig
from train.state import load_training_state, save_training_state
from vla.configs import load_json, save_json
from vla.policy import VLAPolicy

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------- data
def prepare_data(cfg: DataConfig) -> ZarrCache:
    """Return the zarr cache, recording demonstrations and building the cache when missing."""
    cache = Path(cfg.cache_path)
    root = Path(cfg.root)
    if cfg.source == "builtin" and (root.exists() or not cache.exists()):  # a lone cache is used as is
        from data.record import check_recording, record_builtin

        if not (root / "meta" / "info.json").exists():
            log.info("no demonstrations at %s: recording the built-in suite with scripted experts", root)
            record_builtin(cfg.record, root)
        check_recording(cfg.record, root)
    if not cache.exists():
        build_cache(_episodes(cfg), cache)
    return ZarrCache(cache)


def _episodes(cfg: DataConfig):
    from data.readers import LeRobotKeys, LiberoHDF5Keys, read_lerobot, read_libero_hdf5

    if cfg.source in ("builtin", "lerobot"):
        keys = LeRobotKeys(cameras=dict(cfg.camera_keys)) if cfg.camera_keys else LeRobotKeys()
        return read_lerobot(cfg.root, keys)
    files = sorted(Path(cfg.root).glob("*.hdf5"))
    if not files:
        raise FileNotFoundError(f"data.root={cfg.root} holds no LIBERO .hdf5 files")
    keys = LiberoHDF5Keys(cameras=dict(cfg.camera_keys)) if cfg.camera_keys else LiberoHDF5Keys()
    return itertools.chain.from_iterable(read_libero_hdf5(f, keys) for f in files)


# --------------------------------------------------------------------------------- helpers
def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda was asked for but no CUDA device is available; use device=cpu")
    return torch.device(name)


def _lr_lambda(cfg) -> callable:
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def _dist_info(strategy: str) -> tuple[int, int]:
    if strategy == "none":
        return 0, 1
    import torch.distributed as dist

    if "RANK" not in os.environ:
        raise RuntimeError(f"strategy={strategy} needs a distributed launch: torchrun --nproc-per-node N ...")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


class _Checkpointer:
    def __init__(self, run_dir: Path, cfg: TrainConfig) -> None:
        self.dir = run_dir / "checkpoints"
        self.cfg = cfg

    @property
    def latest(self) -> Path:
        return self.dir / "latest"

    def save(self, policy: VLAPolicy, step: int, optimizer, scheduler, ema: dict | None, periodic: bool) -> Path:
        raw = None
        if ema is not None:  # the policy checkpoint carries the EMA weights; raw ones go with the state
            raw = {n: p.detach().clone() for n, p in policy.named_parameters() if n in ema}
            _copy_into(policy, ema)

        def write_state(folder: Path) -> None:
            save_training_state(folder / "training_state", step, optimizer, scheduler, raw)
            save_json(folder / "train_config.json", asdict(self.cfg))

        policy.save(self.latest, extra={"step": step}, write_more=write_state)
        if raw is not None:
            _copy_into(policy, raw)
        if periodic:
            dst = self.dir / f"step_{step:07d}"
            if not dst.exists():
                shutil.copytree(self.latest, dst)
        return self.latest

    def resume(self, policy: VLAPolicy, optimizer, scheduler, ema: dict | None) -> int:
        saved = load_json(self.latest / "config.json")["policy"]
        if saved != asdict(self.cfg.policy):
            raise ValueError(
                f"{self.latest} was trained with a different policy config; resume=false starts over, "
                f"or point run_dir elsewhere"
            )
        safetensors.torch.load_model(policy, str(self.latest / "model.safetensors"))
        raw = {n: torch.zeros_like(p) for n, p in policy.named_parameters() if ema is not None and n in ema}
        step = load_training_state(self.latest / "training_state", optimizer, scheduler, raw or None)
        if ema is not None:  # model.safetensors held the EMA; restore the raw weights to train on
            for n in ema:
                ema[n].copy_(dict(policy.named_parameters())[n].detach())
            _copy_into(policy, raw)
        return step


def _copy_into(policy: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    params = dict(policy.named_parameters())
    with torch.no_grad():
        for n, t in tensors.items():
            params[n].copy_(t)


# --------------------------------------------------------------------------------- train
def train(cfg: TrainConfig) -> dict:
    """Train (or resume) a policy; returns a summary with the checkpoint and eval results."""
    rank, world = _dist_info(cfg.strategy)
    device = _device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    if rank == 0:
        cache = prepare_data(cfg.data)
    if world > 1:
        torch.distributed.barrier()
    if rank != 0:
        cache = prepare_data(cfg.data)

    policy = VLAPolicy(cfg.policy, cache.stats).to(device)
    policy.check_compatible(cache.action.shape[1], cache.state.shape[1], cache.cameras)
    dataset = ChunkDataset(cache, cfg.policy.chunk_size, cfg.policy.cameras, cfg.data.loader.supervise_past_end)
    params = [p for p in policy.parameters() if p.requires_grad]
    # The fused kernel (CPU and CUDA): 1.5 ms per step against 10 for the default loop (1.7M params, 2 cores).
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg.optim))
    ema = None
    if cfg.optim.ema_decay > 0:
        ema = {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}

    ckpt = _Checkpointer(run_dir, cfg)
    step = 0
    if cfg.resume and ckpt.latest.exists():
        step = ckpt.resume(policy, optimizer, scheduler, ema)
        log.info("resumed from %s at step %d", ckpt.latest, step)

    model = policy
    if cfg.strategy == "ddp":
        # VLMs carry modules the prefix never uses (e.g. SigLIP's pooling head under LLaVA).
        model = torch.nn.parallel.DistributedDataParallel(
            policy, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )
    lcfg = cfg.data.loader
    sampler = ResumableBatches(
        len(dataset), lcfg.batch_size, cfg.seed, start=step * cfg.optim.grad_accum, rank=rank, world=world
    )
    collate = Collate(lcfg, cfg.policy.image_size, cfg.policy.crop_area, cfg.policy.rotate_180, train=True)
    # Its own generator: creating the iterator must not draw from the (restored) global RNG.
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=lcfg.workers,
                        generator=torch.Generator().manual_seed(cfg.seed + step),
                        persistent_workers=lcfg.workers > 0, prefetch_factor=4 if lcfg.workers > 0 else None)  # fmt: skip
    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tensorboard"))
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    batches = iter(loader)
    model.train()
    pbar = tqdm(total=cfg.optim.steps, initial=step, desc="training", disable=rank != 0)
    t_window, wait_window, samples_window = time.perf_counter(), 0.0, 0
    history = []
    start_step = step
    while step < cfg.optim.steps:
        for _ in range(cfg.optim.grad_accum):
            t0 = time.perf_counter()
            batch = next(batches)
            wait_window += time.perf_counter() - t0
            with autocast:
                loss, metrics = model(batch)
            (loss / cfg.optim.grad_accum).backward()
            samples_window += len(batch["instruction"]) * world
        torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            with torch.no_grad():
                for n, p in policy.named_parameters():
                    if n in ema:
                        ema[n].lerp_(p.detach(), 1 - cfg.optim.ema_decay)
        step += 1
        pbar.update(1)
        if rank == 0 and (step % cfg.log_every == 0 or step == cfg.optim.steps):
            elapsed = time.perf_counter() - t_window
            policy.eval()
            full_acc = float(policy.fully_masked_accuracy(batch))
            policy.train()
            row = {"step": step, "loss": float(metrics["loss"]), "masked_acc": float(metrics["masked_acc"]),
                   "fully_masked_acc": full_acc, "lr": scheduler.get_last_lr()[0],
                   "samples_per_s": samples_window / elapsed, "data_wait_frac": wait_window / elapsed}  # fmt: skip
            for k, v in row.items():
                if k != "step":
                    writer.add_scalar(f"train/{k}", v, step)
            history.append(row)
            pbar.set_postfix(loss=f"{row['loss']:.3f}", full_acc=f"{full_acc:.2f}", wait=f"{row['data_wait_frac']:.2f}")
            t_window, wait_window, samples_window = time.perf_counter(), 0.0, 0
        stopping = cfg.stop_after > 0 and step - start_step >= cfg.stop_after
        if rank == 0 and (step % cfg.save_every == 0 or step == cfg.optim.steps or stopping):
            ckpt.save(policy, step, optimizer, scheduler, ema, periodic=step % cfg.save_every == 0)
        if stopping:
            break
        if rank == 0 and cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.optim.steps:
            res = _evaluate(cfg, ckpt, policy, step, optimizer, scheduler, ema, f"eval/step_{step:07d}")
            writer.add_scalar("eval/mean_success", res["mean_success"], step)
    pbar.close()
    summary = {"checkpoint": str(ckpt.latest), "step": step, "history": history, "run_dir": str(run_dir)}
    if rank == 0 and cfg.eval_at_end and step == cfg.optim.steps:
        res = _evaluate(cfg, ckpt, policy, step, optimizer, scheduler, ema, "eval/final")
        writer.add_scalar("eval/mean_success", res["mean_success"], step)
        summary["eval"] = res
    if writer is not None:
        writer.close()
    if world > 1:
        torch.distributed.destroy_process_group()
    return summary


def _evaluate(cfg, ckpt, policy, step, optimizer, scheduler, ema, name: str) -> dict:
    from envs.evaluate import evaluate

    if not ckpt.latest.exists() or load_json(ckpt.latest / "config.json").get("step") != step:
        ckpt.save(policy, step, optimizer, scheduler, ema, periodic=False)
    return evaluate(ckpt.latest, cfg.eval, Path(cfg.run_dir) / name)
