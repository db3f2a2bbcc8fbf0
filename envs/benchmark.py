"""`vla-bench-env`: simulation speed, steps per second with both cameras rendered, with them drawn
every Nth step only (as evaluation draws them: at the policy's requests, every `eval.execute_steps`),
and physics alone.

    vla-bench-env                               # the built-in suite, every task
    vla-bench-env --suite libero_object         # LIBERO task 0: fast and LIBERO rendering modes
    vla-bench-env --suite simpler_bridge --steps 60   # the four Bridge tasks (ManiSkill 3, 640 x 480 camera)

Run it pinned to one core (`taskset -c 0 vla-bench-env ...`) to read the one-core figure.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from envs import headless


def _rate(step, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return n / (time.perf_counter() - t0)


def _drawn_every(env, step, k: int, n: int) -> float:
    """Steps/s of `step` with the cameras off except for an `observe()` every k-th step."""
    count = [0]

    def run():
        step()
        count[0] += 1
        if count[0] % k == 0:
            env.observe()

    env.cameras = False
    try:
        return _rate(run, n)
    finally:
        env.cameras = True


def builtin(steps: int, image_size: int, every: int) -> None:
    from envs.tabletop.env import TASKS, TabletopEnv

    print(f"{'task':<16}{'steps/s':>9}{f'drawn 1 in {every}':>14}{'physics only':>14}")
    for task in TASKS:
        env = TabletopEnv(task, image_size=image_size)
        env.reset(seed=0)

        def step(env=env):
            *_, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:  # an ended episode refuses further steps
                env.reset()

        full = _rate(step, steps)
        sparse = _drawn_every(env, step, every, steps)
        physics = _rate(lambda env=env: env.simulate(env.action_space.sample()), steps)
        env.close()
        print(f"{task:<16}{full:>9.1f}{sparse:>14.1f}{physics:>14.1f}")


def libero(suite: str, task_index: int, steps: int, image_size: int, every: int) -> None:
    from envs.libero.conventions import RenderMode
    from envs.libero.env import LiberoEnv, suite_tasks

    task = suite_tasks(suite)[task_index]
    print(f"{suite} task {task_index} ({task}), hold-still actions from official initial state 0")
    print(
        f"{'rendering':<12}{'steps/s':>9}{f'drawn 1 in {every}':>14}{'2 cameras (ms)':>16}{'physics only':>14}"
        f"{'faces drawn':>13}"
    )
    hold = np.array([0, 0, 0, 0, 0, 0, -1.0])
    for mode in (RenderMode.fast, RenderMode.libero):
        env = LiberoEnv(suite, task, image_size=image_size, render_mode=mode)
        env.reset(options={"init_state": 0})  # builds the renderer (and, once, the simplified meshes)

        def step(env=env):
            *_, terminated, truncated, _ = env.step(hold)
            if terminated or truncated:
                env.reset(options={"init_state": 0})

        full = _rate(step, steps)
        sparse = _drawn_every(env, step, every, steps)
        render_ms = 1000 / _rate(env.render_cameras, steps)
        physics = _rate(lambda env=env: env.simulate(hold), steps)
        faces = int(env._cameras.model.mesh_facenum.sum())
        env.close()
        print(f"{mode.value:<12}{full:>9.1f}{sparse:>14.1f}{render_ms:>16.1f}{physics:>14.1f}{faces:>13,}")


def simpler(steps: int, image_size: int) -> None:
    from envs.simpler.conventions import TASKS
    from envs.simpler.env import SimplerBridgeEnv
    from envs.simpler.setup import ready

    folder, standins, driver = ready()
    print(f"ManiSkill assets {folder}{' (stand-ins: ' + str(len(standins)) + ' files)' if standins else ''}; {driver}")
    print(f"{'task':<34}{'build (s)':>10}{'reset (s)':>10}{'steps/s':>9}")
    hold = np.array([0, 0, 0, 0, 0, 0, 1.0])
    for task in TASKS:
        t0 = time.perf_counter()
        env = SimplerBridgeEnv(task, image_size=image_size)
        build = time.perf_counter() - t0
        t0 = time.perf_counter()
        env.reset(seed=0, options={"init_state": 0})
        reset = time.perf_counter() - t0

        def step(env=env):
            *_, truncated, _ = env.step(hold)
            if truncated:
                env.reset(seed=0, options={"init_state": 0})

        rate = _rate(step, steps)
        env.close()
        print(f"{task:<34}{build:>10.1f}{reset:>10.2f}{rate:>9.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--suite", default="builtin", help="builtin, a LIBERO suite (libero_object, ...) or simpler_bridge"
    )
    parser.add_argument("--task", type=int, default=0, help="LIBERO: task index in the suite")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument(
        "--draw-every",
        type=int,
        default=4,
        help="the sparse column draws the cameras every Nth step (evaluation: every eval.execute_steps)",
    )
    args = parser.parse_args()
    if args.draw_every < 1:
        parser.error(f"--draw-every must be >= 1, got {args.draw_every}")
    headless()
    print(f"{args.image_size} px policy frames, cores usable: {len(os.sched_getaffinity(0))}")
    if args.suite == "simpler_bridge":
        simpler(args.steps, args.image_size)
    elif args.suite == "builtin":
        builtin(args.steps, args.image_size, args.draw_every)
    else:
        libero(args.suite, args.task, args.steps, args.image_size, args.draw_every)


if __name__ == "__main__":
    main()
