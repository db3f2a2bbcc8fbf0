"""Probes of issue #36 ("Nothing lost, nothing silent, round two") on environments and
evaluation. Each test failed on the code before its fix:

- `test_every_public_libero_entry_sets_up_first_and_never_prompts`: `make_env("libero_object",
  task)` (and `LiberoEnv`, `init_states`) as a process's first LIBERO call imported LIBERO
  before the offline set-up: LIBERO's "(Y/N)" prompt, an EOFError without a terminal, and
  `~/.libero` created.
- `test_nan_weights_are_named_before_any_worker_starts`: a checkpoint with a NaN weight (and a
  valid manifest) ended in `BrokenProcessPool`, the cause only in a worker's log above it.
- `test_a_worker_that_cannot_load_the_policy_raises_the_real_error`: any other failure to load
  the policy in a worker also ended in `BrokenProcessPool`.
- `test_checkpoint_of_another_suite_is_refused_before_any_episode`: a builtin-suite checkpoint
  ran on a LIBERO suite (and a LIBERO checkpoint on the builtin suite): the suites share widths
  and camera names, so the width check let it through.
- `test_sigterm_or_sigint_stops_the_workers_and_keeps_finished_episodes`: SIGTERM to an
  evaluation ended the parent at once and left its workers alive, holding the policy; after
  SIGINT the parent waited for the episodes already handed to workers, and neither said what
  was kept nor how to resume.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import tiny_policy_config, tiny_stats

from vla.embodiment import Embodiment

OBJECT_TASK = "pick_up_the_alphabet_soup_and_place_it_in_the_basket"
ROOT = Path(__file__).resolve().parents[1]


def _fresh_env(home: Path) -> dict:
    """A fresh machine's environment: an empty HOME and no LIBERO config from this process
    (the test session's own set-up exports LIBERO_CONFIG_PATH)."""
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT)}
    for key in ("LIBERO_CONFIG_PATH", "VLA_CACHE"):
        env.pop(key, None)
    return env


# Each runs as the first LIBERO call of a fresh process.
_ENTRIES = {
    "make_env": f"from envs.registry import make_env; make_env('libero_object', {OBJECT_TASK!r}, 32).close()",
    "LiberoEnv": f"from envs.libero.env import LiberoEnv; LiberoEnv('libero_object', {OBJECT_TASK!r}, 32).close()",
    "init_states": f"from envs.libero.env import init_states; print(len(init_states('libero_object', {OBJECT_TASK!r})))",
    "suite_tasks": "from envs.registry import suite_tasks; print(len(suite_tasks('libero_object')))",
}


@pytest.mark.parametrize("entry", list(_ENTRIES))
def test_every_public_libero_entry_sets_up_first_and_never_prompts(tmp_path, entry):
    out = subprocess.run(
        [sys.executable, "-c", _ENTRIES[entry]],
        stdin=subprocess.DEVNULL,  # a prompt would read EOF here (and wait forever on a terminal)
        capture_output=True,
        text=True,
        env=_fresh_env(tmp_path),
        cwd=tmp_path,
        timeout=300,
    )
    text = out.stdout + out.stderr
    assert "(Y/N)" not in text and "EOFError" not in text, text[-3000:]
    assert out.returncode == 0, text[-3000:]
    assert not (tmp_path / ".libero").exists()  # LIBERO's own default config folder
    assert (tmp_path / ".cache" / "vla-stack" / "libero" / "config.yaml").is_file()


# ------------------------------------------------------------------------------ evaluation
def _tiny_checkpoint(path: Path, train_config: dict | None = None, **overrides) -> Path:
    """A tiny policy with the widths and cameras of both suites (7-D action, 8-D state,
    agentview and wrist at 32 px); `train_config` is saved as vla-train saves it."""
    from vla.checkpoint import save_checkpoint
    from vla.configs import save_json
    from vla.model import VLAModel

    cfg = tiny_policy_config(
        action_dim=7,
        state_dim=8,
        cameras=["agentview", "wrist"],
        camera_shapes={"agentview": [32, 32], "wrist": [32, 32]},
        **overrides,
    )
    model = VLAModel(cfg, tiny_stats(7, 8))

    def write_more(folder: Path) -> None:
        if train_config is not None:
            save_json(folder / "train_config.json", train_config)

    return save_checkpoint(model, path, write_more=write_more)


def _replace_signed(ckpt: Path, name: str, data: bytes) -> None:
    """Replace a checkpoint file and re-sign it in the manifest, as a checkpoint saved that way
    would be (only the contents are wrong, not their record)."""
    from vla.configs import file_sha256

    (ckpt / name).write_bytes(data)
    manifest = json.loads((ckpt / "manifest.json").read_text())
    manifest["files"][name] = {"sha256": file_sha256(ckpt / name), "bytes": len(data)}
    (ckpt / "manifest.json").write_text(json.dumps(manifest))


def _no_pool(monkeypatch):
    import envs.evaluate

    def refuse(*args, **kwargs):
        raise AssertionError("the worker pool was started before the mistake was named")

    monkeypatch.setattr(envs.evaluate, "ProcessPoolExecutor", refuse)


