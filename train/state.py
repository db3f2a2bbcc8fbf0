"""Resumable training state without pickle: tensors in safetensors, structure in JSON.

Holds the optimiser moments, scheduler position, RNG states and (with EMA) the raw training
weights, so that a resumed run continues exactly where the interrupted one stopped. The data
position is not stored: it follows from the step (see data.dataset.ResumableBatches).

The optimiser state is keyed by parameter name (torch.distributed.checkpoint's full state
dict), so one file serves every strategy: a run saved under FSDP resumes under DDP or alone.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import safetensors.torch
import torch

from vla.configs import load_json, save_json


def save_training_state(folder: Path, step: int, optim_state: dict, scheduler, weights: dict | None) -> None:
    """optim_state: {"state": {name: {key: tensor}}, "param_groups": [{..., "params": [name]}]}."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for name, st in optim_state["state"].items():
        for k, v in st.items():
            tensors[f"opt/{name}/{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
    for k, v in (weights or {}).items():
        tensors[f"weights/{k}"] = v.detach().cpu().contiguous()
    tensors["rng/torch"] = torch.get_rng_state()
    safetensors.torch.save_file(tensors, str(folder / "state.safetensors"))
    np_state = np.random.get_state()
    save_json(
        folder / "state.json",
        {
            "step": step,
            "param_groups": optim_state["param_groups"],
            "scheduler": scheduler.state_dict(),
            "rng_python": repr(random.getstate()),
            "rng_numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        },
    )


def load_training_state(folder: Path, scheduler) -> tuple[int, dict, dict[str, torch.Tensor]]:
    """Restore the scheduler and RNGs; return (step, optimiser state as saved, raw weights by name)."""
    meta = load_json(folder / "state.json")
    tensors = safetensors.torch.load_file(str(folder / "state.safetensors"))
    state: dict[str, dict] = {}
    weights = {}
    for key, value in tensors.items():
        if key.startswith("opt/"):
            name, k = key[len("opt/") :].rsplit("/", 1)
            state.setdefault(name, {})[k] = value
        elif key.startswith("weights/"):
            weights[key[len("weights/") :]] = value
    groups = meta["param_groups"]
    if any(not isinstance(p, str) for g in groups for p in g["params"]):
        raise ValueError(
            f"{folder} holds an optimiser state from before parameter-named states; resume=false starts over"
        )
    scheduler.load_state_dict(meta["scheduler"])
    torch.set_rng_state(tensors["rng/torch"])
    random.setstate(_literal_tuple(meta["rng_python"]))
    n = meta["rng_numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), *n[2:]))
    return int(meta["step"]), {"state": state, "param_groups": groups}, weights


def _literal_tuple(text: str):
    import ast

    return ast.literal_eval(text)  # literal_eval parses plain literals only; no code runs
