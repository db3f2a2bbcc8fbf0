"""Skills of the scripted LIBERO experts (envs/libero/experts.py) that work the scene's
fixtures: open and close a cabinet's drawer, turn a stove's knob, swing a microwave's door shut,
and push an object further into an enclosure than a hand may reach. State machines over a few
phases, each phase a proportional move re-aimed every step at a target that follows the part
(the handle, the door's arc), with stall detection where the arm may stop short at its reach.
"""

from __future__ import annotations

import mujoco
import numpy as np

from envs.libero.skills import ALIGNED, DOWN, HAND_HALF, HOVER, Scene, closing_along, funnel, nearer_hand, rot_z


class ComeDown:
    """The first two phases of a tilted-hand push (DrawerClose, PushInto): "above" a point, turned,
    or as near as the arm gets (it may stop 0.2-0.4 rad short of a tilted pose that low, so after
    STALL steps there it goes on), then "down" to the point, or as far as the arm goes (it may
    stop a few cm short at the end of its reach: STALL steps without 2 mm of progress)."""

    STALL = 15

    def _come_down(self, eef: np.ndarray, point: np.ndarray, above: np.ndarray, near: float, then: str):
        """The action of the present phase, or None once past "down" (the phase is then `then`)."""
        scene = self.scene
        if self.phase == "above":
            there = np.linalg.norm(eef - above) < near
            self.count = self.count + 1 if there else 0
            if there and (scene.turned(self.hand) < 0.15 or self.count > self.STALL):
                self.phase, self.count, self.best = "down", 0, np.inf
            else:
                return scene.move(above, 1.0, self.hand)
        if self.phase == "down":
            gap = float(np.linalg.norm(eef - point))
            self.count = 0 if gap < self.best - 0.002 else self.count + 1
            self.best = min(self.best, gap)
            if gap < 0.015 or self.count > self.STALL:
                self.phase = then
            else:
                return scene.move(point, 1.0, self.hand)
        return None


class PushInto(ComeDown):
    """Push an object further into an enclosure with the fingertips (LIBERO-10's mug into the
    microwave, second half): the hand, fingers closed, tilted TILT from pointing down towards
    the enclosure (as DrawerClose: its body stays low and outside, only the fingertips go in),
    comes down behind the object, pushes it in until its origin is DEPTH past the region's
    front, backs out and rises (done)."""

    TILT = 0.95
    DEPTH = 0.055  # the mug's origin this far past the region's front: its handle clears the door (m)
    HEIGHT = 0.03  # push this far above the floor (m)
    BEHIND = 0.03  # come down this far behind the object's back (m)

    def __init__(self, env, obj: str, region: str) -> None:
        self.env, self.obj, self.region = env, obj, region
        self.predicate = ["in", obj, region]

    def start(self) -> None:
        scene = self.scene = Scene(self.env)
        pos, rot, half = scene.site(self.region)
        extent = np.abs(rot) @ half
        self.goal_y = pos[1] - extent[1] + self.DEPTH
        self.floor = pos[2] - extent[2] + 0.008
        z = np.array([0.0, 0.0, 1.0])
        push = np.array([0.0, 1.0, 0.0])  # into the enclosure (the microwave opens to -y)
        closing = np.cross(push, z)
        approach = push * np.sin(self.TILT) - z * np.cos(self.TILT)
        self.hand = nearer_hand(scene, closing, approach)
        self.phase, self.count, self.best = "above", 0, np.inf
        # The hand's 20.8 cm long side goes in level with the opening: the x range left free by
        # the enclosure's parts standing in front of its face at the hand's height (the side
        # frames, the microwave's control panel).
        face, mug_x = pos[1] - extent[1], scene.origin(self.obj)[0]
        left, right = -np.inf, np.inf
        root = scene.body(self.region.split("_heating")[0].split("_contain")[0])
        for g in scene.subtree_geoms(root):
            corners = scene.corners(g)
            glo, ghi = corners.min(0), corners.max(0)
            if glo[1] < face - 0.01 and ghi[2] > self.floor + 0.01 and glo[2] < self.floor + 0.1:
                if ghi[0] <= mug_x:
                    left = max(left, ghi[0])
                elif glo[0] >= mug_x:
                    right = min(right, glo[0])
        half = HAND_HALF[1] - 0.006  # the hand's half length along its closing axis, less the fingers' end play
        low, high = left + half + 0.005, right - half - 0.005
        self.push_x = float(np.clip(mug_x, low, high)) if low <= high else 0.5 * (left + right)

    def done(self) -> bool:
        return self.phase == "done"

    def act(self) -> np.ndarray:
        scene = self.scene
        eef, _ = scene.hand()
        obj = scene.origin(self.obj)
        lo, _ = scene.box(scene.body(self.obj))
        behind = np.array([self.push_x, lo[1] - self.BEHIND, self.floor + self.HEIGHT])
        action = self._come_down(eef, behind, behind + np.array([0.0, 0.0, 0.08]), near=0.03, then="push")
        if action is not None:
            return action
        if self.phase == "push":
            if obj[1] < self.goal_y:
                return scene.move(
                    np.array([self.push_x, eef[1] + self.goal_y - obj[1] + 0.01, behind[2]]), 1.0, self.hand
                )
            self.phase, self.left_at = "back", eef
        if self.phase == "back":
            back = self.left_at + np.array([0.0, -0.08, 0.08])
            if np.linalg.norm(eef - back) < 0.02:
                self.phase = "done"
            return scene.move(back, 1.0, self.hand)
        return scene.move(eef, 1.0, self.hand)


