"""`vla-bench-deploy`: the deploy node's numbers, printed as tables.

    vla-bench-deploy --checkpoint runs/builtin/checkpoints/latest          # everything
    vla-bench-deploy --only overhead,jitter                               # no checkpoint needed

1. overhead: loopback round trip minus the server's own inference time (a no-op policy, so
   only the wire, the checks and the event loop are timed), p50 / p99, at 64 px and 224 px.
2. jitter: the agent's control loop at 50 Hz against a no-op server and a no-op robot:
   |period - 20 ms| p50 / p99 and overruns.
3. success: the checkpoint drives the built-in simulator in real time through server + agent,
   with 0 / 100 / 300 ms added to every inference, for rtc, naive, ensemble and sync merging.
4. soak: back-to-back episodes for --soak-s seconds: resident memory and round-trip time at
   the start and at the end.

The server always runs in its own process (as on a robot: another machine), so the agent's
loop never shares a Python interpreter with inference.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import numpy as np

from deploy.protocol import Observation, PolicySpec
from deploy.robots import Robot, RobotObservation

TASKS = ["lift_red", "lift_green", "lift_blue", "place_yellow", "place_purple"]


def noop_spec(image: int, fps: float = 50.0) -> PolicySpec:
    return PolicySpec(
        model_id="noop",
        weights_sha256="-",
        stats_sha256="-",
        cameras={"agentview": [image, image], "wrist": [image, image]},
        state_names=[f"s{i}" for i in range(8)],
        action_names=[f"a{i}" for i in range(7)],
        action_space="delta_eef_libero",
        fps=fps,
        chunk_size=8,
        takes_prefix_actions=True,  # NoopPolicy keeps them
        binary_dims=[6],
        action_low=[-1.0] * 7,
        action_high=[1.0] * 7,
    )


class NoopPolicy:
    def __init__(self, spec: PolicySpec) -> None:
        self.spec = spec

    def reset(self, seed: int) -> None:
        pass

    def infer(self, obs) -> np.ndarray:
        a = np.zeros((self.spec.chunk_size, self.spec.action_dim), np.float32)
        if obs.prefix_actions is not None:
            a[: len(obs.prefix_actions)] = obs.prefix_actions
        return a


class DelayedPolicy:
    """Adds `delay_ms` to every inference (a slower or remote server)."""

    def __init__(self, policy, delay_ms: float) -> None:
        self.policy, self.spec, self.delay = policy, policy.spec, delay_ms / 1e3
        self.state_bounds = getattr(policy, "state_bounds", None)  # the server checks states against them

    def reset(self, seed: int) -> None:
        self.policy.reset(seed)

    def infer(self, obs) -> np.ndarray:
        out = self.policy.infer(obs)
        time.sleep(self.delay)
        return out


def _serve(kind: str, arg, delay_ms: float, ports) -> None:
    from deploy.server import CheckpointPolicy, CheckpointPolicyConfig, PolicyServer, ServerConfig, ServerThread

    if kind == "noop":
        policy = NoopPolicy(noop_spec(*arg))
    else:
        policy = CheckpointPolicy(CheckpointPolicyConfig(checkpoint=arg, threads=2))
    if delay_ms:
        policy = DelayedPolicy(policy, delay_ms)
    thread = ServerThread(PolicyServer(policy, ServerConfig(port=0, warmup=3)))
    ports.put(thread.start())
    thread._thread.join()


class Served:
    """A policy server in a child process: `with Served("noop", (64, 50.0)) as url:`."""

    def __init__(self, kind: str, arg, delay_ms: float = 0.0) -> None:
        ctx = mp.get_context("spawn")
        self.ports = ctx.Queue()
        self.proc = ctx.Process(target=_serve, args=(kind, arg, delay_ms, self.ports), daemon=True)

    def __enter__(self) -> str:
        self.proc.start()
        return f"ws://127.0.0.1:{self.ports.get(timeout=300)}"

    def __exit__(self, *exc) -> None:
        self.proc.kill()
        self.proc.join(10)


class NullRobot(Robot):
    """A robot that takes commands and returns a fixed observation instantly (timing only)."""

    action_space = "delta_eef_libero"
    deterministic_frames = True
    instruction = "pick up the cube"
    done = success = False

    def __init__(self, spec: PolicySpec, clock) -> None:
        self.images = {c: np.zeros((h, w, 3), np.uint8) for c, (h, w) in spec.cameras.items()}
        self.state = np.zeros(spec.state_dim, np.float32)
        self.clock = clock

    def check_spec(self, spec) -> None:
        pass

    def reset(self) -> None:
        pass

    def observe(self):
        return RobotObservation(self.images, self.state, self.clock.now())

    def act(self, a) -> None:
        pass

    def hold_action(self):
        return np.zeros(7)

    def hold(self) -> None:
        pass

    stop = hold

    def fault(self):
        return None

    def close(self) -> None:
        pass


def overhead(n: int) -> list[dict]:
    from websockets.sync.client import connect

    from deploy.wire import decode, encode

    rows = []
    for image in (64, 224):
        spec = noop_spec(image)
        with Served("noop", (image, 50.0)) as url, connect(url, compression=None, max_size=None) as ws:
            ws.recv()
            obs = Observation(
                {c: np.random.default_rng(0).integers(0, 255, (image, image, 3), dtype=np.uint8) for c in spec.cameras},
                np.zeros(8, np.float32),
                "pick up the cube",
                0,
                1,
            )
            over = []
            for i in range(n + 20):
                obs.seq = i + 1
                t0 = time.perf_counter()
                ws.send(encode(obs.to_wire()))
                r = decode(ws.recv(), 1 << 20)
                rtt = (time.perf_counter() - t0) * 1e3
                if i >= 20:
                    over.append(rtt - r["server_timing"]["infer_ms"])
            kb = len(encode(obs.to_wire())) / 1024
            rows.append({"image": image, "kb": kb, "p50": np.percentile(over, 50), "p99": np.percentile(over, 99)})
    return rows


def jitter(seconds: float) -> dict:
    from deploy.agent import AgentConfig, MonotonicClock, RobotAgent
    from deploy.client import PolicyClient

    with Served("noop", (64, 50.0)) as url:
        clock = MonotonicClock()
        client = PolicyClient(url)
        spec = client.connect()
        agent = RobotAgent(AgentConfig(), client, NullRobot(spec, clock), clock)
        agent.arm()
        out = agent.run(int(seconds * spec.fps), until_done=False)
        client.close()
    return out


def success(checkpoint: str, episodes: int, delays: list[float], merges: list[str], slowdown: int = 1) -> list[dict]:
    from deploy.agent import AgentConfig, MonotonicClock, RobotAgent
    from deploy.client import PolicyClient
    from deploy.robots import SimRobot

    rows = []
    for delay in delays:
        with Served("checkpoint", checkpoint, delay) as url:
            clock = MonotonicClock()
            client = PolicyClient(url)  # one session per server: the rows share it
            spec = client.connect()
            (h, _), *_ = spec.cameras.values()
            for merge in merges:
                # the ladder's clocks grow with the injected delay: a fresh chunk cannot come sooner
                hold = max(0.3, delay / 1e3 + 0.2)
                cfg = AgentConfig(
                    merge=merge,
                    hold_after_s=hold,
                    safe_stop_after_s=max(1.0, hold + 0.7),
                    degraded_slowdown=slowdown,
                )
                wins = stops = 0
                for task in TASKS:
                    robot = SimRobot(task, h, clock, seed=10_000)
                    agent = RobotAgent(cfg, client, robot, clock)
                    for _ in range(episodes):
                        agent.arm()
                        out = agent.run(robot.env.unwrapped.task.max_episode_steps)
                        wins += out["success"]
                        stops += out["mode"] == "SAFE_STOP"
                    robot.close()
                n = episodes * len(TASKS)
                p = wins / n
                rows.append({"delay": delay, "merge": merge, "success": p, "se": (p * (1 - p) / n) ** 0.5, "n": n})
                print(
                    f"  delay {delay:>3.0f} ms  {merge:<8}  success {100 * p:5.1f}%  "
                    f"(s.e. {100 * rows[-1]['se']:.1f}, {n} episodes, {stops} safe-stops)",
                    flush=True,
                )
            client.close()
    return rows


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def soak(checkpoint: str, seconds: float) -> dict:
    from deploy.agent import AgentConfig, MonotonicClock, RobotAgent
    from deploy.client import PolicyClient
    from deploy.robots import SimRobot

    with Served("checkpoint", checkpoint) as url:
        clock = MonotonicClock()
        client = PolicyClient(url)
        spec = client.connect()
        (h, _), *_ = spec.cameras.values()
        robot = SimRobot("lift_red", h, clock, seed=20_000)
        agent = RobotAgent(AgentConfig(), client, robot, clock)
        samples = []  # (elapsed, rss MB, round-trip p50 ms of the episode, jitter p99)
        start = clock.now()
        while clock.now() - start < seconds:
            agent.arm()
            out = agent.run(robot.env.unwrapped.task.max_episode_steps)
            samples.append(
                (
                    clock.now() - start,
                    _rss_mb(),
                    1e3 * float(np.median(agent.delay.samples or [np.nan])),
                    out["jitter_ms_p99"],
                )
            )
        client.close()
        robot.close()
    first, last = samples[min(1, len(samples) - 1)], samples[-1]
    return {
        "episodes": len(samples),
        "seconds": last[0],
        "rss_first": first[1],
        "rss_last": last[1],
        "rtt_first": first[2],
        "rtt_last": last[2],
        "jitter_first": first[3],
        "jitter_last": last[3],
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="", help="a policy checkpoint (success and soak need one)")
    p.add_argument("--only", default="overhead,jitter,success,soak")
    p.add_argument("--round-trips", type=int, default=500)
    p.add_argument("--jitter-s", type=float, default=30.0)
    p.add_argument("--episodes", type=int, default=4, help="per task and cell of the success table")
    p.add_argument("--delays", default="0,100,300")
    p.add_argument("--merges", default="rtc,naive,ensemble,sync")
    p.add_argument("--soak-s", type=float, default=120.0)
    p.add_argument(
        "--degraded-slowdown", type=int, default=1, help="the success rows' agent.degraded_slowdown (1: off)"
    )
    a = p.parse_args(argv)
    parts = a.only.split(",")
    if ("success" in parts or "soak" in parts) and not a.checkpoint:
        p.error("success and soak need --checkpoint (or --only overhead,jitter)")
    if "overhead" in parts:
        rows = overhead(a.round_trips)
        print(f"\nround-trip overhead beyond model time, loopback, {a.round_trips} round trips (target p50 < 2 ms)")
        print(f"{'frames':>10} {'message KB':>10} {'p50 ms':>7} {'p99 ms':>7}")
        for r in rows:
            print(f"{'2x' + str(r['image']) + 'px':>10} {r['kb']:>10.1f} {r['p50']:>7.2f} {r['p99']:>7.2f}")
    if "jitter" in parts:
        out = jitter(a.jitter_s)
        print(f"\ncontrol loop at 50 Hz for {a.jitter_s:.0f} s (target p99 jitter < 2 ms)")
        print(
            f"period p50 {out['period_ms_p50']:.3f} ms, |period - 20 ms| p99 {out['jitter_ms_p99']:.3f} ms, overruns {out['overruns']}, "
            f"chunks merged {out['events'].get('merged', 0)}, final mode {out['mode']}"
        )
    if "success" in parts:
        print(f"\ntask success through server + agent, {a.episodes} episodes x {len(TASKS)} built-in tasks per cell")
        delays = [float(x) for x in a.delays.split(",")]
        rows = success(a.checkpoint, a.episodes, delays, a.merges.split(","), a.degraded_slowdown)
        merges = a.merges.split(",")
        print(f"\n{'added delay':>11} " + " ".join(f"{m:>14}" for m in merges))
        for d in sorted({r["delay"] for r in rows}):
            cells = {r["merge"]: r for r in rows if r["delay"] == d}
            print(
                f"{d:>8.0f} ms "
                + " ".join(f"{100 * cells[m]['success']:>6.0f}% ±{100 * cells[m]['se']:>4.1f}" for m in merges)
            )
    if "soak" in parts:
        s = soak(a.checkpoint, a.soak_s)
        print(f"\nsoak: {s['episodes']} episodes in {s['seconds']:.0f} s at 20 Hz")
        print(
            f"resident memory {s['rss_first']:.1f} -> {s['rss_last']:.1f} MB; round trip p50 {s['rtt_first']:.1f} -> {s['rtt_last']:.1f} ms; "
            f"jitter p99 {s['jitter_first']:.2f} -> {s['jitter_last']:.2f} ms"
        )


if __name__ == "__main__":
    main()
