"""What every LIBERO expert reads and how it moves: privileged reads of a built scene (object
origins, collision boxes, sites, the hand) and the proportional controller behind the 7-D
delta action. The experts (envs/libero/experts.py) are state-feedback laws written on top.

Simulator facts (hf-libero 0.1.4, measured in ../shared/docs/libero-experts-scope.md): OSC_POSE
delta actions, 1 = 5 cm / 0.5 rad per 20 Hz step, but the hand moves about a quarter of that
and sags sideways, so moves are proportional and re-aimed every step; gripper -1 opens and +1
closes (about 10 steps); with the hand pointing down (DOWN) the fingers close along world y.
Objects are measured by their collision geometry: their visual meshes are up to 40% wider (the
akita bowl is 11.4 cm wide in collision, 15.7 cm visually), and only collision touches count.
"""

from __future__ import annotations

import mujoco
import numpy as np

from envs.rotations import mat_to_rotvec

POS_UNIT = 0.05  # metres per unit translation action (OSC_POSE delta)
ROT_UNIT = 0.5  # radians per unit rotation action
GAIN = 0.6  # fraction of the remaining error asked per step (the controller lags behind)
HAND_RESPONSE = 0.25  # the hand moves about this fraction of the commanded translation per step
DOWN = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])  # hand pointing down, fingers along y
OPEN_GAP = 0.075  # finger gap (m) when fully open (about 2 x 0.039)
ALIGNED = 0.005  # horizontal misalignment that counts as lined up (m)
HOVER = 0.08  # approach height above the grasp point when far off (m)
FUNNEL = 2.5  # approach height per metre of horizontal misalignment
HELD_GAP = 0.008  # a gap above this once the fingers stopped closing means something is held
HAND_HALF = (0.025, 0.11)  # half footprint of the hand (m), pointing down: narrow in x, wide in y


# A step moves the hand less than STILL_HAND, turns it less than STILL_TURN (its axis-angle
# changes less) and each finger less than STILL_FINGERS: to the policy, which sees the
# proprioceptive state and not the expert's counters, nothing happened.
STILL_HAND, STILL_TURN, STILL_FINGERS = 0.001, 0.005, 0.0001
# The longest unseen wait an expert may show: from every still step of it, the flip falls inside
# the 4 actions the presets execute of each chunk.
UNSEEN_WAIT_MAX = 3


def unseen_wait(states: np.ndarray, actions: np.ndarray) -> int:
    """The longest wait a policy cannot see: over every flip of the gripper command (actions'
    last column, the sign), how many steps before it the state (LIBERO's proprio: hand position,
    axis-angle, two finger joints; `states[t]` observed before `actions[t]`) had stood still.
    A wait of n means n + 1 alike observations, n of them labelled with the old command and one
    with the new: a timer the policy cannot read, so it learns the old command and stays."""
    states, actions = np.asarray(states, dtype=float), np.asarray(actions, dtype=float)
    if len(states) != len(actions):
        raise ValueError(f"unseen_wait: {len(states)} states for {len(actions)} actions")
    still = np.zeros(len(states), dtype=bool)  # still[t]: observation t alike to observation t - 1
    if len(states) > 1:
        hand = np.linalg.norm(np.diff(states[:, :3], axis=0), axis=1) < STILL_HAND
        hand &= np.linalg.norm(np.diff(states[:, 3:6], axis=0), axis=1) < STILL_TURN
        fingers = np.abs(np.diff(states[:, 6:8], axis=0)).max(axis=1) < STILL_FINGERS
        still[1:] = hand & fingers
    grip = np.sign(actions[:, -1])
    longest = 0
    for t in np.nonzero(grip[1:] != grip[:-1])[0] + 1:
        n = 0
        while t - n > 0 and still[t - n]:
            n += 1
        longest = max(longest, n)
    return longest


_SIGNS = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float)


def rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


