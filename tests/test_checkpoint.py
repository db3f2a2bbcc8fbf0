"""The checkpoint says what a policy is: its embodiment is recorded at training, read through one
reader (`vla.checkpoint.Checkpoint`) by evaluation and the policy server, and a checkpoint of
the previous format (tests/data/checkpoint_v1: saved by the code of a8e1fbb from a 2-step debug
run on the built-in suite) loads through the one migration path."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import debug_train_config

from vla.checkpoint import CHECKPOINT_VERSION, Checkpoint
from vla.configs import load_json

V1 = Path(__file__).parent / "data" / "checkpoint_v1"
TABLETOP = {
    "robot": "tabletop",
    "state_names": ["x", "y", "z", "ax", "ay", "az", "fl", "fr"],
    "action_names": ["dx", "dy", "dz", "drx", "dry", "drz", "gripper"],
    "action_space": "delta_eef_libero",
    "fps": 20.0,
}


def test_a_version_1_checkpoint_gets_its_embodiment_from_its_data_source():
    from envs.tabletop.env import ACTION_NAMES, STATE_NAMES
    from vla.configs import to_dict

    ckpt = Checkpoint(V1)
    assert load_json(V1 / "config.json")["version"] == 1 and "embodiment" not in load_json(V1 / "config.json")["policy"]
    assert to_dict(ckpt.policy_config.embodiment) == TABLETOP
    # the migration's frozen table still says what the built-in suite is
    assert (TABLETOP["state_names"], TABLETOP["action_names"]) == (STATE_NAMES, ACTION_NAMES)
    assert ckpt.step == 2 and ckpt.train_config["data"]["source"] == "builtin"
    assert ckpt.sha256("model.safetensors") == load_json(V1 / "manifest.json")["files"]["model.safetensors"]["sha256"]


def test_a_version_1_checkpoint_acts_and_is_evaluated_and_served(tmp_path):
    from deploy.server import CheckpointPolicy, CheckpointPolicyConfig
    from envs.evaluate import EvalConfig, check_trained_for, evaluate
    from vla.policy import VLAPolicy

    policy = VLAPolicy.load(V1)
    rng = np.random.default_rng(0)
    obs = {
        "images": {c: rng.integers(0, 255, (128, 128, 3), dtype=np.uint8) for c in ("agentview", "wrist")},
        "state": np.array([0.5, -0.1, 0.1, 0.0, 3.1, 0.0, 0.02, 0.02], dtype=np.float32),
        "instruction": "pick up the red cube",
    }
    assert policy.infer(obs).shape == (4, 7)
    res = evaluate(V1, EvalConfig(tasks=["lift_red"], episodes_per_task=1, workers=1, videos_per_task=0), tmp_path)
    assert res["episodes"][0]["task"] == "lift_red"
    with pytest.raises(ValueError, match="'tabletop' robot's data.*eval.suite=builtin"):
        check_trained_for(V1, "libero_object", policy.cfg)
    spec = CheckpointPolicy(CheckpointPolicyConfig(checkpoint=str(V1))).spec  # no fps= or action_space= needed
    assert (spec.state_names, spec.action_space, spec.fps) == (TABLETOP["state_names"], "delta_eef_libero", 20.0)


def test_the_server_reads_the_embodiment_without_the_simulators(tmp_path):
    """The server learns names, rate and action convention from the checkpoint, not by importing
    the environment its data came from (which imports MuJoCo and sets MUJOCO_GL)."""
    code = (
        "import sys; from deploy.server import CheckpointPolicy, CheckpointPolicyConfig; "
        f"spec = CheckpointPolicy(CheckpointPolicyConfig(checkpoint={str(V1)!r})).spec; "
        "print(spec.fps, sorted(m for m in sys.modules if m.startswith(('envs', 'mujoco'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[0] == "20.0" and out.stdout.strip().endswith("[]")


def test_training_records_the_embodiment_of_its_data(tmp_path, debug_data_root):
    from train.loop import train

    summary = train(debug_train_config(tmp_path / "run", debug_data_root, "stop_after=1"))
    saved = load_json(Path(summary["checkpoint"]) / "config.json")
    assert saved["version"] == CHECKPOINT_VERSION == 2
    assert saved["policy"]["embodiment"] == TABLETOP


def test_a_given_embodiment_field_wins_and_a_bad_one_is_named(tmp_path, debug_data_root):
    from data.source import prepare_data
    from train.loop import policy_config_for

    cfg = debug_train_config(tmp_path / "run", debug_data_root, "policy.embodiment.fps=10")
    policy_cfg = policy_config_for(cfg.policy, prepare_data(cfg.data), cfg.data)
    assert policy_cfg.embodiment.fps == 10 and policy_cfg.embodiment.robot == "tabletop"
    with pytest.raises(Exception, match="policy.embodiment.action_space='joints'; choose one of"):
        debug_train_config(tmp_path / "run", debug_data_root, "policy.embodiment.action_space=joints")
    with pytest.raises(Exception, match="state_names has 2 names for a state of width 8"):
        debug_train_config(tmp_path / "run", debug_data_root, "policy.embodiment.state_names=[a,b]")


def test_a_lerobot_datasets_names_rate_and_robot_become_the_embodiment(tmp_path):
    from data.source import DataConfig, embodiment_of

    root = tmp_path / "port"
    (root / "meta").mkdir(parents=True)
    info = {
        "fps": 30,
        "robot_type": "so101_follower",
        "features": {
            "observation.state": {"dtype": "float32", "shape": [2], "names": ["shoulder.pos", "wrist.pos"]},
            "action": {"dtype": "float32", "shape": [2], "names": {"motors": ["shoulder", "wrist"]}},
        },
    }
    (root / "meta" / "info.json").write_text(json.dumps(info))
    emb = embodiment_of(DataConfig(source="lerobot", root=str(root)))
    assert (emb.robot, emb.fps, emb.action_space) == ("so101_follower", 30.0, "")
    assert (emb.state_names, emb.action_names) == (["shoulder.pos", "wrist.pos"], ["shoulder", "wrist"])
    shutil.rmtree(root)  # a lone cache: unknown
    assert embodiment_of(DataConfig(source="lerobot", root=str(root))).robot == ""
