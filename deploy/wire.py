"""The deploy node's wire format: msgpack with numpy arrays laid out as `openpi-client` lays
them out, decoded strictly.

An array travels as a map {b"__ndarray__": True, b"data": raw bytes, b"dtype": "<f4",
b"shape": [..]}, a numpy scalar as {b"__npgeneric__": True, b"data": value, b"dtype": ..}, so
openpi's unmodified client can talk to the server. Decoding never unpickles, never builds an
object, structured or complex array, and checks `prod(shape) * itemsize == len(data)` before a
view is made; arrays come back as read-only views of the message (no copy, no allocation from a
declared shape). Size caps apply before msgpack sees the bytes.

No torch here: the robot side imports this module.
"""

from __future__ import annotations

import math

import msgpack
import numpy as np

# dtype strings accepted on the wire: uint8 images, float state/actions, integer counters.
ALLOWED_DTYPES = frozenset({"|u1", "<f4", "<f8", "<i4", "<i8"})
MAX_NDIM = 4
MAX_OBSERVATION_BYTES = 8 * 2**20
MAX_REPLY_BYTES = 256 * 2**10
MAX_TEXT = 4096  # longest string field (an instruction)
MAX_CONTAINER = 64  # most entries in any one map or list


class WireError(ValueError):
    """A message that is not well formed; `code` is the error's stable name on the wire."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _pack(obj):
    if isinstance(obj, (np.ndarray, np.generic)):
        if obj.dtype.str not in ALLOWED_DTYPES:
            raise WireError(
                "bad_dtype", f"dtype {obj.dtype} ({obj.dtype.str}) is not sent; allowed: {sorted(ALLOWED_DTYPES)}"
            )
        if isinstance(obj, np.generic):
            return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
        return {
            b"__ndarray__": True,
            b"data": np.ascontiguousarray(obj).tobytes(),
            b"dtype": obj.dtype.str,
            b"shape": list(obj.shape),
        }
    raise WireError("bad_type", f"cannot send a {type(obj).__name__}")


def encode(obj) -> bytes:
    """A message (maps, lists, str, numbers, numpy arrays of an allowed dtype) -> bytes."""
    return msgpack.packb(obj, default=_pack, use_bin_type=True)


def _array(obj: dict) -> np.ndarray | np.generic:
    if b"__ndarray__" in obj:
        if set(obj) != {b"__ndarray__", b"data", b"dtype", b"shape"}:
            raise WireError("bad_array", f"array fields must be __ndarray__, data, dtype, shape; got {sorted(obj)}")
        data, dtype, shape = obj[b"data"], obj[b"dtype"], obj[b"shape"]
        if not isinstance(dtype, str) or dtype not in ALLOWED_DTYPES:
            raise WireError("bad_dtype", f"array dtype {dtype!r} is not accepted; allowed: {sorted(ALLOWED_DTYPES)}")
        if not isinstance(shape, list) or len(shape) > MAX_NDIM or not all(type(n) is int and n >= 0 for n in shape):
            raise WireError(
                "bad_shape", f"array shape must be a list of at most {MAX_NDIM} non-negative ints, got {shape!r}"
            )
        if not isinstance(data, bytes):
            raise WireError("bad_array", f"array data must be bytes, got {type(data).__name__}")
        itemsize = np.dtype(dtype).itemsize
        if math.prod(shape) * itemsize != len(data):  # python ints: no overflow, nothing allocated
            raise WireError(
                "bad_shape",
                f"array shape {shape} of {dtype} needs {math.prod(shape) * itemsize} bytes, the message has {len(data)}",
            )
        return np.frombuffer(data, dtype=np.dtype(dtype)).reshape(shape)
    if set(obj) != {b"__npgeneric__", b"data", b"dtype"}:
        raise WireError("bad_array", f"scalar fields must be __npgeneric__, data, dtype; got {sorted(obj)}")
    dtype, value = obj[b"dtype"], obj[b"data"]
    if not isinstance(dtype, str) or dtype not in ALLOWED_DTYPES:
        raise WireError("bad_dtype", f"scalar dtype {dtype!r} is not accepted; allowed: {sorted(ALLOWED_DTYPES)}")
    if type(value) not in (int, float):
        raise WireError("bad_array", f"scalar data must be a number, got {type(value).__name__}")
    try:
        return np.dtype(dtype).type(value)
    except OverflowError as e:
        raise WireError("bad_array", f"scalar {value!r} does not fit {dtype}") from e


def _hook(obj: dict):
    if b"__ndarray__" in obj or b"__npgeneric__" in obj:
        return _array(obj)
    return obj


def decode(data, max_bytes: int) -> object:
    """Bytes -> message, refusing anything outside the format above with a `WireError`."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireError("bad_message", f"expected a binary frame, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise WireError("too_large", f"message of {len(data)} bytes exceeds the {max_bytes}-byte cap")
    try:
        return msgpack.unpackb(
            bytes(data),
            object_hook=_hook,
            raw=False,
            strict_map_key=True,
            max_bin_len=max_bytes,
            max_str_len=MAX_TEXT,
            max_array_len=MAX_CONTAINER,
            max_map_len=MAX_CONTAINER,
            max_ext_len=0,
        )
    except WireError:
        raise
    except Exception as e:  # msgpack's own errors: truncated, extra data, too deep, bad UTF-8, ext types
        raise WireError("malformed", f"not a well-formed message ({type(e).__name__}: {e})"[:300]) from None