class Scene:
    """Privileged reads of one built LIBERO scene. Build it after every reset: LIBERO rebuilds
    the simulator (and renumbers nothing, but replaces the model and data objects) on reset."""

    def __init__(self, env) -> None:
        self.env = env
        self.sim = env.sim
        self.model, self.data = self.sim.sim.model._model, self.sim.sim.data._data

    # ---------------------------------------------------------------------- the hand
    def hand(self) -> tuple[np.ndarray, float]:
        """Grip-site position (m) and finger gap (m)."""
        obs = self.sim._get_observations()
        return obs["robot0_eef_pos"].copy(), float(obs["robot0_gripper_qpos"][0] - obs["robot0_gripper_qpos"][1])

    def move(self, target: np.ndarray, grip: float, orientation: np.ndarray = DOWN) -> np.ndarray:
        """The action that steers the grip site towards `target` and the hand towards
        `orientation` (a world rotation matrix), with the gripper command `grip`."""
        eef, _ = self.hand()
        delta = np.clip((target - eef) / POS_UNIT * GAIN / HAND_RESPONSE, -1, 1)
        current = self.sim.robots[0].controller.ee_ori_mat
        rot = np.clip(mat_to_rotvec(orientation @ current.T) / ROT_UNIT * 0.5, -1, 1)
        return np.concatenate([delta, rot, [grip]])

    def turned(self, orientation: np.ndarray) -> float:
        """Angle (rad) between the hand and `orientation`."""
        return float(np.linalg.norm(mat_to_rotvec(orientation @ self.sim.robots[0].controller.ee_ori_mat.T)))

    # ---------------------------------------------------------------------- objects and sites
    def body(self, name: str) -> int:
        """Body id of a LIBERO object (its `<name>_main` body) or of any named body."""
        ids = self.sim.obj_body_id
        if name in ids:
            return ids[name]
        found = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, name)
        if found < 0:
            raise KeyError(f"no object or body named {name!r} in {self.env.suite}/{self.env.task}")
        return found

    def origin(self, name: str) -> np.ndarray:
        return self.data.xpos[self.body(name)].copy()

    def site(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A site's world position, rotation matrix and half size."""
        sid = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, name)
        if sid < 0:
            raise KeyError(f"no site named {name!r} in {self.env.suite}/{self.env.task}")
        return (
            self.data.site_xpos[sid].copy(),
            self.data.site_xmat[sid].reshape(3, 3).copy(),
            self.model.site_size[sid].copy(),
        )

    def box(self, body: int, collision: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """World axis-aligned bounding box of a body's subtree: its collision geoms (default)
        or its visual ones (geom group 1)."""
        m = self.model
        lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
        for g in self.subtree_geoms(body, collision):
            w = self.corners(g)
            lo, hi = np.minimum(lo, w.min(0)), np.maximum(hi, w.max(0))
        if not np.isfinite(lo).all():
            kind = "collision" if collision else "visual"
            raise ValueError(f"body {mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_BODY, body)!r} has no {kind} geoms")
        return lo, hi

    def subtree_geoms(self, body: int, collision: bool = True) -> list[int]:
        """The geoms of a body and its descendants: collision ones (default) or visual ones (group 1)."""
        m = self.model
        out = []
        for g in range(m.ngeom):
            b = m.geom_bodyid[g]
            while b not in (0, body):
                b = m.body_parentid[b]
            if b != body:
                continue
            if bool(m.geom_contype[g] or m.geom_conaffinity[g]) if collision else m.geom_group[g] == 1:
                out.append(g)
        return out

    def corners(self, geom: int) -> np.ndarray:
        """The 8 world corners (8, 3) of a geom's bounding box, in its own frame."""
        m, d = self.model, self.data
        return (_SIGNS * m.geom_aabb[geom][3:] + m.geom_aabb[geom][:3]) @ d.geom_xmat[geom].reshape(
            3, 3
        ).T + d.geom_xpos[geom]

    def extent_along(self, body: int, direction: np.ndarray) -> tuple[float, float]:
        """Least and greatest projection of a body subtree's collision boxes on a world direction."""
        m = self.model
        values = [self.corners(g) @ direction for g in self.subtree_geoms(body)]
        if not values:
            raise ValueError(f"body {mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_BODY, body)!r} has no collision geoms")
        values = np.concatenate(values)
        return float(values.min()), float(values.max())

    def highest_along(self, start: np.ndarray, end: np.ndarray, radius: float, skip: tuple[str, ...] = ()) -> float:
        """Top (m) of the highest object or fixture whose collision box comes within `radius` of
        the straight xy path from `start` to `end`; -inf when nothing does."""
        names = [*self.sim.objects_dict, *getattr(self.sim, "fixtures_dict", {})]
        path = np.linspace(start[:2], end[:2], 25)
        top = -np.inf
        for name in names:
            if name in skip:
                continue
            try:
                lo, hi = self.box(self.body(name))
            except ValueError:  # a fixture without collision geometry of its own
                continue
            outside = np.maximum(0.0, np.maximum(lo[:2] - path, path - hi[:2]))
            if np.min(np.linalg.norm(outside, axis=1)) < radius:
                top = max(top, float(hi[2]))
        return top

    def clearance(self, points: np.ndarray, skip: tuple[str, ...] = ()) -> float:
        """Distance (m, to within the boxes' corners) from `points` (N, 3) to the nearest
        collision geom of any object or fixture but those in `skip`."""
        m, d = self.model, self.data
        roots = {
            self.body(n) for n in (*self.sim.objects_dict, *getattr(self.sim, "fixtures_dict", {})) if n not in skip
        }
        best = np.inf
        for g in range(m.ngeom):
            if not (m.geom_contype[g] or m.geom_conaffinity[g]):
                continue
            b = m.geom_bodyid[g]
            while b not in roots and b != 0:
                b = m.body_parentid[b]
            if b == 0:
                continue
            local = (points - d.geom_xpos[g]) @ d.geom_xmat[g].reshape(3, 3) - m.geom_aabb[g][:3]
            outside = np.maximum(0.0, np.abs(local) - m.geom_aabb[g][3:])
            best = min(best, float(np.min(np.linalg.norm(outside, axis=1))))
        return best

    def joint(self, name: str) -> tuple[float, np.ndarray, np.ndarray]:
        """A hinge or slide joint's position, its world axis and its world anchor."""
        jid = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_JOINT, name)
        if jid < 0:
            raise KeyError(f"no joint named {name!r} in {self.env.suite}/{self.env.task}")
        qpos = float(self.data.qpos[self.model.jnt_qposadr[jid]])
        return qpos, self.data.xaxis[jid].copy(), self.data.xanchor[jid].copy()

    def geoms(self, body: int) -> list[int]:
        """The collision geoms of one body (not its children)."""
        m = self.model
        return [g for g in range(m.ngeom) if m.geom_bodyid[g] == body and (m.geom_contype[g] or m.geom_conaffinity[g])]

    def holds(self, predicate: list[str]) -> bool:
        """Whether one goal predicate (as in `goal()`) holds now, by LIBERO's own check."""
        return bool(self.sim._eval_predicate(predicate))

    def goal(self) -> list[list[str]]:
        """The task's goal predicates as LIBERO parsed them, e.g. [["on", "akita_black_bowl_1", "plate_1"]]."""
        return [list(p) for p in self.sim.parsed_problem["goal_state"]]


