"""Failure behaviour: nothing silent. Each test here failed on the code before these checks."""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import debug_train_config, tiny_policy_config, tiny_stats

from vla.checkpoint import CheckpointError
from vla.configs import MARKER, ConfigError, atomic_dir, load_json, recover_dir, save_json
from vla.contract import NonFiniteError, ObservationError
from vla.model import VLAModel
from vla.policy import VLAPolicy


def observation(size=32, **over):
    rng = np.random.default_rng(0)
    obs = {
        "images": {"agentview": rng.integers(0, 255, (size, size, 3), dtype=np.uint8)},
        "state": rng.normal(size=2).astype(np.float32),
        "instruction": "pick up the red cube",
    }
    return {**obs, **over}


@pytest.fixture
def policy():
    torch.manual_seed(0)
    return VLAPolicy(VLAModel(tiny_policy_config(camera_shapes={"agentview": [32, 32]}), tiny_stats()))


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# ----------------------------------------------------------------------------- NaN never becomes an action
@pytest.mark.parametrize("decoder_type", ["diffusion", "autoregressive"])
def test_nan_weights_raise_instead_of_a_chunk(decoder_type):
    torch.manual_seed(0)
    pol = VLAPolicy(VLAModel(tiny_policy_config(decoder_type=decoder_type), tiny_stats()))
    with torch.no_grad():
        pol.model.decoder.head.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="NaN or Inf"):
        pol.infer(observation())


def test_an_absurd_state_raises_instead_of_a_chunk(policy):
    with pytest.raises(NonFiniteError):
        policy.infer(observation(state=np.full(2, 3e38, dtype=np.float32)))  # overflows inside
    assert np.isfinite(policy.infer(observation())).all()  # and the policy still works after


