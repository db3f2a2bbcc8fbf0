"""Scripted LIBERO experts, one per suite (EXPERTS): LIBERO-Object's "pick up the X and place
it in the basket", LIBERO-Spatial's "pick up the black bowl ... and place it on the plate", and
LIBERO-Goal's and LIBERO-10's tasks, each predicate of a goal turned into a skill, run in order
(TaskPlanExpert). The skills live in envs/libero/pick_place.py (grasps, carries, placements)
and envs/libero/fixtures.py (drawers, knob, door, a push into an enclosure).

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

import numpy as np

from envs.libero.fixtures import DoorClose, DrawerClose, DrawerOpen, KnobTurn, PushInto
from envs.libero.pick_place import (
    BasketPlace,
    BodyPlace,
    BookPlace,
    BottleRack,
    HandleToEntrance,
    LiberoObjectExpert,
    MokaPlace,
    MugPlace,
    PlateDrag,
    VesselPlaceExpert,
)
from envs.libero.skills import UNSEEN_WAIT_MAX, Scene, unseen_wait

VESSELS = ("bowl", "cup")  # objects held by the rim (VesselPlaceExpert)
MUGS = ("mug",)  # held by the rim away from the handle (MugPlace)
BODY_GRASPED = (
    "cream_cheese",
    "wine_bottle",
    "moka_pot",
    "chocolate_pudding",
)  # held by the body from above (BodyPlace)


class SpatialExpert(VesselPlaceExpert):
    """LIBERO-Spatial's "pick up the black bowl ... and place it on the plate": the rim grasp,
    always from the wall facing the robot. Where that side lacks room (the bowl in the open top
    drawer, the drawer's walls 1 cm from it and 5 mm over its rim) the hand stops on a wall and
    closes there (`STOPPED`); the side with the most room instead pushed the drawer shut under
    the finger: 31 of 50 official states against 45 of 50 (docs/libero.md)."""

    SIDE_BY_ROOM = False
    # Close after 3 still steps, not 13: a policy cannot see how long the hand has stood there
    # (its state holds no timer), and 13 alike observations labelled "go down, open" before one
    # "close" teach it to stay open (`skills.unseen_wait`; the expert: 48 of 50 official states
    # against 45 of 50, docs/libero.md#libero-spatial-the-rim-grasp).
    STOPPED = 2


class TaskPlanExpert:
    """An expert for a task whose goal is a list of predicates (LIBERO-Goal, LIBERO-10): one
    skill per predicate, in order, each started when the previous one is done (a skill reads
    the scene when it starts, so it sees what the ones before it moved)."""

    # A drawer opened for a bowl standing beside the cabinet (LIBERO-Goal's top drawer) is pulled
    # to -0.105 and comes to rest at -0.11 to -0.125: fully open (-0.16) it overhangs the bowl
    # lower than the top of the hand gripping the bowl's wall, and the bowl went in with it at
    # -0.116 but not at -0.106 (docs/libero.md#the-drawer-and-bowl-expert-2026-12-07-eleventh).
    VESSEL_DRAWER_STOP = -0.105

    def __init__(self, env) -> None:
        self.env = env

    def plan(self, scene: Scene) -> list:
        """One skill per goal predicate in the goal's order, closing last (LIBERO-10 lists "close
        the drawer" before "put the bowl in it")."""
        skills = []
        goal = sorted(scene.goal(), key=lambda p: p[0] == "close")
        for predicate in goal:
            kind, *args = predicate
            if kind == "open" and args[0].endswith("_region"):
                skills.append(DrawerOpen(self.env, args[0]))
            elif kind == "turnon":
                skills.append(KnobTurn(self.env, args[0]))
            elif kind == "in" and "cabinet" in args[1] and any(v in args[0] for v in VESSELS):
                opened = not scene.holds(["open", args[1]])
                if opened:
                    skills.append(DrawerOpen(self.env, args[1], stop=self.VESSEL_DRAWER_STOP))
                # Over the drawer it opened, the hand goes up and across: the straight line down to
                # the bowl pushed the drawer 4-6 cm back in, too narrow for the bowl in 5 of 50.
                skills.append(
                    VesselPlaceExpert(self.env, args[0], args[1], into=True, overhang=True, clear_approach=opened)
                )
            elif kind == "in" and "basket" in args[1]:
                skills.append(BasketPlace(self.env, args[0], args[1]))
            elif kind == "close" and args[0].endswith("_region"):
                skills.append(DrawerClose(self.env, args[0]))
            elif kind == "on" and any(v in args[0] for v in VESSELS):
                skills.append(VesselPlaceExpert(self.env, args[0], args[1]))
            elif kind == "on" and any(v in args[0] for v in MUGS):
                skills.append(MugPlace(self.env, args[0], args[1]))
            elif kind == "on" and args[0].startswith("plate"):
                skills.append(PlateDrag(self.env, args[0], args[1]))
            elif kind == "on" and "bottle" in args[0] and "rack" in args[1]:
                skills.append(BottleRack(self.env, args[0], args[1]))
            elif kind == "in" and "microwave" in args[1] and any(v in args[0] for v in MUGS):
                skills.append(HandleToEntrance(self.env, args[0], args[1], into=True))
                skills.append(PushInto(self.env, args[0], args[1]))
            elif kind == "close" and "microwave" in args[0]:
                skills.append(DoorClose(self.env, args[0]))
            elif kind == "in" and "book" in args[0]:
                skills.append(BookPlace(self.env, args[0], args[1], into=True))
            elif kind == "on" and args[0].startswith("moka_pot"):
                shared = [p[1] for p in goal if p[0] == "on" and p[2] == args[1]]
                share = 0.0 if len(shared) == 1 else (1.0 if shared.index(args[0]) == 0 else -1.0)
                if len(shared) > 2:
                    raise ValueError(f"{self.env.task}: no scripted skill for three objects on {args[1]}")
                skills.append(MokaPlace(self.env, args[0], args[1], share=share))
            elif kind == "on" and args[0].startswith(BODY_GRASPED):
                skills.append(BodyPlace(self.env, args[0], args[1]))
            else:
                raise ValueError(f"{self.env.task}: no scripted skill for the goal predicate {predicate}")
        return skills

    def start(self) -> None:
        self.scene = Scene(self.env)
        self.skills = self.plan(self.scene)
        self.current = -1
        self._next()

    def _next(self) -> None:
        """Start the next skill, passing over those whose predicate already holds (LIBERO-10's
        stove starts on) but for the last."""
        self.current += 1
        while self.current < len(self.skills) - 1 and self.scene.holds(self.skills[self.current].predicate):
            self.current += 1
        self.skills[self.current].start()

    def act(self) -> np.ndarray:
        if self.current < len(self.skills) - 1 and self.skills[self.current].done():
            self._next()
        return self.skills[self.current].act()


EXPERTS = {
    "libero_object": LiberoObjectExpert,
    "libero_spatial": SpatialExpert,
    "libero_goal": TaskPlanExpert,
    "libero_10": TaskPlanExpert,
    # For LIBERO-90's tasks whose goal predicates the skills above cover (those in LIBERO-10's
    # scenes are extra demonstrations for LIBERO-10; which succeed: docs/libero.md). A task with
    # a predicate no skill covers raises at `start()`, naming the predicate.
    "libero_90": TaskPlanExpert,
}


def expert_for(suite: str, env):
    """The scripted expert of `suite` for `env` (call its `start()` after every reset)."""
    if suite not in EXPERTS:
        raise ValueError(f"no scripted expert for LIBERO suite {suite!r}; experts exist for {sorted(EXPERTS)}")
    return EXPERTS[suite](env)


def _expert_episode(job: tuple[str, str, int, float | None]) -> tuple[str, int, bool, int, int]:
    """Run the expert without cameras from official initial state `index` (widen None) or from
    a fresh placement drawn with seed `index`, its regions widened by `widen` metres: (task,
    index, success, steps, the longest wait a policy cannot see, `skills.unseen_wait`).

    An official state sets the objects but not the fixtures, which LIBERO places anew at every
    reset from numpy's global generator (a cabinet 1 cm and 2 degrees apart between two resets):
    the reset is seeded as `vla-eval` seeds that state's test episode, so the expert meets the
    scenes the policy is measured on, and a rerun gives the same outcome."""
    from envs.evaluate import EvalConfig, episode_seed
    from envs.libero.env import LiberoEnv

    suite, task, index, widen = job
    env = LiberoEnv(suite, task, cameras=False, placement_widen=widen or 0.0)
    expert = expert_for(suite, env)
    try:
        if widen is None:
            obs, _ = env.reset(seed=episode_seed(EvalConfig(), index), options={"init_state": index})
        else:
            obs, _ = env.reset(seed=index)
        expert.start()
        states, actions, terminated = [], [], False
        for _ in range(env.max_episode_steps):
            states.append(obs["state"])
            actions.append(expert.act())
            obs, _, terminated, truncated, _ = env.step(actions[-1])
            if terminated or truncated:
                break
        return task, index, bool(terminated), len(actions), unseen_wait(np.array(states), np.array(actions))
    finally:
        env.close()


def _expert_episode_or_reason(job):
    """`_expert_episode`, or for a task the skills do not cover (the plan raises at the start),
    a failed episode of 0 steps and the reason, so one such task does not end a measurement."""
    try:
        return (*_expert_episode(job), "")
    except ValueError as e:
        if "no scripted skill" not in str(e):
            raise
        return job[1], job[2], False, 0, 0, str(e).split(": ", 1)[-1]


def print_recorded_waits(cache_path: str) -> None:
    """Per task of a LIBERO training cache (data/cache.py's zarr layout, read here directly:
    envs comes before data): how many demonstrations flip the gripper after a wait the policy
    cannot see (`skills.unseen_wait`), their median and the longest."""
    from pathlib import Path

    import zarr

    if not (Path(cache_path) / "zarr.json").is_file():
        raise FileNotFoundError(f"{cache_path}: no training cache there (a .zarr folder that vla-train builds)")
    root = zarr.open_group(cache_path, mode="r")
    state, action = root["state"][:], root["action"][:]
    if state.shape[1] != 8:
        raise ValueError(f"{cache_path}: unseen waits read LIBERO's 8-D state, this cache's is {state.shape[1]}-D")
    ends, tasks = root["episode_ends"][:], list(root.attrs["tasks"])
    starts = np.concatenate([[0], ends[:-1]])
    waits = [[] for _ in tasks]
    for start, end, task in zip(starts, ends, root["task_index"][:], strict=True):
        waits[task].append(unseen_wait(state[start:end], action[start:end]))
    width = max(len(t) for t in tasks) + 2
    print(f"unseen waits in {cache_path} (steps standing still before a gripper flip)")
    print(f"{'task':<{width}}{'episodes':>9}{'median':>8}{'longest':>9}{f'over {UNSEEN_WAIT_MAX}':>8}")
    for task, w in zip(tasks, waits, strict=True):
        if not w:
            print(f"{task:<{width}}{0:>9}")
            continue
        w = np.array(w)
        print(f"{task:<{width}}{len(w):>9}{np.median(w):>8.0f}{w.max():>9}{int((w > UNSEEN_WAIT_MAX).sum()):>8}")


def main() -> None:
    """`python -m envs.libero.experts`: the expert's success from the official initial states
    (or, with --widen, from fresh placements in regions widened by that many metres), per task."""
    import argparse
    import multiprocessing as mp
    import time
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    from envs.libero.env import scene_of, suite_tasks

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--suite", default="libero_object")
    parser.add_argument("--states", type=int, default=50, help="official initial states 0..N-1 per task")
    parser.add_argument("--tasks", default="", help="task indices in the suite, comma-separated (default: all)")
    parser.add_argument(
        "--scenes-of", default="", help="only the tasks set in the scenes of this suite's tasks (e.g. libero_10)"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--widen", type=float, default=None, help="fresh placements (seeds 0..N-1), regions widened by this (m)"
    )
    parser.add_argument(
        "--recording",
        default="",
        help="instead of running the expert: the unseen waits in a recording's training cache (zarr), per task",
    )
    args = parser.parse_args()
    if args.recording:
        print_recorded_waits(args.recording)
        return
    tasks = suite_tasks(args.suite)
    if args.tasks:
        picked = [int(i) for i in args.tasks.split(",") if i.strip().lstrip("-").isdigit()]
        if len(picked) != len(args.tasks.split(",")) or not all(0 <= i < len(tasks) for i in picked):
            parser.error(
                f"--tasks {args.tasks!r}: give task indices 0-{len(tasks) - 1} of {args.suite}, comma-separated"
            )
        tasks = [tasks[i] for i in picked]
    if args.scenes_of:
        scenes = {scene_of(t) for t in suite_tasks(args.scenes_of)} - {None}
        tasks = [t for t in tasks if scene_of(t) in scenes]
        if not tasks:
            parser.error(f"--scenes-of {args.scenes_of}: no {args.suite} task is set in its scenes")
    jobs = [(args.suite, t, i, args.widen) for t in tasks for i in range(args.states)]
    t0 = time.time()
    with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn")) as pool:
        results = list(tqdm(pool.map(_expert_episode_or_reason, jobs), total=len(jobs), desc="expert episodes"))
    starts = (
        f"official initial states 0..{args.states - 1} (seeded as vla-eval's test episodes)"
        if args.widen is None
        else f"fresh placements (seeds 0..{args.states - 1}) widened by {args.widen} m"
    )
    print(f"scripted expert, {args.suite}, {starts}, {time.time() - t0:.0f} s")
    width = max(len(t) for t in tasks) + 2
    # "unseen wait": the longest the hand and fingers stood still before a gripper command
    # flipped, over the task's episodes (skills.unseen_wait): a policy cannot read that timer.
    print(f"{'task':<{width}}{'success':>9}{'mean steps':>12}{'unseen wait':>13}  failed states")
    total = 0
    for task in tasks:
        mine = [r for r in results if r[0] == task]
        ok = sum(r[2] for r in mine)
        total += ok
        failed = [r[1] for r in mine if not r[2]]
        steps = np.mean([r[3] for r in mine if r[2]]) if ok else float("nan")
        wait = max(r[4] for r in mine)
        reason = next((r[5] for r in mine if r[5]), "")
        print(f"{task:<{width}}{ok:>5}/{len(mine):<3}{steps:>12.0f}{wait:>13}  {reason or failed or ''}")
    print(f"{'all':<{width}}{total:>5}/{len(results)}")


if __name__ == "__main__":
    main()
