"""Issue #36, round two: checkpoints and data readers name what is wrong instead of going on.

Each test below failed on the code before its fix (a parametrised test: at least one case did):

- test_a_config_missing_a_field_is_refused_naming_it: a key removed from config.json loaded
  with today's default (another image size, another sampler).
- test_a_malformed_camera_shapes_is_refused_at_load, test_camera_shapes_are_checked_when_built_too:
  [32], [0, 32] or an unknown camera loaded, and inference later failed with an IndexError or
  compared against garbage.
- test_a_missing_manifest_is_an_error_unless_allowed: a deleted manifest.json was one warning.
- test_the_manifest_must_cover_the_config: a manifest without config.json's entry verified nothing
  about it, so an edited config loaded.
- test_sampler_numbers_are_checked / test_sampler_steps_are_bounded_by_the_chunk:
  temperature=nan decoded greedily, inf uniformly, steps had no upper bound.
- test_missing_lerobot_files_are_named, test_a_missing_video_is_named,
  test_lerobot_metadata_of_the_wrong_type_is_named: a missing parquet, tasks.parquet or video
  surfaced as lerobot's attempt to reach the hub; wrong types in info.json or a garbage
  stats.json named only the dataset root.
- test_reading_a_dataset_writes_nothing_under_the_home_cache: `datasets` wrote its Arrow copy of
  the parquet files under ~/.cache/huggingface/datasets (2.9 GB after the libero_object job).

test_older_checkpoint_configs_still_load guards the migrations that the first test must not break
(it failed before too: the migrated config was not returned, the changed decoding not said).
"""

import hashlib
import json
import logging
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import tiny_policy_config, tiny_stats

from data.readers import LIBERO_LEROBOT_KEYS, read_lerobot
from vla.checkpoint import (
    _ADDED_BACKBONE_FIELDS,
    _ADDED_POLICY_FIELDS,
    CheckpointError,
    check_checkpoint,
    load_model,
    save_checkpoint,
)
from vla.configs import MARKER, ConfigError, from_dict
from vla.model import PolicyConfig, VLAModel
from vla.policy import VLAPolicy
from vla.sampling import SamplerConfig, masked_diffusion_decode


# ----------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model = VLAModel(tiny_policy_config(camera_shapes={"agentview": [32, 32]}), tiny_stats())
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "c")


@pytest.fixture
def ckpt(saved, tmp_path):
    return shutil.copytree(saved, tmp_path / "c")


