"""Checkpoint folders: save, verify, load. Self-describing and pickle-free.

config.json            format, version, the resolved PolicyConfig (cameras, frame shapes,
                       crop, sampler, embodiment) and extras (training step)
model.safetensors      weights (a tied parameter once, under its first name)
action_tokenizer.json  bounds, bins, binary dimensions
stats.json             state/action normalisation statistics
backbone/              the HF config and processor: the architecture rebuilds offline
training_state/        optimiser, scheduler, RNG (written by training only)
train_config.json      the run config (written by training only)
training_data.json     what the run trained on: cache, episodes, recorded source (training only)
manifest.json          sha256 and size of every other file, written last and checked at load

`Checkpoint` is the one reader of this layout: training, evaluation, the ablation tool and the
policy server read a checkpoint through it. Version 2 records the embodiment (robot, state and
action names, action convention, control rate); version 1 checkpoints get it from the data
source their train_config.json names (`saved_policy_config`, the one migration path).
"""

from __future__ import annotations

import dataclasses
import logging
import typing
from pathlib import Path

import safetensors.torch
import torch

from vla.backbone import model_from_saved_config
from vla.configs import ConfigError, atomic_dir, file_sha256, from_dict, load_json, save_json, to_dict
from vla.contract import NonFiniteError
from vla.model import PolicyConfig, VLAModel

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "vla-policy"
CHECKPOINT_VERSION = 2  # 2: the policy config records its embodiment
MANIFEST = "manifest.json"
_VERIFIED_FILES = ("config.json", "model.safetensors", "action_tokenizer.json", "stats.json")

# Fields added to PolicyConfig after checkpoints were already being saved, with the value that
# checkpoints saved before them behaved as; every other field must be in config.json (a missing
# one would silently take today's default: another image size, another tokenizer).
_ADDED_POLICY_FIELDS = {
    "camera_shapes": {},  # 513b2d2: frame sizes not recorded, any size accepted (what "{}" means)
    "render_mode": "",  # 292c6e7: rendering mode unknown (what "" means)
    "decoder_arch": "expert",  # 0527b2c: the action expert was the only architecture
    "prefix_max_steps": 0,  # 1e1358e: no training-time prefix conditioning existed
    "prefix_zero_prob": None,  # 2f7ae84: the prefix's delay was drawn uniformly on 0..prefix_max_steps
    # a739a71: no goal head existed (events and scale only matter when the weight is above 0)
    "goal_aux_weight": 0.0,
    "goal_aux_events": 2,
    "goal_aux_scale": 0.02,
}
# Checkpoints before the embodiment was recorded (CHECKPOINT_VERSION 1) say what their data was
# only through train_config.json's data.source; these are the embodiments those sources meant
# then (envs/tabletop/env.py and envs/libero/env.py at version 1, 20 Hz recordings). Others are unknown.
_V1_DELTA_EEF = {
    "action_names": ["dx", "dy", "dz", "drx", "dry", "drz", "gripper"],
    "action_space": "delta_eef_libero",
    "fps": 20.0,
}
_V1_EMBODIMENTS = {
    "builtin": {"robot": "tabletop", "state_names": ["x", "y", "z", "ax", "ay", "az", "fl", "fr"], **_V1_DELTA_EEF},
    "libero": {
        "robot": "libero",
        "state_names": ["eef_x", "eef_y", "eef_z", "eef_ax", "eef_ay", "eef_az", "finger_l", "finger_r"],
        **_V1_DELTA_EEF,
    },
}
_V1_SOURCES = {"builtin": "builtin", "libero_scripted": "libero", "libero_hdf5": "libero"}
_ADDED_SAMPLER_FIELDS = {
    # 358f02c: remasking is judged in a probe pass of this fraction of the committed slots. The
    # older in-place judgement no longer exists, so no value reproduces it; 0.5 is the fraction
    # the probe pass came with. Without remasking (the default) decoding does not read it.
    "remask_probe": 0.5,
    "candidates": "gumbel_max",  # the only candidate rule before the quantile rule existed
}
_ADDED_BACKBONE_FIELDS = {
    "vision_stem": "patch",  # SigLIP's own patch embedding was the only stem
}


class CheckpointError(ValueError):
    """A checkpoint folder that is incomplete, corrupt, edited or inconsistent; names the file."""


