"""Issue #36's probes of training, checkpoints and data: each test failed on the code before its fix.

Bad: earlier checkpoints overwritten after `latest` was lost; a cache built from other data used
as is; recovery of interrupted writes touching a user's own files. Weak: an all-NaN run that
exits 0 naming a checkpoint that does not exist; an empty run_dir.
"""

import json
import logging
import shutil
import subprocess
import sys
from dataclasses import replace

import pytest
from helpers import debug_train_config

from vla.checkpoint import CheckpointError
from vla.configs import MARKER, load_json, recover_dir
from vla.contract import NonFiniteError
from vla.model import VLAModel


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def weights(folder):
    return (folder / "model.safetensors").read_bytes()


# ----------------------------------------------------------------------------- bad
def test_bad_a_lost_latest_never_restarts_the_run_over_its_step_folders(tmp_path, debug_data_root):
    from train.loop import train

    cfg = debug_train_config(tmp_path / "run", debug_data_root, "save_every=2", "optim.steps=8")
    train(replace(cfg, stop_after=4))
    ckpts = tmp_path / "run" / "checkpoints"
    step2, step4 = weights(ckpts / "step_0000002"), weights(ckpts / "step_0000004")
    shutil.rmtree(ckpts / "latest")  # a user deleted it (resume=true is the default)
    with pytest.raises(CheckpointError, match=r"latest is missing.*step_0000004: add resume_from=step_0000004"):
        train(cfg)
    # Damaged, not deleted: the same refusal names the newest intact step folder.
    shutil.copytree(ckpts / "step_0000004", ckpts / "latest")
    (ckpts / "latest" / "model.safetensors").write_bytes(step4[:100])
    with pytest.raises(CheckpointError, match=r"model.safetensors has 100 bytes.*resume_from=step_0000004"):
        train(cfg)
    assert weights(ckpts / "step_0000002") == step2 and weights(ckpts / "step_0000004") == step4
    (ckpts / "step_0000004" / "stats.json").write_text("{}")  # that one damaged too: the next one back
    with pytest.raises(CheckpointError, match="resume_from=step_0000002"):
        train(cfg)
    summary = train(replace(cfg, resume_from="newest", stop_after=1))
    assert summary["step"] == 3  # continued from step 2
    with pytest.raises(ValueError, match="resume_from=latest: give a step folder"):
        train(replace(cfg, resume_from="latest"))


def test_bad_a_cache_built_from_other_data_is_refused_and_the_run_records_its_data(tmp_path, debug_data_root):
    from data.source import prepare_data
    from train.loop import train

    cfg = debug_train_config(tmp_path / "run", debug_data_root, "stop_after=1")
    prepare_data(cfg.data)  # the session's debug recording and cache (recorded if missing)
    root = tmp_path / "data" / "debug"
    shutil.copytree(debug_data_root, root)
    shutil.copytree(f"{debug_data_root}.zarr", f"{root}.zarr")
    mine = replace(cfg, data=replace(cfg.data, root=str(root)))
    train(mine)
    trained_on = load_json(tmp_path / "run" / "checkpoints" / "latest" / "training_data.json")
    assert trained_on["cache"] == str((tmp_path / "data" / "debug.zarr").resolve())
    assert trained_on["source"]["recording"]["episodes_per_task"] == 1 and trained_on["episodes"] == 2

    # The recording deleted, its cache kept; a run asking for other recording settings.
    shutil.rmtree(root)
    record = replace(mine.data.record, episodes_per_task=5, seed=3)
    other = replace(mine.data, record=record)
    with pytest.raises(ValueError, match=r"recording.episodes_per_task \(cache 1, asked 5\).*the source .* is gone"):
        prepare_data(other)
    prepare_data(mine.data)  # the settings the cache holds are still usable without the recording

    # A source folder whose files differ from those the cache was built from.
    shutil.copytree(debug_data_root, root)
    (root / "meta" / "extra.json").write_text("{}")
    with pytest.raises(ValueError, match=r"files \(cache '\d+ files.*data.rebuild_cache=true"):
        prepare_data(mine.data)
    rebuilt = prepare_data(replace(mine.data, rebuild_cache=True))
    assert rebuilt.source["files"] != trained_on["source"]["files"]
    prepare_data(mine.data)  # the rebuilt cache now matches


def test_bad_recovery_never_touches_a_users_own_entries(tmp_path, debug_data_root):
    from data.source import prepare_data

    home = tmp_path / "home"  # data.root=~/mydata: the cache and recovery live in the home folder
    shutil.copytree(debug_data_root, home / "mydata")
    pid = dead_pid()
    users = [
        home / ".bashrc.old-deadbeef",  # fit the old temporary pattern (and its 1-hour legacy rule)
        home / f".notes.tmp-{pid}-abcdef12",
        home / f".mydata.zarr.building-{pid}-12345678",
        home / f".photos.vla-tmp-{pid}-0badc0de",  # even the new pattern, without the marker
    ]
    for i, p in enumerate(users):
        p.mkdir() if i % 2 else p.write_text("mine")
    cfg = debug_train_config(tmp_path / "run", home / "mydata").data
    prepare_data(cfg)
    assert all(p.exists() for p in users)
    assert recover_dir(home) == []
    # What a killed writer of the project left, with its marker, is still recovered.
    ours = home / f".mydata.zarr.vla-building-{pid}-0000aaaa"
    ours.mkdir()
    (ours / MARKER).write_text(json.dumps({"target": "mydata.zarr", "pid": pid}))
    assert len(recover_dir(home)) == 1 and not ours.exists() and all(p.exists() for p in users)


# ----------------------------------------------------------------------------- weak
def test_weak_a_run_whose_every_step_is_non_finite_is_an_error(tmp_path, debug_data_root, monkeypatch, caplog):
    from train.loop import train

    cfg = debug_train_config(tmp_path / "run", debug_data_root, "optim.steps=4", "optim.max_nonfinite_steps=10")
    compute_loss = VLAModel.compute_loss

    def nan_loss(self, batch, generator=None):
        loss, metrics = compute_loss(self, batch, generator)
        return loss * float("nan"), metrics

    monkeypatch.setattr(VLAModel, "compute_loss", nan_loss)
    with pytest.raises(NonFiniteError, match="no checkpoint was saved: every step up to 4"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints" / "latest").exists()


def test_weak_an_empty_run_dir_is_refused(tmp_path, debug_data_root):
    with pytest.raises(ValueError, match="run_dir is empty"):
        debug_train_config("", debug_data_root)


def test_weak_a_non_finite_last_step_reports_the_step_saved(tmp_path, debug_data_root, monkeypatch, caplog):
    from train.loop import train

    cfg = debug_train_config(tmp_path / "run", debug_data_root, "optim.steps=4", "save_every=2")
    train(replace(cfg, stop_after=2))
    compute_loss = VLAModel.compute_loss

    def nan_loss(self, batch, generator=None):
        loss, metrics = compute_loss(self, batch, generator)
        return loss * float("nan"), metrics

    monkeypatch.setattr(VLAModel, "compute_loss", nan_loss)
    with caplog.at_level(logging.WARNING):
        summary = train(cfg)
    assert summary["step"] == 2 and "holds step 2, not 4" in caplog.text
