"""`vla-compare`: evaluation results compared episode by episode.

    vla-compare runs/a/eval/final/results.json runs/b/eval/final/results.json [...]

Each row after the first is compared with the first over the episodes both ran (same task and
initial state or seed): success, its standard error, the paired difference and its standard
error, how many episodes only this row / only the first row won, and the settings in which the
row differs from the first (checkpoint, delay, placements, sampler). Rows from different
checkpoints, delays or splits compare the same way; rows that share no episode are refused.

    vla-compare --trainings runs/seed0/test runs/seed1/test [...]

Trainings of one recipe on the same episodes: success per task for each, and the mean over the
trainings with its standard error over them (what the recipe gives; one training is one draw).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from envs.tables import METRICS, compare_table, trainings_table


def load_results(path: str | Path) -> dict:
    """A results.json written by vla-eval / vla-train (or the folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no results.json here (an unfinished evaluation keeps episodes.partial.jsonl)")
    try:
        res = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not a results file ({e})") from None
    if not isinstance(res, dict) or not isinstance(res.get("episodes"), list) or not res["episodes"]:
        raise ValueError(f"{path}: no 'episodes' list; is this a vla-eval results.json?")
    for i, e in enumerate(res["episodes"]):
        missing = [k for k in ("task", "success") if not isinstance(e, dict) or k not in e]
        if missing:
            raise ValueError(f"{path}: episode {i} lacks {', '.join(missing)}; is this a vla-eval results.json?")
    return res


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="vla-compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", help="results.json files (or their folders); the first is the reference")
    parser.add_argument("--names", nargs="*", default=None, help="a label per row (default: the folder names)")
    parser.add_argument(
        "--trainings",
        action="store_true",
        help="the results are trainings of one recipe on the same episodes: per-task success of each, "
        "their mean and its standard error over the trainings",
    )
    parser.add_argument(
        "--metric",
        choices=METRICS,
        default="success",
        help="what to pair: success, or the suite's partial metric (LIBERO: the share of the goal's predicates "
        "made true, which tells apart failures that did one of two subtasks)",
    )
    args = parser.parse_args(argv)
    if len(args.results) < 2:
        parser.error("give at least two results to compare")
    if args.trainings and args.metric != "success":
        parser.error("--trainings compares success; leave --metric out")
    if args.names is not None and len(args.names) != len(args.results):
        parser.error(f"--names gives {len(args.names)} labels for {len(args.results)} results")
    paths = [Path(p) for p in args.results]
    folders = [p if p.is_dir() else p.parent for p in paths]
    names = [f.name for f in folders]
    if len(set(names)) < len(names):  # runs/a/test and runs/b/test: name each by its run too
        names = [f"{f.parent.name}/{f.name}" for f in folders]
    names = args.names or names
    named = [(n, load_results(p)) for n, p in zip(names, paths, strict=True)]
    print(trainings_table(named) if args.trainings else compare_table(named, args.metric))


if __name__ == "__main__":
    main()
