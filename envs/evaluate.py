"""Evaluate a policy checkpoint on an environment suite: success table, JSON, rollout videos.

Episodes are spread over worker processes (each loads the checkpoint once). The policy is
queried for a chunk of H actions, the first `execute_steps` are executed, then it re-plans.
Two splits: `test` measures (suites with official initial states, LIBERO, start episode e of
a task from state `init_states[e]`; the built-in suite draws its layout from seed `seed + e`),
`validation` selects settings (episode e draws a fresh placement from seed VALIDATION_SEED + e,
which no recording and no test episode uses). Robustness on LIBERO: `placement_widen` draws
the validation placements from regions widened by that many metres, `camera_shift` moves the
agentview camera (either split). Everything a
worker would trip over (suite, tasks, initial states, the checkpoint's files, weights, cameras,
widths and the suite it was trained for) is checked before the pool starts; what a worker still
fails on comes back as its own error, not as BrokenProcessPool. SIGINT or SIGTERM stops the
workers at once; finished episodes stay in episodes.partial.jsonl for a re-run to reuse.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from envs.frames import FramesOnDemand
from envs.libero.conventions import SUITES as LIBERO_SUITES
from envs.registry import SPLITS, SUITES, VALIDATION_SEED, get_suite
from vla.configs import atomic_write_text

DELAY_MODES = ("inpaint", "naive")

log = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    suite: str = "builtin"
    tasks: list[str] = field(default_factory=list)  # empty: every task of the suite
    episodes_per_task: int = 10
    seed: int = 10_000  # episode e of a task uses seed + e (disjoint from the demo seeds)
    execute_steps: int = 0  # actions executed per chunk before re-planning; 0 = the whole chunk
    workers: int = 2
    videos_per_task: int = 1
    # Videos are drawn by a viewing render of this many pixels per camera (the policy's 64 px
    # input is too small to judge a grasp by); 0: the frames the policy saw.
    video_size: int = 256
    threads_per_worker: int = 1
    sampler_overrides: dict = field(default_factory=dict)  # e.g. {"steps": 1} for ablations
    # LIBERO: indices of the official initial states to run (empty: the first episodes_per_task).
    init_states: list[int] = field(default_factory=list)
    # LIBERO rendering, "libero" or "fast"; empty: the mode the checkpoint's data was recorded in.
    render_mode: str = ""
    # "test" measures (LIBERO: the official initial states); "validation" selects settings:
    # fresh seeded placements that no recording and no test episode uses (module docstring).
    split: str = "test"
    # Robustness (LIBERO), each named in the table and the out folder. placement_widen (validation
    # split only): metres added on each side of every region the fresh placements are drawn
    # from, e.g. 0.02 or 0.05. camera_shift: [x, y, z] metres the agentview camera moves along
    # its own axes (x right, y up in the image, z backwards), e.g. [0.02, 0, 0]; empty: none.
    placement_widen: float = 0.0
    camera_shift: list[float] = field(default_factory=list)
    # Inference latency in control steps (20 Hz LIBERO: 50 ms each): a chunk computed from the
    # observation at step t is executed from step t + delay_steps, the previous one running
    # meanwhile (`rollout`); 0 runs synchronously. delay_mode: "inpaint" commits the actions run
    # during inference as the new chunk's prefix, "naive" does not.
    delay_steps: int = 0
    delay_mode: str = "inpaint"

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"eval.split must be one of {list(SPLITS)}, got {self.split!r}")
        if self.split == "validation" and self.init_states:
            raise ValueError("eval.init_states picks official initial states, which the validation split never uses")
        if self.split == "test" and not 0 <= self.seed <= VALIDATION_SEED - self.episodes_per_task:
            raise ValueError(
                f"eval.seed={self.seed}: test seeds must stay in [0, {VALIDATION_SEED}), below the validation split's"
            )
        if self.episodes_per_task < 1:
            raise ValueError(f"eval.episodes_per_task must be >= 1, got {self.episodes_per_task}")
        if not (math.isfinite(self.placement_widen) and 0 <= self.placement_widen <= 0.2):
            raise ValueError(f"eval.placement_widen must be in [0, 0.2] metres, got {self.placement_widen}")
        if self.placement_widen and self.split != "validation":
            raise ValueError(
                "eval.placement_widen widens fresh placements, which only the validation split draws (an official "
                "initial state fixes every placement): add eval.split=validation"
            )
        shift = list(self.camera_shift)
        if shift and not (len(shift) == 3 and all(math.isfinite(v) and abs(v) <= 0.1 for v in shift)):
            raise ValueError(f"eval.camera_shift must be [x, y, z] metres, each within 0.1, got {shift}")
        if self.execute_steps < 0:
            raise ValueError(f"eval.execute_steps must be >= 0, got {self.execute_steps}")
        if self.delay_steps < 0 or self.delay_mode not in DELAY_MODES:
            raise ValueError(
                f"eval.delay_steps must be >= 0 and eval.delay_mode one of {list(DELAY_MODES)}, got "
                f"{self.delay_steps}, {self.delay_mode!r}"
            )
        if not 0 <= self.video_size <= 1024:
            raise ValueError(
                f"eval.video_size must be in [0, 1024] pixels (0: the policy's frames), got {self.video_size}"
            )
        if self.workers < 1 or self.threads_per_worker < 1 or self.videos_per_task < 0:
            raise ValueError(
                "eval.workers and eval.threads_per_worker must be >= 1 and eval.videos_per_task >= 0, got "
                f"{self.workers}, {self.threads_per_worker}, {self.videos_per_task}"
            )

    def perturbations(self) -> dict:
        """The environment's robustness settings that differ from the benchmark's (make_env's)."""
        out = {"placement_widen": self.placement_widen, "camera_shift": tuple(self.camera_shift)}
        return {k: v for k, v in out.items() if v and any(np.atleast_1d(v))}


def _observation(obs: dict, instruction: str, cameras: list[str]) -> dict:
    return {"images": {c: obs[c] for c in cameras}, "state": obs["state"], "instruction": instruction}


def _video_frame(env, obs: dict, cameras: list[str], size: int) -> np.ndarray:
    """The policy's cameras side by side: drawn again at `size` pixels, or as the policy saw them (0)."""
    views = env.unwrapped.render_view(size) if size else obs
    return np.concatenate([views[c] for c in cameras], axis=1)


def check_delay(chunk_size: int, execute_steps: int, delay_steps: int) -> None:
    """A chunk requested with `delay_steps` of latency starts executing at its slot d and runs
    until its successor arrives, max(execute_steps, d) steps later: it must hold that many."""
    k = execute_steps or chunk_size
    if delay_steps and delay_steps + max(k, delay_steps) > chunk_size:
        raise ValueError(
            f"eval.delay_steps={delay_steps} with execute_steps={k} needs chunks of at least "
            f"{delay_steps + max(k, delay_steps)} actions; this policy's chunk_size is {chunk_size} "
            "(lower eval.execute_steps or the delay, or train with a longer policy.chunk_size)"
        )


def rollout(
    policy,
    env,
    seed: int,
    execute_steps: int,
    record: bool = False,
    init_state: int | None = None,
    video_size: int = 0,
    delay_steps: int = 0,
    delay_mode: str = "inpaint",
) -> dict:
    """One episode. Returns success, steps, inference time, and frames when `record` (drawn at
    `video_size` pixels per camera, 0: the policy's own frames).

    With `delay_steps` d > 0 the episode runs as a deployed policy does while it computes: a
    chunk requested from the observation at step t arrives at t + d, the robot executing the
    previous chunk's next d actions meanwhile, and the new chunk is executed from its slot d (the
    slot for step t + d). A request goes out when execute_steps - d actions of the current chunk
    remain to be run after it (at once if fewer), so every chunk is still executed for
    execute_steps actions. `delay_mode` "inpaint" gives the policy those d actions as a committed
    prefix (real-time chunking by inpainting), "naive" does not. The first chunk is computed
    with the robot at rest and runs from slot 0. The simulator is stepped the same way whatever
    the wall-clock time of inference, so a run is reproducible."""
    if delay_mode not in DELAY_MODES:
        raise ValueError(f"delay_mode must be one of {DELAY_MODES}, got {delay_mode!r}")
    check_delay(policy.cfg.chunk_size, execute_steps, delay_steps)
    # Frames only where the policy reads them: between requests the environment observes the
    # state alone, and a request draws the current frames (`observe()`), the ones the last step
    # would have returned. Drawing leaves the physics untouched, so episodes are those of
    # rendering every step. A video of the policy's own frames needs every step's.
    base = env.unwrapped
    on_demand = isinstance(base, FramesOnDemand) and not (record and not video_size)
    drawn = base.cameras if on_demand else None
    if on_demand:
        base.cameras = False
    try:
        args = (record, init_state, video_size, delay_steps, delay_mode, base.observe if on_demand else None)
        return _rollout(policy, env, seed, execute_steps, *args)
    finally:
        if on_demand:
            base.cameras = drawn


def _rollout(policy, env, seed, execute_steps, record, init_state, video_size, delay_steps, delay_mode, observe=None):
    obs, info = env.reset(seed=seed, options=None if init_state is None else {"init_state": init_state})
    policy.reset(seed)
    instruction = env.unwrapped.instruction
    k, d = execute_steps or policy.cfg.chunk_size, delay_steps
    frames, steps, infer_s, success, extra = [], 0, 0.0, False, {}

    def step(action) -> bool:
        nonlocal obs, steps, success
        if record:
            frames.append(_video_frame(env, obs, policy.cfg.cameras, video_size))
        obs, _, terminated, truncated, info = env.step(action)
        steps += 1
        if terminated or truncated:
            success = bool(info.get("success", terminated))
            if "partial" in info:  # a suite's second metric, in [0, 1] (`Suite.partial` says what it counts)
                extra["partial"] = float(info["partial"])
        return bool(terminated or truncated)

    def infer(prefix=None):
        nonlocal infer_s
        t0 = time.perf_counter()
        current = observe() if observe else obs
        chunk = policy.infer(_observation(current, instruction, policy.cfg.cameras), fixed_actions=prefix)
        infer_s += time.perf_counter() - t0
        return chunk

    chunk, start = infer(), 0  # the first chunk: computed with the robot at rest
    while True:
        before = max(0, k - d)  # actions run before the next request
        for action in chunk[start : start + before]:
            if step(action):
                return {"success": success, **extra, "steps": steps, "infer_s": infer_s, "frames": frames}
        if d == 0:
            chunk = infer()
            continue
        during = chunk[start + before : start + before + d]  # run while the next chunk is computed
        upcoming = infer(np.asarray(during) if delay_mode == "inpaint" else None)
        for action in during:
            if step(action):
                return {"success": success, **extra, "steps": steps, "infer_s": infer_s, "frames": frames}
        chunk, start = upcoming, d


_WORKER: dict = {}


def render_size(cfg) -> int:
    """Cameras render at the resolution the policy was trained on (square frames); policies
    saved before frame shapes were recorded render at the model's image size."""
    shapes = {tuple(cfg.camera_shapes[c]) for c in cfg.cameras if c in cfg.camera_shapes}
    if not shapes:
        return cfg.image_size
    if len(shapes) > 1 or any(h != w for h, w in shapes):
        raise ValueError(f"the built-in suites render square frames of one size; this policy was trained on {shapes}")
    return shapes.pop()[0]


def sampler_with_overrides(sampler, overrides: dict):
    """The checkpoint's sampler config with `eval.sampler_overrides` applied and validated."""
    from vla.configs import ConfigError, from_dict, to_dict

    valid = set(to_dict(sampler))
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ConfigError(f"eval.sampler_overrides: the sampler has no field {unknown}; valid fields: {sorted(valid)}")
    return from_dict(type(sampler), {**to_dict(sampler), **overrides}, "eval.sampler_overrides")


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel kills this process when the evaluation process dies, even by SIGKILL,
    rather than leave it running with the policy loaded. (Strictly, when the thread that
    spawned it ends: the one running `evaluate`, which outlives its pool.)"""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _init_worker(
    checkpoint: str,
    sampler_overrides: dict,
    threads: int,
    render_mode: str,
    parent: int,
    allow_unverified: bool,
    perturbations: dict | None = None,
    video_size: int = 0,
) -> None:
    # The parent alone decides when evaluation stops (Ctrl-C reaches the whole process group).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent)
    try:
        import torch

        from vla.policy import VLAPolicy

        torch.set_num_threads(threads)
        policy = VLAPolicy.load(checkpoint, allow_unverified=allow_unverified)
        policy.with_sampler(sampler_with_overrides(policy.cfg.sampler, sampler_overrides))
    except Exception as e:
        # Raised by every episode instead: an initializer's exception breaks the pool, and the
        # parent would see only BrokenProcessPool, the cause in this worker's log.
        _WORKER["error"] = e
        return
    _WORKER["policy"] = policy
    _WORKER["render_mode"] = render_mode
    _WORKER["perturbations"] = dict(perturbations or {})
    _WORKER["video_size"] = video_size
    _WORKER["envs"] = {}


def _run_episode(job: tuple[str, str, int, int | None, int, bool, int, str]) -> dict:
    from envs.registry import make_env

    if "error" in _WORKER:
        raise _WORKER["error"]
    suite, task, seed, init_state, execute_steps, record, delay_steps, delay_mode = job
    policy = _WORKER["policy"]
    env = _WORKER["envs"].get(task)
    if env is None:
        # One live simulator per worker: LIBERO scenes hold hundreds of MB of meshes and textures.
        for old in _WORKER["envs"].values():
            old.close()
        _WORKER["envs"] = {}
        env = _WORKER["envs"][task] = make_env(
            suite, task, render_size(policy.cfg), _WORKER["render_mode"], **_WORKER["perturbations"]
        )
        obs_space = env.observation_space
        from vla.model import check_compatible

        check_compatible(policy.cfg, env.action_space.shape[0], obs_space["state"].shape[0], list(obs_space.keys()))
    result = rollout(
        policy, env, seed, execute_steps, record, init_state, _WORKER["video_size"], delay_steps, delay_mode
    )
    return {"task": task, "seed": seed, "init_state": init_state, **result}


def plan_episodes(cfg: EvalConfig, policy_cfg) -> tuple[list[str], list[int | None], str]:
    """(tasks, initial-state indices or None per episode, render mode), all checked against the
    suite and the checkpoint: every mistake is reported here, before any worker starts."""
    from vla.model import check_compatible

    suite = get_suite(cfg.suite)
    available = suite.tasks()
    tasks = list(cfg.tasks) or available
    unknown = [t for t in tasks if t not in available]
    if unknown:
        raise KeyError(f"eval.tasks: {unknown} not in suite {cfg.suite!r}; available: {available}")
    observation, action = suite.spaces(render_size(policy_cfg))
    check_compatible(policy_cfg, action.shape[0], observation["state"].shape[0], list(observation.keys()))
    libero = cfg.suite in LIBERO_SUITES
    if not libero:
        if cfg.perturbations():
            raise ValueError(f"eval.placement_widen and eval.camera_shift apply to LIBERO suites, not {cfg.suite!r}")
        if cfg.render_mode:
            raise ValueError(f"eval.render_mode applies to LIBERO suites, not {cfg.suite!r}")
    if suite.official_states is None:
        if cfg.init_states:
            raise ValueError(f"eval.init_states applies to suites with official initial states, not {cfg.suite!r}")
        return tasks, [None] * cfg.episodes_per_task, ""
    if cfg.split == "validation":
        states = [None] * cfg.episodes_per_task  # fresh placements
    else:
        states = list(cfg.init_states) or list(range(cfg.episodes_per_task))
        for task in tasks:
            n = suite.official_states(task)
            bad = [i for i in states if not 0 <= i < n]
            if bad:
                raise IndexError(
                    f"eval.init_states: {bad} out of range for {cfg.suite}/{task}, which has {n} (0..{n - 1})"
                )
    if not libero:
        return tasks, states, ""
    from envs.libero.conventions import RenderMode

    trained = policy_cfg.render_mode
    mode = cfg.render_mode or trained or RenderMode.libero
    if mode not in {m.value for m in RenderMode}:
        raise ValueError(f"eval.render_mode={mode!r}; choose one of {[m.value for m in RenderMode]}")
    if trained and mode != trained:
        log.warning(
            "evaluating with render_mode=%s but the checkpoint's data was rendered in %s mode: "
            "expect lower success (set eval.render_mode=%s to match)",
            mode,
            trained,
            trained,
        )
    return tasks, states, str(mode)


def episode_seed(cfg: EvalConfig, e: int) -> int:
    """The seed of episode e of every task: `seed + e` (test) or VALIDATION_SEED + e
    (validation). The LIBERO expert measurement seeds official state e as its test episode."""
    return (VALIDATION_SEED if cfg.split == "validation" else cfg.seed) + e


def episode_jobs(cfg: EvalConfig, tasks: list[str], states: list[int | None]) -> list[tuple]:
    """One job per episode: (suite, task, seed (`episode_seed`), initial state or None,
    execute_steps, record a video, delay_steps, delay_mode)."""
    delay = (cfg.delay_steps, cfg.delay_mode)
    return [
        (cfg.suite, task, episode_seed(cfg, e), state, cfg.execute_steps, e < cfg.videos_per_task, *delay)
        for task in tasks
        for e, state in enumerate(states)
    ]


def check_trained_for(checkpoint: str | Path, suite: str, policy_cfg) -> None:
    """Refuse a suite whose robot is not the one the checkpoint's data came from (its
    embodiment). The built-in suite and LIBERO share action and state widths and camera names,
    so `check_compatible` lets such a policy through, onto scenes, views and a state frame it
    never saw. A policy of an unknown robot (a LeRobot dataset's) is checked by widths only."""
    robot = policy_cfg.embodiment.robot
    wanted = get_suite(suite).robot
    known = {s.robot for s in SUITES.values()}
    if robot in known and robot != wanted:
        fits = sorted(name for name, s in SUITES.items() if s.robot == robot)
        raise ValueError(
            f"{checkpoint} was trained on the {robot!r} robot's data (policy.embodiment in its config.json), but "
            f"eval.suite={suite!r} evaluates the {wanted!r} robot: the widths and camera names match, the scenes, "
            "views and state frame do not, so its success would mean nothing. Evaluate it with eval.suite="
            f"{fits[0] if len(fits) == 1 else 'one of ' + str(fits)}, or train a policy on {suite}'s data"
        )
    if policy_cfg.render_mode and suite not in LIBERO_SUITES:
        raise ValueError(
            f"{checkpoint} was trained on LIBERO frames rendered in {policy_cfg.render_mode} mode "
            f"(policy.render_mode in its config.json), but eval.suite={suite!r} is not a LIBERO suite; "
            f"evaluate it with eval.suite set to one of {list(LIBERO_SUITES)}"
        )


def check_weights(checkpoint: str | Path) -> None:
    """Raise `CheckpointError`, naming the file, if the weights cannot be read or hold NaN or
    Inf (what every worker's load would refuse). One tensor at a time: the parent never holds
    the model."""
    import torch
    from safetensors import safe_open

    from vla.checkpoint import CheckpointError

    weights = Path(checkpoint) / "model.safetensors"
    bad, count = [], 0
    try:
        with safe_open(str(weights), framework="pt") as f:
            for name in f.keys():
                tensor = f.get_tensor(name)
                count += 1
                if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                    bad.append(name)
    except Exception as e:  # safetensors raises its own error types for truncated or garbled files
        raise CheckpointError(f"{weights} cannot be read ({e}); the file is truncated or corrupt") from e
    if bad:
        raise CheckpointError(
            f"{weights}: {len(bad)} of {count} tensors hold NaN or Inf (first: {bad[:3]}); this checkpoint "
            "comes from a diverged run and would act on garbage: evaluate an earlier one (checkpoints/step_*)"
        )


@contextlib.contextmanager
def _sigterm_raises():
    """While open, SIGTERM raises SystemExit(143) in the main thread, so that the evaluation
    stops its workers on the way out; the default action would end this process at once and
    leave them running. (SIGINT already raises KeyboardInterrupt.) A handler the caller
    installed (training's: stop after this step) is left in charge: it does not end the process."""
    if (
        threading.current_thread() is not threading.main_thread()  # only it can handle signals
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return

    def handle(signum, frame) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Kill the pool's workers now rather than wait for their running episodes (minutes on
    LIBERO), whose results would be discarded. Nothing is lost: workers write no files but the
    mesh cache's, which they replace atomically; the parent writes videos and episode lines.
    `pool.shutdown` reaps them."""
    # No public API for this before Python 3.14 (`kill_workers`).
    for p in list((getattr(pool, "_processes", None) or {}).values()):
        p.kill()


PARTIAL_FILE = "episodes.partial.jsonl"


def _finished_episodes(path: Path, header: dict) -> dict[tuple, dict]:
    """Episodes already run into `path` under the same `header` (weights, sampler, rendering),
    keyed by (task, seed, init_state); a line cut short by a kill is ignored."""
    if not path.is_file():
        return {}
    lines = path.read_text().splitlines()
    try:
        saved = json.loads(lines[0]) if lines else None
    except json.JSONDecodeError:
        saved = None
    if saved != header:
        log.warning("%s holds episodes of other settings (%s); they are not reused", path, saved)
        return {}
    done = {}
    for line in lines[1:]:
        try:
            ep = json.loads(line)
        except json.JSONDecodeError:
            continue
        done[(ep["task"], ep["seed"], ep["init_state"])] = ep
    return done


def partial_header(weights_sha256: str, cfg: EvalConfig, render_mode: str) -> dict:
    """What decides an evaluation's outcomes, the first line of its episodes.partial.jsonl: a
    file under another header is not reused."""
    return {
        "weights_sha256": weights_sha256,
        "suite": cfg.suite,
        "sampler_overrides": dict(cfg.sampler_overrides),
        "render_mode": render_mode,
        "execute_steps": cfg.execute_steps,
        **{k: list(v) if isinstance(v, tuple) else v for k, v in cfg.perturbations().items()},
        **({"delay_steps": cfg.delay_steps, "delay_mode": cfg.delay_mode} if cfg.delay_steps else {}),
    }


def evaluate(
    checkpoint,
    cfg: EvalConfig,
    out_dir: str | Path,
    progress: bool = True,
    desc: str = "evaluating",
    allow_unverified: bool = False,
) -> dict:
    """Run the suite with the policy of `checkpoint` (a folder, or a `vla.checkpoint.Checkpoint`);
    write results.json and videos under out_dir; return the results dict. `allow_unverified`:
    evaluate a checkpoint folder without manifest.json.

    Each finished episode is appended to `out_dir/episodes.partial.jsonl` as it arrives, so an
    interrupted evaluation run again into the same folder with the same weights, sampler,
    rendering and execute_steps runs only the episodes it lacks (every episode is seeded on its
    own, so the results are those of an uninterrupted run). The file is removed once
    results.json is written."""
    from concurrent.futures import as_completed

    from tqdm import tqdm

    from vla.checkpoint import Checkpoint

    # Checked here, not buried under the worker pool's BrokenProcessPool.
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else Checkpoint(checkpoint, allow_unverified)
    checkpoint, allow_unverified = ckpt.path, ckpt.allow_unverified
    policy_cfg = ckpt.policy_config
    check_weights(checkpoint)
    check_trained_for(checkpoint, cfg.suite, policy_cfg)
    sampler_with_overrides(policy_cfg.sampler, dict(cfg.sampler_overrides))
    tasks, states, render_mode = plan_episodes(cfg, policy_cfg)
    check_delay(policy_cfg.chunk_size, cfg.execute_steps, cfg.delay_steps)
    if cfg.delay_steps and cfg.delay_mode == "inpaint" and policy_cfg.decoder_type != "diffusion":
        raise ValueError(
            f"eval.delay_mode=inpaint commits a prefix, which the {policy_cfg.decoder_type} decoder cannot take: "
            "use eval.delay_mode=naive"
        )
    checkpoint = str(checkpoint)
    out_dir = Path(out_dir)
    jobs = episode_jobs(cfg, tasks, states)
    header = partial_header(ckpt.sha256("model.safetensors"), cfg, render_mode)
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = out_dir / PARTIAL_FILE
    done = _finished_episodes(partial, header)
    found = {}
    for job in jobs:
        ep = done.get(job[1:4])
        if ep is not None and (not job[5] or Path(ep.get("video", "")).is_file()):
            found[job] = ep
    todo = [job for job in jobs if job not in found]
    if found:
        log.info("resuming an evaluation: %d of %d episodes already run in %s", len(found), len(jobs), partial)
    if not found:  # a fresh file: the header, then one line per finished episode
        atomic_write_text(partial, json.dumps(header) + "\n")
    t0 = time.time()
    pool = ProcessPoolExecutor(
        max(1, cfg.workers),
        mp_context=mp.get_context("spawn"),
        initializer=_init_worker,
        initargs=(
            checkpoint,
            dict(cfg.sampler_overrides),
            cfg.threads_per_worker,
            render_mode,
            os.getpid(),
            allow_unverified,
            cfg.perturbations(),
            cfg.video_size,
        ),
    )
    try:
        # Workers start at the first submit, inside the handler: none can outlive a SIGTERM.
        with _sigterm_raises(), open(partial, "a") as log_file:
            futures = {pool.submit(_run_episode, job): job for job in todo}
            with tqdm(total=len(jobs), initial=len(found), desc=desc, disable=not progress) as bar:
                for future in as_completed(futures):
                    res = future.result()
                    frames = res.pop("frames")
                    if frames:
                        name = res["task"] + (
                            f"_init{res['init_state']}" if res["init_state"] is not None else f"_seed{res['seed']}"
                        )
                        res["video"] = str(_write_video(out_dir / "videos" / f"{name}.mp4", frames))
                    log_file.write(json.dumps(res) + "\n")
                    log_file.flush()
                    found[futures[future]] = res
                    bar.update()
    except BaseException as e:
        _stop_workers(pool)
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            log.warning(
                "evaluation interrupted: %d of %d episodes are kept in %s; run the same command again "
                "to run only the rest",
                len(found),
                len(jobs),
                partial,
            )
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    episodes = [found[job] for job in jobs]  # job order, however the workers finished
    per_task = {task: float(np.mean([e["success"] for e in episodes if e["task"] == task])) for task in tasks}
    results = {
        "checkpoint": checkpoint,
        "weights_sha256": header["weights_sha256"],  # which weights, wherever the folder was
        "config": {**cfg.__dict__, "init_states": [s for s in states if s is not None], "render_mode": render_mode},
        "per_task_success": per_task,
        "mean_success": float(np.mean(list(per_task.values()))),
    }
    if all("partial" in e for e in episodes):  # reported beside success, never mixed into it
        partial_rate = {t: float(np.mean([e["partial"] for e in episodes if e["task"] == t])) for t in tasks}
        results["per_task_partial"] = partial_rate
        results["mean_partial"] = float(np.mean(list(partial_rate.values())))
        results["partial_metric"] = get_suite(cfg.suite).partial
    results |= {
        "episodes": episodes,
        "wall_s": time.time() - t0,  # this invocation's: reused episodes cost nothing here
        "reused_episodes": len(jobs) - len(todo),
    }
    atomic_write_text(out_dir / "results.json", json.dumps(results, indent=2))
    partial.unlink()
    return results


def _write_video(path: Path, frames: list[np.ndarray], fps: int = 20) -> Path:
    import imageio.v2 as imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    with imageio.get_writer(path, fps=fps, codec="libx264", quality=7, macro_block_size=1) as w:
        for f in frames:
            w.append_data(f)
    return path
