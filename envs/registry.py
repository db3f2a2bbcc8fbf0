"""Environment suites by short name. Heavy simulators import only when their suite is chosen."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym

from envs import headless
from envs.libero.conventions import SUITES as LIBERO_SUITES

_REGISTERED = False

# Episode seeds at or above this are the validation split's (fresh placements that select
# settings): recordings refuse seeds that reach it, and test episodes never use it.
VALIDATION_SEED = 2_000_000_000
SPLITS = ("test", "validation")


@dataclass(frozen=True)
class Suite:
    robot: str  # the embodiment's robot (`vla.embodiment.Embodiment.robot`) whose policies it evaluates
    tasks: Callable[[], list[str]]
    make: Callable[..., gym.Env]  # (task, image_size, render_mode, **perturbations) -> env
    spaces: Callable[[int], tuple]  # image_size -> (observation space, action space), without building an env
    # The number of a task's official initial states (the benchmark's fixed episodes, by index),
    # None for a suite without them, whose episodes start from seeds.
    official_states: Callable[[str], int] | None
    # What an episode's `partial` (a suite's second metric, in [0, 1], reported beside success and
    # never mixed into it) counts; "" when the suite's episodes have none.
    partial: str = ""


def _builtin_tasks() -> list[str]:
    from envs.tabletop.env import TASKS

    return list(TASKS)


def register_builtin() -> None:
    """Register `vla/Tabletop-<task>-v0` with gymnasium (idempotent; called, never at import)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from envs.tabletop.env import TASKS

    for name, spec in TASKS.items():
        gym.register(
            id=f"vla/Tabletop-{name}-v0",
            entry_point="envs.tabletop.env:TabletopEnv",
            kwargs={"task": name},
            max_episode_steps=spec.max_episode_steps,
        )
    _REGISTERED = True


def _make_builtin(task: str, image_size: int, render_mode: str | None = None, **perturbations) -> gym.Env:
    headless()
    register_builtin()
    if task not in _builtin_tasks():
        raise KeyError(f"unknown task {task!r} in suite 'builtin'; available: {_builtin_tasks()}")
    if render_mode not in (None, ""):
        raise ValueError(f"the built-in suite has one rendering; render_mode={render_mode!r} applies to LIBERO")
    if any(perturbations.values()):
        raise ValueError(f"{perturbations} apply to LIBERO suites, not the built-in suite")
    return gym.make(f"vla/Tabletop-{task}-v0", image_size=image_size)


def _builtin_spaces(image_size: int):
    from envs.tabletop.env import spaces

    return spaces(image_size)


def _libero(suite: str) -> Suite:
    def tasks() -> list[str]:
        from envs.libero.env import suite_tasks

        return suite_tasks(suite)

    def make(task: str, image_size: int, render_mode: str | None = None, **perturbations) -> gym.Env:
        from envs.libero.conventions import RenderMode
        from envs.libero.env import LiberoEnv

        return LiberoEnv(
            suite,
            task,
            image_size=image_size,
            render_mode=render_mode or RenderMode.libero,
            **perturbations,
        )

    def spaces(image_size: int):
        from envs.libero.conventions import spaces

        return spaces(image_size)

    def states(task: str) -> int:
        from envs.libero.env import init_states

        return len(init_states(suite, task))

    return Suite("libero", tasks, make, spaces, official_states=states, partial="subgoals")


def _make_simpler(task: str, image_size: int, render_mode: str | None = None, **perturbations) -> gym.Env:
    from envs.simpler.env import SimplerBridgeEnv

    if render_mode not in (None, ""):
        raise ValueError(f"simpler_bridge has one rendering; render_mode={render_mode!r} applies to LIBERO")
    if any(perturbations.values()):
        raise ValueError(f"{perturbations} apply to LIBERO suites, not simpler_bridge")
    return SimplerBridgeEnv(task, image_size)


def _simpler() -> Suite:
    from envs.simpler import conventions

    return Suite(
        "widowx",
        lambda: list(conventions.TASKS),
        _make_simpler,
        conventions.spaces,
        official_states=lambda task: conventions.LAYOUTS,
        partial="grasped",
    )


SUITES: dict[str, Suite] = {
    "builtin": Suite("tabletop", _builtin_tasks, _make_builtin, _builtin_spaces, official_states=None),
    **{name: _libero(name) for name in LIBERO_SUITES},
    "simpler_bridge": _simpler(),
}


def get_suite(suite: str) -> Suite:
    if suite not in SUITES:
        hint = " ('libero' is not a suite: name one, e.g. libero_object)" if suite == "libero" else ""
        raise KeyError(f"unknown environment suite {suite!r}{hint}; available: {sorted(SUITES)}")
    return SUITES[suite]


def suite_tasks(suite: str) -> list[str]:
    return get_suite(suite).tasks()


def make_env(suite: str, task: str, image_size: int = 128, render_mode: str | None = None, **perturbations) -> gym.Env:
    """`perturbations` (LIBERO only, robustness): `placement_widen` (metres added on each side of
    every region a fresh placement is drawn from; an official initial state overrides the draw)
    and `camera_shift` (metres, the agentview camera moved along its own x, y, z axes)."""
    return get_suite(suite).make(task, image_size, render_mode, **perturbations)
