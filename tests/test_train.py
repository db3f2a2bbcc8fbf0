import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import safetensors.torch
import torch
from helpers import composed, free_port
from hydra import compose, initialize

from train.config import TrainConfig
from train.hydra_app import EXPERIMENTS, register_configs, to_train_config
from train.loop import train
from vla.configs import load_json
from vla.policy import VLAPolicy

REQUIRED = {
    "libero": ["data.root=/data/libero_spatial", "policy.backbone.source=/models/smolvlm"],
    "bridge": ["data.root=/data/bridge_orig_lerobot", "policy.backbone.source=/models/smolvlm"],
}


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_every_preset_composes_into_a_valid_config(name):
    cfg = to_train_config(composed([f"experiment={name}", *REQUIRED.get(name, [])]))
    assert isinstance(cfg, TrainConfig) and cfg.run_dir


def test_groups_and_bad_values():
    cfg = to_train_config(composed(["decoder=autoregressive", "backbone=pretrained", "policy.backbone.source=x/y"]))
    assert cfg.policy.decoder_type == "autoregressive" and cfg.policy.backbone.lora_rank == 16
    with pytest.raises(Exception, match="decoder_type"):
        to_train_config(composed(["policy.decoder_type=diffusionn"]))
    with pytest.raises(Exception, match="confidence"):
        to_train_config(composed(["policy.sampler.confidence=best"]))


def test_slurm_launcher_config_validates():
    register_configs()
    with initialize(version_base=None, config_path=None):
        cfg = compose(
            config_name="vla_train",
            overrides=[
                "hydra/launcher=submitit_slurm",
                "hydra.launcher.partition=gpu",
                "hydra.launcher.gpus_per_node=4",
                "hydra.launcher.timeout_min=720",
            ],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.gpus_per_node == 4 and launcher.timeout_min == 720


@pytest.fixture
def data_root(debug_data_root):
    return debug_data_root


def debug_config(tmp_path, data_root, **over) -> TrainConfig:
    cfg = to_train_config(
        composed(["experiment=debug", f"run_dir={tmp_path / 'run'}", f"data.root={data_root}", "eval_at_end=false"])
    )
    for k, v in over.items():
        setattr(cfg, k, v)
    return cfg


def weights(run_dir: Path) -> dict:
    return safetensors.torch.load_file(str(run_dir / "checkpoints" / "latest" / "model.safetensors"))


def test_collect_train_resume_eval_end_to_end(tmp_path, data_root):
    from envs.evaluate import EvalConfig, evaluate
    from envs.tables import format_table

    cfg = debug_config(tmp_path, data_root, stop_after=3)
    first = train(cfg)  # interrupted after 3 of 6 steps
    assert first["step"] == 3 and (tmp_path / "run" / "checkpoints" / "step_0000003").exists()
    cfg.stop_after = 0
    second = train(cfg)  # resumes and finishes
    assert second["step"] == 6 and second["history"][0]["step"] > 3
    assert list((tmp_path / "run" / "tensorboard").glob("events.*"))
    res = evaluate(
        second["checkpoint"], EvalConfig(tasks=["lift_red"], episodes_per_task=1, workers=1), tmp_path / "ev"
    )
    assert set(res["per_task_success"]) == {"lift_red"} and (tmp_path / "ev" / "results.json").exists()
    assert list((tmp_path / "ev" / "videos").glob("*.mp4"))
    assert "lift_red" in format_table(res)


def test_goal_head_trains_end_to_end(tmp_path, data_root):
    """policy.goal_aux_weight: the loop builds the targets from the embodiment's names, the loss
    adds the head's, the log shows its parts, and the checkpoint holds the head."""
    cfg = debug_config(tmp_path, data_root)
    cfg.policy = replace(cfg.policy, goal_aux_weight=1.0)
    cfg.optim = replace(cfg.optim, steps=30, warmup_steps=2)
    cfg.log_every = 1
    out = train(cfg)
    first, last = out["history"][0], out["history"][-1]
    assert {"action_loss", "goal_loss", "goal_err"} <= set(first)
    assert last["loss"] == pytest.approx(last["action_loss"] + last["goal_loss"], rel=1e-4)
    assert any(k.startswith("goal_head.") for k in weights(tmp_path / "run"))
    loaded = VLAPolicy.load(out["checkpoint"]).model
    assert loaded.cfg.goal_aux_weight == 1.0 and loaded.goal_head is not None


def test_eval_inherits_the_checkpoints_eval_settings_unless_overridden(tmp_path):
    from types import SimpleNamespace

    from envs.evaluate import EvalConfig
    from train.hydra_app import overridden_eval_keys, resolve_eval_config

    saved = {"execute_steps": 4, "episodes_per_task": 20, "tasks": ["lift_red"], "gone_field": 1}
    ckpt = SimpleNamespace(path=tmp_path / "ckpt", train_config={"eval": saved})  # what Checkpoint reads
    keys = overridden_eval_keys(["checkpoint=x", "eval.episodes_per_task=5", "+eval.sampler_overrides.steps=1"])
    assert keys == {"episodes_per_task", "sampler_overrides"}
    assert "execute_steps" in overridden_eval_keys(["eval={execute_steps:2}"])  # the whole group
    cli = EvalConfig(episodes_per_task=5, sampler_overrides={"steps": 1})
    cfg, inherited = resolve_eval_config(cli, ckpt, keys)
    assert (cfg.execute_steps, cfg.tasks) == (4, ["lift_red"])  # from the checkpoint
    assert (cfg.episodes_per_task, cfg.sampler_overrides) == (5, {"steps": 1})  # from the command line
    assert inherited == {"execute_steps": 4, "tasks": ["lift_red"]}
    # Explicitly asking for the default (whole chunk) beats the checkpoint's 4.
    cfg, _ = resolve_eval_config(EvalConfig(), ckpt, overridden_eval_keys(["eval.execute_steps=0"]))
    assert cfg.execute_steps == 0
    bare = SimpleNamespace(path=tmp_path / "bare", train_config={})  # saved outside training
    assert resolve_eval_config(cli, bare, keys) == (cli, {})


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_resumed_run_ends_where_an_uninterrupted_one_would(tmp_path, data_root, ema_decay):
    a = debug_config(tmp_path / "a", data_root)
    a.optim.ema_decay = ema_decay
    train(a)
    b = debug_config(tmp_path / "b", data_root, stop_after=2)
    b.optim.ema_decay = ema_decay
    train(b)
    b.stop_after = 0
    train(b)
    wa, wb = weights(tmp_path / "a" / "run"), weights(tmp_path / "b" / "run")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0, msg=k)
    raw = safetensors.torch.load_file(
        str(tmp_path / "b" / "run" / "checkpoints" / "latest" / "training_state" / "state.safetensors")
    )
    if ema_decay:  # the checkpoint holds the EMA, the training state the weights trained on
        assert not torch.equal(wb["decoder.head.weight"], raw["weights/decoder.head.weight"])


