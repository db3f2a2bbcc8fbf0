"""Pick-and-place skills of the scripted LIBERO experts (envs/libero/experts.py): a grasp, a
carry over what lies between, a placement, and, when a later skill follows, letting go and
rising clear (skills.LetGo). LIBERO-Object's basket placement and its LIBERO-10 form
(BasketPlace), rim grasps of bowls and mugs (VesselPlaceExpert, MugPlace, and a mug carried
by its handle to an enclosure's entrance, HandleToEntrance), body grasps (BodyPlace, and its
moka pot, book and bottle forms), and a plate dragged by its rim (PlateDrag).

Each is a state-feedback law: approach through a funnel above the grasp point, close when lined
up, and once the fingers are stopped apart by the object, rise, carry over the target, lower,
open. A missed grasp re-opens and the funnel starts again; a dropped object is approached again.
"""

from __future__ import annotations

import mujoco
import numpy as np

from envs.libero.skills import (
    ALIGNED,
    DOWN,
    HAND_HALF,
    HELD_GAP,
    OPEN_GAP,
    LetGo,
    Scene,
    closing_along,
    funnel,
    rot_z,
)
from envs.rotations import rotvec_to_mat

RIM_CLEARANCE = 0.05  # the object's bottom stays this far above the basket region's top while carrying (m)
REGION = "basket_1_contain_region"


class LiberoObjectExpert:
    """Call `start()` after every env reset (the simulator is rebuilt), then `act()` each step."""

    # Visual boxes: the demonstrations of the published LIBERO-Object result were recorded with
    # them (collision boxes are narrower; changing this changes every recording).
    COLLISION_BOXES = False
    SQUEEZE = 10  # steps the fingers close before lifting

    def __init__(self, env, obj: str | None = None, region: str = REGION) -> None:
        """Put `obj` (the task's object of interest when None) into the basket's `region`."""
        self.env, self.obj, self.region = env, obj, region
        self.predicate = ["in", obj, region]

    def start(self) -> None:
        sim = self.env.sim
        self.scene = Scene(self.env)
        self.model, self.data = self.scene.model, self.scene.data
        self.target = self.obj or sim.obj_of_interest[0]
        self.body = sim.obj_body_id[self.target]
        self.site = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, self.region)
        self.region_half = self.model.site_size[self.site].copy()
        boxes = {name: self.scene.box(bid, collision=self.COLLISION_BOXES) for name, bid in sim.obj_body_id.items()}
        lo, hi = boxes.pop(self.target)
        origin = self.data.xpos[self.body]
        self.below_origin = origin[2] - lo[2]  # the object's bottom relative to its origin
        height = hi[2] - lo[2]
        # Grasp a little below the top of flat objects, about 4 cm below the top of tall ones
        # (the palm must stay clear of the top), never with the fingertips in the table.
        self.grasp_below_top = min(0.04, 0.5 * height)
        if self.COLLISION_BOXES:  # the fingertips reach 1.3 cm below the grip point: keep it 1.6 cm up
            self.grasp_below_top = max(0.0, min(self.grasp_below_top, height - BodyPlace.FINGERTIPS))
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

    def _grasp_at(self, obj: np.ndarray) -> np.ndarray:
        """The grasp point for the object's origin at `obj`."""
        return obj + np.array([self.grasp_dx, 0.0, self.top_above_origin - self.grasp_below_top])

    @staticmethod
    def _near(rel: np.ndarray) -> bool:
        """Whether a hand `rel` from the grasp point holds the object there once closed."""
        return bool(np.linalg.norm(rel[:2]) < 0.02 and abs(rel[2]) < 0.03)

    def grip_offset(self) -> np.ndarray:
        """The hand's grip site minus where it holds the object (m, world frame)."""
        return self.scene.hand()[0] - self._grasp_at(self.data.xpos[self.body])

    def closed_at_grip(self) -> bool:
        """The fingers closed on something (neither open nor shut on nothing) with the hand where
        this expert holds its object: what it would carry had it closed there itself
        (`envs.libero.shadow` hands it a grasp the policy made)."""
        gap = self.scene.hand()[1]
        return HELD_GAP < gap < OPEN_GAP - 0.01 and self._near(self.grip_offset())

    def act(self) -> np.ndarray:
        obs = self.env.sim._get_observations()
        eef = obs["robot0_eef_pos"]
        gap = float(obs["robot0_gripper_qpos"][0] - obs["robot0_gripper_qpos"][1])
        obj = self.data.xpos[self.body].copy()
        region = self.data.site_xpos[self.site].copy()
        grasp = self._grasp_at(obj)
        rel = eef - grasp
        near = self._near(rel)
        if self.closing >= self.SQUEEZE and gap > HELD_GAP and near:
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
            if self.closing < self.SQUEEZE:  # closing: hold still until the fingers stop
                self.closing += 1
                return self._move(grasp, 1.0)
            # Closed on nothing, or the object slipped away: open and approach again.
            if gap < OPEN_GAP - 0.01:
                return self._move(funnel(grasp, eef) + np.array([0.0, 0.0, 0.02]), -1.0)
            self.closing = 0
        if np.linalg.norm(rel[:2]) < ALIGNED and abs(rel[2]) < 0.008 and gap > OPEN_GAP - 0.01:
            self.closing = 1
            return self._move(grasp, 1.0)
        return self._move(funnel(grasp, eef), -1.0)


