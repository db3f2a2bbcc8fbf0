"""Checkpoint folders: save, verify, load. Self-describing and pickle-free.

config.json            format, version, the resolved PolicyConfig (cameras, frame shapes,
                       crop, rotation, sampler) and extras (training step)
model.safetensors      weights (a tied parameter once, under its first name)
action_tokenizer.json  bounds, bins, binary dimensions
stats.json             state/action normalisation statistics
backbone/              the HF config and processor: the architecture rebuilds offline
training_state/        optimiser, scheduler, RNG (written by training only)
manifest.json          sha256 and size of every other file, written last and checked at load
"""

from __future__ import annotations

import logging
from pathlib import Path

import safetensors.torch
import torch

from vla.backbone import model_from_saved_config
from vla.configs import ConfigError, atomic_dir, file_sha256, from_dict, load_json, save_json, to_dict
from vla.model import PolicyConfig, VLAModel
from vla.sampling import NonFiniteError

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "vla-policy"
CHECKPOINT_VERSION = 1
MANIFEST = "manifest.json"


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


def check_checkpoint(path: str | Path, verify: bool = True) -> dict:
    """Raise `CheckpointError`, naming the file, unless `path` is a complete checkpoint whose
    files are those written at save (sha256 in manifest.json); returns its config.json."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    for name in ("config.json", "model.safetensors", "action_tokenizer.json", "stats.json", "backbone"):
        if not (path / name).exists():
            raise CheckpointError(f"{path} is not a complete policy checkpoint: {name} is missing")
    if verify:
        verify_manifest(path)
    try:
        meta = load_json(path / "config.json")
    except ValueError as e:
        raise CheckpointError(str(e)) from e
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path / 'config.json'} is not a {CHECKPOINT_FORMAT} checkpoint")
    if "policy" not in meta:
        raise CheckpointError(f"{path / 'config.json'} has no 'policy' section")
    return meta


def saved_policy_config(path: str | Path, meta: dict | None = None) -> PolicyConfig:
    """The checkpoint's PolicyConfig, type-checked; keys that older versions wrote and that no
    longer exist (`action_tokenizer.low_quantile` / `high_quantile`, never used; `rotate_180`
    when false) are dropped."""
    path = Path(path)
    saved = (meta if meta is not None else load_json(path / "config.json"))["policy"]
    if isinstance(saved, dict) and "rotate_180" in saved:
        if saved["rotate_180"]:
            raise CheckpointError(
                f"{path / 'config.json'}: policy.rotate_180=true (the model turned its frames); image orientation is "
                "now fixed by the readers and environments (envs/libero.py), so this checkpoint would see its "
                "frames upside down: retrain it"
            )
        saved = {k: v for k, v in saved.items() if k != "rotate_180"}
    if isinstance(saved, dict) and isinstance(saved.get("action_tokenizer"), dict):
        saved = {
            **saved,
            "action_tokenizer": {k: v for k, v in saved["action_tokenizer"].items() if "quantile" not in k},
        }
    try:
        return from_dict(PolicyConfig, saved, "policy")
    except ConfigError as e:
        raise CheckpointError(f"{path / 'config.json'}: {e}") from e


def load_model(path: str | Path, device: str | torch.device = "cpu") -> VLAModel:
    """The network of a checkpoint folder, verified (files, config types, finite weights)."""
    path = Path(path)
    cfg = saved_policy_config(path, check_checkpoint(path))
    vlm = model_from_saved_config(path / "backbone")
    try:
        stats, tok = load_json(path / "stats.json"), load_json(path / "action_tokenizer.json")
        model = VLAModel(cfg, stats, vlm=vlm, tokenizer_state=tok)
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: stats.json or action_tokenizer.json do not fit the config: {e}") from e
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
    return model.to(device).eval()


def verify_manifest(path: Path) -> None:
    """Check every file listed in `path/manifest.json` against its recorded size and sha256."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        log.warning("%s has no %s (saved by an older version): its files cannot be verified", path, MANIFEST)
        return
    try:
        files = load_json(manifest_path)["files"]
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{manifest_path} is unreadable ({e}); the checkpoint cannot be verified") from e
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