class DoorClose:
    """Swing a hinged door shut (LIBERO's "Close" of the microwave: only at its end stop). The
    hand points down, fingers closed, its long side along the door; it comes down beside the
    door's outer face REACH from the hinge and then steers to the point of the door's arc LEAD
    ahead, again at every step, until LIBERO calls the door closed; then it rises (done)."""

    REACH = 0.16  # m from the hinge
    LEAD = 0.35  # rad ahead on the arc
    OUT = 0.012  # the fingers' half thickness plus a margin (m)
    STALL = 15

    def __init__(self, env, fixture: str) -> None:
        self.env, self.fixture = env, fixture
        self.predicate = ["close", fixture]

    def start(self) -> None:
        scene = self.scene = Scene(self.env)
        self.joint = next(
            mujoco.mj_id2name(scene.model, mujoco.mjtObj.mjOBJ_JOINT, j)
            for j in range(scene.model.njnt)
            if (mujoco.mj_id2name(scene.model, mujoco.mjtObj.mjOBJ_JOINT, j) or "").startswith(self.fixture)
        )
        q, _, hinge = scene.joint(self.joint)
        lo, hi = scene.box(scene.body(self.fixture))
        self.height, self.top = 0.5 * (lo[2] + hi[2]), float(hi[2])
        # The door panel's thickness: its box geoms' reach off the hinge line on the outer side
        # (the handle's capsules stand farther out, at the door's far end).
        m = scene.model
        door = m.jnt_bodyid[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, self.joint)]
        outward = np.array([np.sin(q), -np.cos(q), 0.0])
        boxes = [g for g in scene.geoms(door) if m.geom_type[g] == mujoco.mjtGeom.mjGEOM_BOX]
        reach = [float(np.max(scene.corners(g) @ outward)) for g in boxes]
        self.thickness = max(0.0, max(reach) - hinge @ outward)
        self.phase, self.count = "above", 0

    def done(self) -> bool:
        return self.phase == "done"

    def _point(self, q: float, hinge: np.ndarray) -> np.ndarray:
        along, outward = np.array([np.cos(q), np.sin(q), 0.0]), np.array([np.sin(q), -np.cos(q), 0.0])
        return np.append((hinge + self.REACH * along + (self.thickness + self.OUT) * outward)[:2], self.height)

    def act(self) -> np.ndarray:
        scene = self.scene
        eef, _ = scene.hand()
        q, _, hinge = scene.joint(self.joint)
        hand = closing_along(np.array([np.cos(q), np.sin(q)]))
        point = self._point(q, hinge)
        if self.phase == "above":
            above = np.append(point[:2], self.top + 0.045)  # the fingertips 3 cm over the door's top
            if np.linalg.norm(eef - above) < 0.02:
                self.phase = "down"
            else:  # up first, then across: the hand comes from the enclosure's front, below the door's top
                return scene.move(above if eef[2] > above[2] - 0.02 else np.append(eef[:2], above[2]), 1.0, hand)
        if self.phase == "down":
            self.count += 1
            if np.linalg.norm(eef - point) < 0.015 or self.count > 3 * self.STALL:
                self.phase = "swing"
            else:
                return scene.move(point, 1.0, hand)
        if self.phase == "swing":
            if not scene.holds(self.predicate):
                return scene.move(self._point(q + self.LEAD, hinge), 1.0, hand)
            self.phase, self.count = "rise", 0
        if self.phase == "rise":
            up = np.append(eef[:2], self.height + 0.15)
            if eef[2] > up[2] - 0.02:
                self.phase = "done"
            return scene.move(up, 1.0, hand)
        return scene.move(eef, 1.0, hand)


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

    def __init__(self, env, region: str, stop: float | None = None) -> None:
        """Open the drawer of `region` until its slide reaches `stop` (OPEN_BEYOND unless given:
        a drawer that only has to take a bowl standing beside it is opened less). Short of the end
        stop the pull slows as the slide nears `stop` (the target leads the handle by what is
        left, at least 1 cm), so the drawer comes to rest within 2 cm of it, not at -0.16."""
        if not region.endswith("_region"):
            raise ValueError(f"DrawerOpen opens a drawer named by its region, got {region!r}")
        self.env, self.region = env, region
        self.stop = self.OPEN_BEYOND if stop is None else stop
        if not -0.16 < self.stop < 0.0:
            raise ValueError(f"DrawerOpen: stop {self.stop} is outside the drawer's travel (-0.16, 0)")
        self.predicate = ["open", region]
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
        self.hand = nearer_hand(scene, z, approach)  # fingers closing along z
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
            if qpos > self.stop:
                if self.stop == self.OPEN_BEYOND:  # to the end stop: as fast as the hand goes
                    return scene.move(handle + self.LEAD * pull, 1.0, self.hand)
                lead = float(np.clip(qpos - self.stop, 0.01, self.LEAD))  # slower as the slide nears stop
                return scene.move(handle + lead * pull, 1.0, self.hand)
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