class BasketPlace(LetGo, LiberoObjectExpert):
    """LIBERO-Object's basket placement of one named object as a step of a longer task
    (LIBERO-10's "put both the X and the Y in the basket"): objects measured by their collision
    boxes (the visual ones are loose, and put the fingertips of a flat box's grasp into the
    table), nothing done while objects are still falling (the living-room scenes drop some from
    up to 0.6 m at the start), and once the object is in, let go and rise clear of the basket."""

    COLLISION_BOXES = True
    FALLING = 0.05  # an object moving faster than this (m/s) is still settling
    APPROACH_CLEARANCE = 0.03  # the fingertips pass this far above what lies on the way to the object (m)
    OVER = 0.04  # within this (m) of the grasp point horizontally, the funnel takes over

    def start(self) -> None:
        super().start()
        self._start_leaving()
        self.predicate = ["in", self.target, self.region]
        self.bodies = list(self.env.sim.obj_body_id.values())
        self.settled = False

    def act(self) -> np.ndarray:
        if self.leaving_now() or self.scene.holds(self.predicate):
            return self._leave(DOWN)
        if not self.settled:
            eef, _ = self.scene.hand()
            if max(np.linalg.norm(self.data.cvel[b][3:]) for b in self.bodies) > self.FALLING:
                return self._move(eef, -1.0)  # wait for the scene to come to rest
            self.settled = True
            super().start()  # the grasp planned where the neighbours came to rest
            # The hand comes over the object at a height that clears what lies on the way (the
            # basket the previous object went into), only then descends through the funnel.
            eef, _ = self.scene.hand()
            goal = self.data.xpos[self.body]
            top = self.scene.highest_along(eef, goal, HAND_HALF[1], skip=(self.target,))
            self.clear_z = top + self.APPROACH_CLEARANCE + 0.013  # the fingertips reach 1.3 cm below the grip
        if self.closing == 0:
            eef, _ = self.scene.hand()
            obj = self.data.xpos[self.body]
            grasp = obj + np.array([self.grasp_dx, 0.0, 0.0])
            if np.linalg.norm((eef - grasp)[:2]) > self.OVER and eef[2] < self.clear_z:
                # Still far off and low: go over at the clear height (up first when well below it).
                xy = grasp[:2] if eef[2] > self.clear_z - 0.02 else eef[:2]
                return self._move(np.append(xy, self.clear_z), -1.0)
        return super().act()


