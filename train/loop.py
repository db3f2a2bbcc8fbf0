"""The training loop: data preparation, AdamW + warm-up/cosine, EMA, accumulation, resumable
checkpoints, tensorboard logging, periodic and final evaluation in simulation.

Plain dataclasses in, no hydra here: `train/hydra_app.py` is the thin entry point. Failure
behaviour: one run per run folder (`train/run_dir.py`); a fresh run refuses a folder that holds
checkpoints; a resume refuses other data; non-finite gradients are skipped up to a limit and
then stop the run without saving; SIGINT/SIGTERM save a checkpoint and stop.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import time
from dataclasses import fields, replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from data.cache import ZarrCache
from data.dataset import ChunkDataset, Collate, GoalTargets, ResumableBatches
from data.source import DataConfig, embodiment_of, prepare_data
from train.checkpointer import Checkpointer
from train.config import TrainConfig
from train.distributed import init_distributed, shard_policy
from train.run_dir import Interrupt, RunLock
from vla.checkpoint import Checkpoint
from vla.configs import recover_dir
from vla.contract import NonFiniteError
from vla.model import PolicyConfig, VLAModel, check_compatible

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------- data
def policy_config_for(cfg: PolicyConfig, cache: ZarrCache, data: DataConfig | None = None) -> PolicyConfig:
    """The policy config with what the checkpoint must say of its data: the frame shapes (its
    camera contract), the embodiment (fields the config leaves empty come from the data source)
    and, for simulated recordings, their rendering mode."""
    shapes = {c: [int(n) for n in cache.images[c].shape[1:3]] for c in cfg.cameras if c in cache.images}
    if cfg.camera_shapes and cfg.camera_shapes != shapes:
        raise ValueError(f"policy.camera_shapes={cfg.camera_shapes} but the data's frames are {shapes}")
    render_mode = data.libero.render_mode if data is not None and data.source == "libero_scripted" else cfg.render_mode
    embodiment = cfg.embodiment
    if data is not None:
        found = embodiment_of(data)
        given = {f.name: getattr(embodiment, f.name) for f in fields(embodiment) if getattr(embodiment, f.name)}
        for name, value in given.items():
            if getattr(found, name) and getattr(found, name) != value:
                log.warning("policy.embodiment.%s=%r overrides the data's %r", name, value, getattr(found, name))
        embodiment = replace(found, **given)
    return replace(cfg, camera_shapes=shapes, render_mode=render_mode, embodiment=embodiment)


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


# --------------------------------------------------------------------------------- train
def train(cfg: TrainConfig) -> dict:
    """Train (or resume) a policy; returns a summary with the checkpoint and eval results.

    A summary with `interrupted` set means SIGINT/SIGTERM stopped the run after saving."""
    device = _device(cfg.device)
    if device.type == "cuda" and cfg.strategy != "none":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    rank, world = init_distributed(cfg.strategy, device)
    run_dir = Path(cfg.run_dir)
    lock = RunLock(run_dir).acquire() if rank == 0 else None
    interrupt = Interrupt()
    try:
        return _train(cfg, device, rank, world, interrupt)
    finally:
        interrupt.restore()
        if lock is not None:
            lock.release()


def _train(cfg: TrainConfig, device: torch.device, rank: int, world: int, interrupt: Interrupt) -> dict:
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    run_dir = Path(cfg.run_dir)
    ckpt = Checkpointer(run_dir, cfg, rank)
    if rank == 0:
        recover_dir(ckpt.dir)
        resuming = ckpt.check_start()
        cache = prepare_data(cfg.data)
        ckpt.trained_on = {
            "cache": str(Path(cache.path).resolve()),
            "episodes": cache.num_episodes,
            "frames": cache.num_frames,
            "tasks": cache.tasks,
            "source": cache.source,
        }
    if world > 1:
        torch.distributed.barrier()
    if rank != 0:
        resuming = cfg.resume and ckpt.latest.exists()  # rank 0 has checked (and restored) latest
        cache = prepare_data(cfg.data)

    if cfg.eval.suite == "libero":  # the LIBERO suite whose tasks the data holds
        from envs.libero.env import suite_for_instructions

        cfg = replace(cfg, eval=replace(cfg.eval, suite=suite_for_instructions(cache.tasks)))
        ckpt.cfg = cfg
        log.info("evaluating on %s, the LIBERO suite these demonstrations come from", cfg.eval.suite)
    policy_cfg = policy_config_for(cfg.policy, cache, cfg.data)
    policy = VLAModel(policy_cfg, cache.stats).to(device)
    check_compatible(policy.cfg, cache.action.shape[1], cache.state.shape[1], cache.cameras)
    goal = None
    if policy_cfg.goal_aux_weight > 0:
        position_dims, gripper_dim = policy_cfg.goal_dims()
        goal = GoalTargets(position_dims, gripper_dim, policy_cfg.goal_aux_events)
    dataset = ChunkDataset(
        cache, policy_cfg.chunk_size, policy_cfg.cameras, cfg.data.loader.supervise_past_end, goal=goal
    )
    if resuming:  # weights before sharding; with EMA these are the EMA weights, raw ones follow
        ckpt.check_resumable(policy_cfg, policy)
        ckpt.load_weights(policy)
    model = _wrap(cfg, policy, device, world)
    params = [p for p in policy.parameters() if p.requires_grad]
    # The fused kernel (CPU and CUDA): one kernel per step instead of a loop over tensors.
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg.optim))
    ema = None
    if cfg.optim.ema_decay > 0:
        ema = {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}
    step = ckpt.resume(policy, optimizer, scheduler, ema) if resuming else 0

    loader = _loader(cfg, policy, dataset, step, rank, world)
    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tensorboard"))
    loop = _Loop(cfg, model, policy, params, optimizer, scheduler, ema, ckpt, writer, rank, world, device)
    # Signals are deferred to the end of a step only while training: recording, cache building
    # and the final evaluation stop at once (their outputs are atomic or resumable).
    interrupt.install()
    try:
        step = loop.run(iter(loader), step, interrupt)
    finally:
        interrupt.restore()
        loop.pbar.close()
    if world > 1:  # every rank leaves together once rank 0 has written; the evaluation needs no group
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    if rank == 0:
        step = _saved_step(ckpt, step)
    summary = {"checkpoint": str(ckpt.latest), "step": step, "history": loop.history, "run_dir": str(run_dir)}
    if interrupt.signal:
        summary["interrupted"] = signal.Signals(interrupt.signal).name
    elif rank == 0 and cfg.eval_at_end and step == cfg.optim.steps:
        res = _evaluate(cfg, ckpt, "eval/final")  # latest holds this step: saved in the loop, or resumed at the end
        writer.add_scalar("eval/mean_success", res["mean_success"], step)
        summary["eval"] = res
    if writer is not None:
        writer.close()
    return summary


def _saved_step(ckpt: Checkpointer, step: int) -> int:
    """The step `latest` holds after training reached `step`: skipped non-finite updates are
    never saved, so it can be older, or absent when no update of the run was finite."""
    if not ckpt.latest.exists():
        raise NonFiniteError(
            f"no checkpoint was saved: every step up to {step} was skipped as non-finite "
            f"(optim.max_nonfinite_steps={ckpt.cfg.optim.max_nonfinite_steps}). Lower optim.lr or raise "
            "optim.warmup_steps, and check the data for NaN"
        )
    saved = int(Checkpoint(ckpt.latest).step)
    if saved != step:
        log.warning(
            "the last %d steps were skipped as non-finite: %s holds step %d, not %d",
            step - saved,
            ckpt.latest,
            saved,
            step,
        )
    return saved


def _wrap(cfg: TrainConfig, policy: VLAModel, device: torch.device, world: int):
    if cfg.strategy == "fsdp":
        units = shard_policy(policy, device)
        local = sum(p.to_local().numel() for p in policy.parameters())
        total = sum(p.numel() for p in policy.parameters())
        log.info(
            "FSDP over %d ranks, units %s and the root: %d of %d parameters on this rank",
            world,
            ", ".join(units),
            local,
            total,
        )
        return policy
    if cfg.strategy == "ddp":
        # VLMs carry modules the prefix never uses (e.g. SigLIP's pooling head under LLaVA).
        return torch.nn.parallel.DistributedDataParallel(
            policy, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )
    return policy


def _loader(cfg: TrainConfig, policy: VLAModel, dataset: ChunkDataset, step: int, rank: int, world: int):
    lcfg = cfg.data.loader
    sampler = ResumableBatches(
        len(dataset), lcfg.batch_size, cfg.seed, start=step * cfg.optim.grad_accum, rank=rank, world=world
    )
    # Its own generator: creating the iterator must not draw from the (restored) global RNG.
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=Collate(lcfg, policy.processor, train=True),
        num_workers=lcfg.workers,
        generator=torch.Generator().manual_seed(cfg.seed + step),
        persistent_workers=lcfg.workers > 0,
        prefetch_factor=4 if lcfg.workers > 0 else None,
    )


class _Loop:
    """The optimisation steps, their logging and saving; `run` returns the last step."""

    def __init__(self, cfg, model, policy, params, optimizer, scheduler, ema, ckpt, writer, rank, world, device):
        self.cfg, self.model, self.policy, self.params = cfg, model, policy, params
        self.optimizer, self.scheduler, self.ema, self.ckpt = optimizer, scheduler, ema, ckpt
        self.writer, self.rank, self.world, self.device = writer, rank, world, device
        self.autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
        self.history: list[dict] = []
        self.pbar = tqdm(total=cfg.optim.steps, desc="training", disable=rank != 0)
        self.nonfinite = 0  # consecutive skipped steps

    def run(self, batches, step: int, interrupt: Interrupt) -> int:
        cfg = self.cfg
        self.pbar.update(step)
        self.model.train()
        self._window = (time.perf_counter(), 0.0, 0)  # start, data wait, samples
        start_step = step
        while step < cfg.optim.steps:
            batch, metrics = self._step(batches, step)
            step += 1
            self.pbar.update(1)
            if step % cfg.log_every == 0 or step == cfg.optim.steps:
                self._log(step, batch, metrics)
            interrupted = interrupt.agreed(self.world, self.device)
            stopping = interrupted or (cfg.stop_after > 0 and step - start_step >= cfg.stop_after)
            evaluating = cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.optim.steps and not stopping
            saving = step % cfg.save_every == 0 or step == cfg.optim.steps or stopping or evaluating
            if saving and self.nonfinite:
                log.warning("step %d: not saving after a skipped update; %s stays as it was", step, self.ckpt.latest)
            elif saving:
                self.ckpt.save(
                    self.policy, step, self.optimizer, self.scheduler, self.ema, periodic=step % cfg.save_every == 0
                )
            if interrupted and self.rank == 0:
                log.warning(
                    "stopped at step %d; checkpoint saved to %s. Re-run the same command to resume",
                    step,
                    self.ckpt.latest,
                )
            if stopping:
                break
            if self.rank == 0 and evaluating:  # from the checkpoint just written; other ranks wait at the next step
                res = _evaluate(cfg, self.ckpt, f"eval/step_{step:07d}")
                self.writer.add_scalar("eval/mean_success", res["mean_success"], step)
        return step

    def _step(self, batches, step: int) -> tuple[dict, dict]:
        cfg = self.cfg
        start, wait, samples = self._window
        for micro in range(cfg.optim.grad_accum):
            t0 = time.perf_counter()
            batch = next(batches)
            wait += time.perf_counter() - t0
            # DDP all-reduces once per step, on the last micro-batch. FSDP reduce-scatters every
            # one: skipping would keep whole gradients on each rank, the memory FSDP is there to save.
            last = micro == cfg.optim.grad_accum - 1
            sync = contextlib.nullcontext() if last or cfg.strategy != "ddp" else self.model.no_sync()
            with sync:
                with self.autocast:
                    loss, metrics = self.model(batch)
                (loss / cfg.optim.grad_accum).backward()
            samples += len(batch["instruction"]) * self.world
        self._window = (start, wait, samples)
        # The global norm (after the gradient all-reduce) is the same on every rank, so every rank
        # takes the same decision; clipping at 0 means none (max_norm=inf scales by exactly 1).
        norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.optim.grad_clip or math.inf)
        norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        # Alone, the loss decides too (under DDP/FSDP a rank's own loss could disagree with others').
        if math.isfinite(norm) and (self.world > 1 or math.isfinite(float(metrics["loss"]))):
            self.nonfinite = 0
            self.optimizer.step()
        else:
            self._skip(step, float(metrics["loss"]), norm)
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None and self.nonfinite == 0:
            with torch.no_grad():
                for n, p in self.policy.named_parameters():
                    if n in self.ema:
                        self.ema[n].lerp_(p.detach(), 1 - cfg.optim.ema_decay)
        return batch, metrics

    def _skip(self, step: int, loss: float, norm: float) -> None:
        self.nonfinite += 1
        limit = self.cfg.optim.max_nonfinite_steps
        if self.nonfinite > limit:
            raise NonFiniteError(
                f"training diverged: gradient norm {norm} (loss {loss}) at step {step + 1}, "
                f"{self.nonfinite} steps in a row (optim.max_nonfinite_steps={limit}). Nothing was saved "
                f"after the last good checkpoint ({self.ckpt.latest}); lower optim.lr or raise optim.warmup_steps"
            )
        log.warning(
            "step %d: non-finite gradient norm %s (loss %s): update skipped (%d of %d in a row allowed)",
            step + 1,
            norm,
            loss,
            self.nonfinite,
            limit,
        )

    def _log(self, step: int, batch: dict, metrics: dict) -> None:
        self.policy.eval()
        full_acc = float(self.policy.fully_masked_accuracy(batch))  # on every rank: collective under FSDP
        self.policy.train()
        if self.rank != 0:
            return
        start, wait, samples = self._window
        elapsed = time.perf_counter() - start
        row = {
            "step": step,
            "loss": float(metrics["loss"]),
            "masked_acc": float(metrics["masked_acc"]),
            "fully_masked_acc": full_acc,
            "lr": self.scheduler.get_last_lr()[0],
            "samples_per_s": samples / elapsed,
            "data_wait_frac": wait / elapsed,
            # the goal head's parts, when on (vla.model.VLAModel.compute_loss)
            **{k: float(metrics[k]) for k in ("action_loss", "goal_loss", "goal_err") if k in metrics},
        }
        for k, v in row.items():
            if k != "step":
                self.writer.add_scalar(f"train/{k}", v, step)
        self.history.append(row)
        self.pbar.set_postfix(
            loss=f"{row['loss']:.3f}",
            full_acc=f"{full_acc:.2f}",
            wait=f"{row['data_wait_frac']:.2f}",
            **({"goal_err": f"{row['goal_err']:.3f}"} if "goal_err" in row else {}),
        )
        self._window = (time.perf_counter(), 0.0, 0)


def _evaluate(cfg: TrainConfig, ckpt: Checkpointer, name: str) -> dict:
    from envs.evaluate import evaluate

    return evaluate(ckpt.latest, cfg.eval, Path(cfg.run_dir) / name)