class DrawerClose(ComeDown):
    """Push a cabinet's drawer shut (LIBERO's "Close" of a `<cabinet>_<level>_region`: only at its
    end stop). The hand, fingers closed, is tilted TILT from pointing down towards the cabinet,
    its closing axis level and across the pull, so the fingertips reach the bottom drawer's
    handle (4 cm above the table) with the wrist and the hand's long side clear of the table and
    of the drawer above. It comes down in front of the handle, pushes a point behind the handle
    (the target follows the drawer) until LIBERO calls it closed, then backs off and rises."""

    TILT = 0.95  # radians from pointing down
    STANDOFF = 0.08  # the fingertips come down this far in front of the handle (m)
    ABOVE = 0.08  # and from this far above that point (m)
    PUSH = 0.05  # the target leads the handle by this into the cabinet (m)

    def __init__(self, env, region: str) -> None:
        if not region.endswith("_region"):
            raise ValueError(f"DrawerClose closes a drawer named by its region, got {region!r}")
        self.env, self.region = env, region
        self.predicate = ["close", region]
        fixture, level = region[: -len("_region")].rsplit("_", 1)
        self.joint, self.drawer = f"{fixture}_{level}_level", f"{fixture}_cabinet_{level}"

    def start(self) -> None:
        scene = self.scene = Scene(self.env)
        _, axis, _ = scene.joint(self.joint)
        self.pull = -axis / np.linalg.norm(axis)
        z = np.array([0.0, 0.0, 1.0])
        closing = np.cross(self.pull, z)
        closing /= np.linalg.norm(closing)
        approach = -self.pull * np.sin(self.TILT) - z * np.cos(self.TILT)
        self.hand = nearer_hand(scene, closing, approach)
        body = scene.body(self.drawer)
        self.handle_geom = max(scene.geoms(body), key=lambda g: float(scene.data.geom_xpos[g] @ self.pull))
        self.phase, self.left_at, self.count = "above", None, 0

    def done(self) -> bool:
        return self.phase == "done"

    def act(self) -> np.ndarray:
        scene = self.scene
        eef, _ = scene.hand()
        handle = scene.data.geom_xpos[self.handle_geom].copy()
        front = handle + self.STANDOFF * self.pull
        action = self._come_down(eef, front, front + np.array([0.0, 0.0, self.ABOVE]), near=0.04, then="push")
        if action is not None:
            return action
        if self.phase == "push":
            if not scene.holds(["close", self.region]):
                return scene.move(handle - self.PUSH * self.pull, 1.0, self.hand)
            self.phase, self.left_at = "back", eef
        if self.phase == "back":
            back = self.left_at + self.STANDOFF * self.pull + np.array([0.0, 0.0, self.ABOVE])
            if np.linalg.norm(eef - back) < 0.02:
                self.phase = "done"
            return scene.move(back, 1.0, self.hand)
        return scene.move(eef, 1.0, self.hand)


class KnobTurn:
    """Turn a stove's knob on (LIBERO's "TurnOn"): fingers open around the knob's grip ridge, the
    hand pointing down, close on the ridge, then turn the hand about the vertical until the
    hinge passes LIBERO's on threshold, let go and rise."""

    RIDGE = np.array([-0.012, 0.0, 0.026])  # grip point in the knob body's frame (the ridge is 1.7 cm to -x)
    TURN = 0.8  # hand yaw (rad) asked for while turning
    SQUEEZE = 10

    def __init__(self, env, fixture: str) -> None:
        self.env, self.fixture = env, fixture
        self.predicate = ["turnon", fixture]
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
                return scene.move(funnel(self.ridge, eef), -1.0)
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
