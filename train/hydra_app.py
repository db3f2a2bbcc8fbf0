"""Hydra entry points `vla-train` and `vla-eval`: register the typed configs, then hand a plain
dataclass to the library. Everything else in the stack is hydra-free.

    vla-train                                  # the main job: collect -> train -> evaluate
    vla-train experiment=debug                 # seconds, for a smoke test
    vla-train decoder=autoregressive run_dir=runs/ar
    vla-train -m policy.sampler.steps=1,4,12   # a sweep (each job gets its own run_dir)
    torchrun --nproc-per-node 4 -m train.hydra_app strategy=fsdp   # or strategy=ddp
    vla-eval checkpoint=runs/builtin/checkpoints/latest eval.episodes_per_task=50

`vla-eval` evaluates the way the checkpoint's own training run did (its `eval` settings, e.g.
the main job's 4-of-8 chunk execution); `eval.<key>=...` on the command line wins.
"""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass, field, fields
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import OmegaConf

from data.dataset import LoaderConfig
from data.record import RecordConfig
from envs.evaluate import EvalConfig
from train.config import DataConfig, OptimConfig, TrainConfig
from vla.backbone import BackboneConfig

log = logging.getLogger(__name__)

_HYDRA = {
    "run": {"dir": "${run_dir}"},
    "job": {"chdir": False},
    "sweep": {"dir": "multirun", "subdir": "${hydra.job.num}"},
}

EXPERIMENTS = {
    # The main job on the built-in suite, sized for 2 CPU cores and ~30 minutes.
    "builtin": {
        "run_dir": "runs/builtin",
        # 64 px cameras (16 patches each): 4.5 training steps/s on 2 cores instead of 2 at 128 px.
        "data": {"record": {"episodes_per_task": 100, "image_size": 64}, "loader": {"batch_size": 32}},
        "policy": {"backbone": {"image_size": 64}},
        # 8000 steps: 98% / 83% (two seeds; 84% at 5000 steps, seed 1; README); ~21 min at 6-7
        # steps/s, over 30 min on machines that train at 4 steps/s (optim.steps=5000 fits there).
        "optim": {"steps": 8000, "lr": 1e-3, "warmup_steps": 100},
        "save_every": 1000,
        "eval": {"episodes_per_task": 20, "videos_per_task": 1, "execute_steps": 4},
    },
    # Runs in well under a minute: tiny data, tiny model, a few steps, one eval episode.
    "debug": {
        "run_dir": "runs/debug",
        "data": {
            "root": "runs/data/debug",
            "record": {"episodes_per_task": 1, "tasks": ["lift_red", "place_yellow"]},
            "loader": {"batch_size": 8, "workers": 0},
        },
        "policy": {
            "chunk_size": 4,
            "backbone": {"image_size": 64, "layers": 1, "vision_layers": 1},
            "decoder": {"d_model": 64, "layers": 1, "heads": 2},
            "action_tokenizer": {"bins": 32},
            "sampler": {"steps": 4},
        },
        "optim": {"steps": 6, "warmup_steps": 2},
        "save_every": 3,
        "log_every": 2,
        "eval": {"episodes_per_task": 1, "tasks": ["lift_red"], "workers": 1, "videos_per_task": 1},
    },  # fmt: skip
    # LIBERO from a LeRobot-format port with a pretrained backbone (paths must be given).
    "libero": {
        "run_dir": "runs/libero",
        "data": {
            "source": "lerobot",
            "root": "???",
            "camera_keys": {"agentview": "observation.images.image", "wrist": "observation.images.wrist_image"},
        },
        "policy": {
            "rotate_180": True,
            "backbone": {"source": "???", "image_size": 224, "freeze_vision": True, "lora_rank": 32},
        },
        "optim": {"steps": 150000, "lr": 5e-4, "warmup_steps": 1000},
        "eval": {"suite": "libero"},
    },  # fmt: skip
}