def test_saving_and_loading_non_finite_weights_is_refused(policy, tmp_path):
    policy.save(tmp_path / "good")
    with torch.no_grad():
        policy.model.state_proj[0].weight[0, 0] = float("inf")
    with pytest.raises(NonFiniteError, match="diverged"):
        policy.save(tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    # A diverged checkpoint written by an older version (no manifest, loaded as unverified) is refused.
    import safetensors.torch

    from vla.checkpoint import load_model

    shutil.copytree(tmp_path / "good", tmp_path / "old")
    (tmp_path / "old" / "manifest.json").unlink()
    tensors = safetensors.torch.load_file(str(tmp_path / "old" / "model.safetensors"))
    tensors["decoder.head.weight"][:] = float("nan")
    safetensors.torch.save_file(tensors, str(tmp_path / "old" / "model.safetensors"))
    with pytest.raises(CheckpointError, match="NaN or Inf"):
        load_model(tmp_path / "old", allow_unverified=True)


# ----------------------------------------------------------------------------- observations name their field
BAD_OBSERVATIONS = {
    "camera batch mismatch": (
        dict(
            images={"agentview": np.zeros((2, 32, 32, 3), np.uint8)},
            state=np.zeros((3, 2), np.float32),
            instruction=["a", "b"],
        ),
        r"observation\['state'\]: expected shape \(2, 2\)",
    ),
    "single image, batched state": (dict(state=np.zeros((1, 2), np.float32)), r"state'\]: expected shape \(2,\)"),
    "instruction count": (
        dict(
            images={"agentview": np.zeros((2, 32, 32, 3), np.uint8)},
            state=np.zeros((2, 2), np.float32),
            instruction=["only one"],
        ),
        "1 instructions for a batch of 2",
    ),
    "grayscale": (dict(images={"agentview": np.zeros((32, 32), np.uint8)}), r"got shape \(32, 32\)"),
    "channels first": (dict(images={"agentview": np.zeros((3, 32, 32), np.uint8)}), r"\(3, 32, 32\)"),
    "empty image": (dict(images={"agentview": np.zeros((0, 32, 3), np.uint8)}), "empty image"),
    "odd size": (dict(images={"agentview": np.zeros((40, 48, 3), np.uint8)}), "40x48.*trained on 32x32"),
    "float image": (dict(images={"agentview": np.zeros((32, 32, 3), np.float32)}), "expected uint8"),
    "missing camera": (dict(images={"wrist": np.zeros((32, 32, 3), np.uint8)}), r"missing cameras \['agentview'\]"),
    "empty instruction": (dict(instruction="   "), "empty instruction"),
    "non-string instruction": (dict(instruction=7), "expected a string, got int"),
    "huge instruction": (dict(instruction="a" * 100_000), "100000 characters"),
    "NaN state": (dict(state=np.array([np.nan, 0], np.float32)), "NaN or Inf"),
    "wrong state width": (dict(state=np.zeros(3, np.float32)), r"expected shape \(2,\)"),
}


@pytest.mark.parametrize("name", sorted(BAD_OBSERVATIONS))
def test_bad_observations_name_the_field(policy, name):
    over, message = BAD_OBSERVATIONS[name]
    with pytest.raises(ObservationError, match=message):
        policy.infer(observation(**over))


def test_fixed_actions_of_the_wrong_shape_name_the_field(policy):
    batch = dict(
        images={"agentview": np.zeros((2, 32, 32, 3), np.uint8)},
        state=np.zeros((2, 2), np.float32),
        instruction=["a", "b"],
    )
    with pytest.raises(ObservationError, match=r"fixed_actions: expected \(2, k, 3\)"):
        policy.infer(observation(**batch), fixed_actions=np.zeros((3, 1, 3), np.float32))
    with pytest.raises(ObservationError, match="fixed_actions: expected"):
        policy.infer(observation(), fixed_actions=np.zeros((1, 4), np.float32))  # wrong width
    with pytest.raises(ObservationError, match="NaN"):
        policy.infer(observation(), fixed_actions=np.full((1, 3), np.nan, np.float32))
    assert policy.infer(observation(**batch), fixed_actions=np.zeros((2, 1, 3), np.float32)).shape == (2, 4, 3)


def test_special_token_text_in_an_instruction_is_plain_text(policy):
    chunk = policy.infer(observation(instruction="look at the <image> tag"))
    assert chunk.shape == (4, 3) and np.isfinite(chunk).all()
    prompt = policy.model.backbone.prompter.prompt("look at the <IMAGE> tag", 1)
    assert prompt.count("<image>") == 1  # only the real image placeholder


# ----------------------------------------------------------------------------- checkpoints
def test_edited_truncated_or_mistyped_checkpoints_name_the_file(policy, tmp_path):
    ckpt = policy.save(tmp_path / "c")
    manifest = load_json(ckpt / "manifest.json")["files"]
    assert {"model.safetensors", "config.json", "stats.json", "action_tokenizer.json"} <= manifest.keys()
    assert VLAPolicy.load(ckpt).cfg.camera_shapes == {"agentview": [32, 32]}

    t = shutil.copytree(ckpt, tmp_path / "truncated")
    data = (t / "model.safetensors").read_bytes()
    (t / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"truncated/model.safetensors has \d+ bytes"):
        VLAPolicy.load(t)

    e = shutil.copytree(ckpt, tmp_path / "edited")
    meta = load_json(e / "config.json")
    meta["policy"]["sampler"]["steps"] = 13  # same length: caught by the hash, not the size
    (e / "config.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    with pytest.raises(CheckpointError, match="edited/config.json differs"):
        VLAPolicy.load(e)

    from vla.checkpoint import load_model

    w = shutil.copytree(ckpt, tmp_path / "mistyped")
    (w / "manifest.json").unlink()  # as written by hand, or by an older version: loaded as unverified
    meta = load_json(w / "config.json")
    meta["policy"]["chunk_size"] = "4"
    save_json(w / "config.json", meta)
    with pytest.raises(CheckpointError, match="policy.chunk_size: expected int, got str '4'"):
        load_model(w, allow_unverified=True)
    (w / "model.safetensors").write_bytes(b"garbage")
    meta["policy"]["chunk_size"] = 4
    save_json(w / "config.json", meta)
    with pytest.raises(CheckpointError, match="mistyped/model.safetensors cannot be read"):
        load_model(w, allow_unverified=True)


def test_checkpoint_files_follow_the_umask(policy, tmp_path):
    old = os.umask(0o022)
    try:
        ckpt = policy.save(tmp_path / "c")
    finally:
        os.umask(old)
    for name in ("config.json", "stats.json", "manifest.json", "model.safetensors"):
        assert (ckpt / name).stat().st_mode & 0o777 == 0o644, name


def test_a_sampler_override_typo_is_named_before_workers_start(policy, tmp_path):
    from envs.evaluate import EvalConfig, evaluate

    ckpt = policy.save(tmp_path / "c")
    with pytest.raises(ConfigError, match=r"no field \['stpes'\]"):
        evaluate(ckpt, EvalConfig(sampler_overrides={"stpes": 2}), tmp_path / "ev")
    with pytest.raises(ConfigError, match="steps: expected int"):
        evaluate(ckpt, EvalConfig(sampler_overrides={"steps": "2"}), tmp_path / "ev")


def _no_assets_here() -> None:
    raise FileNotFoundError("no SimplerEnv Bridge assets: MS_ASSET_DIR is unset")


def test_a_recording_whose_worker_set_up_fails_raises_that_error(tmp_path):
    """A missing asset folder or driver in the workers' set-up is the error the user sees, not the
    BrokenProcessPool a failing initializer of spawned workers turns into."""
    from data.record_scripted import Family, Job, record_scripted

    def never(job):
        raise AssertionError("no episode may run after the set-up failed")

    family = Family("demo", 10, "none", {}, {}, never, _no_assets_here, str)
    jobs = [Job("t", 0, str(tmp_path / "demos.parts" / "00_0000.npz"), ())]
    with pytest.raises(FileNotFoundError, match="MS_ASSET_DIR is unset"):
        record_scripted(family, jobs, {"version": 1}, tmp_path / "demos", workers=2)
    assert not (tmp_path / "demos").exists()


# ----------------------------------------------------------------------------- atomic folders
def staging(folder: Path, name: str, pid: int, hex8: str) -> Path:
    """A staging folder as `atomic_dir` leaves it when its writer is killed."""
    p = folder / f".{name}.vla-tmp-{pid}-{hex8}"
    p.mkdir()
    (p / MARKER).write_text(json.dumps({"target": name, "pid": pid}))
    return p


def test_a_kill_between_the_two_renames_keeps_the_complete_save(tmp_path):
    pid = dead_pid()
    swap = staging(tmp_path, "latest", pid, "aaaaaaaa")
    (swap / "old").mkdir()  # the previous save, moved aside
    (swap / "new").mkdir()  # the new save, complete
    (swap / "new" / "step").write_text("4")
    (swap / "complete").touch()
    half = staging(tmp_path, "latest", pid, "cccccccc")  # a half-written one of the same dead writer
    (half / "new").mkdir()
    live = staging(tmp_path, "other", os.getpid(), "dddddddd")  # a live writer's: left alone
    lines = recover_dir(tmp_path)
    assert (tmp_path / "latest" / "step").read_text() == "4"
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, "latest"]
    assert len(lines) == 3 and "restored a complete save" in lines[0]


def test_atomic_dir_leaves_no_temporaries(tmp_path):
    with atomic_dir(tmp_path / "x") as tmp:
        tmp.mkdir()
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "x") as tmp:
        tmp.mkdir()
        raise RuntimeError
    assert [p.name for p in tmp_path.iterdir()] == ["x"]


