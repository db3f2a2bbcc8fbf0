"""Simulation by family (`tabletop/`, `libero/`), the suite registry, evaluation."""

import os


def headless() -> None:
    """Render off-screen through EGL unless the user chose a MuJoCo backend (MUJOCO_GL). Called
    by every simulator entry point before mujoco's rendering is imported; nothing sets it at import."""
    os.environ.setdefault("MUJOCO_GL", "egl")
