import numpy as np
import pytest
import torch

from vla.action_tokenizer import ActionTokenizer, ActionTokenizerConfig


def make(bins=4, low=(-1.0,), high=(1.0,), binary=()):
    return ActionTokenizer(ActionTokenizerConfig(bins=bins, binary_dims=list(binary)), np.array(low), np.array(high))


def test_hand_computed_edges():
    # 4 bins over [-1, 1]: edges -1, -0.5, 0, 0.5, 1; a lower edge belongs to the bin above it.
    tok = make()
    x = torch.tensor([-1.0, -0.75, -0.5, -0.01, 0.0, 0.49, 0.5, 0.99, 1.0, 5.0, -5.0]).reshape(1, -1, 1)
    expected = [0, 0, 1, 1, 2, 2, 3, 3, 3, 3, 0]
    assert tok.encode(x).flatten().tolist() == expected
    centres = tok.decode(torch.arange(4).reshape(1, 4, 1)).flatten().tolist()
    assert centres == pytest.approx([-0.75, -0.25, 0.25, 0.75])


def test_round_trip_within_half_bin_inside_bounds():
    rng = np.random.default_rng(0)
    low, high = np.array([-0.3, 0.0, 2.0]), np.array([0.5, 0.01, 7.0])
    tok = ActionTokenizer(ActionTokenizerConfig(bins=256, binary_dims=[]), low, high)
    x = torch.tensor(rng.uniform(low, high, size=(8, 5, 3)), dtype=torch.float32)
    err = (tok.decode(tok.encode(x)) - x).abs()
    half_bin = torch.tensor((high - low) / 256 / 2, dtype=torch.float32)
    assert (err <= half_bin + 1e-6).all()


def test_outside_bounds_clips_to_edge_bins():
    tok = make(bins=8, low=(0.0,), high=(1.0,))
    assert tok.encode(torch.tensor([[[-3.0]], [[9.0]]])).flatten().tolist() == [0, 7]


def test_binary_gripper_dimension():
    tok = make(bins=16, low=(-1.0, -1.0), high=(1.0, 1.0), binary=(1,))
    x = torch.tensor([[[0.3, -0.2], [0.3, 0.7]]])
    t = tok.encode(x)
    assert t[0, :, 1].tolist() == [0, 15]
    assert tok.decode(t)[0, :, 1].tolist() == [-1.0, 1.0]


def test_width_mismatch_fails_loudly():
    tok = make(low=(-1.0,) * 7, high=(1.0,) * 7)
    with pytest.raises(ValueError, match="width 6 but the action tokenizer was fit on width 7"):
        tok.encode(torch.zeros(1, 8, 6))
    with pytest.raises(ValueError, match="width"):
        tok.decode(torch.zeros(1, 8, 8, dtype=torch.long))


def test_nan_and_bad_bounds_rejected():
    tok = make()
    with pytest.raises(ValueError, match="NaN"):
        tok.encode(torch.tensor([[[float("nan")]]]))
    with pytest.raises(ValueError, match="NaN"):
        make(low=(float("nan"),))
    with pytest.raises(ValueError, match="out of range"):
        make(binary=(3,))


def test_state_dict_round_trip():
    tok = make(bins=64, low=(-0.2, 0.0), high=(0.4, 3.0), binary=(1,))
    again = ActionTokenizer.from_state_dict(tok.state_dict())
    x = torch.rand(2, 3, 2)
    assert torch.equal(tok.encode(x), again.encode(x))
    assert again.bins == 64 and again.action_dim == 2
