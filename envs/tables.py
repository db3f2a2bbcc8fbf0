"""Tables of evaluation results (`envs.evaluate.evaluate`'s dicts): per task, per suite, per
delay, and rows compared episode by episode with paired standard errors."""

from __future__ import annotations

import math

import numpy as np


def suites_table(results: dict[str, dict]) -> str:
    """One row per suite (success, its standard error over episodes, episodes) and the average
    over suites (the LIBERO table's headline; its standard error from the suites' own)."""
    rows = [(suite, *_mean_and_se(res)) for suite, res in results.items()]
    width = max(len(r[0]) for r in rows) + 2
    lines = [f"{'suite':<{width}}{'success':>9}{'s.e.':>7}{'episodes':>10}", "-" * (width + 26)]
    lines += [f"{s:<{width}}{100 * p:8.1f}%{100 * se:7.1f}{n:>10}" for s, p, se, n in rows]
    mean = float(np.mean([r[1] for r in rows]))
    se = float(np.sqrt(sum(r[2] ** 2 for r in rows)) / len(rows))
    lines += ["-" * (width + 26), f"{'average':<{width}}{100 * mean:8.1f}%{100 * se:7.1f}{sum(r[3] for r in rows):>10}"]
    return "\n".join(lines)


METRICS = ("success", "partial")


