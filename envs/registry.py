"""Environment suites by short name. Heavy simulators import only when their suite is chosen."""

from __future__ import annotations

import os
from collections.abc import Callable

import gymnasium as gym

_REGISTERED = False


def _builtin_tasks() -> list[str]:
    from envs.tabletop import TASKS

    return list(TASKS)


def register_builtin() -> None:
    """Register `vla/Tabletop-<task>-v0` with gymnasium (idempotent; called, never at import)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from envs.tabletop import TASKS

    for name, spec in TASKS.items():
        gym.register(
            id=f"vla/Tabletop-{name}-v0",
            entry_point="envs.tabletop:TabletopEnv",
            kwargs={"task": name},
            max_episode_steps=spec.max_episode_steps,
        )
    _REGISTERED = True


def _make_builtin(task: str, image_size: int) -> gym.Env:
    os.environ.setdefault("MUJOCO_GL", "egl")
    register_builtin()
    if task not in _builtin_tasks():
        raise KeyError(f"unknown task {task!r} in suite 'builtin'; available: {_builtin_tasks()}")
    return gym.make(f"vla/Tabletop-{task}-v0", image_size=image_size)


SUITES: dict[str, tuple[Callable[[], list[str]], Callable[[str, int], gym.Env]]] = {
    "builtin": (_builtin_tasks, _make_builtin),
}


def suite_tasks(suite: str) -> list[str]:
    if suite not in SUITES:
        raise KeyError(f"unknown environment suite {suite!r}; available: {sorted(SUITES)}")
    return SUITES[suite][0]()


def make_env(suite: str, task: str, image_size: int = 128) -> gym.Env:
    if suite not in SUITES:
        raise KeyError(f"unknown environment suite {suite!r}; available: {sorted(SUITES)}")
    return SUITES[suite][1](task, image_size)
