"""Scripted expert for LIBERO-Object ("pick up the X and place it in the basket").

It reads the simulator's privileged state (target and basket poses, the target's extent) and
acts through the same 7-D delta end-effector action as a policy. Like the built-in suite's
expert (envs/tabletop/experts.py) it is a state-feedback law: approach through a funnel above the grasp
point, close when lined up, and once the fingers are stopped apart by the object, rise, carry
over the basket at a height that clears its rim, lower, open. A missed grasp (fingers closed
on nothing) re-opens and the funnel starts again; a dropped object is approached again.

Simulator facts it relies on (hf-libero 0.1.4): OSC_POSE delta actions, 1 = 5 cm / 0.5 rad
per 20 Hz step but the hand moves about 1.2 cm per step and sags sideways, so it steers by
feedback; gripper -1 opens, +1 closes (about 10 steps); fingers close along world y with the
hand pointing down; success = object origin inside the basket's region site while touching it.
"""

from __future__ import annotations

import mujoco
import numpy as np

from envs.rotations import mat_to_rotvec

POS_UNIT = 0.05  # metres per unit translation action (OSC_POSE delta)
ROT_UNIT = 0.5  # radians per unit rotation action
GAIN = 0.6  # fraction of the remaining error asked per step (the controller lags behind)
DOWN = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])  # hand pointing down, fingers along y
ALIGNED = 0.005  # horizontal misalignment that counts as lined up (m)
HOVER = 0.08  # approach height above the grasp point when far off (m)
FUNNEL = 2.5  # approach height per metre of horizontal misalignment
OPEN_GAP = 0.075  # finger gap (m) when fully open (about 2 x 0.039)
HELD_GAP = 0.008  # a gap above this once the fingers stopped closing means something is held
RIM_CLEARANCE = 0.05  # the object's bottom stays this far above the basket region's top while carrying (m)
REGION = "basket_1_contain_region"
HAND_HALF = (0.025, 0.11)  # half footprint of the hand (m), pointing down: narrow in x, wide in y


def _funnel(target: np.ndarray, eef: np.ndarray, hover: float = HOVER) -> np.ndarray:
    off = np.linalg.norm((eef - target)[:2])
    return target + np.array([0.0, 0.0, min(hover, FUNNEL * max(0.0, off - ALIGNED))])


class LiberoObjectExpert:
    """Call `start()` after every env reset (the simulator is rebuilt), then `act()` each step."""

    def __init__(self, env) -> None:
        self.env = env

    def start(self) -> None:
        sim = self.env.sim
        self.model, self.data = sim.sim.model._model, sim.sim.data._data
        self.target = sim.obj_of_interest[0]
        self.body = sim.obj_body_id[self.target]
        self.site = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, REGION)
        self.region_half = self.model.site_size[self.site].copy()
        boxes = {name: self._aabb(bid) for name, bid in sim.obj_body_id.items()}
        lo, hi = boxes.pop(self.target)
        origin = self.data.xpos[self.body]
        self.below_origin = origin[2] - lo[2]  # the object's bottom relative to its origin
        height = hi[2] - lo[2]
        # Grasp a little below the top of flat objects, about 4 cm below the top of tall ones
        # (the palm must stay clear of the top), never with the fingertips in the table.
        self.grasp_below_top = min(0.04, 0.5 * height)
        self.top_above_origin = hi[2] - origin[2]
        # The fingers close along y; along x the grasp may slide towards either end of a long
        # object, to where the hand (wide along y) stays clearest of the neighbours.
        self.grasp_dx = self._clearest_offset(origin, lo, hi, boxes)
        self.closing = 0

    def _aabb(self, body: int) -> tuple[np.ndarray, np.ndarray]:
        """World bounding box of a body's visual geoms (its subtree)."""
        m, d = self.model, self.data
        lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
        for g in range(m.ngeom):
            b = m.geom_bodyid[g]
            while b not in (0, body):
                b = m.body_parentid[b]
            if b != body or m.geom_group[g] != 1:
                continue
            corners = signs * m.geom_aabb[g][3:] + m.geom_aabb[g][:3]
            w = corners @ d.geom_xmat[g].reshape(3, 3).T + d.geom_xpos[g]
            lo, hi = np.minimum(lo, w.min(0)), np.maximum(hi, w.max(0))
        return lo, hi

    @staticmethod
    def _clearest_offset(origin, lo, hi, others: dict) -> float:
        reach = max(0.0, (hi[0] - lo[0]) / 2 - 0.015)
        best, best_score = 0.0, -np.inf
        for dx in np.linspace(-reach, reach, 9) if reach > 0 else [0.0]:
            hand_lo = np.array([origin[0] + dx - HAND_HALF[0], origin[1] - HAND_HALF[1]])
            hand_hi = np.array([origin[0] + dx + HAND_HALF[0], origin[1] + HAND_HALF[1]])
            gaps = [
                np.linalg.norm(np.maximum(0, np.maximum(hand_lo - ohi[:2], olo[:2] - hand_hi)))
                for olo, ohi in others.values()
            ]
            score = min(min(gaps, default=1.0), 0.05) - 0.01 * abs(dx)
            if score > best_score:
                best, best_score = dx, score
        return float(best)

    def _move(self, target: np.ndarray, grip: float) -> np.ndarray:
        obs = self.env.sim._get_observations()
        eef = obs["robot0_eef_pos"]
        delta = np.clip((target - eef) / POS_UNIT * GAIN / 0.25, -1, 1)  # the hand does ~1/4 of a unit
        current = self.env.sim.robots[0].controller.ee_ori_mat
        rot = np.clip(mat_to_rotvec(DOWN @ current.T) / ROT_UNIT * 0.5, -1, 1)
        return np.concatenate([delta, rot, [grip]])

    def act(self) -> np.ndarray:
        obs = self.env.sim._get_observations()
        eef = obs["robot0_eef_pos"]
        gap = float(obs["robot0_gripper_qpos"][0] - obs["robot0_gripper_qpos"][1])
        obj = self.data.xpos[self.body].copy()
        region = self.data.site_xpos[self.site].copy()
        grasp = obj + np.array([self.grasp_dx, 0.0, self.top_above_origin - self.grasp_below_top])
        rel = eef - grasp
        near = bool(np.linalg.norm(rel[:2]) < 0.02 and abs(rel[2]) < 0.03)
        if self.closing >= 10 and gap > HELD_GAP and near:
            # Holding: rise, carry above the basket with the bottom clear of the rim, lower, open.
            clear_z = region[2] + self.region_half[2] + RIM_CLEARANCE
            carry = clear_z + (eef[2] - (obj[2] - self.below_origin))  # hand height for that bottom height
            over = np.array([region[0], region[1], carry])
            if np.linalg.norm((eef - over)[:2]) > 0.02:
                if eef[2] < carry - 0.03:
                    return self._move(np.array([eef[0], eef[1], carry]), 1.0)
                return self._move(over, 1.0)
            low = over - np.array([0.0, 0.0, 0.06])
            if eef[2] > low[2] + 0.01:
                return self._move(low, 1.0)
            self.closing = 0
            return self._move(low, -1.0)
        if self.closing > 0:
            if self.closing < 10:  # closing: hold still until the fingers stop
                self.closing += 1
                return self._move(grasp, 1.0)
            # Closed on nothing, or the object slipped away: open and approach again.
            if gap < OPEN_GAP - 0.01:
                return self._move(_funnel(grasp, eef) + np.array([0.0, 0.0, 0.02]), -1.0)
            self.closing = 0
        if np.linalg.norm(rel[:2]) < ALIGNED and abs(rel[2]) < 0.008 and gap > OPEN_GAP - 0.01:
            self.closing = 1
            return self._move(grasp, 1.0)
        return self._move(_funnel(grasp, eef), -1.0)