class VesselPlaceExpert(LetGo):
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
    # cm under the rim), on the side facing the robot (-x) unless, with SIDE_BY_ROOM, the outer
    # finger or the hand would meet something there (then the side facing the robot with the
    # most room; LIBERO-Spatial's expert turns it off, below). The +y side leaves the plate, 0.72 m
    # from the shoulder, out of reach: the elbow straightens at its limit 8 cm above it. The hand
    # closes the fingers along the wall's normal, tilted WALL_TILT like the wall, so the pads meet
    # it face to face: the bowl hangs level (2 degrees) instead of 15-34 degrees off.
    RIM_RADIUS, RIM_HEIGHT, WALL_TILT = 0.047, 0.036, np.radians(15)
    FINGER_ROOM = 0.0  # room (m) the outer finger and the hand need on the -x side (mesh boxes are loose)
    SIDE_BY_ROOM = True
    FUNNEL = 6.0  # approach height per metre of misalignment: the fingers go down between walls 2-6 cm apart
    HELD_NEAR = 0.02  # grip site within this of the grasp point while held (the bowl tilts a little in the hand)
    CLEARANCE = 0.04  # the held bowl's bottom stays this far above what its path passes over (m)
    OVER = 0.005  # the bowl's origin counts as over the target within this (m)
    PLACE_FUNNEL = 2.0  # descent height per metre of the bowl's horizontal error over the target
    INTO_FUNNEL = 8.0  # the same going into a region (a drawer): steeper, so the bowl clears the drawer's walls
    SQUEEZE = 16  # steps the fingers close before lifting (the wall is 2.6 mm thick: let the grip build up)
    HELD_GAP = 0.002  # fingers squeezing the 2.6 mm wall stop at a gap of 4-8 mm (the Object expert's 8 mm lets go)
    # Lined up over the grip but held up short of it (a finger on the wall of the drawer the bowl
    # stands in, 5 mm above the rim, in LIBERO-Spatial's drawer task): after STOPPED steps without
    # descending 2 mm, and no more than STOPPED_ABOVE above the grip, close where the hand is.
    # None in the subclasses: measured for the bowl's rim grasp only (the moka pot's stall
    # means a fingertip on its rim, and takes the other grasp).
    STOPPED: int | None = 12
    STOPPED_ABOVE = 0.02

    ALIGNED = ALIGNED  # horizontal misalignment at which the hand goes down to the grip and closes
    SHARED = 0.55  # see `share`
    CLEAR_APPROACH = False  # approach over what lies on the way (not the funnel's straight line)
    SHIFT_LANDING = True  # may land off the region's centre when something is in the way there (round objects)
    HAND_TOP = 0.061  # the grasp side's room is checked up to this height above the grip site (m)

    def __init__(
        self,
        env,
        obj: str | None = None,
        target: str | None = None,
        into: bool = False,
        overhang: bool = False,
        share: float = 0.0,
        clear_approach: bool | None = None,
    ) -> None:
        """Place `obj` on `target` (into it when `into`: a region such as an open drawer's), or
        as the task's single "on" goal says when they are not given. With `overhang` (something,
        such as an open drawer, may overhang the vessel) the grasp side's room is checked up the
        whole hand (12.6 cm above the grip site), not only its lowest 3.7 cm. With `share` = +1
        or -1 the object goes to the far or the near corner of a region it shares with another
        (both moka pots on the stove), SHARED of the region's half extents off its centre.
        `clear_approach` overrides CLEAR_APPROACH (the hand starts over a drawer it just opened)."""
        self.env, self.obj, self.target, self.into, self.share = env, obj, target, into, share
        if clear_approach is not None:
            self.CLEAR_APPROACH = clear_approach
        self.predicate = ["in" if into else "on", obj, target]
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
        self.shift = np.zeros(2)  # the landing's offset in a region (below), none while planning the path
        spot, surface = self._target()
        radius = 0.5 * float(np.max(hi[:2] - lo[:2]))
        self.highest = max(lo[2], surface, scene.highest_along(origin, spot, radius, skip=(self.obj, self.target)))
        self.grasp_offset, self.hand = self._grasp(origin, lo, hi)
        round_object = self.into and self.SHIFT_LANDING
        self.shift = self._landing_shift(radius, float(hi[2] - lo[2])) if round_object else np.zeros(2)
        self.closing = 0
        self.lowest, self.stopped = np.inf, 0
        self.predicate = ["in" if self.into else "on", self.obj, self.target]
        if self.CLEAR_APPROACH:
            # The fingertips (1.3 cm under the grip) pass 3 cm over what lies on the way.
            eef, _ = scene.hand()
            top = scene.highest_along(eef, self._grasp_point(origin), HAND_HALF[1], skip=(self.obj,))
            self.approach_z = top + 0.043
        self._start_leaving()

    def _grasp(self, origin: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The grip point relative to the object's origin and the hand's orientation there."""
        side = self._grasp_side(origin)
        tilt = rotvec_to_mat(np.cross(np.append(side, 0.0), [0.0, 0.0, 1.0]) * -self.WALL_TILT)
        return np.append(self.RIM_RADIUS * side, self.RIM_HEIGHT), tilt @ closing_along(side)

    def _grasp_side(self, origin: np.ndarray) -> np.ndarray:
        """Unit xy direction from the bowl's origin to the wall it is held by: -x (towards the
        robot) when the outer finger and the hand's underside fit there or SIDE_BY_ROOM is off,
        else the side facing the robot where they have the most room (from a side facing away,
        the tilted hand stalled short of the grasp point with the arm at its reach)."""
        grip = origin[2] + self.RIM_HEIGHT

        def room(angle: float) -> float:
            u = np.array([np.cos(angle), np.sin(angle)])
            return self._room(np.append(origin[:2] + self.RIM_RADIUS * u, grip), u)

        if not self.SIDE_BY_ROOM or room(np.pi) > self.FINGER_ROOM:
            angle = np.pi
        else:
            angles = np.radians(np.arange(90, 271, 15))  # the sides facing the robot: the others are out of reach
            angle = max(angles, key=lambda a: (round(min(room(a), 0.03), 3), -abs(np.angle(np.exp(1j * (a - np.pi))))))
        return np.array([np.cos(angle), np.sin(angle)])

    def _room(self, grip: np.ndarray, u: np.ndarray) -> float:
        """Clearance (m) of the outer finger and the hand's lower part from every other object
        and fixture, for a rim grip at `grip` with the fingers closing along the xy unit `u`
        (the outer finger on the +u side)."""
        finger = [(r, 0.0, z) for r in (0.025, 0.035, 0.045) for z in (-0.012, 0.0, 0.03)]
        # The hand's underside and 3.6 cm of the hand above it, from 2.4 cm above the grip site:
        # 20.8 cm along the closing axis, 6.9 across, sampled every 2 mm in height (the cabinet's
        # top panel is 2.8 mm thick).
        hull = [
            (a, c, z)
            for a in np.linspace(-0.104, 0.104, 9)
            for c in (-0.0345, 0.0, 0.0345)
            for z in np.arange(0.024, self.hand_top, 0.002)
        ]
        offsets = np.array(finger + hull)
        v = np.array([-u[1], u[0]])
        points = np.column_stack([grip[:2] + offsets[:, :1] * u + offsets[:, 1:2] * v, grip[2] + offsets[:, 2]])
        return self.scene.clearance(points, skip=(self.obj,))

    def _target(self) -> tuple[np.ndarray, float]:
        """Where the bowl's origin goes (xy) and the height of the surface it lands on."""
        scene = self.scene
        if self.target in scene.sim.obj_body_id:
            _, hi = scene.box(scene.body(self.target))
            return scene.origin(self.target)[:2], float(hi[2])
        pos, rot, half = scene.site(self.target)
        depth = float(np.abs(rot[2]) @ half)  # the region's vertical half extent
        if self.into:
            return pos[:2] + self.shift, float(pos[2] - depth)
        # Two objects on one region: on its diagonal, the first placed far from the robot (+x)
        # and to the left (+y), the second near and to the right, so that the hand, whose long
        # side lies along x, lowers the second beside the first, not onto it.
        corner = self.share * self.SHARED * (np.abs(rot) @ half)[:2]
        return pos[:2] + corner, float(pos[2] + depth)

    def _landing_shift(self, radius: float, height: float) -> np.ndarray:
        """Where in the region (xy, from its centre) the object lands when something is in the
        way at the centre (the open part of a bottom drawer lies between its front panel and
        the drawer above, 13 cm for an 11.4 cm bowl): the spot nearest the centre where the
        object's column, 3 mm wider than the object, from 1.5 cm above the region's floor to a
        centimetre above its top, and the hand holding it there are clearest. Zero when the
        centre's column has a centimetre of room."""
        scene = self.scene
        pos, rot, half = scene.site(self.target)
        extent = np.abs(rot) @ half  # the region's world half extents
        floor = pos[2] - extent[2]
        angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
        ring = np.column_stack([np.cos(angles), np.sin(angles)]) * (radius + 0.003)
        heights = np.arange(floor + 0.015, floor + height + 0.01, 0.005)
        column = np.array([[x, y, z] for x, y in ring for z in heights])

        def column_room(shift: np.ndarray) -> float:
            return min(scene.clearance(column + np.append(pos[:2] + shift, 0.0), skip=(self.obj,)), 0.02)

        if column_room(np.zeros(2)) >= 0.01:  # LIBERO-Goal's top drawer: 11.5 mm; LIBERO-10's bottom one: 2-7 mm
            return np.zeros(2)
        # The hand's lower part (from 2.4 cm above the grip, 20.8 cm along its closing axis) must
        # come down there too: the cabinet's sides stand 21 cm apart around the drawer.
        lo, _ = scene.box(scene.body(self.obj))
        grip = np.append(pos[:2], floor + scene.origin(self.obj)[2] - lo[2]) + self.grasp_offset
        closing, across, up = self.hand[:, 0], self.hand[:, 1], -self.hand[:, 2]
        hull = np.array(
            [
                grip + a * closing + c * across + z * up
                for a in np.linspace(-0.104, 0.104, 9)
                for c in (-0.0345, 0.0, 0.0345)
                for z in np.arange(0.024, 0.061, 0.004)
            ]
        )

        def room(shift: np.ndarray) -> float:
            return min(column_room(shift), scene.clearance(hull + np.append(shift, 0.0), skip=(self.obj,)))

        reach = np.maximum(extent[:2] - 0.02, 0.0)
        grid = [
            np.array([x, y])
            for x in np.arange(-reach[0], reach[0] + 1e-9, 0.01)
            for y in np.arange(-reach[1], reach[1] + 1e-9, 0.01)
        ]
        return max(grid, key=lambda shift: (round(room(shift), 3), -np.linalg.norm(shift)))

    def act(self) -> np.ndarray:
        scene = self.scene
        if self.leaving_now() or (scene.holds(self.predicate) and self.closing < self.SQUEEZE):
            return self._leave(self._carried())  # placed (a later skill follows), or left there by a slip
        eef, gap = scene.hand()
        obj = scene.origin(self.obj)
        grasp = self._grasp_point(obj)
        rel = eef - grasp
        if self.closing >= self.SQUEEZE and gap > self.HELD_GAP and np.linalg.norm(rel) < self.HELD_NEAR:
            return self._carry(eef, obj)
        if self.CLEAR_APPROACH and self.closing == 0 and np.linalg.norm(rel[:2]) > 0.03 and eef[2] < self.approach_z:
            # Far off and low: up first, then over at the clear height; the funnel takes over there.
            xy = grasp[:2] if eef[2] > self.approach_z - 0.02 else eef[:2]
            return scene.move(np.append(xy, self.approach_z), -1.0, self.hand)
        if self.closing > 0:
            if self.closing < self.SQUEEZE:  # closing: hold still until the fingers stop
                self.closing += 1
                return scene.move(grasp, 1.0, self.hand)
            if gap < OPEN_GAP - 0.01:  # closed on nothing, or the bowl slipped: open, approach again
                up = funnel(grasp, eef, slope=self.FUNNEL, aligned=self.ALIGNED) + np.array([0.0, 0.0, 0.02])
                return scene.move(up, -1.0, self.hand)
            self.closing = 0
        if self._stopped_above(rel):
            self.grasp_offset = self.grasp_offset + rel  # the grip is where the hand stopped, from now on
            self.closing = 1
            return scene.move(eef, 1.0, self.hand)
        lined_up = np.linalg.norm(rel[:2]) < self.ALIGNED and abs(rel[2]) < 0.008 and scene.turned(self.hand) < 0.1
        if lined_up and gap > OPEN_GAP - 0.01:
            self.closing = 1
            return scene.move(grasp, 1.0, self.hand)
        return scene.move(funnel(grasp, eef, slope=self.FUNNEL, aligned=self.ALIGNED), -1.0, self.hand)

    def _stopped_above(self, rel: np.ndarray) -> bool:
        """Whether the open hand, lined up over the grip (`rel`: the grip site from the grip
        point), has stopped descending for STOPPED steps within STOPPED_ABOVE over it."""
        if self.STOPPED is None or not (
            np.linalg.norm(rel[:2]) < 2 * self.ALIGNED and 0.004 <= rel[2] < self.STOPPED_ABOVE
        ):
            self.lowest, self.stopped = np.inf, 0
            return False
        if rel[2] < self.lowest - 0.002:
            self.lowest, self.stopped = rel[2], 0
        else:
            self.stopped += 1
        return self.stopped > self.STOPPED

    def _grasp_point(self, obj: np.ndarray) -> np.ndarray:
        """Where the grip site is when the object is held, in the world."""
        return obj + self.grasp_offset

    def grip_offset(self) -> np.ndarray:
        """The hand's grip site minus where this skill holds its object (m, world frame)."""
        return self.scene.hand()[0] - self._grasp_point(self.scene.origin(self.obj))

    def closed_at_grip(self) -> bool:
        """The fingers closed on something with the hand where this skill holds its object (as
        `LiberoObjectExpert.closed_at_grip`)."""
        gap = self.scene.hand()[1]
        return self.HELD_GAP < gap < OPEN_GAP - 0.01 and bool(np.linalg.norm(self.grip_offset()) < self.HELD_NEAR)

    def _carry(self, eef: np.ndarray, obj: np.ndarray) -> np.ndarray:
        """Held: rise clear, carry over the target, descend, let go."""
        scene = self.scene
        hand = self._carried()
        spot, surface = self._target()
        bottom = obj[2] - self.below_origin
        # Placed, and a later skill follows (else the episode ended): let go. Into a region (a
        # drawer), only once down: its origin is inside 3 cm above the floor, a drop from there
        # tilts the bowl against the drawer above.
        if scene.holds(self.predicate) and (not self.into or bottom < surface + 0.015):
            return self._leave(hand)
        hand_above_bottom = eef[2] - bottom
        carry = self.highest + self.CLEARANCE + hand_above_bottom
        error = float(np.linalg.norm(obj[:2] - spot))
        over = np.append(spot + (eef - obj)[:2], 0.0)
        if error > 0.03 and eef[2] < carry - 0.02:  # first clear everything, straight up
            return scene.move(np.array([eef[0], eef[1], carry]), 1.0, hand)
        if hand is not self.hand and scene.turned(hand) > 0.1:  # turned while carried: turn before descending
            return scene.move(np.append(over[:2], max(eef[2], carry)), 1.0, hand)
        land = surface - 0.01 + hand_above_bottom  # aim a little into the surface: contact ends the episode
        slope = self.INTO_FUNNEL if self.into else self.PLACE_FUNNEL
        over[2] = land + min(carry - land, slope * max(0.0, error - self.OVER))
        if error < 2 * self.OVER and bottom < surface + 0.005:
            self.closing = 0  # down and over the target without success: let go, grasp again
            return scene.move(over, -1.0, hand)
        return scene.move(over, 1.0, hand)

    def _carried(self) -> np.ndarray:
        """The hand's orientation while carrying (the grasp's, unless the object must turn)."""
        return self.hand


