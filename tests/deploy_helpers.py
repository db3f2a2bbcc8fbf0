"""Fakes for the deploy node's tests: a policy, a clock, a client and a robot, all scriptable."""

from __future__ import annotations

import threading
import time

import numpy as np

from deploy.protocol import Observation, PolicySpec, Reply
from deploy.robots import Robot, RobotObservation

H, D, S = 8, 7, 8


def spec(image: int = 16, fps: float = 20.0, **kw) -> PolicySpec:
    fields = dict(
        model_id="fake/step_1",
        weights_sha256="0" * 64,
        stats_sha256="1" * 64,
        cameras={"agentview": [image, image], "wrist": [image, image]},
        state_names=[f"s{i}" for i in range(S)],
        action_names=["dx", "dy", "dz", "drx", "dry", "drz", "gripper"],
        action_space="delta_eef_libero",
        fps=fps,
        chunk_size=H,
        takes_prefix_actions=True,  # FakePolicy keeps them
        binary_dims=[6],
        action_low=[-1.0] * D,
        action_high=[1.0] * D,
    )
    fields.update(kw)
    return PolicySpec(**fields)


def observation(s: PolicySpec, seq: int = 1, epoch: int = 1, prefix=None) -> Observation:
    images = {c: np.full((h, w, 3), seq % 255, np.uint8) for c, (h, w) in s.cameras.items()}
    return Observation(images, np.arange(s.state_dim, dtype=np.float32), "pick up the cube", seq, epoch, prefix)


class FakePolicy:
    """Chunk i-th action = value + 0.01 * i on every continuous dim; the prefix is kept (as the
    decoder's inpainting keeps it). `delay_s`, `nan` and `shape` inject faults."""

    def __init__(self, s: PolicySpec | None = None, value: float = 0.1, delay_s: float = 0.0) -> None:
        self.spec = s or spec()
        self.value, self.delay_s = value, delay_s
        self.nan = False
        self.shape: tuple | None = None
        self.calls = 0
        self.resets: list[int] = []
        self.prefixes: list = []
        self.started = threading.Event()

    def reset(self, seed: int) -> None:
        self.resets.append(seed)

    def infer(self, obs: Observation) -> np.ndarray:
        self.calls += 1
        self.started.set()
        if self.delay_s:
            time.sleep(self.delay_s)
        a = np.full((self.spec.chunk_size, self.spec.action_dim), self.value, np.float32)
        a += 0.01 * np.arange(self.spec.chunk_size, dtype=np.float32)[:, None]
        a[:, 6] = 1.0
        self.prefixes.append(None if obs.prefix_actions is None else obs.prefix_actions.copy())
        if obs.prefix_actions is not None:
            a[: len(obs.prefix_actions)] = obs.prefix_actions
        if self.nan:
            a[2, 1] = np.nan
        if self.shape is not None:
            a = np.zeros(self.shape, np.float32)
        return a


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t

    def sleep_until(self, t: float) -> None:
        self.t = max(self.t, t)

    def advance(self, dt: float) -> None:
        self.t += dt


class FakeClient:
    """In-memory client: `submitted` holds the observations, `push` queues events for `poll`."""

    def __init__(self, s: PolicySpec | None = None) -> None:
        self.spec = s or spec()
        self.connected = True
        self.submitted: list[Observation] = []
        self._events: list = []

    def submit(self, obs: Observation) -> None:
        self.submitted.append(obs)

    def poll(self) -> list:
        out, self._events = self._events, []
        return out

    def push(self, *events) -> None:
        self._events.extend(events)

    def answer(self, obs: Observation | None = None, policy: FakePolicy | None = None, **kw) -> Reply:
        """The reply a FakePolicy would give to `obs` (default: the last submitted)."""
        obs = obs or self.submitted[-1]
        actions = (policy or FakePolicy(self.spec, **kw)).infer(obs)
        return Reply(actions, obs.seq, obs.epoch, 1.0)


