"""SimplerEnv's Bridge assets for ManiSkill 3, offline.

ManiSkill reads its assets from `$MS_ASSET_DIR/data` and, when a folder is missing, prompts for
a hub download. This module finds an asset folder (the config's, `MS_ASSET_DIR`, or the
offline subset in the workspace's `shared/assets/simplerenv-bridge`) and, when that folder lacks
the files the offline subset lacks (the two table stages and the eggplant's visual mesh), builds
an overlay in this project's cache: links to every file of the source plus generated stand-ins.
The source folder is never written to. What the stand-ins change is in docs/simpler.md.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

BRIDGE = Path("data/tasks/bridge_v2_real2sim_dataset")
WIDOWX = Path("data/robots/widowx")
STAGES = {"bridge_table_1_v1.glb": 0.870, "bridge_table_1_v2.glb": 0.85}  # file -> table top z (robot base frame)
# ManiSkill places a stage with the pose q = (0.707, 0.707, 0, 0) (the file's +y is up) at
# -SCENE_OFFSET (bridge_dataset_eval/base_env.py); the stand-in's box is built in the file's frame.
SCENE_OFFSET = (-2.0634, -2.8313, 0.0)
# The stand-in table's extent in the world x, y (metres): under every object layout of the four
# tasks (x in [-0.31, -0.01], y in [-0.11, 0.29]), stopping short of the robot's base at x = 0.127.
TABLE_X, TABLE_Y = (-0.9, 0.02), (-0.7, 0.8)
SHIPPED = (
    "data/tasks/bridge_v2_real2sim_dataset/custom",
    "data/tasks/bridge_v2_real2sim_dataset/real_inpainting",
    "data/robots/widowx",
)
DOWNLOAD_HINT = (
    "with internet: MS_ASSET_DIR=<folder> python -m mani_skill.utils.download_asset bridge_v2_real2sim -y "
    "and ... download_asset widowx250s -y; offline: set MS_ASSET_DIR (or SimplerBridgeEnv's asset_dir) to a copy "
    "of shared/assets/simplerenv-bridge"
)


def shared_subset() -> Path | None:
    """The offline subset next to this checkout (<workspace>/shared/assets/simplerenv-bridge), if present."""
    here = Path(__file__).resolve().parents[2]
    for root in (here.parent / "shared", here / "shared"):
        candidate = root / "assets" / "simplerenv-bridge"
        if (candidate / BRIDGE).is_dir():
            return candidate
    return None


def find_source(asset_dir: str | os.PathLike | None = None) -> Path:
    """The asset folder to read: the given one, else MS_ASSET_DIR, else the shared offline subset."""
    for label, value in (("simpler.asset_dir", asset_dir), ("MS_ASSET_DIR", os.environ.get("MS_ASSET_DIR"))):
        if value:
            path = Path(value).expanduser()
            missing = [p for p in SHIPPED if not (path / p).is_dir()]
            if missing:
                raise FileNotFoundError(f"{label}={path} lacks {missing} (ManiSkill's layout); {DOWNLOAD_HINT}")
            return path
    subset = shared_subset()
    if subset is None:
        here = Path(__file__).resolve().parents[2]
        raise FileNotFoundError(
            f"no SimplerEnv Bridge assets: MS_ASSET_DIR is unset and no offline subset at "
            f"{here.parent / 'shared/assets/simplerenv-bridge'}; {DOWNLOAD_HINT}"
        )
    return subset


def missing_files(source: Path) -> list[str]:
    """The files of the four Bridge tasks that `source` lacks and stand-ins can replace."""
    out = [str(BRIDGE / "stages" / name) for name in STAGES if not (source / BRIDGE / "stages" / name).is_file()]
    eggplant = source / BRIDGE / "custom/models/eggplant"
    if not any((eggplant / f"textured.{ext}").is_file() for ext in ("obj", "dae", "glb")):
        out.append(str(BRIDGE / "custom/models/eggplant/textured.dae"))
    return out


def prepare(asset_dir: str | os.PathLike | None = None, cache: Path | None = None) -> tuple[Path, list[str]]:
    """(the MS_ASSET_DIR to use, the files replaced by stand-ins). A complete source is used as is;
    otherwise an overlay under the cache links to the source's files and adds the stand-ins."""
    source = find_source(asset_dir).resolve()
    standins = missing_files(source)
    if not standins:
        return source, []
    from envs.libero.conventions import config_dir  # the project's cache root

    cache = cache or config_dir().parent / "simpler"
    key = hashlib.sha1(str(source).encode()).hexdigest()[:10]
    overlay = cache / f"assets-{key}"
    done = overlay / ".complete"
    if done.is_file() and done.read_text() == "\n".join(standins):
        return overlay, standins
    tmp = cache / f".assets-{key}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    _link_tree(source / "data", tmp / "data")
    for name, top in STAGES.items():
        if str(BRIDGE / "stages" / name) in standins:
            _write_stage(tmp / BRIDGE / "stages" / name, top)
    if str(BRIDGE / "custom/models/eggplant/textured.dae") in standins:
        _write_eggplant(tmp / BRIDGE / "custom/models/eggplant")
    (tmp / ".complete").write_text("\n".join(standins))
    shutil.rmtree(overlay, ignore_errors=True)
    tmp.rename(overlay)  # atomic: a reader sees no overlay or a whole one
    return overlay, standins


def _link_tree(src: Path, dst: Path) -> None:
    """Folders as real folders (so stand-ins can be added), files as symlinks to the source."""
    for root, _, files in os.walk(src):
        target = dst / Path(root).relative_to(src)
        target.mkdir(parents=True, exist_ok=True)
        for f in files:
            (target / f).symlink_to(Path(root) / f)


def _write_stage(path: Path, top: float) -> None:
    """A box whose top is the table at height `top`, in the stage file's frame (y up)."""
    import numpy as np
    import trimesh

    (x0, x1), (y0, y1) = TABLE_X, TABLE_Y
    # world = R_x(90) @ file - SCENE_OFFSET, so file = (x, z, -y) shifted by the offset
    wx0, wx1 = x0 + SCENE_OFFSET[0], x1 + SCENE_OFFSET[0]
    wy0, wy1 = y0 + SCENE_OFFSET[1], y1 + SCENE_OFFSET[1]
    lo = np.array([wx0, top - 0.10, -wy1])
    hi = np.array([wx1, top, -wy0])
    box = trimesh.creation.box(extents=hi - lo, transform=trimesh.transformations.translation_matrix((lo + hi) / 2))
    box.visual.face_colors = [150, 120, 90, 255]
    path.parent.mkdir(parents=True, exist_ok=True)
    box.export(path)


def _write_eggplant(folder: Path) -> None:
    """The eggplant's collision mesh (it carries UVs) as its visual mesh, with its baked texture."""
    text = (folder / "collision.obj").read_text()
    (folder / "textured.mtl").write_text("newmtl eggplant\nKd 1 1 1\nmap_Kd textured.baked_texture.png\n")
    lines = [line for line in text.splitlines() if not line.startswith(("mtllib", "usemtl"))]
    first_face = next(i for i, line in enumerate(lines) if line.startswith("f "))
    lines[first_face:first_face] = ["usemtl eggplant"]
    (folder / "textured.obj").write_text("mtllib textured.mtl\n" + "\n".join(lines) + "\n")
