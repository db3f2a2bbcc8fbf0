"""`vla-bench-env`: built-in suite speed, steps per second with both cameras rendered.

Run it pinned to one core (`taskset -c 0 vla-bench-env`) to read the one-core figure.
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--image-size", type=int, default=128)
    args = parser.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")
    from envs.tabletop import TASKS, TabletopEnv

    print(
        f"built-in suite, two {args.image_size} px cameras, random actions, cores usable: {len(os.sched_getaffinity(0))}"
    )
    print(f"{'task':<16}{'steps/s':>9}{'physics only':>14}")
    for task in TASKS:
        env = TabletopEnv(task, image_size=args.image_size)
        env.reset(seed=0)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            *_, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:  # an ended episode refuses further steps
                env.reset()
        full = args.steps / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            env.simulate(env.action_space.sample())
        physics = args.steps / (time.perf_counter() - t0)
        env.close()
        print(f"{task:<16}{full:>9.1f}{physics:>14.1f}")


if __name__ == "__main__":
    main()
