"""`python -m envs.libero.shadow`: a policy's episodes with the scripted expert riding along.

Where a trained policy fails a task, the question is which part of it the policy does otherwise
than the demonstrations it learned from. This runs a checkpoint on episodes of a LIBERO suite
(the episodes `vla-eval` runs for the same split: the same seeds and initial states) and at
every control step asks the suite's scripted expert what it would do from the same simulator
state, without executing it. Per step it keeps the policy's action, the expert's, and the
expert's stage (skill and phase, `stage`); per stage it prints how many steps the policy spent
there, how often its gripper command agreed with the expert's, how the two translations
compare (cosine, magnitude), and for a grasping skill how far the hand is from the skill's grip
(median, horizontal and vertical). The steps go to a CSV for a closer look.

The expert keeps its own memory (phase, counters) as if its actions had been executed. A grasp
the policy closes where the expert would hold the object is handed to the expert (it then
carries); otherwise, once the policy has gone far from anything the expert would do, a counter
may have run out that the policy never matched: the stages are the expert's reading of the
episode, a reference for the policy's, not ground truth.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from collections import defaultdict
from pathlib import Path

import gymnasium as gym
import numpy as np

from envs.libero.experts import expert_for

# Translations shorter than this (in action units) have no direction worth comparing.
MOVING = 0.05


def current_skill(expert):
    """The skill acting now: a task plan's current one, or the expert itself."""
    skills = getattr(expert, "skills", None)
    return skills[expert.current] if skills else expert


def stage(skill) -> str:
    """`Skill.phase` for skills with named phases; for grasping skills, whether the hand is
    reaching for the grip, closing on it, carrying, or letting go after placing."""
    name = type(skill).__name__
    phase = getattr(skill, "phase", None)
    if isinstance(phase, str):
        return f"{name}.{phase}"
    if hasattr(skill, "leaving_now") and skill.leaving_now():
        return f"{name}.let_go"
    closing, squeeze = getattr(skill, "closing", None), getattr(skill, "SQUEEZE", None)
    if closing is not None and squeeze is not None:
        return f"{name}." + ("reach" if closing == 0 else "close" if closing < squeeze else "carry")
    return name


class ShadowExpert(gym.Wrapper):
    """Keeps, for every step, the action the suite's expert would take from the current state
    next to the one executed (`rows`, reset with the episode). An expert that cannot go on
    from where the policy brought the scene (it raises) is recorded once as stage `error: ...`
    and asked nothing more that episode."""

    def __init__(self, env: gym.Env, suite: str) -> None:
        super().__init__(env)
        self.suite = suite
        self.rows: list[dict] = []
        self.expert = None
        self.last_grip = -1.0

    def reset(self, **kwargs):
        out = super().reset(**kwargs)
        self.rows, self.last_grip = [], -1.0
        self.expert = expert_for(self.suite, self.env.unwrapped)
        self.expert.start()
        return out

    def step(self, action):
        action = np.asarray(action, dtype=np.float64)
        row = {"t": len(self.rows), "policy": action.copy(), "expert": None, "stage": "", "grip": None}
        if self.expert is not None:
            try:
                self._adopt_grasp()
                row["expert"] = np.asarray(self.expert.act(), dtype=np.float64)
                skill = current_skill(self.expert)
                row["stage"] = stage(skill)
                if hasattr(skill, "grip_offset"):  # grasping skills: where the hand is against their grip
                    row["grip"] = np.asarray(skill.grip_offset(), dtype=np.float64)
            except Exception as e:  # noqa: BLE001 - the expert's failure is a finding, not the run's
                row["stage"] = f"error: {type(e).__name__}: {e}"
                self.expert = None
        self.rows.append(row)
        self.last_grip = float(action[6])
        return super().step(action)

    def _adopt_grasp(self) -> None:
        """A grasping skill counts the steps it closed (`closing`, up to SQUEEZE) and carries only
        what it closed on itself. When the policy has closed the fingers on the object where the
        skill would hold it, the skill is told so, and goes on as if it had closed there (its
        own run never meets this: with `closing` 0 it has just commanded the fingers open)."""
        skill = current_skill(self.expert)
        if getattr(skill, "closing", None) == 0 and self.last_grip > 0 and skill.closed_at_grip():
            skill.closing = skill.SQUEEZE


