"""Shared test helpers: tiny configs and statistics for sub-second CPU policies, composed run
configs, hand-made batches, free ports."""

import socket


def tiny_policy_config(**overrides):
    """A policy small enough for sub-second CPU tests."""
    from dataclasses import replace

    from vla.action_tokenizer import ActionTokenizerConfig
    from vla.backbone import BackboneConfig
    from vla.decoder import DecoderConfig
    from vla.model import PolicyConfig

    cfg = PolicyConfig(
        chunk_size=4,
        action_dim=3,
        state_dim=2,
        cameras=["agentview"],
        backbone=BackboneConfig(
            image_size=32,
            patch_size=8,
            vision_hidden=32,
            vision_layers=1,
            hidden_size=32,
            layers=1,
            heads=2,
            kv_heads=1,
        ),
        decoder=DecoderConfig(d_model=32, layers=2, heads=2),
        action_tokenizer=ActionTokenizerConfig(bins=16, binary_dims=[2]),
    )
    return replace(cfg, **overrides)


def tiny_stats(action_dim=3, state_dim=2):
    return {
        "state": {"mean": [0.0] * state_dim, "std": [1.0] * state_dim},
        "action": {"q01": [-1.0] * action_dim, "q99": [1.0] * action_dim},
    }


def composed(overrides):
    """The `vla-train` config composed by hydra, as the command line would."""
    from hydra import compose, initialize

    from train.hydra_app import register_configs

    register_configs()
    with initialize(version_base=None, config_path=None):
        return compose(config_name="vla_train", overrides=overrides)


def debug_train_config(run_dir, data_root, *overrides):
    """The debug preset (seconds per run) in `run_dir`, on the session's recorded debug data."""
    from train.hydra_app import to_train_config

    return to_train_config(
        composed(["experiment=debug", f"run_dir={run_dir}", f"data.root={data_root}", "eval_at_end=false", *overrides])
    )


def model_batch(model, raw: dict) -> dict:
    """A hand-made batch {images (B, N, 3, S, S) float, state raw, instruction, actions,
    action_is_pad} -> the training batch the loader's collate would give `model`."""
    inputs = model.inputs(raw["images"], raw["state"], raw["instruction"])
    return {**inputs, **{k: raw[k] for k in ("instruction", "actions", "action_is_pad") if k in raw}}


def free_port() -> int:
    """A TCP port free on loopback now (for torchrun's rendezvous; never a fixed number)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class InlinePool:
    """ProcessPoolExecutor stand-in that runs jobs in this process (monkeypatched module globals apply)."""

    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def map(self, fn, jobs):
        return (fn(j) for j in jobs)