def _expert_episode(job: tuple[str, str, int, float | None]) -> tuple[str, int, bool, int]:
    """Run the expert without cameras from official initial state `index` (widen None) or from
    a fresh placement drawn with seed `index`, its regions widened by `widen` metres."""
    from envs.libero.env import LiberoEnv

    suite, task, index, widen = job
    env = LiberoEnv(suite, task, cameras=False, placement_widen=widen or 0.0)
    expert = LiberoObjectExpert(env)
    try:
        if widen is None:
            env.reset(options={"init_state": index})
        else:
            env.reset(seed=index)
        expert.start()
        for step in range(1, env.max_episode_steps + 1):
            _, _, terminated, truncated, _ = env.step(expert.act())
            if terminated or truncated:
                return task, index, bool(terminated), step
        return task, index, False, env.max_episode_steps
    finally:
        env.close()


def main() -> None:
    """`python -m envs.libero.experts`: the expert's success from the official initial states
    (or, with --widen, from fresh placements in regions widened by that many metres), per task."""
    import argparse
    import multiprocessing as mp
    import time
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    from envs.libero.env import suite_tasks

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--suite", default="libero_object")
    parser.add_argument("--states", type=int, default=50, help="official initial states 0..N-1 per task")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--widen", type=float, default=None, help="fresh placements (seeds 0..N-1), regions widened by this (m)"
    )
    args = parser.parse_args()
    tasks = suite_tasks(args.suite)
    jobs = [(args.suite, t, i, args.widen) for t in tasks for i in range(args.states)]
    t0 = time.time()
    with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn")) as pool:
        results = list(tqdm(pool.map(_expert_episode, jobs), total=len(jobs), desc="expert episodes"))
    starts = (
        f"official initial states 0..{args.states - 1}"
        if args.widen is None
        else f"fresh placements (seeds 0..{args.states - 1}) widened by {args.widen} m"
    )
    print(f"scripted expert, {args.suite}, {starts}, {time.time() - t0:.0f} s")
    print(f"{'task':<60}{'success':>9}{'mean steps':>12}  failed states")
    total = 0
    for task in tasks:
        mine = [r for r in results if r[0] == task]
        ok = sum(r[2] for r in mine)
        total += ok
        failed = [r[1] for r in mine if not r[2]]
        steps = np.mean([r[3] for r in mine if r[2]]) if ok else float("nan")
        print(f"{task:<60}{ok:>5}/{len(mine):<3}{steps:>12.0f}  {failed or ''}")
    print(f"{'all':<60}{total:>5}/{len(results)}")


if __name__ == "__main__":
    main()