class MugPlace(VesselPlaceExpert):
    """Pick a mug up by its rim and set it on a target (LIBERO-10's mugs onto plates): one finger
    inside the cup, one outside, as the bowl, but the cup's walls are upright and thin and it
    is not centred on the mug's origin (the handle is). The cup's centre and radius come from
    the collision boxes' reach along the mug's own horizontal axes (the handle's side reaches
    farthest); the grip is on the wall facing most towards the robot of the three sides away
    from the handle, WALL inside the cup's outer face, BELOW_RIM under its rim."""

    WALL_TILT = 0.0
    WALL = 0.004  # the walls are 4 mm thick: grip their middle (m)
    STOPPED = None

    def _handle(self) -> tuple[list[np.ndarray], dict, tuple[int, float]]:
        """The mug's horizontal axes (its own), the collision boxes' reach from its origin along
        each (axis index, sign), and the (axis index, sign) of its handle. The origin lies between
        the cup's centre and the handle (LIBERO's mugs), so the handle is on the side of the
        origin away from the mean of the collision boxes' centres (mostly the cup's wall)."""
        scene = self.scene
        body = scene.body(self.obj)
        origin = scene.origin(self.obj)
        frame = scene.data.xmat[body].reshape(3, 3)
        axes = [np.append(frame[:2, c], 0.0) / np.linalg.norm(frame[:2, c]) for c in (0, 1)]
        reach = {
            (c, s): scene.extent_along(body, s * axes[c])[1] - origin @ (s * axes[c]) for c in (0, 1) for s in (1, -1)
        }
        away = origin - scene.data.geom_xpos[scene.geoms(body)].mean(axis=0)
        handle = max(reach, key=lambda k: k[1] * float(axes[k[0]] @ away))
        return axes, reach, handle

    BELOW_RIM = 0.016

    def _grasp(self, origin: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        axes, reach, (handle_axis, handle_sign) = self._handle()
        across = 1 - handle_axis
        radius = 0.5 * (reach[(across, 1)] + reach[(across, -1)])
        towards_handle = handle_sign * axes[handle_axis]
        centre = (
            origin
            + 0.5 * (reach[(across, 1)] - reach[(across, -1)]) * axes[across]
            + (radius - reach[(handle_axis, -handle_sign)]) * towards_handle
        )
        top = hi[2] - self.BELOW_RIM
        grips = []
        for side in sorted([-towards_handle, axes[across], -axes[across]], key=lambda v: v[0]):
            grip = centre + (radius - self.WALL) * side
            grip[2] = top
            grips.append((grip, side, self._room(grip, side[:2])))
        # The side facing the robot most, unless the hand or the outer finger meets something
        # there (a neighbouring mug): then the side with the most room.
        grip, side, room = grips[0]
        if room <= self.FINGER_ROOM:
            grip, side, _ = max(grips, key=lambda g: round(min(g[2], 0.03), 3))
        return grip - origin, closing_along(side[:2])


class HandleToEntrance(MugPlace):
    """Carry a mug by its handle to the entrance of an enclosure and set it down on the
    enclosure's floor as far in as the hand may go (LIBERO-10's mug into the microwave, first
    half). The hand holds the top of the handle loop from above, fingers closing across it; the
    hand's 6.9 cm width must stay in front of the enclosure's face (its top wall is lower than
    the hand), so the mug goes in cup first with its handle facing out (as the scene places it):
    it is lowered outside, in front of the entrance, to just above the floor, slid in level, set
    down, and let go (done). The enclosure's face is where the target region starts along -y
    (the microwave opens to -y)."""

    SHIFT_LANDING = False
    CLEAR_APPROACH = True  # the hand starts over the open door
    HANDLE_IN = 0.009  # the grip is this far in from the handle's outer reach (m)
    BELOW_TOP = 0.013  # and this far under the mug's top
    OUTSIDE = 0.02  # the hand's side stays this far in front of the face (m)
    LEVEL = 0.008  # the mug's bottom slides in this far above the floor (m)

    def start(self) -> None:
        super().start()
        pos, rot, half = self.scene.site(self.target)
        extent = np.abs(rot) @ half
        self.face = pos[1] - extent[1]
        self.floor = pos[2] - extent[2] + 0.008  # LIBERO lowers the region's bottom 1 cm; the floor is 8 mm above it
        self.phase = "rise"

    def _grasp(self, origin: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        axes, reach, (handle_axis, handle_sign) = self._handle()
        out = handle_sign * axes[handle_axis]
        grip = (reach[(handle_axis, handle_sign)] - self.HANDLE_IN) * out
        grip[2] = hi[2] - self.BELOW_TOP - origin[2]
        return grip, closing_along(axes[1 - handle_axis][:2])

    def _carry(self, eef: np.ndarray, obj: np.ndarray) -> np.ndarray:
        scene = self.scene
        bottom = obj[2] - self.below_origin
        inside_y = self.face - self.OUTSIDE - 0.0345 - (eef[1] - obj[1])  # the origin's y with the hand at its limit
        pos, _, _ = scene.site(self.target)
        slide_z = eef[2] + self.floor + self.LEVEL - bottom  # the hand's height with the bottom just above the floor
        front = np.array([pos[0] + eef[0] - obj[0], self.face - 0.02 - 0.12 + eef[1] - obj[1], slide_z])
        if self.phase == "rise":  # over everything on the way, then in front of the entrance
            carry = self.highest + self.CLEARANCE + eef[2] - bottom
            if eef[2] < carry - 0.02 and np.linalg.norm((eef - front)[:2]) > 0.03:
                return scene.move(np.array([eef[0], eef[1], carry]), 1.0, self.hand)
            self.phase = "front"
        if self.phase == "front":
            if np.linalg.norm(eef - front) > 0.01:
                return scene.move(
                    front if np.linalg.norm((eef - front)[:2]) < 0.03 else np.append(front[:2], eef[2]), 1.0, self.hand
                )
            self.phase = "slide"
        if self.phase == "slide":
            inside = np.array([front[0], inside_y + eef[1] - obj[1], slide_z])
            if np.linalg.norm((eef - inside)[:2]) > 0.008:
                return scene.move(inside, 1.0, self.hand)
            self.phase = "down"
        if self.phase == "down":
            if bottom > self.floor + 0.004:
                return scene.move(eef - np.array([0.0, 0.0, 0.02]), 1.0, self.hand)
            self.phase = "release"
        return self._leave(self.hand)


class BodyPlace(VesselPlaceExpert):
    """Pick an object up by its body from above and set it down on a target object or region
    (the cream cheese into the bowl, the wine bottle on the cabinet): the fingers close across
    the object's narrower side, a little below its top (4 cm below it for tall objects, so the
    palm stays clear; never with the fingertips in the support). Carrying and placing are the
    vessel expert's."""

    STOPPED = None
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
        return np.array([offset[0], offset[1], grip]), closing_along(narrow[:2])


class MokaPlace(BodyPlace):
    """Pick a moka pot up and set it on a target (LIBERO-10's stove tasks). Its body is 8.2 x 6.7
    cm, about as wide one way as the open fingers (8 cm); along the other its handle and spout
    stick out, up to 6.8 cm above the bottom, 1.4 cm wide; its lid knob stands over the middle.
    Two grasps, the hand's underside just above the knob (PALM below the top; the pads hold the
    body's top 1.5 cm): the fingers closing along the handle-spout axis, OFF_CENTRE towards the
    robot so they pass beside the handle and the spout; or, when a fingertip comes down on the
    rim instead (the approach stalls), across that axis, centred."""

    PALM = 0.023  # grip point below the pot's top (m): the hand's underside is 2.4 cm above it
    OFF_CENTRE = 0.02  # m across the handle axis: the fingers (1.7 cm wide) miss the 1.4 cm handle
    ALIGNED = 0.003
    STALL = 20  # approach steps without descending 2 mm, over the grasp point, before the other grasp

    def start(self) -> None:
        self.grasps = 0
        super().start()
        self.best_z, self.stalled = np.inf, 0

    def _grasp(self, origin: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scene = self.scene
        body = scene.body(self.obj)
        frame = scene.data.xmat[body].reshape(3, 3)
        axes = [np.append(frame[:2, c], 0.0) / np.linalg.norm(frame[:2, c]) for c in (0, 1)]
        spans = [scene.extent_along(body, a) for a in axes]
        long = int(np.argmax([high - low for low, high in spans]))  # the handle-spout axis
        across = axes[1 - long]
        low, high = spans[1 - long]
        centre = (0.5 * (low + high) - origin @ across) * across
        if self.grasps % 2 == 0:
            side = across if across[0] < 0 else -across  # towards the robot
            offset, closing = (centre + self.OFF_CENTRE * side)[:2], axes[long]
        else:
            offset, closing = centre[:2], across
        return np.array([offset[0], offset[1], hi[2] - self.PALM - origin[2]]), closing_along(closing[:2])

    def act(self) -> np.ndarray:
        scene = self.scene
        eef, _ = scene.hand()
        grasp = self._grasp_point(scene.origin(self.obj))
        if self.closing == 0 and np.linalg.norm((eef - grasp)[:2]) < 0.01 and eef[2] > grasp[2] + 0.005:
            self.stalled = 0 if eef[2] < self.best_z - 0.002 else self.stalled + 1
            self.best_z = min(self.best_z, eef[2])
            if self.stalled > self.STALL:  # a fingertip sits on the rim: the other grasp
                self.grasps += 1
                obj = scene.origin(self.obj)
                lo, hi = scene.box(scene.body(self.obj))
                self.grasp_offset, self.hand = self._grasp(obj, lo, hi)
                self.best_z, self.stalled = np.inf, 0
        return super().act()


class BookPlace(BodyPlace):
    """Stand a book in a caddy's compartment (LIBERO-10's "place it in the back compartment of
    the caddy"): held from above across its thickness (BodyPlace's grasp), turned about the
    vertical while carried so that its long side lies along the compartment's long side, then
    lowered in upright. The grip is kept in the book's frame, which turns with the hand."""

    SHIFT_LANDING = False  # the compartment fits the book only at its centre

    def start(self) -> None:
        super().start()
        scene = self.scene
        body = scene.body(self.obj)
        frame = scene.data.xmat[body].reshape(3, 3)
        self.grasp_local = frame.T @ self.grasp_offset
        axes = [np.append(frame[:2, c], 0.0) / np.linalg.norm(frame[:2, c]) for c in (0, 1)]
        spans = [np.subtract(*scene.extent_along(body, a)[::-1]) for a in axes]
        book = axes[int(np.argmax(spans))]
        _, rot, half = scene.site(self.target)
        slot = rot[:, int(np.argmax([half[c] if abs(rot[2, c]) < 0.5 else -1.0 for c in range(3)]))]
        turn = np.arctan2(slot[1], slot[0]) - np.arctan2(book[1], book[0])
        turn = (turn + np.pi / 2) % np.pi - np.pi / 2  # the book is symmetric under half a turn
        self.turned_hand = rot_z(turn) @ self.hand

    def _grasp_point(self, obj: np.ndarray) -> np.ndarray:
        frame = self.scene.data.xmat[self.scene.body(self.obj)].reshape(3, 3)
        return obj + frame @ self.grasp_local

    def _carried(self) -> np.ndarray:
        return self.turned_hand


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
        return offset, closing_along(rot[0][:2])  # fingers along the rack: the hand's length clears its front

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
    STOPPED = None
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