def stage_table(episodes: list[list[dict]]) -> list[dict]:
    """Per expert stage, over the episodes' steps (in order of first appearance): steps, the
    share of episodes that reached it, gripper agreement, mean cosine of the translations where
    both move, their mean magnitudes, and for grasping skills the median distance of the hand
    from the skill's grip, horizontal and vertical (m; NaN for other skills)."""
    by_stage: dict[str, list[dict]] = defaultdict(list)
    reached: dict[str, set[int]] = defaultdict(set)
    for i, rows in enumerate(episodes):
        for row in rows:
            if row["expert"] is not None:
                by_stage[row["stage"]].append(row)
                reached[row["stage"]].add(i)
    table = []
    for name, rows in by_stage.items():
        p = np.array([r["policy"] for r in rows])
        e = np.array([r["expert"] for r in rows])
        pn, en = np.linalg.norm(p[:, :3], axis=1), np.linalg.norm(e[:, :3], axis=1)
        both = (pn > MOVING) & (en > MOVING)
        cosine = np.sum(p[both, :3] * e[both, :3], axis=1) / (pn[both] * en[both])
        table.append(
            {
                "stage": name,
                "steps": len(rows),
                "episodes": len(reached[name]),
                "gripper_agree": float(np.mean(np.sign(p[:, 6]) == np.sign(e[:, 6]))),
                "cosine": float(cosine.mean()) if both.any() else float("nan"),
                "policy_speed": float(pn.mean()),
                "expert_speed": float(en.mean()),
                **grip_distances([r["grip"] for r in rows if r.get("grip") is not None]),
            }
        )
    return table


def grip_distances(offsets: list[np.ndarray]) -> dict:
    """Median horizontal and vertical distance of the hand from a grasping skill's grip."""
    if not offsets:
        return {"grip_xy": float("nan"), "grip_z": float("nan")}
    g = np.array(offsets)
    return {"grip_xy": float(np.median(np.linalg.norm(g[:, :2], axis=1))), "grip_z": float(np.median(np.abs(g[:, 2])))}


def first_gripper_disagreement(rows: list[dict], lasting: int = 3) -> dict | None:
    """The first step from which the policy's gripper command differs from the expert's for at
    least `lasting` steps in a row (a single step is the chunk boundary's noise), with the
    expert's stage there; None if there is none."""
    run = 0
    for i, row in enumerate(rows):
        if row["expert"] is None:
            return None
        run = run + 1 if np.sign(row["policy"][6]) != np.sign(row["expert"][6]) else 0
        if run == lasting:
            first = rows[i - lasting + 1]
            return {"t": first["t"], "stage": first["stage"], "policy_gripper": float(np.sign(first["policy"][6]))}
    return None


def format_stage_table(table: list[dict], episodes: int) -> str:
    width = max([len("expert stage")] + [len(r["stage"]) for r in table]) + 2
    lines = [
        f"{'expert stage':<{width}}{'steps':>7}{'episodes':>10}{'gripper agrees':>16}{'cosine':>8}"
        f"{'|policy|':>10}{'|expert|':>10}{'grip xy cm':>12}{'grip z cm':>11}",
        "-" * (width + 84),
    ]
    for r in table:
        grip = "".join(
            f"{'-' if np.isnan(v) else f'{100 * v:.1f}':>{w}}" for v, w in ((r["grip_xy"], 12), (r["grip_z"], 11))
        )
        lines.append(
            f"{r['stage']:<{width}}{r['steps']:>7}{r['episodes']:>6}/{episodes:<3}{r['gripper_agree']:>16.2f}"
            f"{r['cosine']:>8.2f}{r['policy_speed']:>10.2f}{r['expert_speed']:>10.2f}{grip}"
        )
    return "\n".join(lines)


def steps_csv(episodes: list[tuple[str, int, bool, list[dict]]]) -> str:
    """One line per step: task, seed, success, t, the expert's stage, the policy's and the
    expert's actions (empty where the expert was not asked), and the hand minus a grasping
    skill's grip (m; empty for other skills)."""
    out = io.StringIO()
    writer = csv.writer(out)
    dims = ["x", "y", "z", "rx", "ry", "rz", "grip"]
    writer.writerow(
        ["task", "seed", "success", "t", "stage"]
        + [f"policy_{d}" for d in dims]
        + [f"expert_{d}" for d in dims]
        + ["grip_dx", "grip_dy", "grip_dz"]
    )
    for task, seed, success, rows in episodes:
        for r in rows:
            expert = [] if r["expert"] is None else [f"{v:.4f}" for v in r["expert"]]
            policy = [f"{v:.4f}" for v in r["policy"]]
            grip = [""] * 3 if r.get("grip") is None else [f"{v:.4f}" for v in r["grip"]]
            writer.writerow([task, seed, int(success), r["t"], r["stage"], *policy, *(expert or [""] * 7), *grip])
    return out.getvalue()


