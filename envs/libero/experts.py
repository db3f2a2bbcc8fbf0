"""Scripted LIBERO experts, one per suite (EXPERTS): LIBERO-Object's "pick up the X and place
it in the basket" and LIBERO-Spatial's "pick up the black bowl ... and place it on the plate".

They read the simulator's privileged state (object and target poses, object extents) through
envs/libero/skills.py and act through the same 7-D delta end-effector action as a policy. Like
the built-in suite's expert (envs/tabletop/experts.py) each is a state-feedback law: approach
through a funnel above the grasp point, close when lined up, and once the fingers are stopped
apart by the object, rise, carry over the target at a height that clears what lies between,
lower, open. A missed grasp (fingers closed on nothing) re-opens and the funnel starts again;
a dropped object is approached again. `python -m envs.libero.experts --suite S` measures an
expert from the official initial states.
"""

from __future__ import annotations

import mujoco
import numpy as np

from envs.libero.skills import DOWN, OPEN_GAP, Scene, rot_z
from envs.rotations import rotvec_to_mat

ALIGNED = 0.005  # horizontal misalignment that counts as lined up (m)
HOVER = 0.08  # approach height above the grasp point when far off (m)
FUNNEL = 2.5  # approach height per metre of horizontal misalignment
HELD_GAP = 0.008  # a gap above this once the fingers stopped closing means something is held
RIM_CLEARANCE = 0.05  # the object's bottom stays this far above the basket region's top while carrying (m)
REGION = "basket_1_contain_region"
HAND_HALF = (0.025, 0.11)  # half footprint of the hand (m), pointing down: narrow in x, wide in y


def _funnel(target: np.ndarray, eef: np.ndarray, hover: float = HOVER, slope: float = FUNNEL) -> np.ndarray:
    off = np.linalg.norm((eef - target)[:2])
    return target + np.array([0.0, 0.0, min(hover, slope * max(0.0, off - ALIGNED))])


class LiberoObjectExpert:
    """Call `start()` after every env reset (the simulator is rebuilt), then `act()` each step."""

    def __init__(self, env) -> None:
        self.env = env

    def start(self) -> None:
        sim = self.env.sim
        self.scene = Scene(self.env)
        self.model, self.data = self.scene.model, self.scene.data
        self.target = sim.obj_of_interest[0]
        self.body = sim.obj_body_id[self.target]
        self.site = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, REGION)
        self.region_half = self.model.site_size[self.site].copy()
        # Visual boxes: the demonstrations of the published LIBERO-Object result were recorded with
        # them (collision boxes are narrower; changing this changes every recording).
        boxes = {name: self.scene.box(bid, collision=False) for name, bid in sim.obj_body_id.items()}
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
        return self.scene.move(target, grip)

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


