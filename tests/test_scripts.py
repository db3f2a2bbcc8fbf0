"""Every console script runs on tiny inputs, so that none can silently rot."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import debug_train_config

from envs.registry import VALIDATION_SEED

BIN = Path(sys.executable).parent
ROOT = Path(__file__).parent.parent


def run(*cmd: str, timeout: int = 300) -> str:
    out = subprocess.run(
        [str(BIN / cmd[0]), *cmd[1:]],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, f"{cmd[0]} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, debug_data_root):
    from train.loop import train

    run_dir = tmp_path_factory.mktemp("scripts")
    return Path(train(debug_train_config(run_dir, debug_data_root, "optim.steps=2"))["checkpoint"])


def test_vla_train_and_vla_eval(checkpoint, tmp_path, debug_data_root):
    out = run(
        "vla-train",
        "experiment=debug",
        f"run_dir={tmp_path / 'run'}",
        f"data.root={debug_data_root}",
        "optim.steps=2",
        "eval.videos_per_task=0",
    )
    assert "checkpoint:" in out and "mean" in out
    out = run(
        "vla-eval",
        f"checkpoint={checkpoint}",
        f"out_dir={tmp_path / 'ev'}",
        "eval.episodes_per_task=1",
        "eval.workers=1",
        "eval.videos_per_task=0",
        "eval.tasks=[lift_red]",
    )
    assert "lift_red" in out and (tmp_path / "ev" / "results.json").exists()


def test_vla_ablate(checkpoint, tmp_path):
    args = (
        "vla-ablate",
        "--checkpoint",
        str(checkpoint),
        "--episodes",
        "1",
        "--workers",
        "1",
        "--tasks",
        "lift_red",
        "--only",
        "T=1",
        "--out",
        str(tmp_path / "ab"),
    )
    out = run(*args)
    assert "one-shot parallel, T=1" in out and (tmp_path / "ab" / "ablation.md").exists()
    # A second call with the same settings reuses the finished row instead of running it again.
    again = run(*args)
    assert "reused" in again and "one-shot parallel, T=1" in again
    # The validation split is another setting: the row runs again, on the validation episodes.
    val = run(*args, "--split", "validation")
    assert "reused" not in val and "validation split" in val
    # The same weights from another folder: still the same row.
    import shutil

    shutil.copytree(checkpoint, tmp_path / "moved")
    moved = run(*[str(tmp_path / "moved") if a == str(checkpoint) else a for a in args], "--split", "validation")
    assert "reused" in moved
    saved = json.loads(next((tmp_path / "ab").glob("variant_*/results.json")).read_text())
    assert saved["config"]["split"] == "validation"
    assert all(e["seed"] >= VALIDATION_SEED for e in saved["episodes"])


def test_vla_ablate_labels_the_sampler_each_row_runs(tmp_path):
    """On a checkpoint that decodes in random order, the max_prob row runs max_prob and the
    first row says it is random order (rows were labelled as if the library default applied)."""
    from helpers import tiny_policy_config, tiny_stats

    from train.ablation import VARIANTS, resolved_rows
    from vla.model import VLAModel
    from vla.policy import VLAPolicy
    from vla.sampling import SamplerConfig

    cfg = tiny_policy_config(sampler=SamplerConfig(steps=6, confidence="random"))
    ckpt = VLAPolicy(VLAModel(cfg, tiny_stats())).save(tmp_path / "random")
    labels = {key: label for label, key, _ in resolved_rows(str(ckpt), VARIANTS)}
    assert labels["default"] == "random order, T=6 (the checkpoint's sampler)"
    assert labels["max_prob"] == "max_prob, T=6"
    assert labels["T=2"] == "random order, T=2"
    assert labels["one-shot"] == "one-shot parallel, T=1"
    assert labels["hard argmax"] == "random order, T=6, hard argmax"
    assert labels["residual"] == "random order, T=6 + residual-drop remasking (delta 0.3)"
    assert labels["T=4 max_prob held"] == "max_prob, T=4, constant temperature"
    assert labels["spread quantile"] == "spread, T=6, quantile candidates"
    assert labels["one-shot quantile"] == "one-shot parallel, T=1, quantile candidates"
    assert labels["T=4 median"] == "random order, T=4, each slot's median bin"
    assert labels["T=4 earliest first"] == "left-to-right order, T=4, quantile candidates"


def test_vla_ablate_offline(checkpoint, tmp_path, debug_data_root):
    """--offline decodes at recorded frames and compares with the recorded actions."""
    import json

    from data.cache import ZarrCache
    from train.ablation import offline_action_error

    cache = f"{debug_data_root}.zarr"
    out = run(
        "vla-ablate",
        "--checkpoint",
        str(checkpoint),
        "--offline",
        cache,
        "--frames",
        "5",
        "--only",
        "default,random order,max_prob quantile,T=4 quantile,spread quantile",
        "--out",
        str(tmp_path / "off"),
    )
    rows = json.loads((tmp_path / "off" / "offline.json").read_text())
    # On this max_prob checkpoint with T=4, the T=4 rows resolve to earlier rows' samplers:
    # they are skipped, not run twice.
    assert [r["variant"] for r in rows] == [
        "max_prob, T=4 (the checkpoint's sampler)",
        "random order, T=4",
        "max_prob, T=4, quantile candidates",
        "spread, T=4, quantile candidates",
    ]
    assert out.count("skipped: the same sampler as an earlier row") == 3
    assert all(r["frames"] == 5 and 0 < r["arm_l1"] < 10 and 0 <= r["gripper_sign_agreement"] <= 1 for r in rows)
    assert "arm L1" in out
    opened = ZarrCache(cache, in_memory=False)
    first = offline_action_error(str(checkpoint), {}, opened, 5, 2)
    assert offline_action_error(str(checkpoint), {}, opened, 5, 2) == first  # seeded: the same frames and draws
    with pytest.raises(ValueError, match="exceeds the policy's chunk"):
        offline_action_error(str(checkpoint), {}, opened, 5, 99)


def test_offline_prefix_and_swapped_images_reach_the_decoder(checkpoint, debug_data_root, monkeypatch):
    """--prefix-steps hands each frame's own recorded first d actions to the decoder and scores
    the actions after them; --swap-images keeps the frame's state and prefix but shows another
    frame's images, and reports how many action values that changes against the frame's own."""
    import numpy as np

    from data.cache import ZarrCache
    from train.ablation import offline_action_error
    from vla.policy import VLAPolicy

    cache = ZarrCache(f"{debug_data_root}.zarr", in_memory=False)
    calls = []
    real = VLAPolicy.infer

    def spy(self, obs, fixed_actions=None):
        out = real(self, obs, fixed_actions=fixed_actions)
        calls.append((obs, fixed_actions, out))
        return out

    monkeypatch.setattr(VLAPolicy, "infer", spy)
    for swap in (False, True):
        calls.clear()
        err = offline_action_error(str(checkpoint), {}, cache, 6, 2, prefix_steps=2, swap_images=swap)
        assert len(calls) == (12 if swap else 6)  # swapped: each frame's own images too, same draws
        assert ("changed_by_swap" in err) == swap
        if swap:  # the share of differing values between each pair of decodes
            pairs = [(calls[k][2][2:4], calls[k + 1][2][2:4]) for k in range(0, 12, 2)]
            assert err["changed_by_swap"] == np.mean([np.abs(a - b) > 1e-6 for a, b in pairs])
            calls[:] = calls[1::2]
        moved = 0
        for obs, fixed, out in calls:
            frames = np.flatnonzero((cache.state == obs["state"]).all(1))  # a state can repeat at rest
            assert any(np.array_equal(fixed, cache.action[i : i + 2]) for i in frames)  # the frame's own actions
            np.testing.assert_allclose(out[:2], fixed, atol=0.1)  # committed: decoded back as given
            own = any(
                all(np.array_equal(obs["images"][c], np.asarray(cache.images[c][i])) for c in obs["images"])
                for i in frames
            )
            moved += not own
        assert moved == (len(calls) if swap else 0)
    with pytest.raises(ValueError, match="prefix_steps must be in"):
        offline_action_error(str(checkpoint), {}, cache, 2, 1, prefix_steps=99)


def test_conditioning_gives_the_hidden_half_what_each_row_says(checkpoint, tmp_path, debug_data_root, monkeypatch):
    """vla-ablate --offline --conditioning: per frame one pass with every slot masked, then for a
    random half and for the surer half by spread, passes where that half holds the pass's own
    medians, its draws, or the recorded tokens, and the other half stays masked."""
    import torch

    from data.cache import ZarrCache
    from train.ablation import GIVEN, SPLITS, offline_conditioning
    from vla.policy import VLAPolicy
    from vla.sampling import CONFIDENCE_RULES, quantile_bin

    cache = f"{debug_data_root}.zarr"
    run("vla-ablate", "--checkpoint", str(checkpoint), "--offline", cache, "--conditioning", "--frames", "3",
        "--out", str(tmp_path / "cond"))  # fmt: skip
    res = json.loads((tmp_path / "cond" / "conditioning.json").read_text())
    assert res["frames"] == 3 and [(r["split"], r["given"]) for r in res["rows"]] == [
        (s, g) for s in SPLITS for g in GIVEN
    ]
    assert all(r["vs_nothing"] == 0.0 for r in res["rows"] if r["given"] == GIVEN[0])
    assert all(0 < r["arm_l1"] < 10 and np.isfinite(r["nll"]) for r in res["rows"])

    policy = VLAPolicy.load(str(checkpoint))
    model = policy.model
    mask_id, n = model.decoder.mask_id, model.decoder.num_slots
    calls = []
    real = type(model.decoder).forward

    def spy(self, tokens, kv, *args, **kwargs):
        out = real(self, tokens, kv, *args, **kwargs)
        calls.append((tokens[0].clone(), torch.softmax(out[0].double(), -1)))
        return out

    monkeypatch.setattr(type(model.decoder), "forward", spy)
    opened = ZarrCache(cache, in_memory=False)
    offline_conditioning(str(checkpoint), opened, 2)
    assert len(calls) == 2 * 7  # per frame: the one pass, then 3 fills for each of 2 splits
    chunk = policy.cfg.chunk_size
    lo, hi = policy.action_bounds
    recorded = [
        model.action_tokenizer.encode(torch.as_tensor(np.clip(opened.action[i : i + chunk], lo, hi))).reshape(-1)
        for i in range(len(opened.action) - chunk + 1)
    ]
    for f in range(2):
        (first, p0), *rest = calls[7 * f : 7 * f + 7]
        assert (first == mask_id).all()
        surer = torch.argsort(CONFIDENCE_RULES["spread"](torch.log(p0), None, None), descending=True)[: n // 2]
        for k, (tokens, _) in enumerate(rest):
            given = tokens != mask_id
            assert given.sum() == n // 2
            if k >= 3:  # the second split: the half the spread rule is surest of
                assert set(torch.nonzero(given).flatten().tolist()) == set(surer.tolist())
            if k % 3 == 0:  # the one pass's own medians
                assert torch.equal(tokens[given], quantile_bin(p0, 0.5)[given])
            if k % 3 == 2:  # the recorded tokens of some chunk of the recording
                assert any(torch.equal(tokens[given], r[given]) for r in recorded)
    with pytest.raises(subprocess.CalledProcessError):
        subprocess.run([str(BIN / "vla-ablate"), "--checkpoint", str(checkpoint), "--conditioning"],
                       check=True, capture_output=True, cwd=ROOT)  # fmt: skip


def test_paired_difference_counts_discordant_episodes():
    from envs.tables import paired_difference

    a = {"t/0": True, "t/1": True, "t/2": False, "t/3": False}
    b = {"t/0": True, "t/1": False, "t/2": False, "t/3": True, "t/9": True}  # t/9: not in both rows
    d = paired_difference(a, b)
    assert d["episodes"] == 4 and d["difference"] == 0.0
    assert d["only_this_row_succeeded"] == 1 and d["only_first_row_succeeded"] == 1
    assert abs(d["standard_error"] - (2 / 3 / 4) ** 0.5) < 1e-12  # sample variance of [0, 1, 0, -1]
    same = paired_difference(a, a)
    assert same["difference"] == 0.0 and same["standard_error"] == 0.0


def test_vla_compare_pairs_rows_by_episode_and_names_what_differs(tmp_path, capsys):
    import json

    from train.compare import main

    def results(name, wins, **config):
        episodes = [{"task": "t", "seed": s, "init_state": None, "success": w} for s, w in enumerate(wins)]
        folder = tmp_path / name
        folder.mkdir()
        body = {"checkpoint": "ck", "config": {"split": "validation", "workers": 2, **config}, "episodes": episodes}
        (folder / "results.json").write_text(json.dumps(body))
        return str(folder)

    a = results("sync", [True, True, False, True], delay_steps=0)
    b = results("late", [True, False, False, False], delay_steps=4, workers=1)  # workers: outcome-neutral
    main([a, b])
    rows = capsys.readouterr().out.splitlines()
    assert rows[2].split()[:2] == ["sync", "75.0%"]
    late = rows[3].split()
    assert late[:2] == ["late", "25.0%"] and late[3] == "-50.0" and late[5:7] == ["4", "0/2"]
    assert rows[3].endswith("delay_steps=4")  # the row's one outcome-deciding difference, not workers
    # The same weights evaluated from another folder: the hash, not the path, says it is one policy.
    for folder, path in ((a, "runs/x/checkpoints/latest"), (b, "/elsewhere/x/checkpoints/latest")):
        body = json.loads((Path(folder) / "results.json").read_text())
        (Path(folder) / "results.json").write_text(json.dumps({**body, "checkpoint": path, "weights_sha256": "ab"}))
    main([a, b])
    assert "checkpoint=" not in capsys.readouterr().out
    body = json.loads((Path(b) / "results.json").read_text())
    (Path(b) / "results.json").write_text(json.dumps({**body, "weights_sha256": "cd"}))
    main([a, b])
    assert "checkpoint=/elsewhere/x/checkpoints/latest, delay_steps=4" in capsys.readouterr().out
    other = tmp_path / "other"
    other.mkdir()
    (other / "results.json").write_text(json.dumps({"episodes": [{"task": "u", "seed": 0, "success": True}]}))
    with pytest.raises(ValueError, match="share no episodes"):
        main([a, str(other)])
    (other / "results.json").write_text(json.dumps({"episodes": [{"task": "u", "seed": 0}]}))
    with pytest.raises(ValueError, match="episode 0 lacks success"):
        main([a, str(other)])
    with pytest.raises(FileNotFoundError, match="no results.json"):
        main([a, str(tmp_path / "missing")])
    # LIBERO-10's partial metric: the share of two subtasks done, paired the same way.
    for folder, parts in ((a, [1.0, 0.5, 0.0, 0.5]), (b, [1.0, 1.0, 0.5, 0.0])):
        body = json.loads((Path(folder) / "results.json").read_text())
        for e, part in zip(body["episodes"], parts, strict=True):
            e["partial"] = part
        (Path(folder) / "results.json").write_text(json.dumps(body))
    main(["--metric", "partial", a, b])
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].split()[1] == "partial" and rows[2].split()[:2] == ["sync", "50.0%"]
    late = rows[3].split()
    assert late[:2] == ["late", "62.5%"] and late[3] == "+12.5" and late[5:7] == ["4", "2/1"]
    (other / "results.json").write_text(json.dumps({"episodes": [{"task": "t", "seed": 0, "success": True}]}))
    with pytest.raises(ValueError, match="no 'partial' per episode"):
        main(["--metric", "partial", a, str(other)])
    with pytest.raises(SystemExit):  # refused before any file is read
        main(["--trainings", "--metric", "partial", a, str(tmp_path / "missing")])
    assert "--trainings compares success" in capsys.readouterr().err


def test_vla_compare_trainings_gives_the_mean_and_its_spread_over_trainings(tmp_path, capsys):
    import json

    from train.compare import main

    def results(name, wins, sha):  # two tasks, two initial states each
        episodes = [
            {"task": t, "init_state": i, "success": w}
            for (t, i), w in zip([("a", 0), ("a", 1), ("b", 0), ("b", 1)], wins, strict=True)
        ]
        folder = tmp_path / name
        folder.mkdir()
        (folder / "results.json").write_text(json.dumps({"weights_sha256": sha, "config": {}, "episodes": episodes}))
        return str(folder)

    s0 = results("s0", [True, True, True, False], "00")  # a 100, b 50, mean 75
    s1 = results("s1", [True, False, False, False], "11")  # a 50, b 0, mean 25
    main(["--trainings", s0, s1])
    rows = [r.split() for r in capsys.readouterr().out.splitlines()]
    assert rows[0][:5] == ["task", "s0", "s1", "mean", "s.e."]
    assert rows[2] == ["a", "100.0%", "50.0%", "75.0%", "25.0"]  # s.e. over trainings: sd 35.4 / sqrt 2
    assert rows[3] == ["b", "50.0%", "0.0%", "25.0%", "25.0"]
    assert rows[5] == ["mean", "75.0%", "25.0%", "50.0%", "25.0"]
    same = results("again", [True, True, True, False], "00")
    with pytest.raises(ValueError, match="same weights: one training, not two"):
        main(["--trainings", s0, same])
    for run, src in (("r0", s0), ("r1", s1)):  # one folder name in two runs: each named by its run
        (tmp_path / run / "test").mkdir(parents=True)
        (tmp_path / run / "test" / "results.json").write_text((Path(src) / "results.json").read_text())
    main(["--trainings", str(tmp_path / "r0" / "test"), str(tmp_path / "r1" / "test")])
    assert capsys.readouterr().out.split()[1:3] == ["r0/test", "r1/test"]
    other = tmp_path / "other"
    other.mkdir()
    body = json.loads((Path(s1) / "results.json").read_text())
    body["episodes"][3]["init_state"] = 7  # another initial state: not the same episodes
    (other / "results.json").write_text(json.dumps({**body, "weights_sha256": "22"}))
    with pytest.raises(ValueError, match="ran other episodes than s0"):
        main(["--trainings", s0, str(other)])


def test_benchmarks(checkpoint, debug_data_root):
    assert "prefix cache" in run("vla-bench-decode", "--repeats", "1", "--steps", "2")
    out = run(
        "vla-bench-decode", "--repeats", "1", "--steps", "2", "--arch", "expert", "--confidence", "spread",
        "--candidates", "quantile",
    )  # fmt: skip
    assert "order spread, candidates quantile" in out and "T=2, prefix cache" in out
    out = run("vla-bench-env", "--steps", "90", "--image-size", "16", "--draw-every", "3")  # past an episode's end
    assert "physics only" in out and "drawn 1 in 3" in out
    out = run(
        "vla-bench-data", "--cache", f"{debug_data_root}.zarr", "--episodes", "1", "--batches", "1", "--batch-size", "2"
    )
    assert "zarr cache, from disk" in out and "loaded in memory" in out
    out = run("vla-bench-data", "--synthetic", "300", "--image-size", "32", "--episodes", "1", "--batches", "1")
    assert "built a 300-frame synthetic cache" in out and "300" in out
    out = run("vla-bench-env", "--suite", "libero_object", "--steps", "3", "--image-size", "32")
    assert "fast" in out and "libero" in out and "faces drawn" in out and "drawn 1 in 4" in out
    out = run("vla-bench-deploy", "--only", "overhead", "--round-trips", "5")
    assert "round-trip overhead" in out


def test_vla_bench_train_counts_each_part_and_sees_a_larger_variant(checkpoint, debug_data_root):
    """vla-bench-train: a row per variant on the same batches; the arithmetic is split over the
    model's parts (every counted operation credited once), and a variant with twice the decoder's
    layers has more parameters and more arithmetic per sample; a wrong field is named."""
    args = ["--checkpoint", str(checkpoint), "--cache", f"{debug_data_root}.zarr", "--batch", "4"]
    args += ["--steps", "1", "--warmup", "0", "--threads", "1"]
    out = run("vla-bench-train", *args, "--variant", "deeper:decoder.layers=2")
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in out.splitlines() if line.startswith("| ")}
    full, deeper = rows["checkpoint"], rows["deeper"]
    assert deeper[1] == "decoder.layers=2"
    assert int(deeper[2].replace(",", "")) > int(full[2].replace(",", ""))
    assert float(deeper[3]) > float(full[3]) > 0
    for row in (full, deeper):
        shares = [float(x.rstrip("%")) for x in row[4].split(" / ")]
        assert len(shares) == 4 and abs(sum(shares) - 100) <= 2 and min(shares[:3]) > 0  # vision, LM, decoder
        assert float(row[5]) > 0 and float(row[6]) > 0 and float(row[7]) >= 0 and float(row[8]) > 0  # ms, samples/s
    bad = subprocess.run(
        [str(BIN / "vla-bench-train"), *args, "--variant", "x:decoder.nope=1"], capture_output=True, text=True, cwd=ROOT
    )
    assert bad.returncode != 0 and "policy.decoder has no field 'nope'" in bad.stderr


def _three_per_task(debug_data_root, path):
    """The debug recording's episodes three times each, shifted sideways in the images, as a
    cache with three episodes per task (the probe swaps in another episode of the same task)."""
    from data.cache import ZarrCache, build_cache
    from data.episode import Episode

    c = ZarrCache(f"{debug_data_root}.zarr")
    eps = [
        Episode(
            images={cam: np.roll(c.images[cam][s:e], 4 * k, axis=2) for cam in c.cameras},
            state=c.state[s:e],
            actions=c.action[s:e],
            task=c.tasks[c.task_index[n]],
        )
        for k in range(3)
        for n, (s, e) in enumerate(zip(c.episode_starts, c.episode_ends, strict=True))
    ]
    return build_cache(eps, path)


def test_vla_probe_vision_trains_each_variant_on_the_same_frames_and_resumes(checkpoint, tmp_path, debug_data_root):
    """vla-probe-vision: a checkpoint's config, backbone variants, held-out episodes apart from
    the training ones; a table; a re-run reuses finished variants."""
    cache = _three_per_task(debug_data_root, tmp_path / "three.zarr")
    args = ["--like", str(checkpoint), "--cache", str(cache), "--steps", "3", "--batch", "4", "--holdout", "0.5"]
    args += ["--eval-frames", "16", "--progress", "0", "--out", str(tmp_path / "probe")]
    variants = ["--variant", "patch:", "--variant", "conv:vision_stem=conv"]
    out = run("vla-probe-vision", *args, *variants)
    assert "| conv | vision_stem=conv |" in out
    path = tmp_path / "probe" / "results.json"
    rows = json.loads(path.read_text())
    assert [r["name"] for r in rows] == ["patch", "conv"] and rows[1]["overrides"] == {"vision_stem": "conv"}
    assert rows[0]["parameters"] != rows[1]["parameters"]  # the stem really differs
    for r in rows:
        assert r["frames"] == 16
        assert all(math.isfinite(r[k]) for k in ("err_cm", "err_swapped_cm", "seeing_cm", "train_err_cm"))
        assert r["seeing_cm"] == pytest.approx(r["err_swapped_cm"] - r["err_cm"])
    stamp = path.stat().st_mtime_ns
    assert run("vla-probe-vision", *args, *variants) == out  # reused, not retrained
    assert path.stat().st_mtime_ns == stamp
    with pytest.raises(AssertionError, match="no fields"):
        run("vla-probe-vision", *args, "--variant", "bad:vision_stemm=conv")
    with pytest.raises(AssertionError, match="--steps must be >= 1"):
        run("vla-probe-vision", *args, "--steps", "0")
    with pytest.raises(AssertionError, match="tasks with one episode only"):
        run("vla-probe-vision", *args[:3], f"{debug_data_root}.zarr", *args[4:], "--variant", "p:")


def test_vision_probe_holds_out_whole_episodes():
    from train.vision_probe import frames_of, parse_variant, split_episodes

    train_eps, held = split_episodes(10, 0.2, seed=0)
    assert len(held) == 2 and not set(train_eps) & set(held) and len(train_eps) + len(held) == 10
    starts, ends = np.array([0, 5, 9]), np.array([5, 9, 12])
    valid = np.ones((12, 1), bool)
    valid[4] = False  # the last frame of episode 0 has no event ahead
    assert frames_of(np.array([0, 2]), starts, ends, valid).tolist() == [0, 1, 2, 3, 9, 10, 11]
    assert parse_variant("c8:vision_stem=conv,patch_size=8") == ("c8", {"vision_stem": "conv", "patch_size": 8})
    with pytest.raises(ValueError, match="two or more"):
        split_episodes(1, 0.2, seed=0)


def test_vision_probe_swaps_in_another_placement_of_the_same_task_at_the_same_phase():
    from train.vision_probe import swap_partners

    starts, ends = np.array([0, 10, 16, 30]), np.array([10, 16, 30, 31])
    task_index = np.array([0, 1, 0, 2])  # episodes 0 and 2 share a task; 1 and 3 have none to swap with
    frames = np.array([3, 12, 29, 30])
    out = swap_partners(frames, np.arange(4), starts, ends, task_index, seed=0)
    assert out[0] == 16 + 3  # episode 2, three frames in
    assert out[2] == 0 + 9  # episode 0 (13 frames in), clipped to its last frame
    assert out[1] == out[3] == -1