def save_checkpoint(
    model: VLAModel, path: str | Path, extra: dict | None = None, write_more=None, state_dict=None
) -> Path:
    """Write a self-describing checkpoint folder atomically (a crash leaves the old one).

    `write_more(folder)` may add files (e.g. training state) inside the same atomic write.
    `state_dict` replaces the model's own (e.g. the whole tensors of a sharded policy).
    """
    path = Path(path)
    with atomic_dir(path) as tmp:
        tmp.mkdir()
        state_dict = model.state_dict() if state_dict is None else state_dict
        seen, tensors = set(), {}
        for name, t in model.state_dict(keep_vars=True).items():  # tied parameters once (first name)
            if id(t) not in seen:
                seen.add(id(t))
                tensors[name] = state_dict[name].detach().cpu().contiguous()
        bad = [n for n, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
        if bad:
            raise NonFiniteError(
                f"refusing to save {path}: {len(bad)} of {len(tensors)} tensors hold NaN or Inf "
                f"(first: {bad[:3]}); the run diverged"
            )
        safetensors.torch.save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        meta = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "policy": to_dict(model.cfg)}
        save_json(tmp / "config.json", {**meta, **(extra or {})})
        save_json(tmp / "action_tokenizer.json", model.action_tokenizer.state_dict())
        save_json(tmp / "stats.json", model.stats)
        vlm = model.backbone.vlm
        base = vlm.get_base_model() if hasattr(vlm, "get_base_model") else vlm
        base.config.save_pretrained(tmp / "backbone")
        model.backbone.processor.save_pretrained(tmp / "backbone")
        if write_more is not None:
            write_more(tmp)
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        manifest = {str(p.relative_to(tmp)): {"sha256": file_sha256(p), "bytes": p.stat().st_size} for p in files}
        save_json(tmp / MANIFEST, {"files": manifest})
    return path


