import os

# Offline and headless for every test: nothing may reach a model hub, rendering uses EGL.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MUJOCO_GL", "egl")


def tiny_policy_config(**overrides):
    """A policy small enough for sub-second CPU tests."""
    from vla.backbone import BackboneConfig
    from vla.decoder import DecoderConfig
    from vla.policy import PolicyConfig

    cfg = PolicyConfig(
        chunk_size=4,
        action_dim=3,
        state_dim=2,
        cameras=["agentview"],
        backbone=BackboneConfig(image_size=32, patch_size=8, vision_hidden=32, vision_layers=1, hidden_size=32,
                                layers=1, heads=2, kv_heads=1),
        decoder=DecoderConfig(d_model=32, layers=2, heads=2),
    )  # fmt: skip
    cfg.action_tokenizer.bins = 16
    cfg.action_tokenizer.binary_dims = [2]
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


def tiny_stats(action_dim=3, state_dim=2):
    return {
        "state": {"mean": [0.0] * state_dim, "std": [1.0] * state_dim},
        "action": {"q01": [-1.0] * action_dim, "q99": [1.0] * action_dim},
    }
