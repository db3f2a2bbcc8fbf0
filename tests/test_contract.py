"""One observation contract: what the policy's processor refuses, the deploy protocol refuses
first (with its own error code), so a bad observation never reaches the model as
`inference_failed` (an instruction over 1,000 characters used to)."""

import numpy as np
import pytest
from helpers import tiny_policy_config, tiny_stats

from deploy.protocol import ProtocolError, check_observation
from vla.contract import MAX_INSTRUCTION_CHARS, ObservationError
from vla.embodiment import Embodiment


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from deploy.server import CheckpointPolicy, CheckpointPolicyConfig
    from vla.model import VLAModel
    from vla.policy import VLAPolicy

    cfg = tiny_policy_config(
        action_dim=7,
        state_dim=8,
        cameras=["agentview", "wrist"],
        camera_shapes={"agentview": [32, 32], "wrist": [32, 32]},
        embodiment=Embodiment(action_space="delta_eef_libero", fps=20.0),
    )
    stats = tiny_stats(7, 8)
    stats["state"] |= {"min": [-1.0] * 8, "max": [1.0] * 8}
    path = VLAPolicy(VLAModel(cfg, stats)).save(tmp_path_factory.mktemp("contract") / "ckpt")
    return CheckpointPolicy(CheckpointPolicyConfig(checkpoint=str(path)))


def good():
    return {
        "images": {c: np.zeros((32, 32, 3), np.uint8) for c in ("agentview", "wrist")},
        "state": np.zeros(8, np.float32),
        "instruction": "pick up the cube",
    }


BAD = {
    "instruction too long": {"instruction": "x" * (MAX_INSTRUCTION_CHARS + 1)},
    "instruction empty": {"instruction": "  "},
    "instruction not text": {"instruction": 3},
    "state NaN": {"state": np.full(8, np.nan, np.float32)},
    "state wrong width": {"state": np.zeros(5, np.float32)},
    "state far out of range": {"state": np.full(8, -1e6, np.float32)},
    "camera missing": {"images": {"agentview": np.zeros((32, 32, 3), np.uint8)}},
    "frame of another size": {"images": {c: np.zeros((16, 16, 3), np.uint8) for c in ("agentview", "wrist")}},
    "frame not uint8": {"images": {c: np.zeros((32, 32, 3), np.float32) for c in ("agentview", "wrist")}},
}


def test_a_good_observation_passes_both(served):
    check_observation({**good(), "seq": 1, "epoch": 0}, served.spec, served.state_bounds)
    assert served.policy.infer(good()).shape == (4, 7)


@pytest.mark.parametrize("case", sorted(BAD))
def test_the_protocol_refuses_what_the_processor_refuses(served, case):
    obs = {**good(), **BAD[case]}
    with pytest.raises(ObservationError):
        served.policy.infer(obs)
    with pytest.raises(ProtocolError):
        check_observation({**obs, "seq": 1, "epoch": 0}, served.spec, served.state_bounds)