# ----------------------------------------------------------------------------- environment
def test_the_builtin_env_refuses_to_step_after_the_episode_ended():
    from envs.tabletop.env import TASKS, TabletopEnv

    env = TabletopEnv("lift_red", image_size=16)
    try:
        with pytest.raises(RuntimeError, match="reset"):
            env.step(np.zeros(7))  # before the first reset
        env.reset(seed=0)
        truncated = False
        for _ in range(TASKS["lift_red"].max_episode_steps):
            *_, truncated, _ = env.step(np.zeros(7))
        assert truncated
        with pytest.raises(RuntimeError, match="after the episode ended"):
            env.step(np.zeros(7))
        env.reset(seed=1)
        env.step(np.zeros(7))
    finally:
        env.close()


# ----------------------------------------------------------------------------- data readers
def test_truncated_lerobot_files_are_named(tmp_path):
    from test_data import _write_port

    from data.readers import LIBERO_LEROBOT_KEYS, read_lerobot

    root = _write_port(tmp_path / "port", LIBERO_LEROBOT_KEYS.cameras, 8, episodes=1, t=2)
    parquet = sorted((root / "data").glob("**/*.parquet"))[0]
    data = parquet.read_bytes()
    parquet.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"{parquet.name} is not a readable parquet file"):
        list(read_lerobot(root, LIBERO_LEROBOT_KEYS))
    parquet.write_bytes(data)
    info = root / "meta" / "info.json"
    info.write_text(info.read_text()[:40])
    with pytest.raises(ValueError, match="info.json is not valid JSON"):
        list(read_lerobot(root, LIBERO_LEROBOT_KEYS))
    # A truncated video: the episodes before the cut read, the first one past it is named.
    root = _write_port(tmp_path / "video_port", LIBERO_LEROBOT_KEYS.cameras, 8, t=[3, 6], videos=True, size=32)
    video = sorted((root / "videos").glob("**/*.mp4"))[0]
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    episodes = read_lerobot(root, LIBERO_LEROBOT_KEYS)
    assert len(next(episodes).actions) == 3
    with pytest.raises(ValueError, match=rf"episode 1: .* cannot be decoded from .*{video.name}"):
        next(episodes)