def _check_metric(results: dict, metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if metric == "partial" and not all("partial" in e for e in results["episodes"]):
        raise ValueError(
            "these results have no 'partial' per episode (written before LIBERO reported it, or a suite "
            "without one): compare success"
        )


def episode_outcomes(results: dict, metric: str = "success") -> dict[str, bool | float]:
    """An outcome per episode of a results dict, keyed by task and initial state (or seed): what
    makes two rows' episodes the same episode. `metric`: "success" (0 or 1), or "partial", the
    suite's second metric in [0, 1] (LIBERO: the share of the goal's predicates made true)."""
    _check_metric(results, metric)
    value = bool if metric == "success" else float
    return {
        f"{e['task']}/{e['init_state'] if e.get('init_state') is not None else e.get('seed')}": value(e[metric])
        for e in results["episodes"]
    }


def paired_difference(a: dict[str, bool | float], b: dict[str, bool | float]) -> dict:
    """Mean of a - b over the episodes both rows ran (`episode_outcomes`), with the paired
    standard error; a ValueError when they share none."""
    keys = sorted(a.keys() & b.keys())
    if not keys:
        raise ValueError("the two rows share no episodes (other tasks, seeds or initial states)")
    d = [float(a[k]) - float(b[k]) for k in keys]
    mean = sum(d) / len(d)
    var = sum((x - mean) ** 2 for x in d) / max(1, len(d) - 1)
    return {
        "difference": mean,
        "standard_error": math.sqrt(var / len(d)) if len(d) > 1 else float("nan"),
        "episodes": len(keys),
        "only_this_row_succeeded": sum(x > 0 for x in d),
        "only_first_row_succeeded": sum(x < 0 for x in d),
    }


def _mean_and_se(results: dict, metric: str = "success") -> tuple[float, float, int]:
    """A metric's mean over a results dict's episodes, its standard error (the population
    deviation / sqrt(n): the binomial one for success), the episode count."""
    _check_metric(results, metric)
    outcomes = np.array([float(e[metric]) for e in results["episodes"]])
    p, n = float(outcomes.mean()), len(outcomes)
    return p, (float(outcomes.std() / np.sqrt(n)) if n > 1 else float("nan")), n


def delay_table(results: dict[tuple[str, int], dict]) -> str:
    """One row per (delay mode, delay steps): success, its standard error, and the paired
    difference from the synchronous run (delay 0) over the same episodes, with its standard error."""
    sync = next((r for (mode, d), r in results.items() if d == 0), None)
    base = episode_outcomes(sync) if sync else {}
    lines = [f"{'mode':<9}{'delay':>6}{'success':>9}{'s.e.':>7}{'vs sync':>9}{'s.e.':>7}{'episodes':>10}"]
    lines.append("-" * len(lines[0]))
    for (mode, d), res in results.items():
        p, se, n = _mean_and_se(res)
        row = f"{mode if d else 'sync':<9}{d:>6}{100 * p:8.1f}%{100 * se:7.1f}"
        own = episode_outcomes(res)
        if d and len(own.keys() & base.keys()) > 1:
            diff = paired_difference(own, base)
            row += f"{100 * diff['difference']:+9.1f}{100 * diff['standard_error']:7.1f}"
        else:
            row += f"{'':>16}"
        lines.append(row + f"{n:>10}")
    return "\n".join(lines)


# Settings that do not change an episode's outcome, left out of compare_table's "differs in".
_OUTCOME_NEUTRAL = {"workers", "videos_per_task", "video_size", "threads_per_worker"}


def compare_table(named: list[tuple[str, dict]], metric: str = "success") -> str:
    """Rows of results compared with the first, episode by episode: the metric (success, or the
    suite's partial), s.e., the paired difference over the episodes both ran (s.e.), how many
    episodes each row did better on, and each row's settings that differ from the first's
    (checkpoint, delay, placements, sampler)."""
    first = named[0][1]
    base = episode_outcomes(first, metric)
    width = max(12, *(len(n) for n, _ in named)) + 2
    head = f"{'row':<{width}}{metric:>9}{'s.e.':>7}{'vs first':>10}{'s.e.':>7}{'paired':>8}{'+/-':>9}  differs in"
    lines = [head, "-" * len(head)]
    for name, res in named:
        p, se, n = _mean_and_se(res, metric)
        row = f"{name:<{width}}{100 * p:8.1f}%{100 * se:7.1f}"
        if res is first:
            row += f"{'':>10}{'':>7}{n:>8}{'':>9}"
        else:
            d = paired_difference(episode_outcomes(res, metric), base)
            wins = f"{d['only_this_row_succeeded']}/{d['only_first_row_succeeded']}"
            row += f"{100 * d['difference']:+10.1f}{100 * d['standard_error']:7.1f}{d['episodes']:>8}{wins:>9}"
        changed = {
            k: v
            for k, v in res.get("config", {}).items()
            if first.get("config", {}).get(k) != v and k not in _OUTCOME_NEUTRAL
        }
        # The weights' hash says whether two rows ran the same policy; a path only where the
        # results predate it (a path depends on where the command ran).
        same = (
            res["weights_sha256"] == first["weights_sha256"]
            if "weights_sha256" in res and "weights_sha256" in first
            else res.get("checkpoint") == first.get("checkpoint")
        )
        if not same:
            changed = {"checkpoint": res.get("checkpoint"), **changed}
        lines.append(row + "  " + ", ".join(f"{k}={v}" for k, v in changed.items()))
    return "\n".join(lines)


def trainings_table(named: list[tuple[str, dict]]) -> str:
    """Trainings of one recipe measured on the same episodes: success per task and overall for
    each, then the mean over the trainings and its standard error over them (the sample spread of
    the trainings' figures / sqrt(n)): what a recipe gives, where one training is one draw.
    A ValueError when the rows ran other episodes, or when two rows are one set of weights."""
    if len(named) < 2:
        raise ValueError("a mean over trainings needs at least two results")
    keys = [set(episode_outcomes(res)) for _, res in named]
    for (name, _), k in zip(named[1:], keys[1:], strict=True):
        if k != keys[0]:
            raise ValueError(
                f"{name} ran other episodes than {named[0][0]} ({len(k ^ keys[0])} not in both): a mean over "
                "trainings compares the same episodes (the same split, tasks, initial states or seeds)"
            )
    hashes: dict[str, str] = {}
    for name, res in named:
        h = res.get("weights_sha256")
        if h is not None and h in hashes:
            raise ValueError(f"{name} and {hashes[h]} evaluated the same weights: one training, not two")
        if h is not None:
            hashes[h] = name

    def per_task(res: dict) -> dict[str, float]:
        tasks: dict[str, list[bool]] = {}
        for e in res["episodes"]:
            tasks.setdefault(e["task"], []).append(bool(e["success"]))
        return {t: float(np.mean(v)) for t, v in tasks.items()}

    tables = [per_task(res) for _, res in named]
    rows = [(t, [tab[t] for tab in tables]) for t in tables[0]]
    rows.append(("mean", [_mean_and_se(res)[0] for _, res in named]))
    n = len(named)
    names = [name for name, _ in named]
    cw = max(8, *(len(x) + 2 for x in names))
    width = max(len(t) for t, _ in rows) + 2
    head = f"{'task':<{width}}" + "".join(f"{x:>{cw}}" for x in names) + f"{'mean':>8}{'s.e.':>7}"
    lines = [head + f"  (over {n} trainings)", "-" * len(head)]
    for t, values in rows:
        if t == "mean":
            lines.append("-" * len(head))
        v = np.array(values)
        se = float(v.std(ddof=1) / math.sqrt(n))
        lines.append(
            f"{t:<{width}}" + "".join(f"{100 * x:>{cw - 1}.1f}%" for x in v) + f"{100 * v.mean():7.1f}%{100 * se:7.1f}"
        )
    return "\n".join(lines)


def format_table(results: dict) -> str:
    per_task = results["per_task_success"]
    n = len(results["episodes"]) // max(1, len(per_task))
    width = max(len(t) for t in per_task) + 2
    split = results["config"].get("split", "test")
    widen, shift = results["config"].get("placement_widen", 0.0), results["config"].get("camera_shift", [])
    widened = f", placements widened {100 * widen:g} cm" if widen else ""
    widened += f", camera moved ({', '.join(f'{100 * v:g}' for v in shift)}) cm" if shift else ""
    delay = results["config"].get("delay_steps", 0)
    widened += f", delay {delay} steps, {results['config'].get('delay_mode')}" if delay else ""
    partial = results.get("per_task_partial")
    # Results written before the metric was named are SimplerEnv's, whose partial is "grasped".
    head = "success" + (f"  partial ({results.get('partial_metric', 'grasped')})" if partial else "")
    lines = [f"{'task':<{width}}{head} ({n} {split} episodes each{widened})", "-" * (width + 28)]
    for t, s in per_task.items():
        lines.append(f"{t:<{width}}{100 * s:6.1f}%" + (f"{100 * partial[t]:9.1f}%" if partial else ""))
    mean = f"{'mean':<{width}}{100 * results['mean_success']:6.1f}%"
    lines += ["-" * (width + 28), mean + (f"{100 * results['mean_partial']:9.1f}%" if partial else "")]
    return "\n".join(lines)
