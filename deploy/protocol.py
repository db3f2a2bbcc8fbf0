"""The deploy node's messages: the handshake spec, observations, replies and errors.

Session: the client connects (HTTP `Authorization: Api-Key <token>` when the server asks for a
token), the server sends the spec (`PolicySpec.to_wire`) as its first message, then answers
each observation with one reply or one error, in order.

    observation  {"images": {camera: uint8 (H, W, 3)}, "state": float (S,), "instruction": str,
                  "seq": int, "epoch": int (both optional, 0 when absent), optional
                  "prefix_actions": float (k, D), optional "reset": bool}
    reply        {"actions": float32 (H, D), "seq": echoed, "epoch": echoed,
                  "server_timing": {"infer_ms": float}}
    error        a text frame holding JSON {"error": code, "message": text, "seq": int or null}

`prefix_actions` are the actions the robot will execute while this inference runs (real-time
chunking): the reply's first k actions equal them and the rest are decoded to continue them.
Only a policy whose spec says `takes_prefix_actions` accepts them (inpainting needs the diffusion
decoder), and only within the action range of the spec (what the action tokenizer represents:
[action_low, action_high] for a continuous dim, [-1, 1] for a binary one); anything else is
refused, never clipped. Numbers are checked after the cast to float32 (a float64 1e39 is Inf
there). An error is a text frame so that openpi's client raises it as a `RuntimeError`.

No torch here: the robot side imports this module.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from vla.contract import ObservationError, action_range_bounds, check_instruction, first_outside

PROTOCOL = "vla-deploy/1"
OBSERVATION_KEYS = frozenset({"images", "state", "instruction", "seq", "epoch", "prefix_actions", "reset"})


class ProtocolError(ValueError):
    """A message that breaks the protocol; `code` names the error on the wire."""

    def __init__(self, code: str, message: str, seq: int | None = None) -> None:
        super().__init__(message)
        self.code, self.seq = code, seq


def error_text(code: str, message: str, seq: int | None = None) -> str:
    return json.dumps({"error": code, "message": message, "seq": seq})


@dataclass(frozen=True)
class PolicySpec:
    """What a robot must agree with before it arms: sent by the server at connection."""

    model_id: str
    weights_sha256: str
    stats_sha256: str
    cameras: dict[str, list[int]]  # camera -> [H, W] of the frames the policy takes
    state_names: list[str]
    action_names: list[str]
    action_space: str  # e.g. "delta_eef_libero": how the robot reads an action
    fps: float
    chunk_size: int
    takes_prefix_actions: bool  # the policy inpaints `prefix_actions` (diffusion decoder); False: refused
    protocol: str = PROTOCOL
    binary_dims: list[int] = field(default_factory=list)  # action dims decoded as open/close (gripper)
    action_low: list[float] = field(default_factory=list)  # the action tokenizer's range per dim
    action_high: list[float] = field(default_factory=list)
    # The longest committed prefix the policy was trained with (policy.prefix_max_steps); 0: none,
    # it inpaints prefixes at inference only. An agent sends no longer prefix than this.
    prefix_trained_steps: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"fps must be a finite number > 0, got {self.fps!r}")
        if type(self.chunk_size) is not int or self.chunk_size < 1:
            raise ValueError(f"chunk_size must be an int >= 1, got {self.chunk_size!r}")
        if type(self.takes_prefix_actions) is not bool:
            raise ValueError(f"takes_prefix_actions must be a bool, got {self.takes_prefix_actions!r}")
        if type(self.prefix_trained_steps) is not int or not 0 <= self.prefix_trained_steps < self.chunk_size:
            raise ValueError(
                f"prefix_trained_steps must be an int in [0, chunk_size={self.chunk_size}), got {self.prefix_trained_steps!r}"
            )

    @property
    def state_dim(self) -> int:
        return len(self.state_names)

    def prefix_bounds(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The prefix actions the policy accepts, float64 (D,) low and high (see the module
        docstring); None when the spec gives no action range."""
        if not self.action_low:
            return None
        binary = np.isin(np.arange(len(self.action_low)), self.binary_dims)
        return action_range_bounds(self.action_low, self.action_high, binary)  # as VLAPolicy.action_bounds

    @property
    def action_dim(self) -> int:
        return len(self.action_names)

    def to_wire(self) -> dict:
        return asdict(self)

    @classmethod
    def from_wire(cls, msg) -> PolicySpec:
        if not isinstance(msg, dict):
            raise ProtocolError("bad_handshake", f"server metadata must be a map, got {type(msg).__name__}")
        if msg.get("protocol") != PROTOCOL:
            raise ProtocolError("version", f"server speaks protocol {msg.get('protocol')!r}, this client {PROTOCOL!r}")
        names = set(cls.__dataclass_fields__)
        missing = sorted(names - set(msg) - _ADDED_FIELDS)
        if missing:
            raise ProtocolError("bad_handshake", f"server metadata lacks {missing}")
        try:
            spec = cls(**{k: msg[k] for k in names if k in msg})
            cams = {str(c): [int(h), int(w)] for c, (h, w) in spec.cameras.items()}
            return cls(**{**spec.to_wire(), "cameras": cams, "fps": float(spec.fps)})
        except (TypeError, ValueError) as e:
            raise ProtocolError("bad_handshake", f"server metadata is malformed: {e}") from None

    def mismatches(self, expected: dict) -> list[str]:
        """Fields of `expected` (a partial spec the robot was configured with) that differ."""
        out = []
        mine = self.to_wire()
        for k, v in expected.items():
            if k not in mine:
                out.append(f"{k}: not a handshake field")
            elif _norm(mine[k]) != _norm(v):
                out.append(f"{k}: server has {mine[k]!r}, robot expects {v!r}")
        return out


