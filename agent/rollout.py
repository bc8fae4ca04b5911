"""`uio-robot rollout`: one simulated episode through the real runtime, a video, and one question.

    uio-robot rollout [env.task=uio_robot/Reach-v0] [env.seed=100000] [policy.kind=uio2]
                      [policy.checkpoint=DIR] [loop.rate_hz=20] [loop.worker=thread|process]
                      [env.pace=auto|real] [out_dir=outputs] ...

The episode runs exactly as on a robot: the MuJoCo env behind `GymRobot`, the fixed-rate `ControlLoop`,
the inference worker (a thread, or with `loop.worker=process` a child process that builds the policy)
and the safety filter. The policy is the shipped default model unless
`policy.checkpoint` (or `policy.kind`) says otherwise. Afterwards the same loaded model is asked a
question about the final scene through the runtime's query path (what a user would do beside control).

Pace. One tick is one env step, whatever the wall-clock rate. With `env.pace=auto` (the default) a
model policy is timed on this machine first; when a request does not fit comfortably in a tick at
`loop.rate_hz`, the loop runs slower (the simulation then runs slower than real time), and every tick
on which it asks for a chunk waits for it (`loop.act_wait_s`), so each chunk plays from row 0 on the
tick of its observation, as in lock-step `uio-robot eval`, and as on a GPU fast enough for same-tick
inference. The shipped model needs that: one tick between seeing and acting costs it most of its
success (agent/README.md, "Chunk tracking"). `env.pace=real` runs `loop.*` as given (at 20 Hz on a
2-core CPU: real time, stale chunks).

Writes `<out_dir>/<Task>_seed<seed>.mp4` (the front camera at the control rate) and
`<out_dir>/<Task>_seed<seed>.json`: {"task", "env_id", "seed", "instruction", "success", "steps",
"policy", "checkpoint", "worker", "rate_hz", "act_wait_ms", "pace" (the env.pace=auto line or null),
"question", "answer", "expected_answer", "query_latency_ms",
"telemetry": <loop summary>, "video", "wall_time_s"}.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from .config import AppConfig, load_config
from .gym_robot import GymRobot
from .loop import ControlLoop
from .pace import fit_pace
from .policy_recipe import describe_policy, policy_recipe_from_config
from .telemetry import TickRecord, format_table, write_json
from .video import write_mp4

log = logging.getLogger(__name__)
QUESTION_KINDS = ("colour", "count", "shape", "exists")  # short answers anyone can check in the video


def task_name(env_id: str) -> str:
    """"uio_robot/PickPlace-v0" -> "PickPlace"."""
    return env_id.split("/")[-1].rsplit("-v", 1)[0]


def fit_replanning(cfg: AppConfig, chunk: int | None) -> None:
    """A model with a fixed chunk length H re-plans at most every H // 2 ticks. A chunk starts at its
    observation's time and has to arrive, one inference latency later, before the previous one runs
    out; re-planning every H // 2 ticks leaves half the chunk for that (150 ms for the shipped model's 6
    steps at 20 Hz, which takes about 110 ms per request on one thread of a 2-core CPU). Adjusts
    `cfg.loop.replan_every` with a note."""
    most = max(1, chunk // 2) if chunk is not None else None
    if most is not None and cfg.loop.replan_every > most:
        print(f"note: loop.replan_every={cfg.loop.replan_every} would leave the model's {chunk}-step chunks too "
              f"little time; using {most}")
        cfg.loop.replan_every = most


def pick_question(robot: GymRobot, seed: int) -> dict | None:
    """One question about the current scene with its true answer (None when the env has no VQA truth)."""
    from uio_robot.envs.vqa import vqa_pairs

    scene_info = getattr(robot.env.unwrapped, "scene_info", None)
    if scene_info is None:
        return None
    pairs = vqa_pairs(scene_info(), np.random.default_rng(seed))
    for kind in QUESTION_KINDS:
        for pair in pairs:
            if pair["kind"] == kind:
                return pair
    return pairs[0] if pairs else None


def run(cfg: AppConfig) -> dict:
    """Run the episode; return the result dict (also written to out_dir)."""
    started = time.monotonic()
    env_id, seed, task = cfg.env.task, cfg.env.seed, task_name(cfg.env.task)
    camera = "image"
    model = describe_policy(cfg.policy)
    robot = GymRobot.make(env_id, image_size=cfg.env.image_size)
    try:
        obs = robot.reset(seed=seed)
        cfg.policy.period_s = 1.0 / cfg.loop.rate_hz  # one env step per tick, whatever the wall-clock rate
        pace = None
        if cfg.env.pace == "auto" and cfg.policy.kind == "uio2":
            policy, pace = fit_pace(cfg, robot.action_spec, robot.state_spec, obs, model.chunk)
            print(f"{pace} (env.pace=real: loop.* as given)")
        else:
            fit_replanning(cfg, model.chunk)
            # Built by the worker loop.worker picks (here, or in its own process), warmed up on this first
            # observation there, so one-time costs stay out of the timed episode.
            policy = policy_recipe_from_config(cfg, robot.action_spec, robot.state_spec).warmed(obs)
        if model.period is not None and abs(model.period - 1.0 / cfg.loop.rate_hz) > 1e-6:
            print(f"note: the model was trained at {1 / model.period:g} Hz and the loop runs at "
                  f"{cfg.loop.rate_hz:.3g} Hz: the simulation runs at {model.period * cfg.loop.rate_hz:.2g}x real "
                  f"time (one env step per tick)")
        frames: list[np.ndarray] = [obs.images[camera]]

        def grab(_: TickRecord) -> None:
            frames.append(robot.observe().images[camera])

        loop = ControlLoop(robot, policy, cfg.loop, cfg.safety, on_tick=grab)
        try:
            summary = loop.run(max_ticks=cfg.loop.max_ticks or cfg.env.max_steps, seed=seed)
            success = robot.is_success()
            qa = pick_question(robot, seed)
            answer = query_ms = None
            if qa is not None and cfg.policy.kind == "uio2":
                reply = loop.query({camera: robot.observe().images[camera]}, qa["question"]).result(timeout=60)
                answer, query_ms = reply.text, round(reply.latency_s * 1e3, 2)
        finally:
            loop.close()
        instruction = robot.observe().instruction
    finally:
        robot.close()
    out = Path(cfg.out_dir)
    fps = 1.0 / model.period if model.period else cfg.loop.rate_hz  # sim time: one frame per env step
    video = write_mp4(frames, out / f"{task}_seed{seed}.mp4", fps=fps)
    result = {
        "task": task, "env_id": env_id, "seed": seed, "instruction": instruction, "success": bool(success),
        "steps": summary["ticks"], "policy": cfg.policy.kind,
        "checkpoint": str(model.directory) if model.directory else None, "worker": cfg.loop.worker,
        "rate_hz": round(cfg.loop.rate_hz, 3), "act_wait_ms": round(cfg.loop.act_wait_s * 1e3, 1), "pace": pace,
        "question": qa["question"] if qa else None, "answer": answer,
        "expected_answer": qa["answer"] if qa else None, "query_latency_ms": query_ms,
        "telemetry": summary, "video": str(video),
        "wall_time_s": round(time.monotonic() - started, 2),
    }
    write_json(result, out / f"{task}_seed{seed}.json")
    return result


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    cfg = load_config(argv)
    result = run(cfg)
    print(f"task         {result['task']} (seed {result['seed']}): {result['instruction']}")
    print(f"policy       {result['policy']} {result['checkpoint'] or ''}".rstrip()
          + f" ({result['worker']} worker)")
    print(f"outcome      {'SUCCESS' if result['success'] else 'FAILURE'} after {result['steps']} steps")
    print(format_table(result["telemetry"]))
    if result["question"]:
        if result["answer"] is None:
            print(f"question     {result['question']} (not asked: policy.kind={result['policy']} has no "
                  f"language model; true answer {result['expected_answer']!r})")
        else:
            print(f"question     {result['question']}")
            print(f"answer       {result['answer']}   (true answer: {result['expected_answer']})")
    out = Path(cfg.out_dir)
    print(f"wrote        {result['video']} and {out / (Path(result['video']).stem + '.json')}")
    return 0