def closing_along(direction: np.ndarray) -> np.ndarray:
    """The hand pointing down with its fingers closing along the horizontal `direction` (DOWN
    closes along y; the hand is symmetric under half a turn, so its yaw stays in (-90, 90] degrees)."""
    yaw = np.arctan2(direction[1], direction[0]) - np.pi / 2
    return rot_z(np.pi / 2 - (np.pi / 2 - yaw) % np.pi) @ DOWN


def funnel(
    target: np.ndarray, eef: np.ndarray, hover: float = HOVER, slope: float = FUNNEL, aligned: float = ALIGNED
) -> np.ndarray:
    off = np.linalg.norm((eef - target)[:2])
    return target + np.array([0.0, 0.0, min(hover, slope * max(0.0, off - aligned))])


def nearer_hand(scene: Scene, closing: np.ndarray, approach: np.ndarray) -> np.ndarray:
    """The hand orientation (columns: closing axis, across, approach) with its fingers closing
    along `closing` and pointing along `approach`, of the two such hands (the hand is symmetric
    under half a turn about its approach axis) the one nearer the hand's present orientation:
    the other winds the wrist towards its joint limits."""
    hands = [np.column_stack([s * closing, s * np.cross(approach, closing), approach]) for s in (1.0, -1.0)]
    return min(hands, key=scene.turned)


class LetGo:
    """What a placing skill does once its predicate holds and a later skill follows: open the
    fingers where the hand is, rise RISE straight up (clear of the container or support, which
    a hand moving sideways at once would drag along), then report `done()`."""

    LET_GO = 6  # steps the fingers open before the hand moves
    RISE = 0.10  # metres

    STALL = 15  # steps without rising 2 mm after which the hand is as clear as it gets

    def _start_leaving(self) -> None:
        self.leaving, self.left_at = 0, None

    def _leave(self, orientation: np.ndarray) -> np.ndarray:
        eef, _ = self.scene.hand()
        if self.left_at is None:
            self.left_at, self.highest_z, self.stalled = eef, eef[2], 0
        self.leaving += 1
        up = self.left_at + np.array([0.0, 0.0, 0.0 if self.leaving <= self.LET_GO else self.RISE])
        if self.leaving > self.LET_GO:
            self.stalled = 0 if eef[2] > self.highest_z + 0.002 else self.stalled + 1
            self.highest_z = max(self.highest_z, eef[2])
            if np.linalg.norm(eef - up) < 0.02 or self.stalled > self.STALL:
                self.leaving = -1  # done
        return self.scene.move(up, -1.0, orientation)

    def leaving_now(self) -> bool:
        return self.left_at is not None and self.leaving >= 0

    def done(self) -> bool:
        return self.left_at is not None and self.leaving < 0