def edit_config(ckpt: Path, edit) -> None:
    """Change config.json with `edit(policy_section)` and re-sign it in the manifest, as another
    tool would: only the check under test can then catch it, not the sha256."""
    meta = json.loads((ckpt / "config.json").read_text())
    edit(meta["policy"])
    data = json.dumps(meta, indent=2).encode()
    (ckpt / "config.json").write_bytes(data)
    manifest = json.loads((ckpt / "manifest.json").read_text())
    manifest["files"]["config.json"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (ckpt / "manifest.json").write_text(json.dumps(manifest))


def delete(dotted: str):
    def edit(policy: dict) -> None:
        *parents, leaf = dotted.split(".")
        for p in parents:
            policy = policy[p]
        del policy[leaf]

    return edit


@pytest.mark.parametrize(
    "key", ["backbone.image_size", "chunk_size", "crop_area", "sampler.temperature", "action_tokenizer.binary_dims"]
)
def test_a_config_missing_a_field_is_refused_naming_it(ckpt, key):
    edit_config(ckpt, delete(key))
    with pytest.raises(CheckpointError, match=rf"c/config.json: the policy config lacks \['policy\.{key}'\]"):
        load_model(ckpt)
    with pytest.raises(CheckpointError, match=rf"policy\.{key}"):
        check_checkpoint(ckpt)  # what evaluation checks before starting its workers


def test_older_checkpoint_configs_still_load(ckpt, caplog):
    """Fields added after checkpoints existed are filled with what older versions did; keys they
    wrote that no longer exist are dropped."""

    def old(policy: dict) -> None:
        for key in _ADDED_POLICY_FIELDS:  # every field added since, so a new one is covered once listed
            del policy[key]
        del policy["sampler"]["remask_probe"]
        for key in _ADDED_BACKBONE_FIELDS:
            del policy["backbone"][key]
        policy["rotate_180"] = False
        policy["action_tokenizer"] |= {"low_quantile": 0.01, "high_quantile": 0.99}

    edit_config(ckpt, old)
    cfg = load_model(ckpt).cfg
    assert {k: getattr(cfg, k) for k in _ADDED_POLICY_FIELDS} == _ADDED_POLICY_FIELDS
    assert cfg.sampler.remask_probe == 0.5
    assert {k: getattr(cfg.backbone, k) for k in _ADDED_BACKBONE_FIELDS} == _ADDED_BACKBONE_FIELDS
    assert check_checkpoint(ckpt)["policy"]["decoder_arch"] == "expert"  # migrated for callers too

    edit_config(ckpt, lambda p: p["sampler"].update(remask_threshold=True))
    with caplog.at_level(logging.WARNING, logger="vla.checkpoint"):
        assert load_model(ckpt).cfg.sampler.remask_threshold
    assert "remasks the new way" in caplog.text  # its decoding changed: said, not silent


@pytest.mark.parametrize(
    "shape",
    [[32], [32, 32, 3], [0, 32], [-32, 32], [[32, 32]], [32.0, 32], [True, 32], "32x32"],
    ids=["short", "long", "zero", "negative", "nested", "float", "bool", "string"],
)
def test_a_malformed_camera_shapes_is_refused_at_load(ckpt, shape):
    edit_config(ckpt, lambda p: p["camera_shapes"].update(agentview=shape))
    with pytest.raises(CheckpointError, match=r"c/config.json: .*policy\.camera_shapes"):
        load_model(ckpt)


def test_camera_shapes_are_checked_when_built_too():
    with pytest.raises(ValueError, match=r"policy.camera_shapes\['wrist'\]: not one of policy.cameras"):
        tiny_policy_config(camera_shapes={"wrist": [32, 32]})
    with pytest.raises(ValueError, match=r"policy.camera_shapes=\[\[32, 32\]\]"):
        tiny_policy_config(camera_shapes=[[32, 32]])
    cfg = tiny_policy_config(camera_shapes={"agentview": (32, 32)})
    assert cfg.camera_shapes == {"agentview": [32, 32]}  # as a saved config reads back


def test_a_missing_manifest_is_an_error_unless_allowed(ckpt, caplog):
    (ckpt / "manifest.json").unlink()
    for check in (load_model, check_checkpoint, VLAPolicy.load):
        with pytest.raises(CheckpointError, match=r"c/manifest.json is missing.*allow_unverified=True"):
            check(ckpt)
    with caplog.at_level(logging.WARNING, logger="vla.checkpoint"):
        assert load_model(ckpt, allow_unverified=True).cfg.camera_shapes == {"agentview": [32, 32]}
        assert check_checkpoint(ckpt, allow_unverified=True)["format"] == "vla-policy"
    assert "not verified" in caplog.text


def test_the_manifest_must_cover_the_config(ckpt):
    manifest = json.loads((ckpt / "manifest.json").read_text())
    assert "config.json" in manifest["files"]
    config = (ckpt / "config.json").read_text()
    (ckpt / "config.json").write_text(config.replace('"steps": 12', '"steps": 11'))  # same size
    with pytest.raises(CheckpointError, match="c/config.json differs from the file saved"):
        load_model(ckpt)
    del manifest["files"]["config.json"]  # ... and a manifest cannot leave it out
    (ckpt / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"manifest.json does not list \['config.json'\]"):
        load_model(ckpt)


# ----------------------------------------------------------------------------- sampler
@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("temperature", math.nan, "sampler.temperature=nan: must be a finite number >= 0"),
        ("temperature", math.inf, "sampler.temperature=inf: must be a finite number >= 0"),
        ("temperature", -1.0, "sampler.temperature=-1.0: must be a finite number >= 0"),
        ("confidence_noise", math.nan, "sampler.confidence_noise=nan: must be a finite number >= 0"),
        ("confidence_noise", -0.5, "sampler.confidence_noise=-0.5: must be"),
        ("remask_eta", math.nan, r"sampler.remask_eta=nan: must be a number in \[0, 1\]"),
        ("remask_eta", 1.5, r"sampler.remask_eta=1.5: must be a number in \[0, 1\]"),
        ("remask_delta", math.inf, r"sampler.remask_delta=inf: must be None or a number in \(0, 1\]"),
        ("remask_delta", math.nan, "sampler.remask_delta=nan"),
        ("remask_probe", math.nan, r"sampler.remask_probe=nan: must be a number in \(0, 1\]"),
        ("steps", 0, "sampler.steps=0: must be an integer >= 1"),
        ("steps", 2.5, "sampler.steps=2.5: must be an integer >= 1"),
        ("remask_threshold", "yes", "sampler.remask_threshold='yes': must be true or false"),
    ],
)
def test_sampler_numbers_are_checked(field, value, message):
    with pytest.raises(ValueError, match=message):
        SamplerConfig(**{field: value})
    if field == "remask_threshold" or (field == "steps" and not isinstance(value, int)):
        return  # a value of the wrong type is named by from_dict's type check before this one
    # As a hydra override or a saved config reaches it: the error names the full path.
    with pytest.raises(ConfigError, match="policy.sampler: " + message):
        from_dict(PolicyConfig, {"sampler": {field: value}}, "policy")


