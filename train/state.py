"""Resumable training state without pickle: tensors in safetensors, structure in JSON.

Holds the optimiser moments, scheduler position, RNG states and (with EMA) the raw training
weights, so that a resumed run continues exactly where the interrupted one stopped. The data
position is not stored: it follows from the step (see data.dataset.ResumableBatches).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import safetensors.torch
import torch

from vla.configs import load_json, save_json


def save_training_state(folder: Path, step: int, optimizer, scheduler, weights: dict | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    opt = optimizer.state_dict()
    for pid, st in opt["state"].items():
        for k, v in st.items():
            tensors[f"opt/{pid}/{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
    if weights is not None:
        for k, v in weights.items():
            tensors[f"weights/{k}"] = v.detach().cpu().contiguous()
    tensors["rng/torch"] = torch.get_rng_state()
    safetensors.torch.save_file(tensors, str(folder / "state.safetensors"))
    np_state = np.random.get_state()
    save_json(folder / "state.json", {
        "step": step,
        "param_groups": opt["param_groups"],
        "scheduler": scheduler.state_dict(),
        "rng_python": repr(random.getstate()),
        "rng_numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    })  # fmt: skip


def load_training_state(folder: Path, optimizer, scheduler, weights: dict | None) -> int:
    meta = load_json(folder / "state.json")
    tensors = safetensors.torch.load_file(str(folder / "state.safetensors"))
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("opt/"):
            _, pid, name = key.split("/", 2)
            state.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    scheduler.load_state_dict(meta["scheduler"])
    if weights is not None:
        for k in weights:
            if f"weights/{k}" not in tensors:
                raise KeyError(f"{folder}: raw weights for {k} missing; was the run started without EMA?")
            weights[k].copy_(tensors[f"weights/{k}"])
    torch.set_rng_state(tensors["rng/torch"])
    random.setstate(_literal_tuple(meta["rng_python"]))
    n = meta["rng_numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), *n[2:]))
    return int(meta["step"])


def _literal_tuple(text: str):
    import ast

    return ast.literal_eval(text)  # literal_eval parses plain literals only; no code runs
