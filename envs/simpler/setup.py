"""ManiSkill 3 made to run offline: a rendering driver, the asset folder and the environment
variables, in one place, before ManiSkill is first imported (it reads MS_ASSET_DIR then)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from envs.simpler.assets import prepare
from envs.simpler.vulkan import configure

log = logging.getLogger(__name__)
_ASSETS: tuple[Path, list[str]] | None = None


def ready(asset_dir: str | None = None) -> tuple[Path, list[str], str]:
    """(MS_ASSET_DIR in use, files replaced by stand-ins, the rendering driver). Idempotent; a
    second call asking for another asset folder is refused, since ManiSkill read the first."""
    global _ASSETS
    driver = configure()
    wanted = prepare(asset_dir)
    if _ASSETS is None:
        import sys

        if "mani_skill" in sys.modules and os.environ.get("MS_ASSET_DIR") != str(wanted[0]):
            raise RuntimeError(
                f"mani_skill was imported before envs.simpler set MS_ASSET_DIR={wanted[0]}; import it after "
                "(or set MS_ASSET_DIR yourself before importing it)"
            )
        os.environ["MS_ASSET_DIR"] = str(wanted[0])
        os.environ["MS_SKIP_ASSET_DOWNLOAD_PROMPT"] = "1"  # a missing file is an error, never a y/n prompt
        _ASSETS = wanted
        if wanted[1]:
            log.warning(
                "SimplerEnv assets from %s with stand-ins for %s: table-top physics and the eggplant's look are "
                "approximate, so figures are not comparable with published SimplerEnv numbers",
                wanted[0],
                [Path(f).name for f in wanted[1]],
            )
    elif _ASSETS[0] != wanted[0]:
        raise RuntimeError(f"ManiSkill already reads its assets from {_ASSETS[0]}; cannot switch to {wanted[0]}")
    return _ASSETS[0], _ASSETS[1], driver


def make_maniskill(env_id: str, asset_dir: str | None = None):
    """(ManiSkill's gym environment for `env_id`, one scene on the CPU simulator, the files replaced
    by stand-ins)."""
    import importlib.util

    if importlib.util.find_spec("mani_skill") is None:  # not imported: it reads MS_ASSET_DIR at import
        from envs.simpler.conventions import INSTALL_HINT

        raise ImportError(f"simpler_bridge needs ManiSkill 3: {INSTALL_HINT}")
    _, standins, driver = ready(asset_dir)
    import gymnasium as gym
    import mani_skill.envs  # noqa: F401  (registers the Bridge tasks)

    render = "cpu" if "lavapipe" in driver else "gpu"
    env = gym.make(env_id, obs_mode="rgb+segmentation", num_envs=1, sim_backend="cpu", render_backend=render)
    return env, standins