def test_nan_weights_are_named_before_any_worker_starts(tmp_path, monkeypatch):
    import safetensors.torch

    from envs.evaluate import EvalConfig, evaluate
    from vla.checkpoint import CheckpointError

    ckpt = _tiny_checkpoint(tmp_path / "ckpt")
    tensors = safetensors.torch.load_file(str(ckpt / "model.safetensors"))
    name = next(n for n, t in tensors.items() if t.is_floating_point())
    tensors[name].view(-1)[0] = float("nan")
    _replace_signed(ckpt, "model.safetensors", safetensors.torch.save(tensors, metadata={"format": "pt"}))
    _no_pool(monkeypatch)
    ev = EvalConfig(tasks=["lift_red"], episodes_per_task=2, workers=2, videos_per_task=0)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: 1 of \d+ tensors hold NaN or Inf"):
        evaluate(ckpt, ev, tmp_path / "ev", progress=False)


def test_a_worker_that_cannot_load_the_policy_raises_the_real_error(tmp_path):
    """What the parent does not check itself (here stats.json that does not fit the config)
    comes back from the worker as the worker's own error, not as BrokenProcessPool."""
    from envs.evaluate import EvalConfig, evaluate
    from vla.checkpoint import CheckpointError

    ckpt = _tiny_checkpoint(tmp_path / "ckpt")
    _replace_signed(ckpt, "stats.json", json.dumps(tiny_stats(7, 3)).encode())
    ev = EvalConfig(tasks=["lift_red"], episodes_per_task=1, workers=1, videos_per_task=0)
    with pytest.raises(CheckpointError, match="stats.json or action_tokenizer.json do not fit"):
        evaluate(ckpt, ev, tmp_path / "ev", progress=False)


@pytest.mark.parametrize(
    ("saved", "suite", "message"),
    [
        (
            {"embodiment": Embodiment(robot="tabletop")},
            "libero_object",
            r"trained on the 'tabletop' robot's data .* eval\.suite='libero_object'.* eval\.suite=builtin",
        ),
        (
            {"embodiment": Embodiment(robot="libero")},
            "builtin",
            r"trained on the 'libero' robot's data .* eval\.suite='builtin'",
        ),
        ({"render_mode": "fast"}, "builtin", r"LIBERO frames rendered in fast mode .* eval\.suite='builtin'"),
    ],
)
def test_checkpoint_of_another_suite_is_refused_before_any_episode(tmp_path, monkeypatch, saved, suite, message):
    from envs.evaluate import EvalConfig, evaluate

    ckpt = _tiny_checkpoint(tmp_path / "ckpt", **saved)
    _no_pool(monkeypatch)
    tasks = [OBJECT_TASK] if suite == "libero_object" else ["lift_red"]
    with pytest.raises(ValueError, match=message):
        evaluate(ckpt, EvalConfig(suite=suite, tasks=tasks, episodes_per_task=1, workers=1), tmp_path / "ev")


def _descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _workers(pid: int) -> list[int]:
    """The evaluation's worker processes (multiprocessing's spawned children)."""
    import psutil

    found = []
    for child in _descendants(pid):
        try:
            if any("spawn_main" in part for part in psutil.Process(child).cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_or_sigint_stops_the_workers_and_keeps_finished_episodes(tmp_path, sig):
    pytest.importorskip("psutil")
    from envs.evaluate import PARTIAL_FILE, EvalConfig, partial_header
    from vla.checkpoint import Checkpoint

    ckpt = _tiny_checkpoint(tmp_path / "ckpt")
    out = tmp_path / "ev"
    out.mkdir()
    # An episode finished by an earlier, interrupted run of the same evaluation (waiting for a
    # real one would take half a minute on shared cores).
    header = partial_header(Checkpoint(ckpt).sha256("model.safetensors"), EvalConfig(execute_steps=0), "")
    finished = {"task": "lift_red", "seed": 10_000, "init_state": None, "success": False, "steps": 80, "infer_s": 1.0}
    saved = [json.dumps(header), json.dumps(finished)]
    (out / PARTIAL_FILE).write_text("\n".join(saved) + "\n")
    code = (
        # Ctrl-C's behaviour even where this test runs with SIGINT ignored (a background job).
        "import signal; signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "from envs.evaluate import EvalConfig, evaluate\n"
        "ev = EvalConfig(tasks=['lift_red'], episodes_per_task=200, workers=2, videos_per_task=0)\n"
        f"evaluate({str(ckpt)!r}, ev, {str(out)!r}, progress=False)\n"
    )
    # Output to a file: workers left running would hold a pipe open, and reading it would hang.
    log_path = tmp_path / "eval.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
        )
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and len(_workers(proc.pid)) < 2:
            time.sleep(0.2)
        seen = set(_descendants(proc.pid))
        assert proc.poll() is None and len(_workers(proc.pid)) == 2, log_path.read_text()[-3000:]
        proc.send_signal(sig)
        rc = proc.wait(timeout=15)
        assert rc != 0, log_path.read_text()[-3000:]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in seen):
            time.sleep(0.1)
        log = log_path.read_text()
        assert not [p for p in seen if _alive(p)], log[-3000:]
        assert (out / PARTIAL_FILE).read_text().splitlines()[:2] == saved
        assert "run the same command again" in log  # the user is told how to resume
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for p in seen:  # only what this test started
            if _alive(p):
                os.kill(p, signal.SIGKILL)