def check_checkpoint(path: str | Path, allow_unverified: bool = False) -> dict:
    """Raise `CheckpointError`, naming the file, unless `path` is a complete checkpoint whose
    files are those written at save (sha256 in manifest.json) and whose policy config is whole
    and valid; returns its config.json, the policy section migrated to the current fields
    (`saved_policy_config`). `allow_unverified=True` accepts a checkpoint without manifest.json
    (saved before manifests existed, or assembled by hand), with a warning."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    for name in ("config.json", "model.safetensors", "action_tokenizer.json", "stats.json", "backbone"):
        if not (path / name).exists():
            raise CheckpointError(f"{path} is not a complete policy checkpoint: {name} is missing")
    verify_manifest(path, allow_unverified)
    try:
        meta = load_json(path / "config.json")
    except ValueError as e:
        raise CheckpointError(str(e)) from e
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path / 'config.json'} is not a {CHECKPOINT_FORMAT} checkpoint")
    if "policy" not in meta:
        raise CheckpointError(f"{path / 'config.json'} has no 'policy' section")
    return {**meta, "policy": to_dict(saved_policy_config(path, meta))}


def saved_policy_config(path: str | Path, meta: dict | None = None) -> PolicyConfig:
    """The checkpoint's PolicyConfig, type-checked and complete: every field must be saved,
    except those added since checkpoints existed (`_ADDED_POLICY_FIELDS`, filled with what older
    versions did); keys that older versions wrote and that no longer exist
    (`action_tokenizer.low_quantile` / `high_quantile`, never used; `rotate_180` when false) are
    dropped."""
    path = Path(path)
    saved = (meta if meta is not None else load_json(path / "config.json"))["policy"]
    if isinstance(saved, dict) and "rotate_180" in saved:
        if saved["rotate_180"]:
            raise CheckpointError(
                f"{path / 'config.json'}: policy.rotate_180=true (the model turned its frames); image orientation is "
                "now fixed by the readers and environments (envs/libero/env.py), so this checkpoint would see its "
                "frames upside down: retrain it"
            )
        saved = {k: v for k, v in saved.items() if k != "rotate_180"}
    if isinstance(saved, dict) and isinstance(saved.get("action_tokenizer"), dict):
        saved = {
            **saved,
            "action_tokenizer": {k: v for k, v in saved["action_tokenizer"].items() if "quantile" not in k},
        }
    if isinstance(saved, dict):
        saved = {**_ADDED_POLICY_FIELDS, **saved}
        if "embodiment" not in saved:
            saved["embodiment"] = _v1_embodiment(path, saved)
        sampler = saved.get("sampler")
        if isinstance(sampler, dict):
            if "remask_probe" not in sampler and (sampler.get("remask_threshold") or sampler.get("remask_delta")):
                log.warning(
                    "%s: saved before remasking was judged in a probe pass; it now remasks the new way "
                    "(policy.sampler.remask_probe=0.5), so its decoding differs from when it was evaluated",
                    path / "config.json",
                )
            saved["sampler"] = {**_ADDED_SAMPLER_FIELDS, **sampler}
        if isinstance(saved.get("backbone"), dict):
            saved["backbone"] = {**_ADDED_BACKBONE_FIELDS, **saved["backbone"]}
    missing = _missing_keys(PolicyConfig, saved, "policy")
    if missing:
        raise CheckpointError(
            f"{path / 'config.json'}: the policy config lacks {missing}. A missing field would load "
            "as today's default, which need not be what the weights were trained with; restore the file "
            "from the checkpoint's source (its manifest.json records the saved file's sha256)"
        )
    try:
        return from_dict(PolicyConfig, saved, "policy")
    except ConfigError as e:
        raise CheckpointError(f"{path / 'config.json'}: {e}") from e


def _v1_embodiment(path: Path, policy: dict) -> dict:
    """The embodiment of a checkpoint saved before it was recorded, from the data source its
    train_config.json names (unknown without one, or when the widths do not fit)."""
    train_cfg = path / "train_config.json"
    try:
        source = load_json(train_cfg).get("data", {}).get("source", "") if train_cfg.is_file() else ""
    except (ValueError, AttributeError):
        source = ""
    known = _V1_EMBODIMENTS.get(_V1_SOURCES.get(source, ""))
    if known is None or (policy.get("state_dim"), policy.get("action_dim")) != (8, 7):
        return {"robot": "", "state_names": [], "action_names": [], "action_space": "", "fps": 0.0}
    return dict(known)


def _missing_keys(cls: type, data, where: str) -> list[str]:
    """Dotted names of the fields of dataclass `cls`, nested ones too, that `data` lacks (values
    of the wrong type are left to `from_dict`, which names them)."""
    if not isinstance(data, dict):
        return []
    hints = typing.get_type_hints(cls)
    missing = []
    for f in dataclasses.fields(cls):
        name = f"{where}.{f.name}"
        if f.name not in data:
            missing.append(name)
        elif dataclasses.is_dataclass(hints[f.name]):
            missing += _missing_keys(hints[f.name], data[f.name], name)
    return missing


def load_model(path: str | Path, device: str | torch.device = "cpu", allow_unverified: bool = False) -> VLAModel:
    """The network of a checkpoint folder, verified (files, config, finite weights); see
    `check_checkpoint` for `allow_unverified`."""
    path = Path(path)
    return _build_model(
        path, from_dict(PolicyConfig, check_checkpoint(path, allow_unverified)["policy"], "policy"), device
    )


def _build_model(path: Path, cfg: PolicyConfig, device: str | torch.device) -> VLAModel:
    """The network of a checked checkpoint folder with policy config `cfg`."""
    vlm = model_from_saved_config(path / "backbone", cfg.backbone.vision_stem)
    try:
        stats, tok = load_json(path / "stats.json"), load_json(path / "action_tokenizer.json")
        model = VLAModel(cfg, stats, vlm=vlm, tokenizer_state=tok)
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: stats.json or action_tokenizer.json do not fit the config: {e}") from e
    load_weights(path, model)
    return model.to(device).eval()


def load_weights(path: Path, model: VLAModel) -> None:
    """Load a checkpoint folder's weights into `model`: finite, and every parameter of the
    model's config present (`CheckpointError` naming the file otherwise)."""
    weights = path / "model.safetensors"
    try:
        tensors = safetensors.torch.load_file(str(weights))
    except Exception as e:  # safetensors raises its own error types for truncated or garbled files
        raise CheckpointError(f"{weights} cannot be read ({e}); the file is truncated or corrupt") from e
    bad = [n for n, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise CheckpointError(
            f"{weights}: {len(bad)} of {len(tensors)} tensors hold NaN or Inf (first: {bad[:3]}); "
            "this checkpoint comes from a diverged run and would act on garbage"
        )
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    params = model.state_dict(keep_vars=True)  # a tied parameter is saved once, under its first name
    loaded = {id(params[k]) for k in tensors if k in params}
    missing = [m for m in missing if id(params[m]) not in loaded]
    if missing or unexpected:
        raise CheckpointError(
            f"{weights} does not match the saved config: "
            f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )


class Checkpoint:
    """A checkpoint folder, checked when opened (files against the manifest, a whole and valid
    policy config, migrated from older versions) and read on demand. The only code that knows
    the folder's layout; `allow_unverified` as for `check_checkpoint`."""

    def __init__(self, path: str | Path, allow_unverified: bool = False) -> None:
        self.path = Path(path)
        self.allow_unverified = allow_unverified
        self.meta = check_checkpoint(self.path, allow_unverified)
        self.policy_config: PolicyConfig = from_dict(PolicyConfig, self.meta["policy"], "policy")

    @property
    def step(self) -> int | None:
        """The training step it was saved at (None: saved outside training)."""
        return self.meta.get("step")

    @property
    def train_config(self) -> dict:
        """The run config it was trained with, as saved ({} for a policy saved outside training)."""
        path = self.path / "train_config.json"
        try:
            return load_json(path) if path.is_file() else {}
        except ValueError as e:
            raise CheckpointError(str(e)) from e

    def stats(self) -> dict:
        return load_json(self.path / "stats.json")

    def tokenizer_state(self) -> dict:
        return load_json(self.path / "action_tokenizer.json")

    @property
    def training_state(self) -> Path:
        return self.path / "training_state"

    def sha256(self, name: str) -> str:
        """A file's sha256: from the manifest (verified when opened), else computed."""
        manifest = self.path / MANIFEST
        if manifest.is_file():
            entry = load_json(manifest)["files"].get(name)
            if entry is not None:
                return entry["sha256"]
        return file_sha256(self.path / name)

    def load_model(self, device: str | torch.device = "cpu") -> VLAModel:
        """The network (finite weights that match the config: `CheckpointError` otherwise)."""
        return _build_model(self.path, self.policy_config, device)

    def load_weights(self, model: VLAModel) -> None:
        """Its weights into an already built `model` (resuming training)."""
        load_weights(self.path, model)


def verify_manifest(path: Path, allow_unverified: bool = False) -> None:
    """Check every file listed in `path/manifest.json` against its recorded size and sha256.
    Without the manifest nothing can be checked: an error, or with `allow_unverified` a warning."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        if not allow_unverified:
            raise CheckpointError(
                f"{manifest_path} is missing: the checkpoint's files (its config.json too) cannot be verified. "
                "Restore it from the checkpoint's source; a checkpoint saved before manifests existed loads with "
                "allow_unverified=True (re-save it to write one)"
            )
        log.warning("%s has no %s: its files are not verified (allow_unverified)", path, MANIFEST)
        return
    try:
        files = load_json(manifest_path)["files"]
        if not all(isinstance(w, dict) and {"bytes", "sha256"} <= w.keys() for w in files.values()):
            raise ValueError("an entry lacks 'bytes' or 'sha256'")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{manifest_path} is unreadable ({e}); the checkpoint cannot be verified") from e
    # The files that decide what the policy does must be covered: a manifest that omits one
    # (an edited config.json, say) would verify nothing about it.
    unlisted = [name for name in _VERIFIED_FILES if name not in files]
    if unlisted:
        raise CheckpointError(
            f"{manifest_path} does not list {unlisted}: those files cannot be verified. Restore the checkpoint "
            "from its source"
        )
    for rel, want in files.items():
        f = path / rel
        if not f.is_file():
            raise CheckpointError(f"{f} is missing (listed in {manifest_path})")
        size = f.stat().st_size
        if size != want["bytes"]:
            raise CheckpointError(
                f"{f} has {size} bytes, {want['bytes']} were saved: the file was truncated or changed"
            )
        if file_sha256(f) != want["sha256"]:
            raise CheckpointError(
                f"{f} differs from the file saved with this checkpoint (sha256 mismatch): it was edited or "
                "corrupted. Restore it; to change evaluation settings use eval.* overrides, not the file"
            )