@dataclass
class EvalAppConfig:
    checkpoint: str = "???"
    out_dir: str = ""  # empty: <checkpoint>/../../eval/<suite>
    eval: EvalConfig = field(default_factory=EvalConfig)


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    defaults = ["train_schema", {"backbone": "tiny"}, {"decoder": "diffusion"}, "_self_", {"experiment": "builtin"}]
    cs.store(name="vla_train", node={"defaults": defaults, "hydra": _HYDRA})
    cs.store(group="backbone", name="tiny", node=BackboneConfig, package="policy.backbone")
    cs.store(group="backbone", name="pretrained", package="policy.backbone",
             node=BackboneConfig(source="???", freeze_vision=True, lora_rank=16))  # fmt: skip
    for kind in ("diffusion", "autoregressive"):
        cs.store(group="decoder", name=kind, node={"decoder_type": kind}, package="policy")
    cs.store(group="data", name="builtin", node=DataConfig, package="data")
    cs.store(group="data", name="record", node=RecordConfig, package="data.record")
    cs.store(group="loader", name="default", node=LoaderConfig, package="data.loader")
    cs.store(group="optim", name="adamw", node=OptimConfig, package="optim")
    cs.store(group="env", name="builtin", node=EvalConfig, package="eval")
    for name, node in EXPERIMENTS.items():
        cs.store(group="experiment", name=name, node=node, package="_global_")
    cs.store(name="eval_schema", node=EvalAppConfig)
    # Evaluation runs in the caller's folder: log to stdout only, no hydra_app.log left behind.
    cs.store(name="vla_eval", node={"defaults": ["eval_schema", {"override hydra/job_logging": "stdout"}, "_self_"],
                                    "hydra": {"run": {"dir": "."}, "job": {"chdir": False}, "output_subdir": None}})  # fmt: skip


def to_train_config(cfg) -> TrainConfig:
    return OmegaConf.to_object(cfg)


def _train(cfg) -> None:
    from envs.evaluate import format_table
    from train.loop import train

    run_cfg = to_train_config(cfg)
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        run_cfg.run_dir = str(Path(run_cfg.run_dir) / f"job{HydraConfig.get().job.num}")
    summary = train(run_cfg)
    if "interrupted" in summary:  # saved; exit as the signal would have, so schedulers see it
        print(f"\n{summary['interrupted']}: stopped at step {summary['step']}, saved {summary['checkpoint']}; "
              "re-run the same command to resume")  # fmt: skip
        raise SystemExit(128 + signal.Signals[summary["interrupted"]].value)
    print(f"\ncheckpoint:  {summary['checkpoint']}")
    print(f"tensorboard: tensorboard --logdir {Path(summary['run_dir']) / 'tensorboard'}")
    if "eval" in summary:
        res = summary["eval"]
        print(f"videos:      {Path(summary['run_dir']) / 'eval' / 'final' / 'videos'}")
        print(f"results:     {Path(summary['run_dir']) / 'eval' / 'final' / 'results.json'}\n")
        print(format_table(res))


def overridden_eval_keys(overrides: list[str]) -> set[str]:
    """Top-level `eval` fields the command line sets (`eval.x=..`, `+eval.x.y=..`; `eval={..}`: all)."""
    keys = set()
    for o in OverridesParser.create().parse_overrides(overrides):
        path = o.key_or_group.split(".")
        if path[0] == "eval":
            keys |= {f.name for f in fields(EvalConfig)} if len(path) == 1 else {path[1]}
    return keys


def resolve_eval_config(cli: EvalConfig, checkpoint: Path, overridden: set[str]) -> tuple[EvalConfig, dict]:
    """The checkpoint's training-time eval settings, with the fields named on the command line
    taken from `cli`. Returns the config and the inherited settings that differ from `cli`."""
    from vla.configs import from_dict, load_json, to_dict

    path = checkpoint / "train_config.json"
    if not path.is_file():  # a policy saved outside `vla-train`: command line and defaults only
        return cli, {}
    saved = load_json(path).get("eval", {})
    current = to_dict(cli)  # keys an older checkpoint saved but this version lacks are ignored
    merged = {**current, **{k: v for k, v in saved.items() if k in current and k not in overridden}}
    resolved = from_dict(EvalConfig, merged, where=f"{path} eval")
    inherited = {k: v for k, v in to_dict(resolved).items() if v != getattr(cli, k)}
    return resolved, inherited


def _eval(cfg) -> None:
    from envs.evaluate import evaluate, format_table

    app: EvalAppConfig = OmegaConf.to_object(cfg)
    ckpt = Path(app.checkpoint)
    app.eval, inherited = resolve_eval_config(app.eval, ckpt, overridden_eval_keys(HydraConfig.get().overrides.task))
    if inherited:
        shown = ", ".join(f"eval.{k}={v}" for k, v in sorted(inherited.items()))
        log.info("from the checkpoint's training config: %s (set any on the command line to change it)", shown)
    out = Path(app.out_dir) if app.out_dir else ckpt.parent.parent / "eval" / app.eval.suite
    res = evaluate(ckpt, app.eval, out)
    print(f"\nresults: {out / 'results.json'}\nvideos:  {out / 'videos'}\n")
    print(format_table(res))


def train_main() -> None:
    register_configs()
    hydra.main(version_base=None, config_name="vla_train")(_train)()


def eval_main() -> None:
    register_configs()
    hydra.main(version_base=None, config_name="vla_eval")(_eval)()


if __name__ == "__main__":
    train_main()
