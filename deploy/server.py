"""Policy server: one checkpoint, one controlling session, inference only.

    server = PolicyServer(CheckpointPolicy(CheckpointPolicyConfig(checkpoint=...)), ServerConfig(port=...))
    server.run()                      # blocks; `vla-serve policy.checkpoint=... server.port=...`

WebSocket + msgpack (`deploy.wire`, `deploy.protocol`), wire-compatible with `openpi-client`.
Every message is decoded strictly and checked against the checkpoint before inference; a bad
one gets an error reply and the session goes on. A frame over `max_message_bytes` is refused by
the WebSocket layer (close code 1009) before it is read. The server binds 127.0.0.1 unless told
otherwise, and any other address needs a token (openpi's `Authorization: Api-Key <token>`).
`GET /healthz` answers 503 until the warm-up inferences are done, then 200. The server pings
the client every `ping_interval_s`; one that does not answer within `ping_timeout_s` (frozen,
or its network gone) is dropped, which frees the session for a reconnecting robot.

Torch is imported only by `CheckpointPolicy`; the rest serves any object with `spec`,
`reset(seed)` and `infer(Observation) -> (H, D)`.
"""

from __future__ import annotations

import asyncio
import hmac
import http
import ipaddress
import logging
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import websockets
from websockets.asyncio.server import ServerConnection, serve

from deploy.protocol import (
    Observation,
    PolicySpec,
    ProtocolError,
    check_observation,
    error_text,
    make_reply,
)
from deploy.wire import MAX_OBSERVATION_BYTES, WireError, decode, encode
from vla.contract import NonFiniteError, ObservationError
from vla.embodiment import ACTION_SPACES

log = logging.getLogger("vla.serve")


TOKEN_ENV = "VLA_SERVE_TOKEN"


@dataclass
class ServerConfig:
    """The server's own settings; it serves any policy object (`CheckpointPolicy` or a test's)."""

    host: str = "127.0.0.1"
    port: int = 8000  # 0: any free port
    token: str = ""  # empty: $VLA_SERVE_TOKEN, if set; required for a non-loopback host
    warmup: int = 3  # inferences before /healthz reports ready
    seed: int = 0  # decoding seed of episode epoch 0 (epoch e decodes with seed + e)
    max_message_bytes: int = MAX_OBSERVATION_BYTES
    # Liveness: a client that leaves a ping unanswered for ping_timeout_s is dropped (and its
    # closing handshake given as long), so a frozen robot process frees the session within
    # ping_interval_s + 2 x ping_timeout_s (the WebSocket library's defaults, 20 + 20 + 10 s,
    # held it for about 50 s, during which a reconnecting robot gets 409).
    ping_interval_s: float = 1.0
    ping_timeout_s: float = 2.0

    def __post_init__(self) -> None:
        if not 0 <= self.port < 65536:
            raise ValueError(f"server.port must be in [0, 65535], got {self.port}")
        if self.warmup < 1:
            raise ValueError(f"server.warmup must be >= 1 (the server is ready only after warm-up), got {self.warmup}")
        if self.max_message_bytes < 1024:
            raise ValueError(f"server.max_message_bytes must be >= 1024, got {self.max_message_bytes}")
        for name in ("ping_interval_s", "ping_timeout_s"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"server.{name} must be a finite number of seconds > 0, got {getattr(self, name)}")

    def resolved_token(self) -> str:
        return self.token or os.environ.get(TOKEN_ENV, "")