def shadow_episodes(
    checkpoint: str | Path,
    suite: str,
    tasks: list[str],
    episodes: int,
    split: str = "validation",
    execute_steps: int | None = None,
    sampler_overrides: dict | None = None,
    max_steps: int | None = None,
    progress: bool = True,
) -> list[tuple[str, int, bool, list[dict]]]:
    """Run `checkpoint` on the first `episodes` episodes of each task of `split` (those
    `vla-eval` runs: seeds `episode_seed`, official states 0.. on the test split) with the
    expert shadowing it. `execute_steps` and `sampler_overrides` default to the checkpoint's
    training-time evaluation settings. Returns (task, seed, success, rows) per episode."""
    from tqdm import tqdm

    from envs.evaluate import EvalConfig, episode_seed, plan_episodes, render_size, rollout, sampler_with_overrides
    from envs.libero.env import LiberoEnv
    from vla.checkpoint import Checkpoint
    from vla.policy import VLAPolicy

    ckpt = Checkpoint(checkpoint)
    trained_eval = ckpt.train_config.get("eval", {})
    if execute_steps is None:
        execute_steps = int(trained_eval.get("execute_steps", 0))
    if sampler_overrides is None:
        sampler_overrides = dict(trained_eval.get("sampler_overrides", {}))
    cfg = EvalConfig(
        suite=suite, tasks=tasks, episodes_per_task=episodes, split=split, execute_steps=execute_steps, workers=1
    )
    policy = VLAPolicy.load(ckpt.path)
    policy.with_sampler(sampler_with_overrides(policy.cfg.sampler, sampler_overrides))
    tasks, states, render_mode = plan_episodes(cfg, policy.cfg)
    results = []
    bar = tqdm(total=len(tasks) * len(states), desc="shadowed episodes", disable=not progress)
    for task in tasks:
        env = ShadowExpert(
            LiberoEnv(
                suite, task, image_size=render_size(policy.cfg), render_mode=render_mode, max_episode_steps=max_steps
            ),
            suite,
        )
        try:
            for e, state in enumerate(states):
                seed = episode_seed(cfg, e)
                res = rollout(policy, env, seed, execute_steps, init_state=state)
                results.append((task, seed, bool(res["success"]), env.rows))
                bar.update()
        finally:
            env.close()
    bar.close()
    return results


def main(argv: list[str] | None = None) -> None:
    from envs.libero.env import suite_tasks
    from vla.configs import atomic_write_text

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a policy checkpoint folder")
    parser.add_argument("--suite", required=True, help="a LIBERO suite with a scripted expert")
    parser.add_argument("--tasks", default="", help="task indices in the suite, comma-separated (default: all)")
    parser.add_argument("--episodes", type=int, default=5, help="episodes per task")
    parser.add_argument("--split", default="validation", choices=["validation", "test"])
    parser.add_argument("--execute-steps", type=int, default=None, help="default: the checkpoint's training setting")
    parser.add_argument(
        "--sampler-overrides",
        default=None,
        help="decoding overrides as JSON, as eval.sampler_overrides (e.g. '{\"steps\": 1}'); default: the "
        "checkpoint's training setting",
    )
    parser.add_argument("--max-steps", type=int, default=None, help="a shorter step limit (default: the suite's)")
    parser.add_argument("--out", default="", help="write every step to this CSV file")
    args = parser.parse_args(argv)
    available = suite_tasks(args.suite)
    tasks = available
    if args.tasks:
        fields = [f.strip() for f in args.tasks.split(",")]
        if not all(f.isdigit() and int(f) < len(available) for f in fields):
            parser.error(f"--tasks {args.tasks!r}: give task indices 0-{len(available) - 1} of {args.suite}")
        tasks = [available[int(f)] for f in fields]
    if args.episodes < 1:
        parser.error("--episodes must be >= 1")
    overrides = None
    if args.sampler_overrides is not None:
        try:
            overrides = json.loads(args.sampler_overrides)
        except json.JSONDecodeError as e:
            parser.error(f"--sampler-overrides {args.sampler_overrides!r}: not JSON ({e})")
        if not isinstance(overrides, dict):
            parser.error(f"--sampler-overrides {args.sampler_overrides!r}: give a JSON object of sampler fields")
    episodes = shadow_episodes(
        args.checkpoint, args.suite, tasks, args.episodes, args.split, args.execute_steps, overrides, args.max_steps
    )
    for task in tasks:
        mine = [ep for ep in episodes if ep[0] == task]
        print(f"\n{task}: {sum(ep[2] for ep in mine)} of {len(mine)} succeeded")
        print(format_stage_table(stage_table([ep[3] for ep in mine]), len(mine)))
        for _, seed, success, rows in mine:
            first = first_gripper_disagreement(rows)
            last = next((r["stage"] for r in reversed(rows) if r["stage"]), "")
            where = (
                f"gripper {'open' if first['policy_gripper'] < 0 else 'closed'} against the expert from step "
                f"{first['t']} ({first['stage']})"
                if first
                else "gripper as the expert's wherever it was asked"
            )
            print(f"  seed {seed}: {'success' if success else 'failure'} in {len(rows)} steps, ends in {last}; {where}")
    if args.out:
        atomic_write_text(Path(args.out), steps_csv(episodes))
        print(f"\nsteps: {args.out}")


if __name__ == "__main__":
    main()
