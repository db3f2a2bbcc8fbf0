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


def rollout_drawing_on_demand_and_every_step(policy, env, execute_steps):
    """Run one episode twice with `envs.evaluate.rollout`: frames drawn only at the policy's
    requests (its default), then every step (a video of the policy's own frames needs them).
    Returns, per run, the result, the observations the policy was given and how many times the
    environment drew its cameras."""
    import numpy as np

    from envs.evaluate import rollout

    base, infer = env.unwrapped, policy.infer
    seen, draws, observe = [], [0], env.unwrapped.observe

    def spy(observation, fixed_actions=None):
        seen.append({**{c: np.array(im) for c, im in observation["images"].items()}, "state": observation["state"]})
        return infer(observation, fixed_actions=fixed_actions)

    def counted():
        draws[0] += 1
        return observe()

    policy.infer, base.observe = spy, counted
    runs = []
    try:
        for record in (False, True):
            seen, draws[0] = [], 0
            res = rollout(policy, env, 0, execute_steps, record=record)
            runs.append((res, seen, draws[0]))
    finally:
        policy.infer = infer
        del base.observe
    return runs


def assert_same_episode_fewer_draws(runs):
    """The two runs of `rollout_drawing_on_demand_and_every_step` are one episode: same outcome,
    the same frames and states at every request; on demand draws once per request, every step
    once per step and at the reset."""
    import numpy as np

    (lazy, lazy_seen, lazy_draws), (full, full_seen, full_draws) = runs
    assert (lazy["success"], lazy["steps"]) == (full["success"], full["steps"])
    assert len(lazy_seen) == len(full_seen) > 1
    for a, b in zip(lazy_seen, full_seen, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    assert lazy_draws == len(lazy_seen) and full_draws == full["steps"] + 1