def test_resume_refuses_a_different_policy(tmp_path, data_root):
    cfg = debug_config(tmp_path, data_root, stop_after=1)
    train(cfg)
    cfg.policy.chunk_size = 2
    with pytest.raises(ValueError, match="different policy config"):
        train(cfg)


def torchrun(*args: str) -> str:
    """Two CPU processes under torchrun (gloo); returns rank 0's stdout."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    cmd = [*launcher, "--master-port", str(free_port()), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    # Each rank's own lines first: the launcher's tail shows only the rank that was torn down last.
    ranks = "\n".join(line for line in out.stderr.splitlines() if line.startswith("[rank0]"))
    assert out.returncode == 0, f"{ranks[-3000:]}\n...\n{out.stderr[-2000:]}"
    return out.stdout


def train_with_torchrun(*overrides: str) -> None:
    torchrun("-m", "train.hydra_app", "experiment=debug", "eval_at_end=false", *overrides)


@pytest.mark.multiprocess
@pytest.mark.parametrize("decoder", ["diffusion", "unified"])
def test_fsdp_resumes_and_matches_ddp_with_two_cpu_processes(tmp_path, data_root, decoder):
    common = [f"data.root={data_root}", "optim.steps=4", "optim.ema_decay=0.9", "optim.grad_accum=2"]
    common.append(f"decoder={decoder}")
    train_with_torchrun("strategy=ddp", f"run_dir={tmp_path / 'ddp'}", *common)
    train_with_torchrun("strategy=fsdp", f"run_dir={tmp_path / 'fsdp'}", "stop_after=2", *common)
    train_with_torchrun("strategy=fsdp", f"run_dir={tmp_path / 'fsdp'}", *common)  # resumes at step 2
    ddp, fsdp = (tmp_path / s / "checkpoints" / "latest" for s in ("ddp", "fsdp"))
    assert load_json(fsdp / "config.json")["step"] == 4
    policy = VLAPolicy.load(fsdp).model  # whole tensors, loadable without a process group
    state = safetensors.torch.load_file(str(fsdp / "training_state" / "state.safetensors"))
    assert all(state[f"weights/{n}"].shape == p.shape for n, p in policy.named_parameters() if p.requires_grad)
    # Same data per rank, same averaged gradients: the sharded run lands where the replicated one does
    # (EMA weights in model.safetensors, raw weights and Adam moments in the training state).
    for name in ("model.safetensors", "training_state/state.safetensors"):
        a = safetensors.torch.load_file(str(ddp / name))
        b = safetensors.torch.load_file(str(fsdp / name))
        # A resumed optimiser also holds (zero) moments for parameters that never had a gradient
        # (SigLIP's unused pooling head): torch.distributed.checkpoint initialises every state.
        assert a.keys() <= b.keys()
        for k in a:
            if not k.startswith("rng/"):
                torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.multiprocess
def test_fsdp_step_equals_the_unsharded_step_for_every_vlm_family(tmp_path):
    script = Path(__file__).parent / "fsdp_families.py"  # asserts inside; rank 0 prints one line per case
    stdout = torchrun(str(script), str(tmp_path))
    assert stdout.count("ok ") == 7, stdout
    assert "'LlamaDecoderLayer'" in stdout and "'Qwen2_5_VLVisionBlock'" in stdout  # the models' own layers