@dataclass
class CheckpointPolicyConfig:
    """What `CheckpointPolicy` loads and how it runs it."""

    checkpoint: str = "???"
    device: str = "cpu"
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    # Handshake fields the checkpoint may not know (a policy trained on a downloaded port):
    # empty / 0 take them from the checkpoint's embodiment.
    fps: float = 0.0
    action_space: str = ""
    # A state beyond the training states' [min, max] by more than this many times the dimension's
    # scale (recorded width, magnitude or 1) is refused (`bad_state`, and by `VLAPolicy.infer`):
    # a state in other units, garbage, or another robot's. inf: no range check.
    state_margin: float = 10.0  # vla.policy.STATE_MARGIN (not imported: the server module imports no torch)
    # Serve a checkpoint that has no manifest.json (its files cannot be verified), with a warning.
    allow_unverified: bool = False

    def __post_init__(self) -> None:
        if self.threads < 0:
            raise ValueError(f"policy.threads must be >= 0 (0: torch's default), got {self.threads}")
        if not (self.fps == 0 or (math.isfinite(self.fps) and self.fps > 0)):
            raise ValueError(
                f"policy.fps must be > 0 (the robot's control rate), or 0 to take the checkpoint's; got {self.fps}"
            )
        if self.action_space not in ("", *ACTION_SPACES):
            raise ValueError(
                f"policy.action_space must be one of {list(ACTION_SPACES)} (or empty: the checkpoint's), "
                f"got {self.action_space!r}"
            )
        if not self.state_margin >= 0:
            raise ValueError(f"policy.state_margin must be >= 0 (inf: no state range check), got {self.state_margin}")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ------------------------------------------------------------------------------ the checkpoint
def spec_from_checkpoint(ckpt, takes_prefix_actions: bool, fps: float = 0.0, action_space: str = "") -> PolicySpec:
    """The handshake spec of a `vla.checkpoint.Checkpoint`: its embodiment, cameras, chunk and
    action range, and whether the policy inpaints prefix actions (`VLAPolicy.takes_fixed_actions`).
    `fps` / `action_space` fill in what a checkpoint's embodiment does not record."""
    cfg = ckpt.policy_config
    emb = cfg.embodiment
    fps, action_space = fps or emb.fps, action_space or emb.action_space
    if not fps or not action_space:
        raise ValueError(
            f"{ckpt.path}: the checkpoint's embodiment (policy.embodiment in config.json: robot {emb.robot!r}) does "
            "not record its control rate or action convention; train with policy.embodiment.fps=... and "
            "policy.embodiment.action_space=..., or give vla-serve policy.fps=... policy.action_space=... "
            f"(one of {sorted(ACTION_SPACES)})"
        )
    missing = [c for c in cfg.cameras if c not in cfg.camera_shapes]
    if missing:
        raise ValueError(
            f"{ckpt.path}: the checkpoint records no frame size for cameras {missing}; retrain or re-save it with policy.camera_shapes"
        )
    state_names, action_names = emb.names(cfg.state_dim, cfg.action_dim)
    tokenizer = ckpt.tokenizer_state()
    return PolicySpec(
        model_id=f"{ckpt.path.resolve().parent.parent.name}/{ckpt.path.resolve().name}",
        weights_sha256=ckpt.sha256("model.safetensors"),
        stats_sha256=ckpt.sha256("stats.json"),
        cameras={c: list(cfg.camera_shapes[c]) for c in cfg.cameras},
        state_names=state_names,
        action_names=action_names,
        action_space=action_space,
        fps=float(fps),
        chunk_size=cfg.chunk_size,
        takes_prefix_actions=takes_prefix_actions,
        binary_dims=[int(d) for d in tokenizer.get("binary_dims", [])],
        action_low=[float(x) for x in tokenizer["low"]],
        action_high=[float(x) for x in tokenizer["high"]],
        prefix_trained_steps=int(cfg.prefix_max_steps),
    )


