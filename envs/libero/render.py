"""LIBERO camera rendering: the policy's two cameras drawn with `mujoco.Renderer` from a
render-only copy of the simulator's model, in LIBERO's own look or in the fast mode (shadows,
reflections and multisampling off, meshes simplified once into a content-keyed cache).
Orientation is `envs.libero.conventions.frame_from_renderer`, the single definition."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from envs.libero.conventions import CAMERAS, RenderMode, config_dir, frame_from_renderer


def _simplified(vert: np.ndarray, face: np.ndarray, target: int, cache: Path) -> tuple[np.ndarray, ...]:
    """(vertices, faces, original vertex of each new vertex) of a mesh reduced to about `target`
    faces by fast-simplification's quadric decimation, cached by content."""
    key = hashlib.sha256(vert.tobytes() + face.tobytes() + str(target).encode()).hexdigest()[:24]
    path = cache / f"{key}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            return z["vert"], z["face"], z["source"]
    import fast_simplification

    # Compiled meshes are triangle soups (three vertices per face); weld coincident vertices
    # first, or no edge can collapse.
    welded, first, inverse = np.unique(vert.round(6), axis=0, return_index=True, return_inverse=True)
    wface = inverse.reshape(-1)[face]
    wface = wface[(wface[:, 0] != wface[:, 1]) & (wface[:, 1] != wface[:, 2]) & (wface[:, 0] != wface[:, 2])]
    points = welded.astype(np.float64)
    v, f, collapses = fast_simplification.simplify(points, wface, target_count=target, return_collapses=True)
    _, _, mapping = fast_simplification.replay_simplification(points, wface, collapses)
    source = np.zeros(len(v), dtype=np.int64)
    kept = mapping >= 0
    source[mapping[kept]] = first[np.nonzero(kept)[0]]
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, vert=v.astype(np.float32), face=f.astype(np.int32), source=source)
    os.replace(tmp, path)
    return v.astype(np.float32), f.astype(np.int32), source


MESH_FACE_BUDGET = 1500  # fast mode: visual meshes above this many faces are reduced to it


def simplify_meshes(model, budget: int = MESH_FACE_BUDGET, cache: Path | None = None) -> int:
    """Reduce every mesh of `model` (a render-only copy) above `budget` faces, in place: the new
    vertices, normals, texture coordinates and faces are written at the start of each mesh's
    blocks and the counts shortened, so geoms keep their poses. Returns the faces drawn."""
    cache = cache or config_dir() / "meshes"
    for i in range(model.nmesh):
        nf, fa = model.mesh_facenum[i], model.mesh_faceadr[i]
        if nf <= budget:
            continue
        va, nv = model.mesh_vertadr[i], model.mesh_vertnum[i]
        face = model.mesh_face[fa : fa + nf].copy()
        v, f, source = _simplified(model.mesh_vert[va : va + nv].copy(), face, budget, cache)
        model.mesh_vert[va : va + len(v)] = v
        model.mesh_face[fa : fa + len(f)] = f
        # Smooth vertex normals of the reduced surface.
        tri = v[f]
        fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        vn = np.zeros_like(v)
        for c in range(3):
            np.add.at(vn, f[:, c], fn)
        vn /= np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-12)
        na = model.mesh_normaladr[i]
        model.mesh_normal[na : na + len(v)] = vn
        model.mesh_facenormal[fa : fa + len(f)] = f
        model.mesh_normalnum[i] = len(v)
        ta = model.mesh_texcoordadr[i]
        if ta >= 0:
            # Each new vertex takes the texture coordinate one of its source corners had.
            old_tc = model.mesh_texcoord[ta : ta + model.mesh_texcoordnum[i]].copy()
            corner_tc = model.mesh_facetexcoord[fa : fa + nf].ravel()
            tc_of_vertex = np.zeros(nv, dtype=np.int64)
            tc_of_vertex[face.ravel()] = corner_tc
            model.mesh_texcoord[ta : ta + len(v)] = old_tc[tc_of_vertex[source]]
            model.mesh_facetexcoord[fa : fa + len(f)] = f
            model.mesh_texcoordnum[i] = len(v)
        model.mesh_vertnum[i] = len(v)
        model.mesh_facenum[i] = len(f)
    return int(model.mesh_facenum.sum())


class Cameras:
    """Renders the policy's cameras from a LIBERO simulation, in the ports' orientation.

    It draws the physics data with its own render-only model copy, so the fast mode's
    simplified meshes never touch collision. Geom groups match robosuite's camera
    observations (visual meshes only), so `libero` mode equals LIBERO's own frames.
    `shifts` moves cameras by (x, y, z) metres along their own axes (robustness evaluation)."""

    def __init__(self, model, image_size: int, mode: RenderMode, shifts: dict | None = None) -> None:
        import copy

        import mujoco

        from envs.rendering import offscreen_renderer

        self.mode = RenderMode(mode)
        self.size = image_size
        self.model = copy.copy(model)
        # The copy's offscreen buffer fits this renderer (viewing renders exceed the scene's).
        self.model.vis.global_.offwidth = max(self.model.vis.global_.offwidth, image_size)
        self.model.vis.global_.offheight = max(self.model.vis.global_.offheight, image_size)
        self._layout = (model.nbody, model.ngeom, model.nmesh, model.nmeshface)
        if self.mode is RenderMode.fast:
            self.model.vis.quality.offsamples = 0
            simplify_meshes(self.model)
        self.renderer = offscreen_renderer(self.model, image_size, image_size)
        self.option = mujoco.MjvOption()
        self.option.geomgroup[:] = [0, 1, 1, 0, 0, 0]  # robosuite: collision geoms (group 0) hidden
        flags = self.renderer.scene.flags
        if self.mode is RenderMode.fast:
            flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        self.ids = {}
        for ours, theirs in CAMERAS.items():
            cid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, theirs)
            if cid < 0:
                raise KeyError(f"the LIBERO scene has no camera {theirs!r} (for {ours!r})")
            self.ids[ours] = cid
        self.shifts = {cam: np.asarray(v, dtype=np.float64) for cam, v in (shifts or {}).items() if np.any(v)}
        unknown = sorted(set(self.shifts) - set(self.ids))
        if unknown:
            raise KeyError(f"camera shifts for unknown cameras {unknown}; cameras: {sorted(self.ids)}")

    def fits(self, model) -> bool:
        return self._layout == (model.nbody, model.ngeom, model.nmesh, model.nmeshface)

    def render(self, data) -> dict[str, np.ndarray]:
        out = {}
        for cam, cid in self.ids.items():
            shift = self.shifts.get(cam)
            if shift is None:
                self.renderer.update_scene(data, camera=cid, scene_option=self.option)
            else:
                # The scene reads a fixed camera's pose from the data (set by the physics' last
                # forward pass); move it for this one drawing and put it back.
                pose = data.cam_xpos[cid].copy()
                data.cam_xpos[cid] = pose + data.cam_xmat[cid].reshape(3, 3) @ shift
                try:
                    self.renderer.update_scene(data, camera=cid, scene_option=self.option)
                finally:
                    data.cam_xpos[cid] = pose
            out[cam] = frame_from_renderer(self.renderer.render())
        return out

    def close(self) -> None:
        self.renderer.close()
