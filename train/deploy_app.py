"""Hydra entry points of the deploy node: `vla-serve` (the policy server) and `vla-robot` (the
robot agent). Both hand plain dataclasses to `deploy/`; neither imports the training stack.

    vla-serve policy.checkpoint=runs/builtin/checkpoints/latest server.port=8000
    vla-serve policy.checkpoint=... server.host=0.0.0.0 server.token=$TOKEN   # beyond loopback: a token is required
    vla-robot server=ws://127.0.0.1:8000 robot=sim sim_task=lift_red episodes=5
    vla-robot server=ws://gpu-box:8000 token=$TOKEN robot=arm arm.port=/dev/ttyACM0 \\
        'arm.cameras={front: {index_or_path: 0, width: 640, height: 480, fps: 30}}' arm.instruction="pick up the cube"

docs/deploy.md has the design, the faults it survives and the step-by-step SO-101 page.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from deploy.agent import AgentConfig
from deploy.lerobot_arm import ArmConfig
from deploy.server import TOKEN_ENV, CheckpointPolicyConfig, ServerConfig

log = logging.getLogger(__name__)
_HYDRA = {"run": {"dir": "."}, "job": {"chdir": False}, "output_subdir": None}
ROBOTS = ("sim", "arm")


@dataclass
class ServeAppConfig:
    """`vla-serve`: the checkpoint and how it runs (`policy.`), the server (`server.`)."""

    policy: CheckpointPolicyConfig = field(default_factory=CheckpointPolicyConfig)
    server: ServerConfig = field(default_factory=ServerConfig)


@dataclass
class RobotAppConfig:
    server: str = "ws://127.0.0.1:8000"
    token: str = ""  # empty: $VLA_SERVE_TOKEN, if set
    robot: str = "sim"  # sim: a built-in suite task stepped in real time; arm: a lerobot robot
    sim_task: str = "lift_red"
    episodes: int = 1
    max_steps: int = 0  # 0: the sim task's own limit, or 1200 ticks on an arm
    seed: int = 0
    confirm: bool = True  # arm: wait for Enter before arming each episode (a person re-arms)
    agent: AgentConfig = field(default_factory=AgentConfig)
    arm: ArmConfig = field(default_factory=ArmConfig)

    def __post_init__(self) -> None:
        if self.robot not in ROBOTS:
            raise ValueError(f"robot must be one of {list(ROBOTS)}, got {self.robot!r}")
        if self.episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {self.episodes}")
        if self.max_steps < 0:
            raise ValueError(
                f"max_steps must be >= 0 (0: the sim task's own limit, or 1200 on an arm), got {self.max_steps}"
            )


# Maps whose keys the user chooses (`'agent.expect={fps: 30}'`, `'arm.cameras={front: {...}}'`):
# set without hydra's `+`, as `vla-train`'s data.camera_keys (train/hydra_app.py).
FREE_FORM_MAPS = ("agent.expect", "arm.cameras", "arm.camera_map")


def schema_with_free_form_maps(cls, paths) -> object:
    """`cls` as a structured config whose maps at `paths` (dotted) take new keys: hydra composes in
    struct mode, which refuses a key the schema does not list, so these nodes are taken out of it."""
    schema = OmegaConf.structured(cls)
    for path in paths:
        OmegaConf.set_struct(OmegaConf.select(schema, path), False)
    return schema


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="serve_schema", node=ServeAppConfig)
    cs.store(
        name="vla_serve",
        node={"defaults": ["serve_schema", {"override hydra/job_logging": "stdout"}, "_self_"], "hydra": _HYDRA},
    )
    cs.store(name="robot_schema", node=schema_with_free_form_maps(RobotAppConfig, FREE_FORM_MAPS))
    cs.store(
        name="vla_robot",
        node={"defaults": ["robot_schema", {"override hydra/job_logging": "stdout"}, "_self_"], "hydra": _HYDRA},
    )


def _serve(cfg) -> None:
    from deploy.server import CheckpointPolicy, PolicyServer

    app: ServeAppConfig = OmegaConf.to_object(cfg)
    policy = CheckpointPolicy(app.policy)
    server = PolicyServer(policy, app.server)
    s = policy.spec
    log.info(
        "policy %s: cameras %s, state %d, actions %d (%s) at %.0f Hz, chunk %d; warming up",
        s.model_id,
        s.cameras,
        s.state_dim,
        s.action_dim,
        s.action_space,
        s.fps,
        s.chunk_size,
    )
    server.run()


def _robot(cfg) -> None:
    from deploy.agent import MonotonicClock, RobotAgent
    from deploy.client import PolicyClient

    app: RobotAppConfig = OmegaConf.to_object(cfg)
    clock = MonotonicClock()
    client = PolicyClient(app.server, token=app.token or os.environ.get(TOKEN_ENV, ""))
    spec = client.connect()
    log.info("connected to %s: %s (%s, %.0f Hz)", app.server, spec.model_id, spec.action_space, spec.fps)
    if app.robot == "sim":
        from deploy.robots import SimRobot

        (h, w), *_ = spec.cameras.values()
        robot = SimRobot(app.sim_task, h, clock, seed=app.seed)
        max_steps = app.max_steps or robot.env.unwrapped.task.max_episode_steps
    else:  # "arm" (RobotAppConfig checks `robot`)
        from deploy.lerobot_arm import LeRobotArm

        robot = LeRobotArm.from_config(app.arm, clock)
        max_steps = app.max_steps or 1200
    agent = RobotAgent(app.agent, client, robot, clock)
    rows = []
    try:
        for ep in range(app.episodes):
            if app.robot == "arm" and app.confirm:
                input(f"episode {ep}: press Enter to arm (Ctrl-C to quit) ")
            agent.arm()
            out = agent.run(max_steps)
            rows.append(out)
            log.info("episode %d: %s", ep, out)
    except KeyboardInterrupt:
        agent.safe_stop("interrupted")
        robot.stop()
    finally:
        client.close()
        robot.close()
    print(f"\n{'episode':>7} {'success':>7} {'steps':>5} {'end mode':>9} {'merged':>6} {'jitter p99 ms':>13}  reason")
    for i, r in enumerate(rows):
        print(
            f"{i:>7} {str(r['success']):>7} {r['steps']:>5} {r['mode']:>9} {r['events'].get('merged', 0):>6} {r['jitter_ms_p99']:>13.2f}  {r['reason']}"
        )


def serve_main() -> None:
    register_configs()
    hydra.main(version_base=None, config_name="vla_serve")(_serve)()


def robot_main() -> None:
    register_configs()
    hydra.main(version_base=None, config_name="vla_robot")(_robot)()