class CheckpointPolicy:
    """A `VLAPolicy` from a checkpoint folder, with its handshake spec."""

    def __init__(self, cfg: CheckpointPolicyConfig) -> None:
        import torch

        from vla.checkpoint import Checkpoint
        from vla.policy import VLAPolicy

        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        ckpt = Checkpoint(cfg.checkpoint, cfg.allow_unverified)
        self.policy = VLAPolicy(ckpt.load_model(cfg.device), state_margin=cfg.state_margin)
        self.spec = spec_from_checkpoint(ckpt, self.policy.takes_fixed_actions, cfg.fps, cfg.action_space)

    @property
    def state_bounds(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The states the policy accepts (the server refuses others before inference)."""
        return self.policy.state_bounds

    def reset(self, seed: int) -> None:
        self.policy.reset(seed)

    def infer(self, obs) -> np.ndarray:
        return self.policy.infer(obs.policy_input(), fixed_actions=obs.prefix_actions)


def warmup_observation(spec: PolicySpec, state_bounds: tuple[np.ndarray, np.ndarray] | None = None) -> Observation:
    """Blank frames and a state the policy accepts: the middle of `state_bounds` (the middle of
    the training states' range; zero may lie outside it), zero where unbounded."""
    images = {c: np.zeros((h, w, 3), np.uint8) for c, (h, w) in spec.cameras.items()}
    state = np.zeros(spec.state_dim)
    if state_bounds is not None:
        with np.errstate(invalid="ignore"):  # inf - inf where state_margin is inf
            middle = (state_bounds[0] + state_bounds[1]) / 2
        state = np.where(np.isfinite(middle), middle, 0.0)
    return Observation(images, state.astype(np.float32), "warm up", 0, 0)


# ------------------------------------------------------------------------------ the server
class PolicyServer:
    def __init__(self, policy, cfg: ServerConfig) -> None:
        token = cfg.resolved_token()
        if not is_loopback(cfg.host) and not token:
            raise ValueError(
                f"server.host={cfg.host} exposes the policy beyond this machine: set server.token=... or ${TOKEN_ENV} "
                "(clients send it as `Authorization: Api-Key <token>`), or bind server.host=127.0.0.1"
            )
        self.policy, self.cfg, self.spec, self._token = policy, cfg, policy.spec, token
        # the states the policy accepts, checked with the rest of the protocol (None: any finite state)
        self._state_bounds = getattr(policy, "state_bounds", None)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="infer")  # one inference at a time
        self._session: ServerConnection | None = None
        self._epoch: int | None = None
        self.ready = False
        self.port: int | None = None
        self.stats = {"replies": 0, "errors": 0, "refused": 0}

    # -------------------------------------------------------------- HTTP stage
    def _process_request(self, conn: ServerConnection, request):
        if request.path == "/healthz":
            return conn.respond(
                http.HTTPStatus.OK if self.ready else http.HTTPStatus.SERVICE_UNAVAILABLE,
                "ok\n" if self.ready else "warming up\n",
            )
        if request.path != "/":
            return conn.respond(http.HTTPStatus.NOT_FOUND, "the policy is served at / (health at /healthz)\n")
        if self._token:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Api-Key {self._token}".encode()):
                self.stats["refused"] += 1
                return conn.respond(
                    http.HTTPStatus.UNAUTHORIZED, "missing or wrong token: send `Authorization: Api-Key <token>`\n"
                )
        if not self.ready:
            return conn.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "warming up; poll /healthz\n")
        if self._session is not None:
            self.stats["refused"] += 1
            return conn.respond(http.HTTPStatus.CONFLICT, "another session is controlling this policy; one at a time\n")
        return None

    # -------------------------------------------------------------- a session
    async def _handler(self, ws: ServerConnection) -> None:
        if self._session is not None:  # lost a race with another handshake
            self.stats["refused"] += 1
            await ws.close(1013, "another session is controlling this policy")
            return
        self._session = ws
        log.info("session from %s", ws.remote_address)
        try:
            await ws.send(encode(self.spec.to_wire()))
            async for message in ws:
                out = await self._answer(message)
                await ws.send(out)
        except websockets.ConnectionClosed:
            pass
        finally:
            self._session = None
            log.info("session from %s ended", ws.remote_address)

    async def _answer(self, message) -> bytes | str:
        try:
            if isinstance(message, str):
                raise WireError("bad_message", "expected a binary msgpack frame, got a text frame")
            obs = check_observation(decode(message, self.cfg.max_message_bytes), self.spec, self._state_bounds)
        except (WireError, ProtocolError) as e:
            self.stats["errors"] += 1
            return error_text(e.code, str(e), getattr(e, "seq", None))
        try:
            actions, ms = await asyncio.get_running_loop().run_in_executor(self._pool, self._infer, obs)
        except Exception as e:  # noqa: BLE001  (a reply, never a traceback, goes to the client)
            self.stats["errors"] += 1
            if isinstance(e, ObservationError):  # the protocol checks passed it, the policy's did not
                log.warning("seq %d refused by the policy: %s", obs.seq, e)
                return error_text("bad_observation", str(e)[:1000], obs.seq)
            code = "non_finite_output" if isinstance(e, NonFiniteError) else "inference_failed"
            log.exception("inference failed for seq %d", obs.seq)
            return error_text(code, f"{type(e).__name__}: {e}"[:300], obs.seq)
        self.stats["replies"] += 1
        return encode(make_reply(actions, obs, ms))

    def _infer(self, obs) -> tuple[np.ndarray, float]:
        if obs.reset or obs.epoch != self._epoch:
            self.policy.reset(self.cfg.seed + obs.epoch)
            self._epoch = obs.epoch
        t0 = time.perf_counter()
        actions = np.asarray(self.policy.infer(obs), dtype=np.float32)
        ms = (time.perf_counter() - t0) * 1e3
        if actions.shape != (self.spec.chunk_size, self.spec.action_dim):
            raise ValueError(
                f"the policy returned actions of shape {actions.shape}, not {(self.spec.chunk_size, self.spec.action_dim)}"
            )
        if not np.isfinite(actions).all():
            raise NonFiniteError("the policy returned NaN or Inf actions")
        return actions, ms

    def _warm_up(self) -> None:
        obs = warmup_observation(self.spec, self._state_bounds)
        for _ in range(self.cfg.warmup):
            self._infer(obs)
        self._epoch = None
        self.ready = True
        log.info("warm-up done (%d inferences): ready", self.cfg.warmup)

    # -------------------------------------------------------------- running
    async def serve(self, started: threading.Event | None = None, stop: asyncio.Event | None = None) -> None:
        async with serve(
            self._handler,
            self.cfg.host,
            self.cfg.port,
            process_request=self._process_request,
            max_size=self.cfg.max_message_bytes,
            compression=None,
            max_queue=4,
            ping_interval=self.cfg.ping_interval_s,
            ping_timeout=self.cfg.ping_timeout_s,
            # a peer that misses a ping answers no closing handshake either: cut it after as long
            # (the library's 10 s default would hold the session that much longer)
            close_timeout=self.cfg.ping_timeout_s,
        ) as server:
            self.port = server.sockets[0].getsockname()[1]
            log.info("serving %s on ws://%s:%d", self.spec.model_id, self.cfg.host, self.port)
            await asyncio.get_running_loop().run_in_executor(self._pool, self._warm_up)
            if started is not None:
                started.set()
            await (stop.wait() if stop is not None else asyncio.Future())

    def run(self) -> None:
        asyncio.run(self.serve())


class ServerThread:
    """A server on its own event loop thread (tests, benchmarks): `with ServerThread(s) as port:`."""

    def __init__(self, server: PolicyServer) -> None:
        self.server = server
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True, name="policy-server")

    def _main(self) -> None:
        async def main():
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            await self.server.serve(self._started, self._stop)

        try:
            asyncio.run(main())
        except BaseException as e:  # noqa: BLE001  (re-raised in start)
            self._error = e
            self._started.set()

    def start(self, timeout: float = 60.0) -> int:
        self._thread.start()
        if not self._started.wait(timeout) or self._error is not None:
            raise RuntimeError(f"the policy server did not start: {self._error!r}")
        return self.server.port

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)

    def __enter__(self) -> int:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
