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

test_older_checkpoint_configs_still_load guards the migrations that the first test must not break
(it failed before too: the migrated config was not returned, the changed decoding not said).
"""

import hashlib
import json
import logging
import math
import shutil
from pathlib import Path

import pytest
import torch
from helpers import tiny_policy_config, tiny_stats

from vla.checkpoint import CheckpointError, check_checkpoint, load_model, save_checkpoint
from vla.configs import ConfigError, from_dict
from vla.model import PolicyConfig, VLAModel
from vla.policy import VLAPolicy
from vla.sampling import SamplerConfig, masked_diffusion_decode

REPO = Path(__file__).resolve().parents[1]


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
        for key in ("camera_shapes", "render_mode", "decoder_arch"):
            del policy[key]
        del policy["sampler"]["remask_probe"]
        policy["rotate_180"] = False
        policy["action_tokenizer"] |= {"low_quantile": 0.01, "high_quantile": 0.99}

    edit_config(ckpt, old)
    cfg = load_model(ckpt).cfg
    assert (cfg.camera_shapes, cfg.render_mode, cfg.decoder_arch) == ({}, "", "expert")
    assert cfg.sampler.remask_probe == 0.5
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