class FakeRobot(Robot):
    """Records every command; `state` moves by each delta command (so frozen cameras can be seen)."""

    action_space = "delta_eef_libero"

    def __init__(self, clock: FakeClock, s: PolicySpec | None = None) -> None:
        self.clock, self.spec = clock, s or spec()
        self.commands: list[tuple[str, np.ndarray | None]] = []
        self.state = np.zeros(self.spec.state_dim, np.float32)
        self.injected_fault: str | None = None
        self.frozen = False
        self.stamp_lag = 0.0
        self.done = self.success = False
        self.instruction = "pick up the cube"
        self.frame = 0

    def check_spec(self, s) -> None:
        if s.action_space != self.action_space:
            raise ValueError("action space")

    def reset(self) -> None:
        self.done = False

    def observe(self) -> RobotObservation:
        if not self.frozen:
            self.frame += 1
        images = {c: np.full((h, w, 3), self.frame % 251, np.uint8) for c, (h, w) in self.spec.cameras.items()}
        return RobotObservation(images, self.state.copy(), self.clock.now() - self.stamp_lag)

    def act(self, a) -> None:
        assert np.isfinite(a).all(), "a non-finite command reached the robot"
        self.commands.append(("act", np.array(a)))
        self.state[:3] += 0.001 * np.asarray(a[:3])

    def hold_action(self):
        return np.zeros(self.spec.action_dim)

    def hold(self) -> None:
        self.commands.append(("hold", None))

    def stop(self) -> None:
        self.commands.append(("stop", None))

    def fault(self):
        return self.injected_fault

    def close(self) -> None:
        pass

    def kinds(self) -> list[str]:
        return [k for k, _ in self.commands]


class FaultProxy:
    """A WebSocket proxy between agent and server that injects transport faults on the replies
    (server -> client): delay with jitter, partitions (messages held until it heals, as TCP
    would), duplicates, reordering, and killing the connections."""

    def __init__(self, upstream_port: int) -> None:
        import asyncio
        import random

        self.upstream = f"ws://127.0.0.1:{upstream_port}"
        self.delay_s = 0.0
        self.jitter_s = 0.0
        self.partition_until = 0.0
        self.duplicate = False
        self.reorder = False
        self.port: int | None = None
        self._rng = random.Random(0)
        self._asyncio = asyncio
        self._conns: list = []
        self._held = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def partition(self, seconds: float) -> None:
        self.partition_until = time.monotonic() + seconds

    def kill(self) -> None:
        for ws in list(self._conns):
            self._loop.call_soon_threadsafe(lambda w=ws: self._asyncio.ensure_future(w.close()))

    async def _pipe(self, src, dst, replies: bool) -> None:
        asyncio = self._asyncio
        first = True  # the handshake passes untouched
        try:
            async for msg in src:
                if first:
                    first = False
                    await dst.send(msg)
                    continue
                wait = self.partition_until - time.monotonic()
                if replies:
                    wait = max(wait, self.delay_s + self._rng.uniform(0, self.jitter_s))
                if wait > 0:
                    await asyncio.sleep(wait)
                out = [msg]
                if replies and self.reorder:
                    if self._held is None:
                        self._held = msg
                        continue
                    out, self._held = [msg, self._held], None
                if replies and self.duplicate:
                    out = out + out
                for m in out:
                    await dst.send(m)
        except Exception:  # noqa: BLE001  (either side closing ends the pipe)
            pass
        finally:
            await dst.close()

    async def _handle(self, ws) -> None:
        from websockets.asyncio.client import connect

        headers = {k: v for k, v in ws.request.headers.raw_items() if k.lower() == "authorization"}
        try:
            up = await connect(self.upstream, additional_headers=headers, max_size=None, compression=None)
        except Exception:  # noqa: BLE001
            await ws.close(1011, "upstream unavailable")
            return
        self._conns += [ws, up]
        await self._asyncio.gather(self._pipe(ws, up, False), self._pipe(up, ws, True))

    async def _main(self) -> None:
        from websockets.asyncio.server import serve

        self._loop = self._asyncio.get_running_loop()
        async with serve(self._handle, "127.0.0.1", 0, max_size=None, compression=None) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._started.set()
            await self._asyncio.Future()

    def start(self) -> int:
        self._thread.start()
        self._started.wait(10)
        return self.port


def tiny_checkpoint(path, image: int = 32, stats: dict | None = None, **policy):
    """A test-sized checkpoint of the deploy node's shape (7-D actions with a binary gripper,
    8-D state, two cameras of `image` px, chunks of 8); `stats` default to `tiny_stats`."""
    import torch
    from helpers import tiny_policy_config, tiny_stats

    from vla.action_tokenizer import ActionTokenizerConfig
    from vla.model import VLAModel
    from vla.policy import VLAPolicy

    cfg = tiny_policy_config(
        action_dim=7,
        state_dim=8,
        cameras=["agentview", "wrist"],
        chunk_size=8,
        camera_shapes={"agentview": [image, image], "wrist": [image, image]},
        action_tokenizer=ActionTokenizerConfig(bins=16, binary_dims=[6]),
        **policy,
    )
    torch.manual_seed(0)
    return VLAPolicy(VLAModel(cfg, stats or tiny_stats(7, 8))).save(path)
