"""The robot agent: a fixed-rate control loop that keeps the robot safe with or without a network.

    agent = RobotAgent(AgentConfig(...), client, robot)     # client: deploy.client.PolicyClient
    agent.arm()                                             # a new episode (and the only way out of SAFE_STOP)
    summary = agent.run(max_steps=400)                      # ticks at spec.fps on a monotonic clock

Each tick k (deadline = start + k * period, absolute: a late tick never shifts the ones after):
observe the robot; take the server's replies and merge a fresh chunk into the plan; set the
mode; request the next chunk when the plan runs low; send one command through the safety
filter, or hold, or stop.

Timing. A chunk answers the observation of tick s: its action i is for tick s + i, except when
the robot held from s until the chunk arrived (nothing planned, no chunk since): then none of it
has run, and action 0 is for the arrival tick. The next
chunk is requested when the plan would run out within the estimated delay plus a margin, or
when `execute_steps` of the current chunk will have run by the time it arrives. The delay is a
rolling high percentile of measured round trips (a window, so a warm-up spike ages out).

Merging (`deploy.merge`, one class per mode): `rtc` (default) sends the actions that will run
while the request is in flight as `prefix_actions` for the decoder to keep; `naive` replaces
the plan from the current tick on; `ensemble` blends every chunk covering a tick; `sync` holds
while each chunk is computed. A policy whose handshake says it takes no prefix actions (an
autoregressive decoder cannot inpaint) makes the agent refuse to arm under `rtc`, or use the
merge mode `on_no_prefix` names instead. A reply is dropped when it is from another
episode epoch, older than or equal to one already merged, or so late that none of it applies. A
seam check compares the first new action with the last executed one (continuous dims, as a
fraction of each range): above `seam_limit` the old plan is kept and the event counted.

Modes, by time since the last merged fresh chunk: NORMAL; DEGRADED (plan low or server
unreachable: keep executing, slowed with `degraded_slowdown`); HOLD (no planned action,
`hold_after_s` without a fresh chunk, a non-finite chunk, or the safety filter clamping too
often: the adapter holds); SAFE_STOP
(`safe_stop_after_s` without a fresh chunk, stale or frozen observations, a driver fault or
e-stop, a server whose spec changed): the adapter stops, and only `arm()` leaves it. On a
reconnect the plan and any unsent request are dropped, never replayed. Observations pass the
watchdog (`deploy.watchdog`: fresh, finite, cameras not frozen); the robot is any
`deploy.robots.Robot`.

No torch here (a test imports this package in a process that has no torch).
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from enum import StrEnum

import numpy as np

from deploy.client import Connected, Disconnected, ServerError
from deploy.merge import MERGE_MODES, Plan, stretch
from deploy.protocol import Observation, Reply
from deploy.robots import Robot
from deploy.safety import SafetyConfig, SafetyFilter, UnsafeAction
from deploy.watchdog import ObservationWatchdog

log = logging.getLogger("vla.robot")


# Action spaces whose actions are absolute targets (`vla.embodiment.ACTION_SPACES`); "delta_*" are
# per-tick displacements.
ABSOLUTE = ("joint_pos",)


class Mode(StrEnum):
    DISARMED = "DISARMED"
    NORMAL = "NORMAL"
    DEGRADED = "DEGRADED"
    HOLD = "HOLD"
    SAFE_STOP = "SAFE_STOP"


class Merge(StrEnum):
    rtc = "rtc"
    naive = "naive"
    ensemble = "ensemble"
    sync = "sync"


@dataclass
class AgentConfig:
    instruction: str = ""  # empty: the robot adapter's own (the simulator's task)
    merge: Merge = Merge.rtc
    # merge=rtc with a policy that takes no prefix_actions: "refuse" to arm, or the merge mode
    # to use instead (naive, ensemble or sync)
    on_no_prefix: str = "refuse"
    execute_steps: int = 4  # want a new chunk once this many actions of the current one have run
    margin_steps: int = 1
    delay_window: int = 20  # round trips in the delay estimate
    delay_percentile: float = 90.0
    initial_delay_s: float = 0.1  # the estimate before any round trip was measured
    reply_timeout_s: float = 1.0  # an unanswered request is abandoned after this
    seam_limit: float = 0.5  # fraction of each continuous dim's range; 0 = off
    ensemble_decay: float = 0.1  # ACT's m: weight exp(-m * i), i = 0 for the oldest chunk
    hold_after_s: float = 0.3
    safe_stop_after_s: float = 1.0
    # DEGRADED's slowed playback: on entering it, the plan not yet promised to an in-flight
    # request runs over this many times as many ticks (`deploy.merge.stretch`), so a slow reply
    # finds the robot still moving, slower, rather than holding; the next merged chunk runs at the
    # normal rate. 1: off (the plan keeps its rate). Delta and absolute action spaces only.
    degraded_slowdown: int = 1
    stale_observation_s: float = 0.25  # an observation stamped longer ago than this is stale
    # a camera frame unchanged this many ticks while the state moved; 0 = off. Skipped for a
    # robot with `deterministic_frames` (a simulator renders a slow motion as the same pixels).
    frozen_frames: int = 10
    expect: dict = field(default_factory=dict)  # handshake fields this robot requires (action_space, ...)
    log_ticks: int = 2000  # ticks kept in `agent.log`
    safety: SafetyConfig = field(default_factory=SafetyConfig)

    def __post_init__(self) -> None:
        if self.merge not in set(Merge):
            raise ValueError(f"agent.merge must be one of {[m.value for m in Merge]}, got {self.merge!r}")
        self.merge = Merge(self.merge)
        fallbacks = [m.value for m in Merge if m != Merge.rtc]
        if self.on_no_prefix not in ("refuse", *fallbacks):
            raise ValueError(f"agent.on_no_prefix must be 'refuse' or one of {fallbacks}, got {self.on_no_prefix!r}")
        rules = {
            "execute_steps": (self.execute_steps >= 1, ">= 1"),
            "margin_steps": (self.margin_steps >= 0, ">= 0"),
            "delay_window": (self.delay_window >= 1, ">= 1"),
            "delay_percentile": (0 <= self.delay_percentile <= 100, "in [0, 100]"),
            "initial_delay_s": (self.initial_delay_s >= 0, ">= 0"),
            "reply_timeout_s": (self.reply_timeout_s > 0, "> 0"),
            "seam_limit": (self.seam_limit >= 0, ">= 0 (0: off)"),
            "ensemble_decay": (self.ensemble_decay >= 0, ">= 0"),
            "stale_observation_s": (self.stale_observation_s > 0, "> 0"),
            "frozen_frames": (self.frozen_frames >= 0, ">= 0 (0: off)"),
            "log_ticks": (self.log_ticks >= 1, ">= 1"),
            "degraded_slowdown": (self.degraded_slowdown >= 1, ">= 1 (1: off)"),
        }
        for name, (ok, rule) in rules.items():
            if not ok:  # a NaN fails every rule
                raise ValueError(f"agent.{name} must be {rule}, got {getattr(self, name)!r}")
        if not 0 < self.hold_after_s < self.safe_stop_after_s:
            raise ValueError(
                f"agent: need 0 < hold_after_s ({self.hold_after_s}) < safe_stop_after_s ({self.safe_stop_after_s})"
            )


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()

    def sleep_until(self, t: float) -> None:
        dt = t - time.monotonic()
        if dt > 0.002:
            time.sleep(dt - 0.001)
        while time.monotonic() < t:  # the last millisecond: spin, for sub-ms period jitter
            pass


class DelayEstimator:
    """Rolling high percentile of round-trip times (seconds)."""

    def __init__(self, window: int, percentile: float, initial: float) -> None:
        self.samples: deque[float] = deque(maxlen=window)
        self.percentile, self.initial = percentile, initial

    def add(self, seconds: float) -> None:
        self.samples.append(seconds)

    @property
    def value(self) -> float:
        return float(np.percentile(self.samples, self.percentile)) if self.samples else self.initial


class RobotAgent:
    def __init__(self, cfg: AgentConfig, client, robot: Robot, clock=None) -> None:
        spec = client.spec
        if spec is None:
            raise RuntimeError("connect the client first (client.connect())")
        bad = spec.mismatches(cfg.expect)
        if bad:
            raise ValueError("refusing to arm: the policy does not fit this robot: " + "; ".join(bad))
        if cfg.merge == Merge.rtc and not spec.takes_prefix_actions:
            why = (
                f"agent.merge=rtc sends prefix_actions, which the policy {spec.model_id} does not take "
                "(inpainting needs a diffusion decoder)"
            )
            if cfg.on_no_prefix == "refuse":
                raise ValueError(
                    f"refusing to arm: {why}; set agent.merge=naive, ensemble or sync "
                    "(sync reproduces evaluation), or agent.on_no_prefix=<one of them> to fall back to it"
                )
            log.warning("%s: merging with agent.on_no_prefix=%s instead", why, cfg.on_no_prefix)
            cfg = replace(cfg, merge=Merge(cfg.on_no_prefix))
        robot.check_spec(spec)
        if cfg.degraded_slowdown > 1 and not (spec.action_space.startswith("delta_") or spec.action_space in ABSOLUTE):
            raise ValueError(
                f"agent.degraded_slowdown={cfg.degraded_slowdown} re-times the plan, which needs to know whether an "
                f"action is a per-tick delta or an absolute target; the policy's action_space is "
                f"{spec.action_space!r}: declare it (policy.embodiment.action_space) or set agent.degraded_slowdown=1"
            )
        self.cfg, self.client, self.robot, self.spec = cfg, client, robot, spec
        self._binary = np.isin(np.arange(spec.action_dim), spec.binary_dims)
        self.clock = clock or MonotonicClock()
        self.period = 1.0 / spec.fps
        safety = cfg.safety
        box = robot.workspace
        if not safety.workspace_low and box is not None:  # the adapter's own box, unless configured
            safety = replace(safety, workspace_low=list(box[0]), workspace_high=list(box[1]))
        self.safety = SafetyFilter(safety, spec, spec.fps)
        self.delay = DelayEstimator(cfg.delay_window, cfg.delay_percentile, cfg.initial_delay_s)
        self.merging = MERGE_MODES[cfg.merge](cfg.execute_steps, cfg.margin_steps, cfg.ensemble_decay)
        self.watchdog = ObservationWatchdog(
            spec.state_dim, cfg.stale_observation_s, cfg.frozen_frames, robot.deterministic_frames
        )
        span = np.asarray(spec.action_high) - np.asarray(spec.action_low)
        self._seam_scale = np.where(np.isin(np.arange(spec.action_dim), spec.binary_dims), 0.0, 1.0 / span)
        self.mode = Mode.DISARMED
        self.reason = "not armed"
        self.epoch = 0
        self.seq = 0
        self.events: Counter = Counter()
        self.log: deque[dict] = deque(maxlen=cfg.log_ticks)  # the last ticks (mode, command), bounded
        # seq -> (sent at, tick, merges so far if nothing was planned then, else None), the last 64
        self._sent: dict[int, tuple[float, int, int | None]] = {}
        self._prefix: dict[int, dict[int, np.ndarray]] = {}  # seq -> the actions frozen for it (rtc)
        self._reset_episode()

    # -------------------------------------------------------------- episodes
    def _reset_episode(self) -> None:
        self.k = 0
        self.plan = Plan()
        self.chunk_start = 0
        self.last_merged_seq = -1
        self.in_flight: int | None = None  # the seq awaiting its reply (sent at: `_sent`)
        self.last_fresh = self.clock.now()
        self.last_server_error = ""  # since the last fresh chunk: said when the ladder stops the robot
        self.last_executed: np.ndarray | None = None
        self.hold_latch = ""
        self.watchdog.reset()
        self._first_request = True
        self._stretched = False  # the plan was slowed since the last merged chunk

    def arm(self) -> None:
        """Start a new episode (a new epoch: replies to the old one are dropped). The only way
        out of SAFE_STOP."""
        self.epoch += 1
        self.events = Counter()  # per episode (run() reports them)
        self.robot.reset()
        self._reset_episode()
        self.mode, self.reason = Mode.NORMAL, ""
        try:
            self.robot.observe()  # a measured pose, so that the first command is rate-limited from it
        except (RuntimeError, ValueError, OSError) as e:
            self.safe_stop(f"observation failed at arming: {e}")
        self.safety.reset(self.robot.hold_action())
        self.safety.clear_window()

    def safe_stop(self, reason: str) -> None:
        if self.mode != Mode.SAFE_STOP:
            self.events["safe_stop"] += 1
        self.mode, self.reason = Mode.SAFE_STOP, reason
        self.plan.clear()

    def estop(self) -> None:
        self.safe_stop("e-stop")

    # -------------------------------------------------------------- one tick
    def tick(self) -> dict:
        now, k = self.clock.now(), self.k
        row = {"k": k, "t": now}
        obs = None
        if self.mode != Mode.DISARMED:
            fault = self.robot.fault()
            if fault:
                self.safe_stop(f"robot fault: {fault}")
            else:
                try:
                    obs = self.robot.observe()
                    self.watchdog.check(obs, now)
                except (RuntimeError, ValueError, OSError) as e:
                    self.safe_stop(f"observation failed: {e}")
                    obs = None
        self._take_events(now)
        self._set_mode(now)
        if obs is not None and self.mode not in (Mode.SAFE_STOP, Mode.DISARMED):
            self._maybe_request(obs, now)
        row.update(self._command(obs))
        row["mode"] = str(self.mode)
        self.log.append(row)
        self.k += 1
        return row

    def _take_events(self, now: float) -> None:
        for ev in self.client.poll():
            if isinstance(ev, Reply):
                self._on_reply(ev, now)
            elif isinstance(ev, ServerError):
                self.events[f"server_error:{ev.error.code}"] += 1
                self.last_server_error = f"{ev.error.code}: {ev.error}"
                if ev.error.seq == self.in_flight:
                    self.in_flight = None
            elif isinstance(ev, Disconnected):
                self.events["disconnected"] += 1
                self.in_flight = None
                self.plan.clear()  # flushed: the plan came from a session that is gone
            elif isinstance(ev, Connected):
                self.events["reconnected"] += 1
                if not ev.same:
                    self.safe_stop("the policy server restarted with another policy (handshake spec changed)")

    def _on_reply(self, r: Reply, now: float) -> None:
        if r.epoch != self.epoch:
            self.events["dropped_other_epoch"] += 1
            return
        if r.seq <= self.last_merged_seq:
            self.events["dropped_stale"] += 1
            return
        sent = self._sent.get(r.seq)
        if r.seq == self.in_flight:
            self.in_flight = None
        if sent is None:
            self.events["dropped_unknown"] += 1
            return
        sent_at, s, idle_mark = sent
        self.delay.add(now - sent_at)
        if idle_mark is not None and idle_mark == self.events["merged"] and self.k - s < len(r.actions):
            # Nothing was planned when the observation was taken and no chunk has come since: the
            # robot held all along, so none of this chunk has run. It starts at its action 0 now;
            # skipping the actions of the ticks it held through would drop motions never made. A
            # reply older than its own chunk is still dropped as late below (a stale view).
            s = self.k
        if self.mode == Mode.SAFE_STOP:
            return
        try:
            SafetyFilter.check_finite(r.actions)
        except UnsafeAction:
            self.events["non_finite_chunk"] += 1
            self.plan.clear()
            self.hold_latch = "non-finite chunk"
            self.last_merged_seq = r.seq
            return
        if not self.merging.holds_during_inference:  # the robot moved on since the observation
            first = self.k - s  # the chunk's action for this tick
            if first >= len(r.actions):
                self.events["dropped_late"] += 1
                return
            if self.cfg.seam_limit and self.last_executed is not None and self.plan.actions.get(self.k) is not None:
                jump = np.max(np.abs(r.actions[first] - self.last_executed) * self._seam_scale)
                if jump > self.cfg.seam_limit:
                    self.events["seam_rejected"] += 1
                    self.last_merged_seq = r.seq
                    return
        self._merged(r, now, s)
        self.merging.merge(self.plan, r.actions, s, self.k, self._prefix.get(r.seq, {}))

    def _merged(self, r: Reply, now: float, s: int) -> None:
        self.last_merged_seq = r.seq
        self.last_fresh = now
        self.last_server_error = ""
        self.chunk_start = s
        self.hold_latch = ""
        self._stretched = False
        self.events["merged"] += 1

    def _planned(self) -> int:
        """Planned actions from this tick on."""
        return self.plan.planned(self.k)

    def _set_mode(self, now: float) -> None:
        if self.mode in (Mode.SAFE_STOP, Mode.DISARMED):
            return
        since = now - self.last_fresh
        if since >= self.cfg.safe_stop_after_s:
            last = f" (the server's last error: {self.last_server_error})" if self.last_server_error else ""
            self.safe_stop(f"no fresh chunk for {since:.2f} s{last}")
        elif self.hold_latch or self._planned() == 0 or since >= self.cfg.hold_after_s or self.safety.escalate:
            if self.safety.escalate and not self.hold_latch:
                self.hold_latch = "safety filter clamped too often"
                self.events["clamp_escalation"] += 1
                self.safety.clear_window()  # counted once: a fresh chunk starts a new window
                self.plan.clear()
            self.mode = Mode.HOLD
            self.reason = self.hold_latch or (
                "plan empty" if self._planned() == 0 else f"{since:.2f} s without a fresh chunk"
            )
        elif not self.client.connected or self._planned() <= self._delay_steps():
            self.mode, self.reason = Mode.DEGRADED, "server unreachable" if not self.client.connected else "plan low"
            self._slow_down()
        else:
            self.mode, self.reason = Mode.NORMAL, ""

    def _slow_down(self) -> None:
        """DEGRADED's slowed playback, once per merged chunk. The actions promised to the request in
        flight (rtc's prefix) keep their ticks: the decoder was told they run as they are."""
        if self.cfg.degraded_slowdown == 1 or self._stretched or self.merging.holds_during_inference:
            return
        frozen = self._prefix.get(self.in_flight, {}) if self.in_flight is not None else {}
        start = max(self.k, max(frozen, default=self.k - 1) + 1)
        delta = self.spec.action_space.startswith("delta_")
        if stretch(self.plan, start, self.cfg.degraded_slowdown, delta, self._binary, self.last_executed):
            self._stretched = True
            self.events["slowed"] += 1

    def _delay_steps(self) -> int:
        return math.ceil(self.delay.value / self.period)

    def _maybe_request(self, obs, now: float) -> None:
        if self.in_flight is not None:
            if now - self._sent[self.in_flight][0] < self.cfg.reply_timeout_s:
                return
            self.events["request_timeout"] += 1
            self.in_flight = None
        if not self.client.connected:
            return
        d = self._delay_steps()
        planned = self._planned()
        if not self.merging.wants_chunk(planned, d, self.k - self.chunk_start):
            return
        # A policy trained with committed prefixes up to N steps is sent at most N (what it was
        # trained on); one trained without them inpaints any prefix shorter than its chunk.
        longest = self.spec.prefix_trained_steps or self.spec.chunk_size - 1
        frozen = self.merging.prefix(self.plan, self.k, planned, d, longest)
        prefix = np.stack([frozen[t] for t in sorted(frozen)]).astype(np.float32) if frozen else None
        self.seq += 1
        instruction = self.cfg.instruction or self.robot.instruction
        self.client.submit(
            Observation(
                obs.images,
                np.asarray(obs.state, np.float32),
                instruction,
                self.seq,
                self.epoch,
                prefix,
                reset=self._first_request,
            )
        )
        self._first_request = False
        self._sent[self.seq] = (now, self.k, self.events["merged"] if planned == 0 else None)
        self._prefix[self.seq] = frozen
        for old in [q for q in self._sent if q < self.seq - 64]:  # bounded: no growth in a long run
            self._sent.pop(old, None)
            self._prefix.pop(old, None)
        self.in_flight = self.seq
        self.events["requests"] += 1

    def _command(self, obs) -> dict:
        self.plan.drop_before(self.k)
        if self.mode == Mode.SAFE_STOP:
            self.robot.stop()
            return {"command": "stop"}
        if self.mode in (Mode.HOLD, Mode.DISARMED) or obs is None:
            if self.mode != Mode.DISARMED:
                self.robot.hold()
                self.safety.reset(self.robot.hold_action())
                self.last_executed = None
            return {"command": "hold"}
        try:
            action, clamped = self.safety(self.merging.action(self.plan, self.k), obs.state)
        except UnsafeAction as e:
            self.events["unsafe_action"] += 1
            self.plan.clear()
            self.hold_latch = str(e)
            self.mode = Mode.HOLD
            self.robot.hold()
            self.safety.reset(self.robot.hold_action())
            return {"command": "hold"}
        self.events["clamped"] += clamped
        self.robot.act(action)
        self.last_executed = action
        return {"command": "act", "action": action}

    # -------------------------------------------------------------- the loop
    def run(self, max_steps: int, until_done: bool = True) -> dict:
        """Tick at the policy's rate until `max_steps`, the robot reports the episode done, or
        SAFE_STOP. Returns a summary (steps, success, mode, reason, events, period statistics)."""
        if self.mode == Mode.DISARMED:
            self.arm()
        start = self.clock.now()
        overruns = 0
        periods = []
        last = None
        for i in range(max_steps):
            deadline = start + i * self.period
            if self.clock.now() > deadline + self.period:  # more than a period late: skip, never burst
                overruns += 1
                continue
            self.clock.sleep_until(deadline)
            t = self.clock.now()
            if last is not None:
                periods.append(t - last)
            last = t
            self.tick()
            if self.mode == Mode.SAFE_STOP or (until_done and self.robot.done):
                break
        p = np.asarray(periods) if periods else np.zeros(1)
        return {
            "steps": self.k,
            "success": bool(self.robot.success),
            "mode": str(self.mode),
            "reason": self.reason,
            "events": dict(self.events),
            "overruns": overruns,
            "period_ms_p50": float(np.percentile(p, 50) * 1e3),
            "period_ms_p99": float(np.percentile(p, 99) * 1e3),
            "jitter_ms_p99": float(np.percentile(np.abs(p - self.period), 99) * 1e3),
        }