def test_sampler_steps_are_bounded_by_the_chunk(ckpt):
    slots = 4 * 3  # the tiny policy's chunk_size x action_dim
    assert tiny_policy_config(sampler=SamplerConfig(steps=slots)).sampler.steps == slots
    with pytest.raises(ValueError, match=r"policy.sampler.steps=13: must be between 1 and the chunk's 12 action"):
        tiny_policy_config(sampler=SamplerConfig(steps=13))
    tiny_policy_config(decoder_type="autoregressive", sampler=SamplerConfig(steps=13))  # no refinement steps
    policy = VLAPolicy.load(ckpt)
    with pytest.raises(ValueError, match="policy.sampler.steps=10000000"):
        policy.with_sampler(SamplerConfig(steps=10_000_000))  # an eval override, say
    with pytest.raises(ValueError, match="sampler.steps=57: must be between 1 and the chunk's 56"):
        masked_diffusion_decode(lambda t: torch.zeros(*t.shape, 16), 1, 56, 16, SamplerConfig(steps=57))
    edit_config(ckpt, lambda p: p["sampler"].update(steps=10**9))
    with pytest.raises(CheckpointError, match="policy.sampler.steps=1000000000"):
        load_model(ckpt)
    edit_config(ckpt, lambda p: p["sampler"].update(steps=12, temperature=math.nan))
    with pytest.raises(CheckpointError, match="sampler.temperature=nan"):
        load_model(ckpt)


# ----------------------------------------------------------------------------- LeRobot datasets
@pytest.fixture(scope="module")
def recorded_port(tmp_path_factory):
    """A two-episode LeRobotDataset v3 in the LIBERO ports' schema, recorded once per module."""
    from test_data import _write_port

    return _write_port(tmp_path_factory.mktemp("port") / "port", LIBERO_LEROBOT_KEYS.cameras, 8, episodes=2, t=2)


@pytest.fixture
def port(recorded_port, tmp_path):
    return shutil.copytree(recorded_port, tmp_path / "port")


def read(root: Path) -> list:
    return list(read_lerobot(root, LIBERO_LEROBOT_KEYS))


@pytest.mark.parametrize(
    "name", ["meta/tasks.parquet", "data/chunk-000/file-000.parquet", "meta/episodes/chunk-000/file-000.parquet"]
)
def test_missing_lerobot_files_are_named(port, name):
    assert len(read(port)) == 2
    (port / name).unlink()
    # lerobot took each for a dataset not yet downloaded and asked the hub for it (refused offline).
    with pytest.raises(FileNotFoundError, match=rf"port/{name}( is missing| holds no)|port/meta/episodes holds no"):
        read(port)


def test_a_missing_video_is_named(tmp_path):
    from test_data import _write_port

    root = _write_port(tmp_path / "port", LIBERO_LEROBOT_KEYS.cameras, 8, episodes=1, t=2, videos=True, size=32)
    video = sorted((root / "videos").glob("**/*.mp4"))[0]
    video.unlink()
    with pytest.raises(FileNotFoundError, match=rf"{video} is missing \(named by .*meta/episodes/.*parquet"):
        read(root)


def test_lerobot_metadata_of_the_wrong_type_is_named(port):
    info_path, stats_path = port / "meta" / "info.json", port / "meta" / "stats.json"
    info = json.loads(info_path.read_text())
    for key, value, message in [
        ("fps", "10", r"info.json: fps='10' is not a number > 0"),
        ("total_episodes", 3, r"info.json counts 3 episodes, the episodes index .* lists 2"),
        ("features", {"action": {"dtype": "float32", "shape": "7"}}, r"info.json: features=.* is not an object"),
        ("total_tasks", None, r"info.json: total_tasks=None is not an integer >= 0"),
    ]:
        info_path.write_text(json.dumps({**info, key: value}))
        with pytest.raises(ValueError, match=message):
            read(port)
    info_path.write_text(json.dumps(info))
    for garbage, message in [
        ("{not json", r"stats.json is not valid JSON"),
        (json.dumps({"action": {"mean": "abc"}}), r"stats.json: action.mean='abc' is not a number.*or delete it"),
        (json.dumps({"action": {"mean": [[1.0], [2.0, 3.0]]}}), r"stats.json: action.mean=.* is not a number"),
        (json.dumps([1, 2]), r"stats.json: expected \{feature: \{statistic: numbers\}\}"),
    ]:
        stats_path.write_text(garbage)
        with pytest.raises(ValueError, match=message):
            read(port)
    stats_path.unlink()  # lerobot reads a dataset without one, and so does read_lerobot
    assert len(read(port)) == 2


def test_reading_a_dataset_writes_nothing_under_the_home_cache(port, tmp_path, monkeypatch):
    import datasets.config

    # Where `datasets` puts its cache for a user whose HF_HOME, XDG_CACHE_HOME and
    # HF_DATASETS_CACHE are unset (fixed when it is imported, so set here as it would be).
    home_cache = tmp_path / "home" / ".cache" / "huggingface" / "datasets"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", home_cache)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    killed, live = (tmp_path / f".port.arrow.vla-tmp-{pid}-0badc0de" for pid in (dead.pid, os.getpid()))
    for folder, pid in ((killed, dead.pid), (live, os.getpid())):  # a killed read's, another read's
        folder.mkdir()
        (folder / MARKER).write_text(json.dumps({"target": "port.arrow", "pid": pid}))
    assert len(read(port)) == 2
    assert not home_cache.exists() or not any(home_cache.iterdir())
    assert datasets.config.HF_DATASETS_CACHE == home_cache  # restored for whoever reads next
    # This read's scratch copy beside the dataset is gone, and so is the killed one's.
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, "port"]
