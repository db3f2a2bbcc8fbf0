"""A run's checkpoints: collective saving under any strategy, and the checks that decide whether
a run folder may be started fresh or resumed.

A resume must continue the run as it was: the same policy config, the same data (normalisation
statistics and action tokenizer bounds) and the same optimiser settings, since the restored
optimiser and scheduler would silently keep their own (LambdaLR restores its base lr).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from train.config import TrainConfig
from train.distributed import (
    full_model_state,
    full_optimizer_state,
    full_tensors,
    load_full_optimizer_state,
    load_full_weights,
)
from train.run_dir import existing_checkpoints
from train.state import load_training_state, save_training_state
from vla.action_tokenizer import ActionTokenizer
from vla.checkpoint import Checkpoint, CheckpointError, save_checkpoint
from vla.configs import atomic_dir, save_json, to_dict
from vla.model import PolicyConfig, VLAModel

log = logging.getLogger(__name__)

# Run settings a resume may change: training longer, and the tolerance for non-finite steps.
RESUMABLE_CHANGES = {"optim.steps", "optim.max_nonfinite_steps"}


class Checkpointer:
    """Checkpoints of the whole policy, whatever the strategy: `save` is collective (every rank
    calls it; FSDP gathers the shards) and rank 0 writes."""

    def __init__(self, run_dir: Path, cfg: TrainConfig, rank: int) -> None:
        self.dir = run_dir / "checkpoints"
        self.cfg = cfg
        self.rank = rank
        self.trained_on: dict | None = None  # the data this run trains on (training_data.json)
        self._opened: Checkpoint | None = None  # latest, as check_resumable verified it

    @property
    def latest(self) -> Path:
        return self.dir / "latest"

    def save(self, model: VLAModel, step: int, optimizer, scheduler, ema: dict | None, periodic: bool) -> None:
        weights = full_model_state(model)  # the weights trained on
        optim_state = full_optimizer_state(model, optimizer)
        raw = None
        if ema is not None:  # the policy checkpoint carries the EMA weights; raw ones go with the state
            raw = {n: weights[n] for n in ema} if self.rank == 0 else None
            weights = {**weights, **full_tensors(ema, self.rank)}
        if self.rank != 0:
            return

        def write_state(folder: Path) -> None:
            save_training_state(folder / "training_state", step, optim_state, scheduler, raw)
            save_json(folder / "train_config.json", to_dict(self.cfg))
            if self.trained_on is not None:  # what was trained on, beside what was asked for
                save_json(folder / "training_data.json", self.trained_on)

        save_checkpoint(model, self.latest, extra={"step": step}, write_more=write_state, state_dict=weights)
        if periodic:  # replaced whole: a step_N folder always holds this run's step N
            with atomic_dir(self.dir / f"step_{step:07d}") as tmp:
                shutil.copytree(self.latest, tmp)

    def check_start(self) -> bool:
        """Whether this run resumes. A folder that holds checkpoints is never started over:
        a fresh run (resume=false) is refused, and so is a resume whose `latest` is missing or
        damaged, naming the newest intact step_N that `resume_from` can continue from."""
        found = existing_checkpoints(self.dir)
        if self.cfg.resume_from and not self.cfg.resume:
            raise ValueError(f"resume_from={self.cfg.resume_from} asks to resume, but resume=false")
        if not found:
            if self.cfg.resume_from:
                raise FileNotFoundError(f"resume_from={self.cfg.resume_from}, but {self.dir} holds no checkpoints")
            return False
        if not self.cfg.resume:
            raise FileExistsError(
                f"resume=false, but {self.dir} holds checkpoints of an earlier run ({', '.join(found[:4])}"
                f"{', ...' if len(found) > 4 else ''}); a fresh run would overwrite them. "
                f"Choose a new run_dir, delete {self.dir}, or set resume=true to continue that run"
            )
        if self.cfg.resume_from:
            self._restore_latest(self._source(self.cfg.resume_from))
            return True
        problem = self._open_latest()
        if problem is None:
            return True
        intact = self._intact_steps()
        hint = (
            f"The newest intact checkpoint is {intact[0]}: add resume_from={intact[0].name} (or resume_from=newest) "
            "to continue from it (latest is replaced by a copy of it), or choose another run_dir"
            if intact
            else f"No step_N folder is intact either: delete {self.dir} to start over, or choose another run_dir"
        )
        raise CheckpointError(
            f"cannot resume: {problem}. A run folder that holds checkpoints ({', '.join(found[:4])}) is never "
            f"started over, as that would overwrite them. {hint}"
        )

    def _open_latest(self) -> str | None:
        """Open (and verify) `latest` once for the whole resume; why it cannot be resumed, or None."""
        self._opened, problem = _open(self.latest)
        return problem

    def _intact_steps(self) -> list[Path]:
        """This run's intact step_N folders, newest first."""
        steps = sorted((p for p in self.dir.glob("step_*") if p.is_dir()), reverse=True)
        return [p for p in steps if _damage(p) is None]

    def _source(self, name: str) -> Path:
        if name == "newest":
            intact = self._intact_steps()
            if not intact:
                raise CheckpointError(f"resume_from=newest, but no step_N folder in {self.dir} is intact")
            return intact[0]
        src = self.dir / name
        if src.parent != self.dir or not src.name.startswith("step_"):
            raise ValueError(f"resume_from={name}: give a step folder of {self.dir} (e.g. step_0001000) or newest")
        problem = _damage(src)
        if problem is not None:
            raise CheckpointError(f"resume_from={name}: {problem}")
        return src

    def _restore_latest(self, src: Path) -> None:
        log.warning("resume_from: %s is replaced by a copy of %s; training continues from there", self.latest, src)
        with atomic_dir(self.latest) as tmp:
            shutil.copytree(src, tmp)

    def check_resumable(self, policy_cfg: PolicyConfig, model: VLAModel) -> None:
        """Refuse to resume under another policy config, other run settings, or on other data."""
        # files verified against the manifest, config migrated (by check_start on rank 0)
        latest = self._opened = self._opened or Checkpoint(self.latest)
        if latest.policy_config != policy_cfg:
            raise ValueError(
                f"{self.latest} was trained with a different policy config; resume=false in a new run_dir "
                f"starts over, or point run_dir elsewhere"
            )
        saved = latest.train_config
        now = to_dict(self.cfg)
        keys = ["seed", "data.loader.batch_size", *(f"optim.{k}" for k in now["optim"])]
        changed = [
            k for k in keys if k not in RESUMABLE_CHANGES and _has(saved, k) and _lookup(saved, k) != _lookup(now, k)
        ]
        if changed:
            detail = ", ".join(f"{k} (saved {_lookup(saved, k)!r}, now {_lookup(now, k)!r})" for k in changed[:4])
            raise ValueError(
                f"cannot resume {self.latest} with other training settings: {detail}. A resumed run continues "
                "as it was configured; restore these settings, or start a new run in another run_dir"
            )
        # Both sides through the same code, so that keys an older version wrote do not count.
        saved_tok = ActionTokenizer.from_state_dict(latest.tokenizer_state()).state_dict()
        changed = _differences("stats", latest.stats(), to_dict_json(model.stats))
        changed += _differences("action_tokenizer", saved_tok, model.action_tokenizer.state_dict())
        if changed:
            raise ValueError(
                f"cannot resume {self.latest} on this data: {', '.join(changed[:6])} differ from the data the run "
                "started with, and the trained weights only mean something under the old ones. Point "
                "data.root at the original data, or start a new run (another run_dir)"
            )

    def load_weights(self, model: VLAModel) -> None:
        """The weights of `latest` as check_resumable verified it (with EMA, the EMA weights)."""
        self._opened.load_weights(model)

    def resume(self, model: VLAModel, optimizer, scheduler, ema: dict | None) -> int:
        """Load the optimiser, scheduler, RNG and (with EMA) raw weights; returns the step."""
        step, optim_state, raw = load_training_state(self._opened.training_state, scheduler)  # check_resumable's
        load_full_optimizer_state(model, optimizer, optim_state)
        if ema is not None:
            missing = sorted(set(ema) - set(raw))
            if missing:
                raise KeyError(
                    f"{self.latest}: raw weights for {missing[:3]} missing; was the run started without EMA?"
                )
            load_full_weights(model, {n: raw[n] for n in ema})
        log.info("resumed from %s at step %d", self.latest, step)
        return step


def _open(path: Path) -> tuple[Checkpoint | None, str | None]:
    """`path` opened for resuming, or None and why it cannot be (missing, incomplete, altered)."""
    if not path.is_dir():
        return None, f"{path} is missing"
    try:
        ckpt = Checkpoint(path)
    except (CheckpointError, OSError) as e:
        return None, str(e)
    if not ckpt.training_state.is_dir():
        return None, f"{path} has no training_state (it was not saved by a training run)"
    return ckpt, None


def _damage(path: Path) -> str | None:
    return _open(path)[1]


def to_dict_json(obj):
    """`obj` as it reads back from JSON (tuples as lists, numpy floats as floats)."""
    import json

    return json.loads(json.dumps(obj))


def _has(tree: dict, dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return True


def _lookup(tree: dict, dotted: str):
    for part in dotted.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def _differences(where: str, saved, current) -> list[str]:
    """Dotted names of the leaves that differ between two JSON trees."""
    if isinstance(saved, dict) and isinstance(current, dict):
        return [
            d
            for k in sorted(saved.keys() | current.keys())
            for d in _differences(f"{where}.{k}", saved.get(k), current.get(k))
        ]
    return [] if saved == current else [where]