# ----------------------------------------------------------------------------- training runs
def debug_config(tmp_path, data_root, *overrides):
    return debug_train_config(tmp_path / "run", data_root, *overrides)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.grad_clip=-1", "optim.grad_clip must be >= 0"),
        ("optim.min_lr_ratio=1.5", "optim.min_lr_ratio must be in"),
        ("optim.lr=0", "optim.lr must be a positive"),
        ("save_every=0", "save_every must be >= 1"),
        ("log_every=0", "log_every must be >= 1"),
        ("data.loader.batch_size=0", "batch_size must be >= 1"),
        ("eval.workers=0", "eval.workers"),
    ],
)
def test_settings_that_would_train_silently_wrong_are_refused(tmp_path, override, message):
    with pytest.raises(Exception, match=message):
        debug_config(tmp_path, tmp_path / "data", override)


def test_a_diverging_run_stops_without_saving(tmp_path, debug_data_root):
    from train.loop import train

    cfg = debug_config(
        tmp_path, debug_data_root, "optim.steps=12", "save_every=2", "optim.lr=1e30", "optim.max_nonfinite_steps=2"
    )
    with pytest.raises(NonFiniteError, match="training diverged"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints" / "latest").exists()


def test_a_non_finite_loss_never_overwrites_the_good_checkpoint(tmp_path, debug_data_root, monkeypatch, caplog):
    from train.loop import train

    cfg = debug_config(tmp_path, debug_data_root, "optim.steps=12", "save_every=2", "optim.max_nonfinite_steps=2")
    train(replace(cfg, stop_after=2))  # a good checkpoint at step 2
    latest = tmp_path / "run" / "checkpoints" / "latest"
    good = (latest / "model.safetensors").read_bytes()
    compute_loss = VLAModel.compute_loss

    def nan_loss(self, batch, generator=None):
        loss, metrics = compute_loss(self, batch, generator)
        return loss * float("nan"), metrics

    monkeypatch.setattr(VLAModel, "compute_loss", nan_loss)
    with caplog.at_level(logging.WARNING), pytest.raises(NonFiniteError, match="3 steps in a row"):
        train(cfg)
    assert "update skipped (1 of 2 in a row allowed)" in caplog.text and "not saving" in caplog.text
    assert (latest / "model.safetensors").read_bytes() == good
    assert load_json(latest / "config.json")["step"] == 2
    VLAPolicy.load(latest)  # still loads, still finite


def test_fresh_runs_other_data_and_busy_folders_are_refused(tmp_path, debug_data_root, caplog):
    import zarr

    from train.loop import train
    from train.run_dir import RunDirBusy, RunLock

    cfg = debug_config(tmp_path, debug_data_root, "stop_after=1")
    train(cfg)
    with pytest.raises(FileExistsError, match="holds checkpoints of an earlier run"):
        train(replace(cfg, resume=False))
    # The same episodes with other statistics: resuming would read trained weights under new bins.
    other = tmp_path / "other.zarr"
    shutil.copytree(f"{debug_data_root}.zarr", other)
    group = zarr.open_group(str(other), mode="r+")
    stats = dict(group.attrs["stats"])
    stats["action"] = {**stats["action"], "q01": [v - 0.1 for v in stats["action"]["q01"]]}
    group.attrs["stats"] = stats
    moved = replace(cfg, data=replace(cfg.data, cache=str(other), root=str(tmp_path / "absent")))
    with pytest.raises(ValueError, match="stats.action.q01.*differ from the data the run started with"):
        train(moved)
    # A setting the restored optimiser and scheduler would silently ignore.
    with pytest.raises(ValueError, match=r"optim.lr \(saved 0.0005, now 0.01\)"):
        train(replace(cfg, optim=replace(cfg.optim, lr=1e-2)))
    train(replace(cfg, optim=replace(cfg.optim, steps=cfg.optim.steps + 2)))  # training longer is fine
    # One run per folder; a dead holder's lock is taken over with a log line.
    with RunLock(tmp_path / "run"), pytest.raises(RunDirBusy, match=f"in use by pid {os.getpid()}"):
        train(cfg)
    (tmp_path / "run" / ".lock").write_text(json.dumps({"pid": dead_pid(), "host": "h"}))
    with caplog.at_level(logging.WARNING):
        train(replace(cfg, stop_after=1))
    assert "taking over the lock" in caplog.text


def test_a_second_process_cannot_train_in_a_busy_folder(tmp_path):
    from train.run_dir import RunDirBusy, RunLock

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from train.run_dir import RunLock; RunLock(sys.argv[1]).acquire(); "
            "print('locked', flush=True); time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirBusy, match=f"pid {holder.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    RunLock(tmp_path).acquire().release()  # the kernel dropped the dead holder's lock


def test_a_killed_save_and_its_temporaries_resume_from_that_save(tmp_path, debug_data_root):
    from train.loop import train

    cfg = debug_config(tmp_path, debug_data_root, "save_every=100")
    train(replace(cfg, stop_after=2))
    ckpts = tmp_path / "run" / "checkpoints"
    previous = shutil.copytree(ckpts / "latest", tmp_path / "step2")
    train(replace(cfg, stop_after=2))  # latest at step 4
    pid = dead_pid()  # a writer killed between its two renames: step 2 moved aside, step 4 complete
    swap = staging(ckpts, "latest", pid, "00000000")
    previous.rename(swap / "old")
    (ckpts / "latest").rename(swap / "new")
    (swap / "complete").touch()
    (staging(ckpts, "latest", pid, "22222222") / "new").mkdir()  # and a half-written one
    data = debug_data_root.parent  # a killed recording and cache build
    stale = [staging(data, "debug", pid, "33333333"), staging(data, "debug.zarr", pid, "44444444")]
    summary = train(replace(cfg, stop_after=1))
    assert summary["step"] == 5  # resumed from step 4, not from 0 or 2
    assert sorted(p.name for p in ckpts.iterdir()) == ["latest"]
    assert not any(p.exists() for p in stale)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_a_checkpoint_and_stops(tmp_path, debug_data_root, sig):
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "train.hydra_app",
        "experiment=debug",
        f"run_dir={run}",
        f"data.root={debug_data_root}",
        "optim.steps=100000",
        "save_every=2",
        "log_every=1",
        "eval_at_end=false",
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=Path(__file__).parent.parent,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.time() + 240
    while not (run / "checkpoints" / "latest").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, out[-3000:]
    step = load_json(run / "checkpoints" / "latest" / "config.json")["step"]
    assert 2 <= step < 100000 and f"stopped at step {step}" in out, out[-3000:]
    assert "re-run the same command to resume" in out.lower()
