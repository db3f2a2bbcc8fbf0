"""Scripted LIBERO experts, one per suite (EXPERTS): LIBERO-Object's "pick up the X and place
it in the basket", LIBERO-Spatial's "pick up the black bowl ... and place it on the plate", and
LIBERO-Goal's ten goals, each predicate of a goal turned into a skill (TaskPlanExpert: drawer,
knob, rim and body grasps, a dragged plate, a bottle leaned into a rack).

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


def _closing_along(direction: np.ndarray) -> np.ndarray:
    """The hand pointing down with its fingers closing along the horizontal `direction` (DOWN
    closes along y; the hand is symmetric under half a turn, so its yaw stays in (-90, 90] degrees)."""
    yaw = np.arctan2(direction[1], direction[0]) - np.pi / 2
    return rot_z(np.pi / 2 - (np.pi / 2 - yaw) % np.pi) @ DOWN


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
    INTO_FUNNEL = 8.0  # the same going into a region (a drawer): steeper, so the bowl clears the drawer's walls
    SQUEEZE = 16  # steps the fingers close before lifting (the wall is 2.6 mm thick: let the grip build up)
    HELD_GAP = 0.002  # fingers squeezing the 2.6 mm wall stop at a gap of 4-8 mm (the Object expert's 8 mm lets go)

    HAND_TOP = 0.061  # the grasp side's room is checked up to this height above the grip site (m)

    def __init__(
        self, env, obj: str | None = None, target: str | None = None, into: bool = False, overhang: bool = False
    ) -> None:
        """Place `obj` on `target` (into it when `into`: a region such as an open drawer's), or
        as the task's single "on" goal says when they are not given. With `overhang` (something,
        such as an open drawer, may overhang the vessel) the grasp side's room is checked up the
        whole hand (12.6 cm above the grip site), not only its lowest 3.7 cm."""
        self.env, self.obj, self.target, self.into = env, obj, target, into
        self.hand_top = 0.126 if overhang else self.HAND_TOP

    def start(self) -> None:
        scene = self.scene = Scene(self.env)
        if self.obj is None:
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
        self.grasp_offset, self.hand = self._grasp(origin, lo, hi)
        self.closing = 0

    def _grasp(self, origin: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The grip point relative to the object's origin and the hand's orientation there."""
        side = self._grasp_side(origin)
        tilt = rotvec_to_mat(np.cross(np.append(side, 0.0), [0.0, 0.0, 1.0]) * -self.WALL_TILT)
        return np.append(self.RIM_RADIUS * side, self.RIM_HEIGHT), tilt @ _closing_along(side)
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
            for z in np.arange(0.024, self.hand_top, 0.002)
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
        pos, rot, half = scene.site(self.target)
        depth = float(np.abs(rot[2]) @ half)  # the region's vertical half extent
        return pos[:2], float(pos[2] - depth if self.into else pos[2] + depth)

    def act(self) -> np.ndarray:
        scene = self.scene
        eef, gap = scene.hand()
        obj = scene.origin(self.obj)
        grasp = self._grasp_point(obj)
        rel = eef - grasp
        if self.closing >= self.SQUEEZE and gap > self.HELD_GAP and np.linalg.norm(rel) < self.HELD_NEAR:
            return self._carry(eef, obj)
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

    def _grasp_point(self, obj: np.ndarray) -> np.ndarray:
        """Where the grip site is when the object is held, in the world."""
        return obj + self.grasp_offset

    def _carry(self, eef: np.ndarray, obj: np.ndarray) -> np.ndarray:
        """Held: rise clear, carry over the target, descend, let go."""
        scene = self.scene
        spot, surface = self._target()
        bottom = obj[2] - self.below_origin
        hand_above_bottom = eef[2] - bottom
        carry = self.highest + self.CLEARANCE + hand_above_bottom
        error = float(np.linalg.norm(obj[:2] - spot))
        over = np.append(spot + (eef - obj)[:2], 0.0)
        if error > 0.03 and eef[2] < carry - 0.02:  # first clear everything, straight up
            return scene.move(np.array([eef[0], eef[1], carry]), 1.0, self.hand)
        land = surface - 0.01 + hand_above_bottom  # aim a little into the surface: contact ends the episode
        slope = self.INTO_FUNNEL if self.into else self.PLACE_FUNNEL
        over[2] = land + min(carry - land, slope * max(0.0, error - self.OVER))
        if error < 2 * self.OVER and bottom < surface + 0.005:
            self.closing = 0  # down and over the target without success: let go, grasp again
            return scene.move(over, -1.0, self.hand)
        return scene.move(over, 1.0, self.hand)