class VesselPlaceExpert:
    """Pick an open vessel up by its rim and set it down on a target object or region ("pick up
    the black bowl ... and place it on the plate": every LIBERO-Spatial task).

    The bowl is 11.4 cm wide in collision, wider than the open fingers (7.5 cm), so it is held
    by one wall: one finger inside the bowl, one outside (docs/libero.md has the probes behind
    each choice here). State feedback like the Object expert: approach through a funnel, close
    when lined up; once held, rise so the bowl's bottom clears everything it could pass over,
    steer the bowl's origin (not the hand) over the target's, descend through a funnel on that
    error, and open on contact. A missed grasp re-opens and the approach starts again; a dropped
    bowl is approached again."""

    # The grip point is on the bowl's wall at RIM_RADIUS from its origin, RIM_HEIGHT above it (1.6
    # cm under the rim), on the side facing the robot (-x) unless the outer finger or the hand
    # would meet something there (the drawer's wall, the cabinet's top panel in Spatial task 4:
    # then the side facing the robot with the most room). The +y side leaves the plate, 0.72 m
    # from the shoulder, out of reach: the elbow straightens at its limit 8 cm above it. The hand
    # closes the fingers along the wall's normal, tilted WALL_TILT like the wall, so the pads meet
    # it face to face: the bowl hangs level (2 degrees) instead of 15-34 degrees off.
    RIM_RADIUS, RIM_HEIGHT, WALL_TILT = 0.047, 0.036, np.radians(15)
    FINGER_ROOM = 0.0  # room (m) the outer finger and the hand need on the -x side (mesh boxes are loose)
    FUNNEL = 6.0  # approach height per metre of misalignment: the fingers go down between walls 2-6 cm apart
    HELD_NEAR = 0.02  # grip site within this of the grasp point while held (the bowl tilts a little in the hand)
    CLEARANCE = 0.04  # the held bowl's bottom stays this far above what its path passes over (m)
    OVER = 0.005  # the bowl's origin counts as over the target within this (m)
    PLACE_FUNNEL = 2.0  # descent height per metre of the bowl's horizontal error over the target
    SQUEEZE = 16  # steps the fingers close before lifting (the wall is 2.6 mm thick: let the grip build up)
    HELD_GAP = 0.002  # fingers squeezing the 2.6 mm wall stop at a gap of 4-8 mm (the Object expert's 8 mm lets go)

    def __init__(self, env) -> None:
        self.env = env

    def start(self) -> None:
        scene = self.scene = Scene(self.env)
        goal = scene.goal()
        if len(goal) != 1 or goal[0][0] != "on":
            raise ValueError(f"{self.env.task}: VesselPlaceExpert places one object on another, the goal is {goal}")
        _, self.obj, self.target = goal[0]
        lo, hi = scene.box(scene.body(self.obj))
        origin = scene.origin(self.obj)
        self.below_origin = origin[2] - lo[2]  # the bowl's bottom relative to its origin
        # What the carried bowl must clear: its own support, and whatever lies on the way to the
        # target (the other bowl may stand on the cabinet, 23 cm up, far off the path).
        spot, surface = self._target()
        radius = 0.5 * float(np.max(hi[:2] - lo[:2]))
        self.highest = max(lo[2], surface, scene.highest_along(origin, spot, radius, skip=(self.obj, self.target)))
        side = self._grasp_side(origin)
        self.rim_grasp = np.append(self.RIM_RADIUS * side, self.RIM_HEIGHT)
        yaw = np.arctan2(side[1], side[0]) - np.pi / 2  # DOWN closes along y; turn that onto `side`
        yaw = np.pi / 2 - (np.pi / 2 - yaw) % np.pi  # the hand is symmetric under half a turn: yaw in (-90, 90] degrees
        tilt = rotvec_to_mat(np.cross(np.append(side, 0.0), [0.0, 0.0, 1.0]) * -self.WALL_TILT)
        self.hand = tilt @ rot_z(yaw) @ DOWN
        self.closing = 0

    def _grasp_side(self, origin: np.ndarray) -> np.ndarray:
        """Unit xy direction from the bowl's origin to the wall it is held by: -x (towards the
        robot) when the outer finger and the hand's underside fit there, else the side facing the
        robot where they have the most room (from a side facing away, the tilted hand stalled
        short of the grasp point with the arm at its reach)."""
        grip = origin[2] + self.RIM_HEIGHT
        finger = [(self.RIM_RADIUS + r, 0.0, z) for r in (0.025, 0.035, 0.045) for z in (-0.012, 0.0, 0.03)]
        # The hand's underside and 3.6 cm of the hand above it, from 2.4 cm above the grip site:
        # 20.8 cm along the closing axis, 6.9 across, sampled every 2 mm in height (the cabinet's
        # top panel is 2.8 mm thick).
        hull = [
            (self.RIM_RADIUS + a, c, z)
            for a in np.linspace(-0.104, 0.104, 9)
            for c in (-0.0345, 0.0, 0.0345)
            for z in np.arange(0.024, 0.061, 0.002)
        ]
        offsets = np.array(finger + hull)

        def room(angle: float) -> float:
            u, v = np.array([np.cos(angle), np.sin(angle)]), np.array([-np.sin(angle), np.cos(angle)])
            points = np.column_stack([origin[:2] + offsets[:, :1] * u + offsets[:, 1:2] * v, grip + offsets[:, 2]])
            return self.scene.clearance(points, skip=(self.obj,))

        if room(np.pi) > self.FINGER_ROOM:
            angle = np.pi
        else:
            angles = np.radians(np.arange(90, 271, 15))  # the sides facing the robot: the others are out of reach
            angle = max(angles, key=lambda a: (round(min(room(a), 0.03), 3), -abs(np.angle(np.exp(1j * (a - np.pi))))))
        return np.array([np.cos(angle), np.sin(angle)])

    def _target(self) -> tuple[np.ndarray, float]:
        """Where the bowl's origin goes (xy) and the height of the surface it lands on."""
        scene = self.scene
        if self.target in scene.sim.obj_body_id:
            _, hi = scene.box(scene.body(self.target))
            return scene.origin(self.target)[:2], float(hi[2])
        pos, _, half = scene.site(self.target)
        return pos[:2], float(pos[2] + half[2])

    def act(self) -> np.ndarray:
        scene = self.scene
        eef, gap = scene.hand()
        obj = scene.origin(self.obj)
        grasp = obj + self.rim_grasp
        rel = eef - grasp
        if self.closing >= self.SQUEEZE and gap > self.HELD_GAP and np.linalg.norm(rel) < self.HELD_NEAR:
            spot, surface = self._target()
            bottom = obj[2] - self.below_origin
            hand_above_bottom = eef[2] - bottom
            carry = self.highest + self.CLEARANCE + hand_above_bottom
            error = float(np.linalg.norm(obj[:2] - spot))
            over = np.append(spot + (eef - obj)[:2], 0.0)
            if error > 0.03 and eef[2] < carry - 0.02:  # first clear everything, straight up
                return scene.move(np.array([eef[0], eef[1], carry]), 1.0, self.hand)
            land = surface - 0.01 + hand_above_bottom  # aim a little into the surface: contact ends the episode
            over[2] = land + min(carry - land, self.PLACE_FUNNEL * max(0.0, error - self.OVER))
            if error < 2 * self.OVER and bottom < surface + 0.005:
                self.closing = 0  # down and over the target without success: let go, grasp again
                return scene.move(over, -1.0, self.hand)
            return scene.move(over, 1.0, self.hand)
        if self.closing > 0:
            if self.closing < self.SQUEEZE:  # closing: hold still until the fingers stop
                self.closing += 1
                return scene.move(grasp, 1.0, self.hand)
            if gap < OPEN_GAP - 0.01:  # closed on nothing, or the bowl slipped: open, approach again
                return scene.move(_funnel(grasp, eef, slope=self.FUNNEL) + np.array([0.0, 0.0, 0.02]), -1.0, self.hand)
            self.closing = 0
        lined_up = np.linalg.norm(rel[:2]) < ALIGNED and abs(rel[2]) < 0.008 and scene.turned(self.hand) < 0.1
        if lined_up and gap > OPEN_GAP - 0.01:
            self.closing = 1
            return scene.move(grasp, 1.0, self.hand)
        return scene.move(_funnel(grasp, eef, slope=self.FUNNEL), -1.0, self.hand)


