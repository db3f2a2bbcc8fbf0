"""Launched by tests/test_train.py with torchrun (2 CPU processes): for each real VLM family,
one FSDP training step must equal the same step taken unsharded on the mean of both ranks'
gradients, with the backbone loaded by path, a LoRA and a frozen-vision variant included, and
the unified decoder (slots inside the language model) on two families."""

import copy
import sys
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist
from helpers import model_batch, tiny_policy_config, tiny_stats
from tiny_vlms import FAMILIES

from train.distributed import full_model_state, init_distributed, shard_policy
from vla.model import VLAModel


def batch(model, rank: int) -> dict:
    g = torch.Generator().manual_seed(rank)
    return model_batch(
        model,
        {
            "images": torch.rand(3, 1, 3, 32, 32, generator=g),
            "state": torch.randn(3, 2, generator=g),
            "instruction": ["pick up the red cube", "put the bowl on the plate", "go"],
            "actions": torch.rand(3, 4, 3, generator=g) * 2 - 1,
            "action_is_pad": torch.zeros(3, 4, dtype=torch.bool),
        },
    )


def step(policy, batches) -> None:
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)
    for rank, b in batches:
        loss, _ = policy(b, torch.Generator().manual_seed(100 + rank))
        (loss / len(batches)).backward()
    torch.nn.utils.clip_grad_norm_(params, 0.5)
    opt.step()


def main(root: Path) -> None:
    rank, world = init_distributed("fsdp", torch.device("cpu"))
    cases = [(family, {}) for family in sorted(FAMILIES)]
    cases += [
        ("idefics3", {"lora_rank": 4, "lora_targets": ["q_proj", "v_proj"]}),
        ("paligemma", {"freeze_vision": True}),
    ]
    # The unified decoder runs the language model's sharded layers twice per step (prefix, slots).
    cases += [
        ("qwen2_5_vl", {"decoder_arch": "unified"}),
        ("idefics3", {"decoder_arch": "unified", "lora_rank": 4, "lora_targets": ["q_proj", "v_proj"]}),
    ]
    for family, options in cases:
        src = root / family
        if rank == 0 and not src.exists():
            # Seeded, so that every run checks the same backbone weights: float sums of the
            # sharded and unsharded steps differ by amounts that depend on the weights.
            torch.manual_seed(1234)
            FAMILIES[family](src)
        dist.barrier()
        backbone = {k: v for k, v in options.items() if k != "decoder_arch"}
        arch = options.get("decoder_arch", "expert")
        cfg = tiny_policy_config(
            decoder_arch=arch, backbone=replace(tiny_policy_config().backbone, source=str(src), **backbone)
        )
        torch.manual_seed(0)
        reference = VLAModel(cfg, tiny_stats())
        sharded = copy.deepcopy(reference)
        before = {k: v.clone() for k, v in reference.state_dict().items()}
        units = shard_policy(sharded, torch.device("cpu"))
        # Two steps for the unified decoder: a second forward must see the updated parameters.
        for _ in range(2 if arch == "unified" else 1):
            step(reference, [(r, batch(reference, r)) for r in range(world)])
            step(sharded, [(rank, batch(reference, rank))])
        got, want = full_model_state(sharded), reference.state_dict()
        if rank == 0:
            assert got.keys() == want.keys(), (family, options)
            for k in want:
                torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-6, msg=f"{family} {options} {k}")
            trained = {k for k in want if not torch.equal(want[k], before[k])}
            assert "decoder.head.weight" in trained and any(k.startswith("backbone.") for k in trained), family
            if backbone:  # LoRA trains adapters only; a frozen vision tower stays as loaded
                assert all(
                    ("lora_" in k) == bool(options.get("lora_rank")) for k in trained if k.startswith("backbone.")
                )
                assert not any("vision" in k for k in trained) or not options.get("freeze_vision")
            print(f"ok {family} {options} units={units}", flush=True)
    dist.barrier()  # a rank that tears down while rank 0 still checks can abort gloo
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
