"""Multi-process training: process-group set-up, FSDP sharding of the policy, and full
(unsharded) state dicts, so that checkpoints look the same whichever strategy wrote them.

strategy=ddp replicates the policy on every rank; strategy=fsdp (torch's FSDP2, `fully_shard`)
splits parameters, gradients and optimiser moments across ranks, for backbones whose weights
and Adam moments do not fit one device. Both are launched with torchrun.
"""

from __future__ import annotations

import logging
import os

import torch
from torch import nn

log = logging.getLogger(__name__)


def init_distributed(strategy: str, device: torch.device) -> tuple[int, int]:
    """Join the torchrun process group (gloo on CPU, nccl on CUDA); returns (rank, world size)."""
    if strategy == "none":
        return 0, 1
    import torch.distributed as dist

    if "RANK" not in os.environ:
        raise RuntimeError(f"strategy={strategy} needs a distributed launch: torchrun --nproc-per-node N ...")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def shard_policy(policy: nn.Module, device: torch.device) -> list[str]:
    """Apply FSDP2 in place: one unit per transformer layer (the VLM's own `_no_split_modules`,
    as transformers declares them, and the action decoder's blocks), the rest in the root unit.
    Returns the sharded classes. Parameter names do not change, so checkpoints do not either."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    vlm = policy.backbone.vlm
    base = vlm.get_base_model() if hasattr(vlm, "get_base_model") else vlm  # under LoRA (peft)
    units = set(getattr(base, "_no_split_modules", None) or []) | {"Block"}
    mesh = init_device_mesh(device.type, (torch.distributed.get_world_size(),))
    # The unified decoder runs the language model twice per step (the prefix, then the slots),
    # and the slots' gradient reaches each layer's prefix keys/values through the cache, past
    # FSDP's per-call backward hooks: a layer resharded after its slot-pass backward would then
    # be read freed by its prefix-pass backward. So under the unified decoder the language
    # model's layers are not units of their own but part of the root unit, which stays gathered
    # from forward to the end of backward (more memory per rank for the language model; its
    # parameters, gradients and optimiser state stay sharded between steps).
    skip = set()
    if policy.cfg.decoder_arch == "unified":
        skip = {id(m) for m in policy.backbone.language_model.modules()}
    sharded = []
    for module in reversed(list(policy.modules())):  # inner units before the ones around them
        name = type(module).__name__
        if name in units and module is not policy and id(module) not in skip:
            fully_shard(module, mesh=mesh)
            sharded.append(name)
    fully_shard(policy, mesh=mesh)
    # Methods called outside forward() must gather their unit's parameters too.
    for block in getattr(policy.decoder, "blocks", []):  # the action expert's
        register_fsdp_forward_method(block, "keys_values")
    register_fsdp_forward_method(policy, "fully_masked_accuracy")
    if not any(u != "Block" for u in sharded):
        log.warning("the backbone declares no transformer layers (_no_split_modules): it is one FSDP unit")
    return sorted(set(sharded))


def _options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def full_model_state(policy: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer, whole, on CPU (on rank 0; other ranks get {}). Collective
    under FSDP. Unsharded CPU tensors come back as the live parameters: write them out before
    the next step."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(policy, options=_options(cpu_offload=True))


def full_tensors(tensors: dict[str, torch.Tensor], rank: int) -> dict[str, torch.Tensor]:
    """Possibly sharded tensors (FSDP's DTensors, e.g. the EMA) whole on CPU on rank 0, {} on
    the others. Collective under FSDP."""
    from torch.distributed.tensor import DTensor

    out = {}
    for name, t in tensors.items():
        t = t.full_tensor() if isinstance(t, DTensor) else t
        if rank == 0:
            out[name] = t.detach().cpu()
    return out


def full_optimizer_state(policy: nn.Module, optimizer) -> dict:
    """The optimiser state keyed by parameter name, whole, on CPU (rank 0). Collective."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(policy, optimizer, options=_options(cpu_offload=True))


def load_full_optimizer_state(policy: nn.Module, optimizer, state: dict) -> None:
    """Every rank passes the whole (name-keyed) state; each keeps its own shard. Parameters that
    never had a gradient (modules the prefix does not use) have no state, hence strict=False."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(policy, optimizer, state, options=_options(strict=False))


def load_full_weights(policy: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Copy whole tensors into (possibly sharded) parameters; names absent from `weights` stay."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    set_model_state_dict(policy, weights, options=_options(strict=False))
