"""The robot side's connection to the policy server: asynchronous, never blocking the control loop.

    client = PolicyClient("ws://gpu-box:8000", token="...")
    spec = client.connect()          # handshake (raises on refusal or a protocol mismatch)
    client.submit(observation)       # returns at once; the newest unsent observation wins
    for event in client.poll():      # Reply, ServerError, Disconnected, Connected
        ...

A sender thread sends, a receiver thread receives and reconnects (backoff, then the same
handshake; a server whose spec changed is reported, not used). An observation not sent when the
connection drops is discarded, never replayed later. No torch here.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass

import websockets
from websockets.sync.client import ClientConnection, connect

from deploy.protocol import PolicySpec, ProtocolError, check_reply, parse_error
from deploy.wire import MAX_REPLY_BYTES, WireError, decode, encode


@dataclass
class ServerError:
    error: ProtocolError


@dataclass
class Disconnected:
    reason: str


@dataclass
class Connected:
    spec: PolicySpec
    same: bool  # the spec equals the one of the first connection


class HandshakeError(ConnectionError):
    pass


class PolicyClient:
    def __init__(
        self,
        url: str,
        token: str = "",
        connect_timeout_s: float = 2.0,
        max_reply_bytes: int = MAX_REPLY_BYTES,
        reconnect: bool = True,
    ) -> None:
        self.url, self.token = url, token
        self.connect_timeout_s, self.max_reply_bytes, self.reconnect = connect_timeout_s, max_reply_bytes, reconnect
        self.spec: PolicySpec | None = None
        self._ws: ClientConnection | None = None
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._pending = None
        self._cond = threading.Condition()
        self._closed = False
        self._threads: list[threading.Thread] = []
        self.sent = 0

    @property
    def connected(self) -> bool:
        return self._ws is not None

    def _open(self) -> tuple[ClientConnection, PolicySpec]:
        headers = {"Authorization": f"Api-Key {self.token}"} if self.token else None
        try:
            ws = connect(
                self.url,
                additional_headers=headers,
                compression=None,
                max_size=self.max_reply_bytes,
                open_timeout=self.connect_timeout_s,
                proxy=None,
            )
        except websockets.InvalidStatus as e:
            body = e.response.body.decode(errors="replace").strip() if e.response.body else ""
            raise HandshakeError(f"{self.url} refused the session: HTTP {e.response.status_code} {body}") from None
        except (OSError, TimeoutError, websockets.WebSocketException) as e:
            raise ConnectionError(f"cannot reach the policy server at {self.url}: {e}") from None
        try:
            first = ws.recv(timeout=self.connect_timeout_s)
            if isinstance(first, str):
                raise parse_error(first)
            spec = PolicySpec.from_wire(decode(first, self.max_reply_bytes))
        except (WireError, ProtocolError, TimeoutError, websockets.ConnectionClosed) as e:
            ws.close()
            raise HandshakeError(f"{self.url}: bad handshake: {e}") from None
        return ws, spec

    def connect(self) -> PolicySpec:
        self._ws, self.spec = self._open()
        for target in (self._send_loop, self._recv_loop):
            t = threading.Thread(target=target, daemon=True, name=f"policy-client-{target.__name__}")
            t.start()
            self._threads.append(t)
        return self.spec

    def submit(self, obs) -> None:
        """Queue an observation (`deploy.protocol.Observation`) to send; replaces an unsent one."""
        with self._cond:
            self._pending = obs
            self._cond.notify()

    def poll(self) -> list:
        out = []
        while True:
            try:
                out.append(self._events.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        self._closed = True
        with self._cond:
            self._cond.notify_all()
        ws, self._ws = self._ws, None
        if ws is not None:
            ws.close()
        for t in self._threads:
            t.join(5)

    # -------------------------------------------------------------- threads
    def _send_loop(self) -> None:
        while not self._closed:
            with self._cond:
                while self._pending is None and not self._closed:
                    self._cond.wait()
                obs, self._pending = self._pending, None
            ws = self._ws
            if obs is None or ws is None:
                continue  # not connected: dropped, never replayed
            try:
                ws.send(encode(obs.to_wire()))
                self.sent += 1
            except (websockets.ConnectionClosed, OSError):
                pass  # the receiver reports the disconnection

    def _recv_loop(self) -> None:
        while not self._closed:
            ws = self._ws
            if ws is None:
                if not self._reconnect():
                    return
                continue
            try:
                message = ws.recv()
            except (websockets.ConnectionClosed, OSError) as e:
                self._drop(ws, f"connection lost: {e}")
                continue
            if isinstance(message, str):
                self._events.put(ServerError(parse_error(message)))
                continue
            try:
                self._events.put(check_reply(decode(message, self.max_reply_bytes), self.spec))
            except (WireError, ProtocolError) as e:
                self._events.put(ServerError(ProtocolError(getattr(e, "code", "bad_reply"), str(e))))

    def _drop(self, ws: ClientConnection, reason: str) -> None:
        with self._cond:
            self._pending = None  # flushed: an old observation must not reach a new session
        if self._ws is ws:
            self._ws = None
        ws.close()
        if not self._closed:
            self._events.put(Disconnected(reason))

    def _reconnect(self) -> bool:
        delay = 0.05
        while not self._closed and self.reconnect:
            try:
                ws, spec = self._open()
            except (ConnectionError, HandshakeError):
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            with self._cond:
                self._pending = None
            self._ws = ws
            self._events.put(Connected(spec, same=spec == self.spec))
            return True
        return False
