"""Structured configuration (Hydra): one root schema, overridable from the command line.

Each part of the system owns one dataclass here; `load_config(["loop.rate_hz=30", ...])` composes the
root with the user's overrides and validates values, so a bad value fails at start with its key named.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, OmegaConf  # noqa: F401  (MISSING is for sub-configs that need a value)


class ConfigError(ValueError):
    """A configuration value that is out of range or inconsistent; the message names the key."""


@dataclass
class LoopConfig:
    rate_hz: float = 20.0  # control ticks per second
    max_ticks: int = 0  # 0 = until the episode ends
    replan_every: int = 4  # request a new chunk every N ticks
    temporal_ensemble: bool = False
    ensemble_decay: float = 0.5  # weight exp(-decay * age in steps) of overlapping chunks
    on_deadline: str = "continue"  # continue | hold | stop : what a late/failed/missing chunk leads to
    worker_timeout_s: float = 1.0  # a policy call without progress for this long = hung worker
    spin_s: float = 0.001  # busy-wait the last part of each tick's wait, for low jitter
    gil_switch_interval_s: float = 0.0005  # Python thread switch interval while the loop runs; 0 = keep
    pause_queries_near_tick: bool = True  # query decoding waits out each control tick (less jitter)
    max_pending_queries: int = 8  # queries waiting for the model; one more is rejected at once with an error
    query_priority_after_s: float = 1.0  # a query waiting this long goes before control (0 = control always first)
    log_repeat_s: float = 5.0  # a repeated identical fault log line: first at once, then once per this (0 = all)
    worker: str = "thread"  # thread | process: where the policy runs (process: a spawned child; agent/README.md)
    # Play the increment dims a robot declares (the tabletop's dx, dy, dz, dyaw) as a path anchored at the
    # state the policy saw, so late chunks and dropped rows do not shift it (agent/tracking.py; off by
    # default: with the shipped model it helped only at 2 ticks of latency, agent/README.md)
    track_chunks: bool = False
    # On a tick that sends a request, wait up to this long for its chunk, so the tick's command comes from
    # the observation it just read (row 0, as in lock step); 0 = never wait. Must leave the tick's own
    # work room inside the period: a model that fits it gets lock-step behaviour at a fixed rate.
    act_wait_s: float = 0.0


@dataclass
class SafetyConfig:
    enabled: bool = True  # False turns off shaping and staleness; e-stop and NaN rejection always apply
    clamp: bool = True  # clamp each dimension to the robot's action bounds
    max_rate: list[float] = field(default_factory=list)  # per-dimension max change per second; [] = off
    max_obs_age_s: float = 0.5  # staleness watchdog: older observations lead to the safe action
    safe_action: list[float] = field(default_factory=list)  # [] = the robot's own (zeros if it has none)
    workspace_low: list[float] = field(default_factory=list)  # end-effector position bounds; [] = off
    workspace_high: list[float] = field(default_factory=list)
    position_state_indices: list[int] = field(default_factory=list)  # where the EE position is in the state
    position_action_indices: list[int] = field(default_factory=list)  # the action's position part
    position_mode: str = "delta"  # absolute | delta (next = pos + delta_gain*a) | velocity (gain = period)
    delta_gain: float = 1.0


@dataclass
class EnvConfig:
    task: str = "uio_robot/Reach-v0"  # the shipped default model's task
    image_size: int = 128
    max_steps: int = 200
    seed: int = 100000  # the first held-out scene: training data uses seeds below 100000
    # rollout: "auto" times the model here and slows the simulated loop, if needed, to a rate at which
    # each tick's command comes from the observation just read (agent/rollout.py); "real" = loop.* as given
    pace: str = "auto"


@dataclass
class PolicyConfig:
    kind: str = "uio2"  # uio2 | zero | random | replay
    checkpoint: str = ""  # "" = the shipped default model
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    threads: int = 1  # torch CPU threads for the model (0 = torch's default); 1 leaves the other cores to the
    # robot or simulator: on 2 cores the shipped model takes ~110 ms per request on 1 thread, ~210 on 2
    fast: bool = True  # static-cache greedy decoding (CUDA graphs on a GPU; on a CPU as fast, faster under load)
    # seconds between a model's chunk rows; 0 = the period it was trained at. Set it to the robot's period
    # when the robot ticks at another rate and each model step should be one tick (rollout's env.pace does)
    period_s: float = 0.0


@dataclass
class EvalConfig:
    episodes: int = 20
    seed: int = 100000  # first evaluation seed; training uses seeds below this
    tasks: list[str] = field(default_factory=list)  # [] = every task of the suite
    num_envs: int = 2
    videos: int = 2  # episodes per task saved as mp4 (the first ones)
    vqa_scenes: int = 20  # held-out scenes whose VQA pairs are asked; 0 = no VQA
    expert: bool = True  # also run the scripted expert on the same seeds
    suite: str = "tabletop"  # tabletop | vima (native VIMA-style tasks) | vima_bench (the original, if installed)
    levels: list[int] = field(default_factory=lambda: [1, 2, 3, 4])  # VIMA evaluation levels (vima, vima_bench)


TABLETOP_ACTION_NAMES = ["dx", "dy", "dz", "dyaw", "gripper"]  # the MuJoCo tabletop suite's layout
TABLETOP_ARM_JOINTS = [f"joint{i}" for i in range(1, 8)]
TABLETOP_EE_STATE = ["grip_x", "grip_y", "grip_z", "grip_yaw", "gripper_opening"]
TABLETOP_INCREMENTS = {"dx": "grip_x", "dy": "grip_y", "dz": "grip_z", "dyaw": "grip_yaw"}
ROS_COMMAND_TYPES = ("float64_array", "twist", "joint_trajectory")


@dataclass
class RosConfig:
    """The ROS 2 bridge (bridges/ros). Defaults describe the MuJoCo tabletop robot that `uio-robot ros-sim`
    exposes; a real robot overrides topics (or remaps them), the state/action layout and the command type.
    Every field is also a ROS parameter (`ros.<field>`) of the nodes, with this config as its source."""

    node_name: str = "uio_robot_agent"
    cameras: dict[str, str] = field(default_factory=lambda: {"image": "camera/image_raw"})  # obs name -> topic
    compressed: list[str] = field(default_factory=list)  # camera names whose topic is sensor_msgs/CompressedImage
    image_height: int = 0  # expected camera image size; 0 = accept any
    image_width: int = 0
    # JointState topics -> the names each message must carry; the state vector is `state_names` gathered from them
    state_topics: dict[str, list[str]] = field(default_factory=lambda: {
        "joint_states": list(TABLETOP_ARM_JOINTS), "ee_state": list(TABLETOP_EE_STATE)})
    state_names: list[str] = field(default_factory=lambda: TABLETOP_EE_STATE + TABLETOP_ARM_JOINTS)
    instruction_topic: str = "instruction"  # std_msgs/String (transient local)
    instruction: str = ""  # used until an instruction message arrives
    # action name -> the state name it moves by about that much per tick; used (and checked) only with
    # loop.track_chunks=true
    increments: dict[str, str] = field(default_factory=lambda: dict(TABLETOP_INCREMENTS))
    angle_states: list[str] = field(default_factory=lambda: ["grip_yaw"])  # compared modulo 2 pi
    action_names: list[str] = field(default_factory=lambda: list(TABLETOP_ACTION_NAMES))
    action_low: list[float] = field(default_factory=lambda: [-0.05, -0.05, -0.05, -0.3, -1.0])
    action_high: list[float] = field(default_factory=lambda: [0.05, 0.05, 0.05, 0.3, 1.0])
    command_topic: str = "command"
    command_type: str = "float64_array"  # float64_array | twist | joint_trajectory
    # output slot j carries command_scale[j] * action[command_map[j]] under the name command_names[j]
    # (a joint name, a twist field such as linear.x / angular.z, or a label); [] map = identity, [] scale = 1
    command_names: list[str] = field(default_factory=lambda: list(TABLETOP_ACTION_NAMES))
    command_map: list[int] = field(default_factory=list)
    command_scale: list[float] = field(default_factory=list)
    frame_id: str = "base_link"
    success_topic: str = "success"  # std_msgs/Bool from the robot side; "" = none
    robot_reset_service: str = "sim/reset"  # std_srvs/Trigger called by an episode reset; "" = none
    stop_on_success: bool = True  # end the episode when the robot reports success
    episodes: int = 1  # episodes the agent node runs; 0 = until shut down
    wait_for_data_s: float = 20.0  # at start/reset: how long to wait for every input topic
    qos_depth: int = 10  # reliable topics (commands, answers); cameras use the sensor-data profile
    diagnostics_period_s: float = 1.0
    bag_dir: str = ""  # record each episode as an mcap bag under this directory; "" = off
    sim_rate_hz: float = 20.0  # the sim robot node's physics + publishing rate
    # the sim steps the physics once per command it receives (none otherwise) and republishes its last
    # observation at sim_rate_hz: the lock-step dynamics policies are trained and evaluated in. false: the
    # physics runs at sim_rate_hz, holding still between commands, as a real robot's would
    sim_lockstep: bool = False
    camera_every: int = 1  # the sim node publishes images every N physics steps
    # ros-agent: "auto" times the model at start and, where a request does not fit a tick, lowers
    # loop.rate_hz and sets the same-tick wait, as rollout's env.pace=auto does (agent/pace.py). Only for a
    # robot whose command is one step per tick, so that a slower tick just slows it (ros-sim); "real" =
    # loop.* as given, for a robot whose controller needs the configured rate
    pace: str = "real"


@dataclass
class AppConfig:
    loop: LoopConfig = field(default_factory=LoopConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    ros: RosConfig = field(default_factory=RosConfig)
    out_dir: str = "outputs"


def _validate(cfg: AppConfig) -> None:
    checks: list[tuple[str, bool, str]] = [
        ("loop.rate_hz", 0 < cfg.loop.rate_hz <= 1000, "must be in (0, 1000]"),
        ("loop.replan_every", cfg.loop.replan_every >= 1, "must be >= 1"),
        ("loop.max_ticks", cfg.loop.max_ticks >= 0, "must be >= 0"),
        ("loop.on_deadline", cfg.loop.on_deadline in ("continue", "hold", "stop"), "must be continue|hold|stop"),
        ("loop.worker_timeout_s", cfg.loop.worker_timeout_s > 0, "must be > 0"),
        ("loop.ensemble_decay", cfg.loop.ensemble_decay >= 0, "must be >= 0"),
        ("loop.spin_s", 0 <= cfg.loop.spin_s and cfg.loop.spin_s * cfg.loop.rate_hz < 1, "must be in [0, period)"),
        ("loop.gil_switch_interval_s", 0 <= cfg.loop.gil_switch_interval_s <= 0.1, "must be in [0, 0.1]"),
        ("loop.max_pending_queries", cfg.loop.max_pending_queries >= 1, "must be >= 1"),
        ("loop.query_priority_after_s", cfg.loop.query_priority_after_s >= 0, "must be >= 0"),
        ("loop.log_repeat_s", cfg.loop.log_repeat_s >= 0, "must be >= 0"),
        ("loop.worker", cfg.loop.worker in ("thread", "process"), "must be thread|process"),
        ("env.pace", cfg.env.pace in ("auto", "real"), "must be auto|real"),
        ("ros.pace", cfg.ros.pace in ("auto", "real"), "must be auto|real"),
        ("policy.period_s", 0 <= cfg.policy.period_s <= 10, "must be in [0, 10] seconds (0 = the model's own)"),
        ("loop.act_wait_s", 0 <= cfg.loop.act_wait_s * cfg.loop.rate_hz < 0.95,
         "must be in [0, 0.95 x the period): the tick still has to observe and send its command"),
        ("safety.max_obs_age_s", cfg.safety.max_obs_age_s > 0, "must be > 0"),
        ("safety.position_mode", cfg.safety.position_mode in ("absolute", "delta", "velocity"),
         "must be absolute|delta|velocity"),
        ("safety.delta_gain", cfg.safety.delta_gain > 0, "must be > 0"),
        ("env.image_size", 16 <= cfg.env.image_size <= 1024, "must be in [16, 1024]"),
        ("env.max_steps", cfg.env.max_steps >= 1, "must be >= 1"),
        ("policy.kind", cfg.policy.kind in ("uio2", "zero", "random", "replay"), "must be uio2|zero|random|replay"),
        ("policy.dtype", cfg.policy.dtype in ("auto", "float32", "bfloat16", "float16"), "unknown dtype"),
        ("eval.episodes", cfg.eval.episodes >= 1, "must be >= 1"),
        ("eval.num_envs", cfg.eval.num_envs >= 1, "must be >= 1"),
        ("eval.seed", cfg.eval.seed >= 0, "must be >= 0"),
        ("eval.videos", cfg.eval.videos >= 0, "must be >= 0"),
        ("policy.threads", cfg.policy.threads >= 0, "must be >= 0"),
        ("eval.vqa_scenes", cfg.eval.vqa_scenes >= 0, "must be >= 0"),
        ("eval.suite", cfg.eval.suite in ("tabletop", "vima", "vima_bench"), "must be tabletop|vima|vima_bench"),
        ("eval.levels", len(cfg.eval.levels) >= 1 and set(cfg.eval.levels) <= {1, 2, 3, 4}, "must be from 1-4"),
    ]
    checks += _ros_checks(cfg.ros, cfg.loop.track_chunks)
    for key, ok, why in checks:
        if not ok:
            raise ConfigError(f"config {key}={OmegaConf.select(OmegaConf.structured(cfg), key)!r}: {why}")


def validate(cfg: AppConfig) -> None:
    """Check a config that was changed after `load_config` (e.g. by ROS parameters); ConfigError names the key."""
    _validate(cfg)

def _ros_checks(r: RosConfig, track_chunks: bool) -> list[tuple[str, bool, str]]:
    n_act, n_cmd = len(r.action_names), len(r.command_names)
    provided = [n for names in r.state_topics.values() for n in names]
    return [
        ("ros.command_type", r.command_type in ROS_COMMAND_TYPES, f"must be one of {ROS_COMMAND_TYPES}"),
        ("ros.cameras", len(r.cameras) >= 1, "needs at least one camera"),
        ("ros.compressed", set(r.compressed) <= set(r.cameras), "names a camera not in ros.cameras"),
        ("ros.image_height", r.image_height >= 0 and r.image_width >= 0, "image sizes must be >= 0"),
        ("ros.action_low", len(r.action_low) == n_act == len(r.action_high), "needs one bound per action name"),
        ("ros.action_high", all(lo <= hi for lo, hi in zip(r.action_low, r.action_high)), "must be >= action_low"),
        ("ros.state_names", len(r.state_names) >= 1 and set(r.state_names) <= set(provided),
         "every state name must be carried by a topic in ros.state_topics"),
        ("ros.state_topics", len(provided) == len(set(provided)), "a name is carried by two topics"),
        ("ros.command_map", not r.command_map or (len(r.command_map) == n_cmd and all(
            0 <= i < n_act for i in r.command_map)), "needs one action index (in range) per command name"),
        ("ros.command_names", r.command_map or n_cmd == n_act, "needs one name per action dim (or a command_map)"),
        ("ros.command_scale", not r.command_scale or (len(r.command_scale) == n_cmd and all(
            s != 0 for s in r.command_scale)), "needs one non-zero scale per command name"),
        ("ros.command_names", r.command_type != "twist" or any(n.startswith(("linear.", "angular."))
                                                                for n in r.command_names),
         "with command_type=twist must name Twist fields, e.g. ros.command_names=[linear.x,linear.y,linear.z,"
         "angular.z,gripper] ros.command_scale=[20,20,20,20,1] (per-step deltas at 20 Hz as velocities; "
         "names that are not Twist fields go to <command_topic>_extra)"),
        ("ros.qos_depth", r.qos_depth >= 1, "must be >= 1"),
        ("ros.episodes", r.episodes >= 0, "must be >= 0"),
        ("ros.wait_for_data_s", r.wait_for_data_s > 0, "must be > 0"),
        ("ros.diagnostics_period_s", r.diagnostics_period_s > 0, "must be > 0"),
        ("ros.sim_rate_hz", 0 < r.sim_rate_hz <= 1000, "must be in (0, 1000]"),
        ("ros.camera_every", r.camera_every >= 1, "must be >= 1"),
        ("ros.increments", not track_chunks or (set(r.increments) <= set(r.action_names) and set(
            r.increments.values()) <= set(r.state_names)), "maps names in ros.action_names to names in "
         "ros.state_names; loop.track_chunks=false when the robot's actions are not per-tick increments"),
        ("ros.angle_states", not track_chunks or set(r.angle_states) <= set(r.state_names),
         "names a state not in ros.state_names"),
    ]


def load_config(overrides: list[str] | None = None) -> AppConfig:
    """Compose the root config with Hydra-style overrides (`key=value`, `+key=value`)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.config_store import ConfigStore
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    ConfigStore.instance().store(name="uio_robot", node=AppConfig)
    import tempfile

    with tempfile.TemporaryDirectory() as empty, initialize_config_dir(config_dir=empty, version_base="1.3"):
        try:
            node = compose(config_name="uio_robot", overrides=list(overrides or []))
        except (HydraException, OmegaConfBaseException) as exc:
            raise ConfigError(f"config: {exc}") from None
    cfg: Any = OmegaConf.to_object(node)
    _validate(cfg)
    return cfg