# Handshake fields added after the protocol's first release: a server that predates one omits it,
# and the field's default (what that server's policies did) stands.
_ADDED_FIELDS = {"prefix_trained_steps"}


def _norm(v):
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    if isinstance(v, dict):
        return {k: _norm(x) for k, x in v.items()}
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    return v


@dataclass
class Observation:
    images: dict[str, np.ndarray]
    state: np.ndarray  # float32 (S,)
    instruction: str
    seq: int
    epoch: int
    prefix_actions: np.ndarray | None = None  # float32 (k, D)
    reset: bool = False

    def to_wire(self) -> dict:
        msg = {
            "images": self.images,
            "state": np.asarray(self.state, np.float32),
            "instruction": self.instruction,
            "seq": int(self.seq),
            "epoch": int(self.epoch),
        }
        if self.prefix_actions is not None and len(self.prefix_actions):
            msg["prefix_actions"] = np.asarray(self.prefix_actions, np.float32)
        if self.reset:
            msg["reset"] = True
        return msg

    def policy_input(self) -> dict:
        return {"images": self.images, "state": self.state, "instruction": self.instruction}


def _counter(msg: dict, key: str) -> int:
    v = msg.get(key, 0)  # optional: a plain openpi client sends none (replies then echo 0)
    if type(v) is not int or not 0 <= v < 2**62:
        raise ProtocolError("bad_observation", f"observation[{key!r}] must be a non-negative int, got {v!r}")
    return v


def _refuse_outside(values: np.ndarray, bounds, field: str, names: list[str], code: str, why: str) -> None:
    """A `ProtocolError` naming the first entry of `values` (..., D) outside `bounds` (low, high)
    (D,), its dimension's name and the range (`why` says what the range is); None: no bounds."""
    found = None if bounds is None else first_outside(values, *bounds)
    if found is None:
        return
    index, v = found
    d = index[-1]
    raise ProtocolError(
        code,
        f"{field}[{', '.join(map(str, index))}] ({names[d]}) = {v:.6g} is outside [{bounds[0][d]:.6g}, "
        f"{bounds[1][d]:.6g}], {why}",
    )


def _float32(a: np.ndarray, field: str, code: str, names: list[str]) -> np.ndarray:
    """`a` cast to float32, refusing NaN and Inf after the cast (a float64 1e39 becomes Inf there)."""
    with np.errstate(over="ignore"):
        a32 = a.astype(np.float32)
    bad = np.argwhere(~np.isfinite(a32))
    if len(bad):
        index = tuple(int(i) for i in bad[0])
        raise ProtocolError(
            code,
            f"{field}[{', '.join(map(str, index))}] ({names[index[-1]]}) = {float(a[index]):.6g} is not a finite float32 "
            f"(NaN, Inf, or beyond +-{float(np.finfo(np.float32).max):.3g})",
        )
    return a32


