"""How a fresh chunk joins the robot's plan: one small class per merge mode behind one interface,
and the rule for when the agent asks for the next chunk. The agent (`deploy.agent`) owns the
tick, the mode ladder and the checks every reply goes through (epoch, staleness, late, seam);
a mode decides what the plan becomes, what a request carries and which action a tick runs.

A chunk answers the observation of tick s: its action i is for tick s + i.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class _Chunk:
    start: int  # the tick its first action is for
    actions: np.ndarray  # (H, D)


@dataclass
class Plan:
    """The actions planned by tick (None where `ensemble` blends the covering chunks)."""

    actions: dict[int, np.ndarray | None] = field(default_factory=dict)
    chunks: list[_Chunk] = field(default_factory=list)  # ensemble's covering chunks

    def clear(self) -> None:
        self.actions.clear()
        self.chunks.clear()

    def planned(self, k: int) -> int:
        """Planned actions from tick k on."""
        n = 0
        while k + n in self.actions:
            n += 1
        return n

    def drop_before(self, k: int) -> None:
        for t in [t for t in self.actions if t < k]:
            del self.actions[t]


class MergeMode:
    """Naive execution, the base of the others: the new chunk replaces the plan from the current
    tick on; the robot keeps moving while the next chunk is computed."""

    name = "naive"
    holds_during_inference = False  # True: a chunk runs from its action 0 when it arrives

    def __init__(self, execute_steps: int, margin_steps: int, ensemble_decay: float = 0.0) -> None:
        self.execute_steps, self.margin_steps, self.ensemble_decay = execute_steps, margin_steps, ensemble_decay

    def wants_chunk(self, planned: int, delay_steps: int, ran: int) -> bool:
        """The request rule: ask when the plan would run out within the delay plus a margin, or
        when `execute_steps` of the current chunk will have run by the time the answer arrives."""
        return not planned or planned <= delay_steps + self.margin_steps or ran + delay_steps >= self.execute_steps

    def prefix(self, plan: Plan, k: int, planned: int, delay_steps: int, longest: int) -> dict[int, np.ndarray]:
        """The planned actions a request freezes (sent as `prefix_actions`, at most `longest`): none here."""
        return {}

    def merge(self, plan: Plan, actions: np.ndarray, s: int, k: int, frozen: dict[int, np.ndarray]) -> None:
        plan.actions = {s + i: actions[i] for i in range(k - s, len(actions))}

    def action(self, plan: Plan, k: int) -> np.ndarray:
        return plan.actions[k]


class RealTimeChunking(MergeMode):
    """`rtc`: the actions that will run while the request is in flight (this tick's and the next
    d) are sent as `prefix_actions`; the decoder keeps them and inpaints the rest, so the new chunk
    continues what the robot is doing."""

    name = "rtc"

    def prefix(self, plan: Plan, k: int, planned: int, delay_steps: int, longest: int) -> dict[int, np.ndarray]:
        n = min(planned, delay_steps + 1, longest)
        return {k + i: plan.actions[k + i] for i in range(n)} if planned else {}

    def merge(self, plan: Plan, actions: np.ndarray, s: int, k: int, frozen: dict[int, np.ndarray]) -> None:
        super().merge(plan, actions, s, k, frozen)
        # the frozen prefix is what the robot already committed to
        plan.actions.update({t: a for t, a in frozen.items() if t >= k})


class Ensemble(MergeMode):
    """`ensemble`: ACT's temporal ensembling, an exponentially weighted mean of every chunk
    covering a tick (weight exp(-m i), i = 0 for the oldest)."""

    name = "ensemble"

    def merge(self, plan: Plan, actions: np.ndarray, s: int, k: int, frozen: dict[int, np.ndarray]) -> None:
        plan.chunks = [c for c in plan.chunks if c.start + len(c.actions) > k] + [_Chunk(s, actions)]
        plan.actions = {t: None for t in range(k, s + len(actions))}

    def action(self, plan: Plan, k: int) -> np.ndarray:
        live = [c for c in plan.chunks if c.start <= k < c.start + len(c.actions)]
        w = np.exp(-self.ensemble_decay * np.arange(len(live)))
        return np.sum([wi * c.actions[k - c.start] for wi, c in zip(w, live, strict=True)], axis=0) / w.sum()


class Synchronous(MergeMode):
    """`sync`: the openpi client's way. The robot holds while each chunk is computed and then
    runs its first `execute_steps` actions (pauses, but no latency: a policy trained without
    latency sees what evaluation showed it)."""

    name = "sync"
    holds_during_inference = True

    def wants_chunk(self, planned: int, delay_steps: int, ran: int) -> bool:
        return not planned  # only when the executed part of the chunk is used up

    def merge(self, plan: Plan, actions: np.ndarray, s: int, k: int, frozen: dict[int, np.ndarray]) -> None:
        plan.actions = {k + i: actions[i] for i in range(min(self.execute_steps, len(actions)))}


def stretch(plan: Plan, start: int, factor: int, delta: bool, binary: np.ndarray, before: np.ndarray | None) -> int:
    """Re-time the planned actions from tick `start` on over `factor` times as many ticks (slowed
    playback); returns how many planned actions were stretched. Delta actions (a displacement per
    tick) are split into `factor` equal parts, so the motion's path and length are kept at
    1/factor of the speed; absolute targets are reached through `factor` evenly spaced ones from
    the target before (`before`, else the action itself: a held target). Binary dims (the gripper)
    keep their value. Ensembled plans (no action stored per tick) are left as they are."""
    n = plan.planned(start)
    actions = [plan.actions[start + i] for i in range(n)]
    if not n or any(a is None for a in actions):
        return 0
    retimed = {}
    prev = plan.actions.get(start - 1, before)
    for i, a in enumerate(actions):
        origin = a if prev is None else prev
        for j in range(factor):
            part = a / factor if delta else origin + (a - origin) * (j + 1) / factor
            retimed[start + i * factor + j] = np.where(binary, a, part).astype(a.dtype)
        prev = a
    for t in range(start, start + n):
        del plan.actions[t]
    plan.actions.update(retimed)
    return n


MERGE_MODES: dict[str, type[MergeMode]] = {m.name: m for m in (RealTimeChunking, MergeMode, Ensemble, Synchronous)}
