"""Offscreen MuJoCo renderers that are freed before the interpreter tears itself down.

`mujoco.Renderer.__del__` frees its GL context through module globals (`mujoco.egl`'s), which
are already None when a renderer still alive at exit is collected during interpreter shutdown:
every evaluation worker then printed `Exception ignored ... TypeError: 'NoneType' object is not
callable` as it ended. Renderers made here are closed by an exit hook instead, while those
modules still work; closing is idempotent, so an owner's own `close()` stays correct.
"""

from __future__ import annotations

import atexit
import weakref

_live: weakref.WeakSet = weakref.WeakSet()
_hooked = False


def offscreen_renderer(model, height: int, width: int):
    """A `mujoco.Renderer(model, height, width)` that is closed at interpreter exit if its
    owner has not closed it by then (held weakly: it is freed as usual when dropped)."""
    import mujoco

    global _hooked
    renderer = mujoco.Renderer(model, height, width)
    if not _hooked:  # registered on first use, not at import
        atexit.register(_close_live)
        _hooked = True
    _live.add(renderer)
    return renderer


def _close_live() -> None:
    for renderer in list(_live):
        renderer.close()