def check_observation(msg, spec: PolicySpec, state_bounds: tuple[np.ndarray, np.ndarray] | None = None) -> Observation:
    """A decoded message -> `Observation`, checked against the policy's cameras, frame sizes,
    state width, chunk and action range; any deviation is a `ProtocolError` naming the field.
    `state_bounds` (low, high) (S,): the states the policy accepts (the server's
    `state_margin` around the training states); None: no range check."""
    if not isinstance(msg, dict) or not all(isinstance(k, str) for k in msg):
        raise ProtocolError("bad_observation", "an observation must be a map with string keys")
    seq = msg.get("seq") if type(msg.get("seq")) is int else None
    try:
        extra = sorted(set(msg) - OBSERVATION_KEYS)
        if extra:
            raise ProtocolError(
                "bad_observation", f"unknown observation fields {extra}; allowed: {sorted(OBSERVATION_KEYS)}"
            )
        missing = sorted({"images", "state", "instruction"} - set(msg))
        if missing:
            raise ProtocolError("bad_observation", f"observation is missing {missing}")
        seq, epoch = _counter(msg, "seq"), _counter(msg, "epoch")
        images = msg["images"]
        if not isinstance(images, dict):
            raise ProtocolError("bad_observation", "observation['images'] must map camera -> uint8 (H, W, 3)")
        if set(images) != set(spec.cameras):
            raise ProtocolError(
                "bad_camera",
                f"observation has cameras {sorted(map(str, images))}, the policy takes {sorted(spec.cameras)}",
            )
        for cam, (h, w) in spec.cameras.items():
            a = images[cam]
            if not isinstance(a, np.ndarray) or a.dtype != np.uint8 or a.shape != (h, w, 3):
                got = f"{a.dtype} {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
                raise ProtocolError("bad_image", f"images[{cam!r}] must be uint8 ({h}, {w}, 3), got {got}")
        state = msg["state"]
        if not isinstance(state, np.ndarray) or state.dtype.kind != "f" or state.shape != (spec.state_dim,):
            got = f"{state.dtype} {state.shape}" if isinstance(state, np.ndarray) else type(state).__name__
            raise ProtocolError("bad_state", f"state must be float ({spec.state_dim},) {spec.state_names}, got {got}")
        state = _float32(state, "state", "bad_state", spec.state_names)
        _refuse_outside(
            state,
            state_bounds,
            "state",
            spec.state_names,
            "bad_state",
            "the range of the training states widened by the server's state_margin: a state in other units, or "
            "from another robot?",
        )
        try:  # the policy's own rule (vla.contract), so the model never refuses what passed here
            text = check_instruction(msg["instruction"])
        except ObservationError as e:
            raise ProtocolError("bad_instruction", str(e)) from None
        prefix = msg.get("prefix_actions")
        if prefix is not None and not spec.takes_prefix_actions:
            raise ProtocolError(
                "bad_prefix",
                "this policy does not take prefix_actions (real-time chunking inpaints them, which needs the "
                "diffusion decoder): leave them out (agent.merge=naive, ensemble or sync)",
            )
        if prefix is not None:
            if (
                not isinstance(prefix, np.ndarray)
                or prefix.dtype.kind != "f"
                or prefix.ndim != 2
                or prefix.shape[1] != spec.action_dim
                or not 0 < prefix.shape[0] < spec.chunk_size
            ):
                got = f"{prefix.dtype} {prefix.shape}" if isinstance(prefix, np.ndarray) else type(prefix).__name__
                raise ProtocolError(
                    "bad_prefix",
                    f"prefix_actions must be float (k, {spec.action_dim}) with 0 < k < {spec.chunk_size}, got {got}",
                )
            prefix = _float32(prefix, "prefix_actions", "bad_prefix", spec.action_names)
            _refuse_outside(
                prefix,
                spec.prefix_bounds(),
                "prefix_actions",
                spec.action_names,
                "bad_prefix",
                "the range the policy's action tokenizer represents (it would be clipped): send the actions the "
                "policy decoded",
            )
        reset = msg.get("reset", False)
        if not isinstance(reset, bool):
            raise ProtocolError("bad_observation", f"reset must be a bool, got {type(reset).__name__}")
    except ProtocolError as e:
        e.seq = seq
        raise
    return Observation(dict(images), state, text, seq, epoch, prefix, reset)


@dataclass
class Reply:
    actions: np.ndarray  # float32 (H, D)
    seq: int
    epoch: int
    infer_ms: float


def make_reply(actions: np.ndarray, obs: Observation, infer_ms: float) -> dict:
    return {
        "actions": np.ascontiguousarray(actions, dtype=np.float32),
        "seq": obs.seq,
        "epoch": obs.epoch,
        "server_timing": {"infer_ms": float(infer_ms)},
    }


def check_reply(msg, spec: PolicySpec) -> Reply:
    """A decoded reply -> `Reply`. Shape and dtype are checked here; finiteness is the safety
    filter's job (a non-finite chunk is an event the agent acts on, not a transport error)."""
    if not isinstance(msg, dict) or not {"actions", "seq", "epoch", "server_timing"} <= set(msg):
        raise ProtocolError("bad_reply", "a reply must hold actions, seq, epoch and server_timing")
    a = msg["actions"]
    want = (spec.chunk_size, spec.action_dim)
    if not isinstance(a, np.ndarray) or a.dtype.kind != "f" or a.shape != want:
        got = f"{a.dtype} {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
        raise ProtocolError("bad_reply", f"reply actions must be float {want}, got {got}")
    seq, epoch = msg["seq"], msg["epoch"]
    timing = msg["server_timing"]
    if type(seq) is not int or type(epoch) is not int or not isinstance(timing, dict):
        raise ProtocolError("bad_reply", "reply seq and epoch must be ints and server_timing a map")
    infer_ms = timing.get("infer_ms", float("nan"))
    return Reply(
        a.astype(np.float32), seq, epoch, float(infer_ms) if isinstance(infer_ms, (int, float)) else float("nan")
    )


def parse_error(text: str) -> ProtocolError:
    try:
        d = json.loads(text)
        return ProtocolError(str(d["error"]), str(d["message"]), d.get("seq") if type(d.get("seq")) is int else None)
    except (ValueError, KeyError, TypeError):
        return ProtocolError("server_error", text[:300])