class BodyPlace(VesselPlaceExpert):
    """Pick an object up by its body from above and set it down on a target object or region
    (the cream cheese into the bowl, the wine bottle on the cabinet): the fingers close across
    the object's narrower side, a little below its top (4 cm below it for tall objects, so the
    palm stays clear; never with the fingertips in the support). Carrying and placing are the
    vessel expert's."""

    FINGERTIPS = 0.016  # the grip point stays this far above the object's bottom (fingertips reach 1.3 cm below it)

    def _grasp(self, origin: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scene, body = self.scene, self.scene.body(self.obj)
        frame = scene.data.xmat[body].reshape(3, 3)
        axes = []
        for column in (0, 1):  # the body's own horizontal axes: its footprint's sides
            axis = np.append(frame[:2, column], 0.0)
            axis /= np.linalg.norm(axis)
            low, high = scene.extent_along(body, axis)
            axes.append((high - low, axis, 0.5 * (low + high) - origin @ axis))
        (_, narrow, n_mid), (_, wide, w_mid) = sorted(axes, key=lambda a: a[0])
        height = hi[2] - lo[2]
        grip = max(lo[2] + self.FINGERTIPS, hi[2] - min(0.04, 0.5 * height)) - origin[2]
        offset = n_mid * narrow + w_mid * wide
        return np.array([offset[0], offset[1], grip]), _closing_along(narrow[:2])


class BottleRack(BodyPlace):
    """Set a wine bottle into a rack's cradle ("put the wine bottle on the rack"). LIBERO checks
    the bottle's origin (its bottom) against a thin region tilted 62.5 degrees, in contact with
    the rack: the bottle leans in the cradle along the region's slope, upright ones topple off.
    Held by the neck with the fingers closing along the rack's length, the bottle is raised
    above the cradle's front, tilted to the slope, lowered bottom first onto a point of the
    region on the robot's side of the rack's middle divider, and let go."""

    SIDE = 0.06  # the bottom lands this far along the rack from the region's centre, towards the robot (m)
    LIFT = 0.05  # the bottom comes in this far above its landing point (m)

    def start(self) -> None:
        super().start()
        pos, rot, _ = self.scene.site(self.target)
        # LIBERO tests R @ (p - site) against the half size (R's rows are the region's axes).
        along = rot[0] if rot[0] @ np.array([-1.0, 0.0, 0.0]) > 0 else -rot[0]  # towards the robot (-x)
        self.landing = pos + self.SIDE * along + 0.02 * rot[2]
        self.axis = rot[1] if rot[1][2] > 0 else -rot[1]  # the bottle lies up the slope, across the rack
        lean = np.cross([0.0, 0.0, 1.0], self.axis)
        angle = np.arccos(np.clip(self.axis[2], -1, 1))
        self.tilted = rotvec_to_mat(lean / max(np.linalg.norm(lean), 1e-9) * angle) @ self.hand
        self.grasp_local = self.scene.data.xmat[self.scene.body(self.obj)].reshape(3, 3).T @ self.grasp_offset
        self.phase = "rise"

    NECK = 0.03  # grip point below the bottle's top (m): the palm, 2.4 cm above it, clears the top

    def _grasp(self, origin: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        offset, _ = super()._grasp(origin, lo, hi)
        offset[2] = hi[2] - self.NECK - origin[2]
        _, rot, _ = self.scene.site(self.target)
        return offset, _closing_along(rot[0][:2])  # fingers along the rack: the hand's length clears its front

    def _grasp_point(self, obj: np.ndarray) -> np.ndarray:
        # The grip turns with the bottle as it is tilted: keep it in the bottle's frame.
        frame = self.scene.data.xmat[self.scene.body(self.obj)].reshape(3, 3)
        return obj + frame @ self.grasp_local

    def _carry(self, eef: np.ndarray, obj: np.ndarray) -> np.ndarray:
        scene = self.scene
        above = self.landing + np.array([0.0, 0.0, self.LIFT])
        if self.phase == "rise":
            if obj[2] < above[2] - 0.01:
                return scene.move(np.array([eef[0], eef[1], eef[2] + above[2] - obj[2]]), 1.0, self.hand)
            self.phase = "over"
        if self.phase == "over":
            if np.linalg.norm((obj - above)[:2]) > 0.01 or scene.turned(self.tilted) > 0.1:
                return scene.move(eef + above - obj, 1.0, self.tilted)
            self.phase = "down"
        if self.phase == "down":
            if obj[2] > self.landing[2] + 0.005:
                return scene.move(eef + self.landing - obj - np.array([0.0, 0.0, 0.01]), 1.0, self.tilted)
            self.phase = "release"
        return scene.move(eef, -1.0, self.tilted)


class PlateDrag(VesselPlaceExpert):
    """Slide a plate over the table into a region ("push the plate to the front of the stove":
    LIBERO checks only where it ends, on the table inside the region). The rim is a ring of
    collision boxes 1.9 cm tall, 2.9 to 6.9 cm off the centre: the fingers, level, pinch the
    ring's width low enough to hold it, high enough to keep the fingertips off the table (the
    side is the vessel expert's choice: from the robot's side the hand meets the bowl). Lifted
    by its rim the plate slips out; dragged, it follows. The route goes around what stands on
    the straight line: out along x until the plate clears every object between it and the
    region, along y, then back along x into the region (a side of it clear of those objects)."""

    RIM_RADIUS, RIM_HEIGHT, WALL_TILT = 0.049, 0.013, 0.0
    MARGIN = 0.015  # the plate's edge passes objects at least this far off (m)
    REACHED = 0.01  # a waypoint counts as reached within this (m)

    def start(self) -> None:
        super().start()
        scene = self.scene
        plate = scene.origin(self.obj)[:2]
        lo, hi = scene.box(scene.body(self.obj))
        reach = 0.5 * float(np.max(hi[:2] - lo[:2])) + self.MARGIN
        pos, rot, half = scene.site(self.target)
        spot, extent = pos[:2], np.abs(rot[:2, :2]) @ half[:2]
        band = np.array([min(plate[0], spot[0]) - reach, max(plate[0], spot[0]) + reach])
        ys = np.array([min(plate[1], spot[1]) - reach, max(plate[1], spot[1]) + reach])
        x_clear, y_end = plate[0], spot[1]
        for name in scene.sim.objects_dict:
            if name == self.obj:
                continue
            olo, ohi = scene.box(scene.body(name))
            if olo[0] < band[1] and ohi[0] > band[0] and olo[1] < ys[1] and ohi[1] > ys[0]:
                x_clear = max(x_clear, ohi[0] + reach)
            if olo[0] < spot[0] + reach and ohi[0] > spot[0] - reach and olo[1] < spot[1] + reach:
                y_end = max(y_end, ohi[1] + reach)  # the region's far side, clear of what stands near it
        y_end = min(y_end, spot[1] + extent[1] - self.REACHED)
        self.waypoints = [np.array([x_clear, plate[1]]), np.array([x_clear, y_end]), np.array([spot[0], y_end])]

    def _carry(self, eef: np.ndarray, obj: np.ndarray) -> np.ndarray:
        while len(self.waypoints) > 1 and np.linalg.norm(obj[:2] - self.waypoints[0]) < self.REACHED:
            self.waypoints.pop(0)
        goal = self.waypoints[0]
        if len(self.waypoints) == 1 and np.linalg.norm(obj[:2] - goal) < self.REACHED:
            self.closing = 0  # there without success: let go
            return self.scene.move(eef, -1.0, self.hand)
        target = np.append(goal + (eef - obj)[:2], obj[2] + self.grasp_offset[2])
        return self.scene.move(target, 1.0, self.hand)


class DrawerOpen:
    """Pull a cabinet's drawer open by its handle (LIBERO's "Open" of a `<cabinet>_<level>_region`).

    The hand points into the cabinet (tilted down PITCH), fingers closing near vertically on the
    handle bar (0.8 x 0.8 x 8.9 cm, 3.2 cm proud of the front): approach a hand's length out
    along the pull, slide in, close, then steer a point ahead of the handle along the pull so
    the target follows the drawer. Past LIBERO's open threshold (-0.14 of a -0.16 travel) it
    lets go and backs off. A handle lost while pulling is approached again."""

    STANDOFF = 0.10  # approach point in front of the handle (m)
    REACH = 0.005  # grip point in front of the handle's centre (m)
    LEAD = 0.06  # while pulling, the target leads the handle by this (m)
    SQUEEZE = 12
    OPEN_BEYOND = -0.15  # pull until the slide reaches this (LIBERO calls it open below -0.14; end stop -0.16)
    PITCH = np.radians(25)
    ABOVE = 0.06  # once let go, the hand rises this far above the cabinet's top (m), pointing down

    def __init__(self, env, region: str) -> None:
        if not region.endswith("_region"):
            raise ValueError(f"DrawerOpen opens a drawer named by its region, got {region!r}")
        self.env, self.region = env, region
        self.fixture, level = region[: -len("_region")].rsplit("_", 1)
        self.joint, self.drawer = f"{self.fixture}_{level}_level", f"{self.fixture}_cabinet_{level}"

    def start(self) -> None:
        scene = self.scene = Scene(self.env)
        _, axis, _ = scene.joint(self.joint)
        pull = -axis  # the slide's range is negative: opening moves against its axis
        self.pull = pull / np.linalg.norm(pull)
        # The hand points into the cabinet and PITCH downwards: level, its 20.8 cm closing axis
        # reaches 10.4 cm below the middle drawer's handle, 1.1 cm into the plate standing in front.
        z = np.array([0.0, 0.0, 1.0])
        approach = -self.pull * np.cos(self.PITCH) - z * np.sin(self.PITCH)
        z = z * np.cos(self.PITCH) - self.pull * np.sin(self.PITCH)  # the closing axis
        # Fingers close along z; of the two such hands (the hand is symmetric under half a turn
        # about its approach axis) take the one nearer the hand's present orientation: the other
        # winds the wrist towards its joint limits.
        hands = [np.column_stack([sign * z, sign * np.cross(approach, z), approach]) for sign in (1.0, -1.0)]
        self.hand = min(hands, key=scene.turned)
        body = scene.body(self.drawer)
        # The handle: the drawer's collision box that stands farthest out along the pull.
        self.handle_geom = max(scene.geoms(body), key=lambda g: float(scene.data.geom_xpos[g] @ self.pull))
        self.top = float(scene.box(scene.body(self.fixture))[1][2])
        self.phase, self.count = "approach", 0

    def _handle(self) -> np.ndarray:
        return self.scene.data.geom_xpos[self.handle_geom].copy()

    def done(self) -> bool:
        return self.phase == "done"

    def act(self) -> np.ndarray:
        scene, pull = self.scene, self.pull
        eef, gap = scene.hand()
        handle = self._handle()
        qpos, _, _ = scene.joint(self.joint)
        grip_point = handle + self.REACH * pull
        if self.phase in ("approach", "slide"):
            # Out in front first, turned; then slide in along the pull axis (looser tolerances
            # once sliding: the hand sags and twists a little as it goes in).
            sideways = float(np.linalg.norm(eef - grip_point - ((eef - grip_point) @ pull) * pull))
            turned = scene.turned(self.hand)
            if self.phase == "approach" and sideways < 0.01 and turned < 0.1:
                self.phase = "slide"
            elif self.phase == "slide" and (sideways > 0.025 or turned > 0.3):
                self.phase = "approach"
            if self.phase == "approach":
                return scene.move(handle + self.STANDOFF * pull, -1.0, self.hand)
            if np.linalg.norm(eef - grip_point) > 0.006:
                return scene.move(grip_point, -1.0, self.hand)
            self.phase, self.count = "close", 0
        if self.phase == "close":
            self.count += 1
            if self.count >= self.SQUEEZE:
                self.phase = "pull"
            return scene.move(grip_point, 1.0, self.hand)
        if self.phase == "pull":
            if np.linalg.norm(eef - grip_point) > 0.03 or gap < 0.002:  # lost the handle
                self.phase = "approach"
                return scene.move(eef + 0.02 * pull, -1.0, self.hand)
            if qpos > self.OPEN_BEYOND:
                return scene.move(handle + self.LEAD * pull, 1.0, self.hand)
            self.phase, self.count = "release", 0
        if self.phase == "release":  # let go, back off, then rise above the cabinet: clear of the open drawer
            self.count += 1
            back = grip_point + (0.0 if self.count < 6 else self.STANDOFF) * pull
            if self.count >= 6 and np.linalg.norm(eef - back) < 0.02:
                self.phase = "rise"
            else:
                return scene.move(back, -1.0, self.hand)
        if self.phase == "rise":
            up = np.array([eef[0], eef[1], self.top + self.ABOVE])
            if eef[2] > up[2] - 0.02:
                self.phase = "done"
            return scene.move(up, -1.0, DOWN)
        return scene.move(eef, -1.0, DOWN)


class KnobTurn:
    """Turn a stove's knob on (LIBERO's "TurnOn"): fingers open around the knob's grip ridge, the
    hand pointing down, close on the ridge, then turn the hand about the vertical until the
    hinge passes LIBERO's on threshold, let go and rise."""

    RIDGE = np.array([-0.012, 0.0, 0.026])  # grip point in the knob body's frame (the ridge is 1.7 cm to -x)
    TURN = 0.8  # hand yaw (rad) asked for while turning
    SQUEEZE = 10

    def __init__(self, env, fixture: str) -> None:
        self.env, self.fixture = env, fixture
        self.button = f"{fixture}_button"

    def start(self) -> None:
        scene = self.scene = Scene(self.env)
        body = scene.body(self.button)
        self.ridge = scene.data.xpos[body] + scene.data.xmat[body].reshape(3, 3) @ self.RIDGE
        self.phase, self.count = "approach", 0

    def done(self) -> bool:
        return self.phase == "done"

    def act(self) -> np.ndarray:
        scene = self.scene
        eef, _ = scene.hand()
        if self.phase == "approach":
            if np.linalg.norm((eef - self.ridge)[:2]) < ALIGNED and abs(eef[2] - self.ridge[2]) < 0.008:
                self.phase, self.count = "close", 0
            else:
                return scene.move(_funnel(self.ridge, eef), -1.0)
        if self.phase == "close":
            self.count += 1
            if self.count >= self.SQUEEZE:
                self.phase = "turn"
            return scene.move(self.ridge, 1.0)
        if self.phase == "turn":
            if not scene.holds(["turnon", self.fixture]):
                return scene.move(self.ridge, 1.0, rot_z(self.TURN) @ DOWN)
            self.phase, self.count = "release", 0
        if self.phase == "release":
            self.count += 1
            up = self.ridge + np.array([0.0, 0.0, 0.0 if self.count < 6 else HOVER])
            if self.count >= 6 and np.linalg.norm(eef - up) < 0.02:
                self.phase = "done"
            return scene.move(up, -1.0, scene.sim.robots[0].controller.ee_ori_mat)
        return scene.move(eef, -1.0)


VESSELS = ("bowl", "mug", "cup")  # objects held by the rim (VesselPlaceExpert)
BODY_GRASPED = ("cream_cheese_1", "wine_bottle_1")  # objects held by the body from above (BodyPlace)


class TaskPlanExpert:
    """An expert for a task whose goal is a list of predicates (LIBERO-Goal, LIBERO-10): one
    skill per predicate, in order, each started when the previous one is done (a skill reads
    the scene when it starts, so it sees what the ones before it moved)."""

    def __init__(self, env) -> None:
        self.env = env

    def plan(self, scene: Scene) -> list:
        skills = []
        for predicate in scene.goal():
            kind, *args = predicate
            if kind == "open" and args[0].endswith("_region"):
                skills.append(DrawerOpen(self.env, args[0]))
            elif kind == "turnon":
                skills.append(KnobTurn(self.env, args[0]))
            elif kind == "in" and "cabinet" in args[1] and any(v in args[0] for v in VESSELS):
                if not scene.holds(["open", args[1]]):
                    skills.append(DrawerOpen(self.env, args[1]))
                skills.append(VesselPlaceExpert(self.env, args[0], args[1], into=True, overhang=True))
            elif kind == "on" and any(v in args[0] for v in VESSELS):
                skills.append(VesselPlaceExpert(self.env, args[0], args[1]))
            elif kind == "on" and args[0].startswith("plate"):
                skills.append(PlateDrag(self.env, args[0], args[1]))
            elif kind == "on" and "bottle" in args[0] and "rack" in args[1]:
                skills.append(BottleRack(self.env, args[0], args[1]))
            elif kind == "on" and args[0] in BODY_GRASPED:
                skills.append(BodyPlace(self.env, args[0], args[1]))
            else:
                raise ValueError(f"{self.env.task}: no scripted skill for the goal predicate {predicate}")
        return skills

    def start(self) -> None:
        self.skills = self.plan(Scene(self.env))
        self.current = 0
        self.skills[0].start()

    def act(self) -> np.ndarray:
        skill = self.skills[self.current]
        if self.current < len(self.skills) - 1 and getattr(skill, "done", lambda: False)():
            self.current += 1
            skill = self.skills[self.current]
            skill.start()
        return skill.act()


EXPERTS = {"libero_object": LiberoObjectExpert, "libero_spatial": VesselPlaceExpert, "libero_goal": TaskPlanExpert}


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