EXPERTS = {"libero_object": LiberoObjectExpert, "libero_spatial": VesselPlaceExpert}


def expert_for(suite: str, env):
    """The scripted expert of `suite` for `env` (call its `start()` after every reset)."""
    if suite not in EXPERTS:
        raise ValueError(f"no scripted expert for LIBERO suite {suite!r}; experts exist for {sorted(EXPERTS)}")
    return EXPERTS[suite](env)


def _expert_episode(job: tuple[str, str, int, float | None]) -> tuple[str, int, bool, int]:
    """Run the expert without cameras from official initial state `index` (widen None) or from
    a fresh placement drawn with seed `index`, its regions widened by `widen` metres."""
    from envs.libero.env import LiberoEnv

    suite, task, index, widen = job
    env = LiberoEnv(suite, task, cameras=False, placement_widen=widen or 0.0)
    expert = expert_for(suite, env)
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
    width = max(len(t) for t in tasks) + 2
    print(f"{'task':<{width}}{'success':>9}{'mean steps':>12}  failed states")
    total = 0
    for task in tasks:
        mine = [r for r in results if r[0] == task]
        ok = sum(r[2] for r in mine)
        total += ok
        failed = [r[1] for r in mine if not r[2]]
        steps = np.mean([r[3] for r in mine if r[2]]) if ok else float("nan")
        print(f"{task:<{width}}{ok:>5}/{len(mine):<3}{steps:>12.0f}  {failed or ''}")
    print(f"{'all':<{width}}{total:>5}/{len(results)}")


if __name__ == "__main__":
    main()
