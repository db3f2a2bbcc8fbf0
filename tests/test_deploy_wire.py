"""The deploy node's wire format and message checks: strict decoding, caps, fuzzing."""

import pickle

import msgpack
import numpy as np
import pytest
from deploy_helpers import observation, spec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deploy.protocol import PolicySpec, ProtocolError, check_observation, check_reply, make_reply
from deploy.wire import MAX_OBSERVATION_BYTES, WireError, decode, encode


def openpi_pack(obj):
    """openpi-client's own encoding of an array (its msgpack_numpy.pack_array), written out."""
    if isinstance(obj, np.ndarray):
        return {b"__ndarray__": True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": obj.shape}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    return obj


def test_round_trip_and_openpi_layout():
    obs = observation(spec()).to_wire()
    back = decode(encode(obs), MAX_OBSERVATION_BYTES)
    assert np.array_equal(back["images"]["agentview"], obs["images"]["agentview"])
    assert back["state"].dtype == np.float32 and not back["state"].flags.writeable  # a view of the message
    theirs = msgpack.packb(obs, default=openpi_pack, use_bin_type=True)  # what openpi-client sends
    assert theirs == encode(obs)
    assert decode(msgpack.packb({"x": np.float32(2.5)}, default=openpi_pack), 1024) == {"x": 2.5}


@pytest.mark.parametrize(
    "array",
    [
        np.array([object()], dtype=object),
        np.zeros(2, dtype=[("a", "<f4"), ("b", "<i4")]),
        np.zeros(2, np.complex64),
        np.zeros(2, ">f4"),
        np.zeros(2, np.float16),
    ],
    ids=["object", "structured", "complex", "big-endian", "float16"],
)
def test_refused_dtypes(array):
    with pytest.raises(WireError):
        encode({"a": array})
    forged = msgpack.packb(
        {"a": {b"__ndarray__": True, b"data": b"\0" * array.nbytes, b"dtype": array.dtype.str, b"shape": [2]}}
    )
    with pytest.raises(WireError, match="dtype"):
        decode(forged, 1024)


def test_declared_shape_checked_against_bytes_before_allocation():
    huge = msgpack.packb(
        {b"__ndarray__": True, b"data": b"\0" * 16, b"dtype": "<f8", b"shape": [100_000, 100_000, 100]}
    )
    with pytest.raises(WireError, match="needs 8000000000000 bytes, the message has 16"):
        decode(huge, 1024)
    for shape in ([-1, 2], [2.0], "abc", [1] * 5):
        with pytest.raises(WireError, match="shape"):
            decode(msgpack.packb({b"__ndarray__": True, b"data": b"", b"dtype": "|u1", b"shape": shape}), 1024)


def test_pickle_and_garbage_and_size_caps():
    with pytest.raises(WireError):
        decode(pickle.dumps({"state": np.zeros(3)}), MAX_OBSERVATION_BYTES)
    with pytest.raises(WireError, match="too_large|exceeds"):
        decode(b"\0" * (100 * 2**20), MAX_OBSERVATION_BYTES)
    with pytest.raises(WireError, match="binary frame"):
        decode("text", 1024)
    deep = b"\x91" * 5000 + b"\xc0"  # 5000 nested one-element lists
    with pytest.raises(WireError, match="well-formed.*StackError"):
        decode(deep, 10_000)
    ext = msgpack.packb(msgpack.ExtType(1, b"x"))
    with pytest.raises(WireError):
        decode(ext, 1024)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_fuzz_random_bytes_only_raise_wire_error(data):
    try:
        msg = decode(data, 4096)
    except WireError:
        return
    try:  # whatever decodes must then pass or fail the observation check cleanly
        check_observation(msg, spec())
    except ProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzz_mutated_observations(data):
    """Bit flips, truncations and insertions in a valid observation: a clean error or a valid
    observation, never another exception."""
    raw = bytearray(encode(observation(spec(image=8)).to_wire()))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        i = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "cut":
            raw = raw[:i]
        else:
            raw[i:i] = data.draw(st.binary(min_size=1, max_size=8))
    try:
        check_observation(decode(bytes(raw), 1 << 20), spec(image=8))
    except (WireError, ProtocolError):
        pass


def test_observation_checks_name_the_field():
    s = spec()
    good = observation(s).to_wire()
    cases = {
        "bad_camera": {**good, "images": {"agentview": good["images"]["agentview"]}},
        "bad_image": {**good, "images": {**good["images"], "wrist": np.zeros((32, 32, 3), np.uint8)}},
        "bad_state": {**good, "state": np.zeros(5, np.float32)},
        "bad_prefix": {**good, "prefix_actions": np.zeros((s.chunk_size, s.action_dim), np.float32)},
        "bad_observation": {**good, "extra": 1},
        "bad_instruction": {**good, "instruction": ""},
    }
    for code, msg in cases.items():
        with pytest.raises(ProtocolError) as e:
            check_observation(decode(encode(msg), MAX_OBSERVATION_BYTES), s)
        assert e.value.code == code, (code, str(e.value))
        assert e.value.seq == good["seq"]
    nan_state = {**good, "state": np.full(s.state_dim, np.nan, np.float32)}
    with pytest.raises(ProtocolError, match="NaN"):
        check_observation(decode(encode(nan_state), MAX_OBSERVATION_BYTES), s)


def test_reply_and_spec_round_trip():
    s = spec()
    obs = check_observation(decode(encode(observation(s).to_wire()), MAX_OBSERVATION_BYTES), s)
    r = check_reply(decode(encode(make_reply(np.ones((s.chunk_size, s.action_dim)), obs, 3.5)), 1 << 18), s)
    assert r.seq == obs.seq and r.infer_ms == 3.5 and r.actions.dtype == np.float32
    with pytest.raises(ProtocolError, match="reply actions"):
        check_reply({"actions": np.ones((2, 2), np.float32), "seq": 1, "epoch": 1, "server_timing": {}}, s)
    back = PolicySpec.from_wire(decode(encode(s.to_wire()), 1 << 18))
    assert back == s
    assert back.mismatches({"action_space": "joint_pos"}) == [
        "action_space: server has 'delta_eef_libero', robot expects 'joint_pos'"
    ]
    with pytest.raises(ProtocolError, match="protocol"):
        PolicySpec.from_wire({**s.to_wire(), "protocol": "vla-deploy/0"})
    # a server from before the field omits it: the policy was trained without committed prefixes
    older = {k: v for k, v in spec(prefix_trained_steps=2).to_wire().items() if k != "prefix_trained_steps"}
    assert PolicySpec.from_wire(older).prefix_trained_steps == 0
    with pytest.raises(ProtocolError, match="prefix_trained_steps"):
        PolicySpec.from_wire({**s.to_wire(), "prefix_trained_steps": s.chunk_size})
