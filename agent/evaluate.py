"""`uio-robot eval`: success rates with confidence intervals, VQA accuracy, a chart and a few videos.

    uio-robot eval [eval.episodes=N] [eval.seed=S] [eval.tasks=[Reach,Push]] [eval.num_envs=E]
                   [eval.videos=V] [eval.vqa_scenes=Q] [eval.expert=true] [policy.checkpoint=DIR] [out_dir=DIR]
    uio-robot eval eval.suite=vima|vima_bench eval.levels=[1,2,3,4] ...   VIMA-style tasks, success per task
                   and per level (see agent/evaluate_vima.py)

Episodes: for every task, N episodes with seeds S, S+1, ..., S+N-1 (S defaults to 100000; training
data uses seeds below that). E environments run side by side in one process, stepped in lock-step as
fast as the policy allows (simulated time, no real-time clock); their observations go to the policy as
one batch (`act_batch`). Each chunk is executed open-loop for min(loop.replan_every, chunk length)
steps, then the policy is asked again. An episode ends at the task's success or after
min(task step budget, env.max_steps) steps. The scripted expert runs on the same seeds (without
cameras) for comparison.

VQA: question/answer pairs from the simulator's ground truth (`envs/vqa.py`) on held-out scenes: the
first Q seeds >= S that `vqa.split_of` marks held out, one task per scene in turn, the front image
right after reset. Text answers count when equal after lower-casing and collapsing spaces; a "where"
answer counts when the predicted point is within `WHERE_TOLERANCE` (normalized image units, Euclidean)
of the true one.

Outputs in out_dir: `results.json` (schema below), `results.png` (success per task with 95% Wilson
intervals, the expert beside, and VQA accuracy), `videos/<Task>_seed<seed>_<success|failure>.mp4` for the
first V episodes of each task. Every file is written atomically.

results.json (schema_version 1):
    success_rate      float   successes / episodes over all tasks
    episodes          int     episodes over all tasks
    successes         int
    ci95              [low, high]  Wilson 95% interval of success_rate
    per_task          {task: {success_rate, episodes, successes, ci95, mean_steps, max_steps,
                              expert: {success_rate, episodes, successes, ci95} | null}}
    expert            {success_rate, episodes, successes, ci95} | null   the scripted expert, all tasks
    vqa               {accuracy, questions, correct, ci95, scenes, seeds, where_tolerance,
                       per_kind: {kind: {accuracy, questions, correct}}} | null (no VQA asked)
    seed              int     first episode seed (S)
    seeds             [first, last] per task
    checkpoint        str | null   the policy checkpoint directory (null for baseline policies)
    policy            str     policy.kind
    num_envs, replan_every, image_size   how the episodes were run
    episode_results   [{task, seed, success, steps, video}]   one entry per episode
    videos            [path, ...]
    wall_time_s       float
    schema_version    1
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from uio_robot.common.atomic import atomic_path

from .config import AppConfig, ConfigError, load_config
from .protocols import ArraySpec, Observation
from .stats import rate_summary, wilson_interval
from .telemetry import write_json
from .video import write_mp4

SCHEMA_VERSION = 1
WHERE_TOLERANCE = 0.1
VQA_BATCH = 16


@dataclass
class EpisodeResult:
    task: str
    seed: int
    success: bool = False
    steps: int = 0
    video: str | None = None
    frames: list[np.ndarray] = field(default_factory=list, repr=False)


def tabletop_specs() -> tuple[ArraySpec, ArraySpec]:
    """The suite's action and state specs, with its dimension names (for the checkpoint's layout check)."""
    from uio_robot.envs import TabletopEnv

    env = TabletopEnv("Reach", images=())
    try:
        state = env.observation_space["state"]
        return (ArraySpec(env.action_names, env.action_space.low, env.action_space.high, env.action_units),
                ArraySpec(env.state_names, state.low, state.high, env.state_units))
    finally:
        env.close()


# ---- episodes ---------------------------------------------------------------------------------------

class _Slot:
    """One of the side-by-side environments and the episode it is running."""

    def __init__(self, index: int, env):
        self.index, self.env = index, env
        self.result: EpisodeResult | None = None
        self.raw: dict | None = None
        self.chunk = None
        self.row = 0
        self.record = False

    def observation(self, period: float) -> Observation:
        raw = self.raw
        images = {k: raw[k] for k in ("image", "wrist_image") if k in raw}
        return Observation(images, np.asarray(raw["state"], np.float32), str(raw["instruction"]),
                           self.result.steps * period)


def _act(policy, slots: list[_Slot], period: float) -> None:
    observations = [s.observation(period) for s in slots]
    if hasattr(policy, "act_batch"):
        chunks = policy.act_batch(observations, [s.index for s in slots])
    else:
        chunks = [policy.act(o) for o in observations]
    for slot, chunk in zip(slots, chunks):
        slot.chunk, slot.row = chunk, 0


def run_task(policy, task: str, seeds: list[int], cfg: AppConfig, progress: tqdm | None = None) -> list[EpisodeResult]:
    """Run one episode per seed of `task` in `cfg.eval.num_envs` lock-stepped environments."""
    from uio_robot.envs import TASKS, TabletopEnv

    max_steps = min(TASKS[task].max_episode_steps, cfg.env.max_steps)
    n_envs = max(1, min(cfg.eval.num_envs, len(seeds)))
    camera = getattr(getattr(policy, "format", None), "camera", "image")  # the model's camera, if not the front one
    cameras = tuple(dict.fromkeys(("image", camera)))
    slots = [_Slot(i, TabletopEnv(task, image_size=cfg.env.image_size, images=cameras)) for i in range(n_envs)]
    period = slots[0].env.control_dt
    low, high = slots[0].env.action_space.low, slots[0].env.action_space.high
    todo = list(enumerate(seeds))
    results: list[EpisodeResult] = [EpisodeResult(task, s) for s in seeds]

    def start(slot: _Slot) -> None:
        if not todo:
            slot.result = None
            return
        i, seed = todo.pop(0)
        slot.result, slot.chunk = results[i], None
        slot.record = i < cfg.eval.videos
        slot.raw, _ = slot.env.reset(seed=seed)
        if slot.record:
            slot.result.frames.append(slot.raw["image"])
        if hasattr(policy, "act_batch"):
            policy.reset(slot.index)  # this environment's frame history starts afresh

    try:
        if not hasattr(policy, "act_batch"):
            policy.reset()
        for slot in slots:
            start(slot)
        replan = max(1, cfg.loop.replan_every)
        while any(s.result is not None for s in slots):
            active = [s for s in slots if s.result is not None]
            stale = [s for s in active if s.chunk is None or s.row >= min(replan, s.chunk.horizon)]
            if stale:
                _act(policy, stale, period)
            for slot in active:
                action = np.clip(slot.chunk.actions[slot.row], low, high)
                slot.row += 1
                slot.raw, _, terminated, truncated, info = slot.env.step(action)
                result = slot.result
                result.steps += 1
                if slot.record:
                    result.frames.append(slot.raw["image"])
                if terminated or truncated or result.steps >= max_steps:
                    result.success = bool(info.get("is_success", False))
                    if progress is not None:
                        progress.update(1)
                    start(slot)
    finally:
        for slot in slots:
            slot.env.close()
    return results


def expert_summary(task: str, seeds: list[int]) -> dict:
    from uio_robot.envs.expert_eval import evaluate_expert

    report = evaluate_expert(task, seeds)
    return rate_summary(report.successes, report.episodes)


# ---- VQA --------------------------------------------------------------------------------------------

def normalize_answer(text: str) -> str:
    return " ".join(str(text).lower().replace("?", " ").split()).rstrip(".")


def vqa_seeds(first: int, count: int) -> list[int]:
    from uio_robot.envs.vqa import split_of

    seeds, seed = [], first
    while len(seeds) < count:
        if split_of(seed) == "heldout":
            seeds.append(seed)
        seed += 1
    return seeds


def answer_correct(pair: dict, grounding, image_shape: tuple[int, ...]) -> bool:
    """Exact match for text answers; within WHERE_TOLERANCE for "where" answers."""
    if pair["kind"] != "where":
        return normalize_answer(grounding.answer) == normalize_answer(pair["answer"])
    if grounding.point is None:
        return False
    u, v = (float(x) for x in pair["answer"].split())
    h, w = image_shape[:2]
    return float(np.hypot(grounding.point[0] / w - u, grounding.point[1] / h - v)) <= WHERE_TOLERANCE


def evaluate_vqa(policy, tasks: list[str], first_seed: int, scenes: int, image_size: int,
                 progress: tqdm | None = None) -> dict | None:
    """Accuracy on the VQA pairs of `scenes` held-out scenes (None when the policy cannot answer)."""
    if scenes <= 0 or not hasattr(policy, "ground_batch"):
        return None
    from uio_robot.envs import TabletopEnv
    from uio_robot.envs.vqa import vqa_pairs

    seeds = vqa_seeds(first_seed, scenes)
    envs = {t: TabletopEnv(t, image_size=image_size, images=("image",)) for t in tasks}
    requests: list[tuple[dict, dict]] = []  # (pair, images)
    try:
        for i, seed in enumerate(seeds):
            env = envs[tasks[i % len(tasks)]]
            raw, _ = env.reset(seed=seed)
            for pair in vqa_pairs(env.scene_info(), np.random.default_rng(seed)):
                requests.append((pair, {"image": raw["image"]}))
    finally:
        for env in envs.values():
            env.close()
    if progress is not None:
        progress.reset(total=len(requests))
    per_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for start in range(0, len(requests), VQA_BATCH):
        block = requests[start:start + VQA_BATCH]
        answers = policy.ground_batch([(images, pair["question"]) for pair, images in block])
        for (pair, images), grounding in zip(block, answers):
            counts = per_kind[pair["kind"]]
            counts[0] += answer_correct(pair, grounding, images["image"].shape)
            counts[1] += 1
        if progress is not None:
            progress.update(len(block))
    correct = sum(c for c, _ in per_kind.values())
    total = sum(n for _, n in per_kind.values())
    low, high = wilson_interval(correct, total)
    return {"accuracy": round(correct / total, 4), "questions": total, "correct": correct,
            "ci95": [round(low, 4), round(high, 4)], "scenes": len(seeds), "seeds": [seeds[0], seeds[-1]],
            "where_tolerance": WHERE_TOLERANCE,
            "per_kind": {k: {"accuracy": round(c / n, 4), "questions": n, "correct": c}
                         for k, (c, n) in sorted(per_kind.items())}}


# ---- outputs ----------------------------------------------------------------------------------------

def episode_entries(results: list[EpisodeResult], video_dir: Path, prefix: str, fps: float,
                    **fields) -> list[dict]:
    """The `episode_results` entries of one task's episodes (with `fields`, e.g. a level, after the task);
    episodes that kept frames get `<prefix>_seed<seed>_<success|failure>.mp4` and drop the frames."""
    entries = []
    for r in results:
        if r.frames:
            name = f"{prefix}_seed{r.seed}_{'success' if r.success else 'failure'}.mp4"
            r.video = str(write_mp4(r.frames, video_dir / name, fps=fps))
            r.frames = []
        entries.append({"task": r.task, **fields, "seed": r.seed, "success": r.success, "steps": r.steps,
                        "video": r.video})
    return entries


def task_entry(results: list[EpisodeResult], max_steps: int, expert: dict | None) -> dict:
    """A `per_task` entry: the rate with its interval, mean and budgeted steps, the expert's rate (or None)."""
    entry = rate_summary(sum(r.success for r in results), len(results))
    entry["mean_steps"] = round(float(np.mean([r.steps for r in results])), 2)
    entry["max_steps"] = max_steps
    entry["expert"] = expert
    return entry


def pooled(entries) -> dict | None:
    """The rate summary of several rate entries taken together (None entries skipped; None if none)."""
    entries = [e for e in entries if e]
    n = sum(e["episodes"] for e in entries)
    return rate_summary(sum(e["successes"] for e in entries), n) if n else None


def results_record(cfg: AppConfig, policy, seeds: list[int], episodes: list[dict], per_task: dict, *,
                   vqa: dict | None, replan_every: int, started: float, head: dict | None = None) -> dict:
    """results.json's fields (`head`: suite-specific fields placed before `per_task`)."""
    return {
        "schema_version": SCHEMA_VERSION,
        **rate_summary(sum(e["success"] for e in episodes), len(episodes)),
        **(head or {}),
        "per_task": per_task,
        "expert": pooled(e["expert"] for e in per_task.values()),
        "vqa": vqa,
        "seed": cfg.eval.seed,
        "seeds": [seeds[0], seeds[-1]],
        "checkpoint": str(getattr(policy, "directory", "")) or None,
        "policy": cfg.policy.kind,
        "num_envs": cfg.eval.num_envs,
        "replan_every": replan_every,
        "image_size": cfg.env.image_size,
        "episode_results": episodes,
        "videos": [e["video"] for e in episodes if e["video"]],
        "wall_time_s": round(time.monotonic() - started, 1),
    }


def write_results(results: dict, out: Path, check=None) -> None:
    """Check `results` against the schema (and `check`, a suite's own), then write results.json and the chart."""
    check_results(results)
    if check is not None:
        check(results)
    write_json(results, out / "results.json")
    plot_results(results, out / "results.png")


def plot_results(results: dict, path: Path) -> Path:
    """Bar chart: success per task (policy and expert) with 95% intervals, VQA accuracy last."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(results["per_task"])
    labels = tasks + (["VQA"] if results["vqa"] else [])
    x = np.arange(len(labels))

    def bars(entries):
        rates = np.array([e["success_rate"] if "success_rate" in e else e["accuracy"] for e in entries])
        ci = np.array([e["ci95"] for e in entries]).reshape(-1, 2)
        return rates, np.stack([rates - ci[:, 0], ci[:, 1] - rates])

    fig, ax = plt.subplots(figsize=(1.6 * len(labels) + 2.5, 4))
    policy_entries = [results["per_task"][t] for t in tasks] + ([results["vqa"]] if results["vqa"] else [])
    rates, err = bars(policy_entries)
    ax.bar(x - 0.2, rates, 0.4, yerr=err, capsize=4, label=f"policy ({results['policy']})", color="tab:blue")
    experts = [results["per_task"][t]["expert"] for t in tasks]
    if all(experts):
        e_rates, e_err = bars(experts)
        ax.bar(x[:len(tasks)] + 0.2, e_rates, 0.4, yerr=e_err, capsize=4, label="scripted expert", color="tab:gray")
    ax.set_xticks(x, labels)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate / VQA accuracy")
    ax.set_title(f"{results['episodes'] // max(len(tasks), 1)} episodes per task, seeds from {results['seed']} "
                 "(95% Wilson intervals)", fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)
    return path


def _check_rate(entry, where: str, problems: list[str], count_key: str = "success_rate") -> None:
    if not isinstance(entry, dict):
        problems.append(f"{where}: expected an object, got {type(entry).__name__}")
        return
    rate, ci = entry.get(count_key), entry.get("ci95")
    n = entry.get("episodes", entry.get("questions"))
    if not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
        problems.append(f"{where}.{count_key}: expected a number in [0, 1], got {rate!r}")
    if not isinstance(n, int) or n < 1:
        problems.append(f"{where}: expected a positive episode/question count, got {n!r}")
    if not (isinstance(ci, list) and len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci)
            and 0 <= ci[0] <= ci[1] <= 1):
        problems.append(f"{where}.ci95: expected [low, high] within [0, 1], got {ci!r}")
    elif isinstance(rate, (int, float)) and not ci[0] - 1e-4 <= rate <= ci[1] + 1e-4:
        problems.append(f"{where}: rate {rate} outside its interval {ci}")


def check_results(results: dict) -> None:
    """Raise ValueError listing every way `results` departs from the documented schema."""
    problems: list[str] = []
    required = ("success_rate", "episodes", "ci95", "per_task", "vqa", "seed", "checkpoint", "schema_version")
    problems += [f"missing key {k!r}" for k in required if k not in results]
    if not problems:
        _check_rate(results, "results", problems)
        if not isinstance(results["per_task"], dict) or not results["per_task"]:
            problems.append("per_task: expected a non-empty object")
        else:
            for task, entry in results["per_task"].items():
                _check_rate(entry, f"per_task.{task}", problems)
                if isinstance(entry, dict) and entry.get("expert") is not None:
                    _check_rate(entry["expert"], f"per_task.{task}.expert", problems)
            total = sum(e.get("episodes", 0) for e in results["per_task"].values() if isinstance(e, dict))
            if total != results["episodes"]:
                problems.append(f"episodes {results['episodes']} != the per-task sum {total}")
        if results["vqa"] is not None:
            _check_rate(results["vqa"], "vqa", problems, count_key="accuracy")
        if not isinstance(results["seed"], int):
            problems.append(f"seed: expected an int, got {results['seed']!r}")
        if results["checkpoint"] is not None and not isinstance(results["checkpoint"], str):
            problems.append(f"checkpoint: expected a string or null, got {results['checkpoint']!r}")
    if problems:
        raise ValueError("results.json does not match its schema: " + "; ".join(problems))


def evaluate(cfg: AppConfig, policy=None) -> dict:
    """Run the whole evaluation and write its files; returns the results dict."""
    if cfg.eval.suite != "tabletop":  # VIMA-style multimodal-prompt tasks: native or the original benchmark
        from .evaluate_vima import evaluate_vima

        return evaluate_vima(cfg, policy)
    from uio_robot.envs import TASKS
    from uio_robot.policies.factory import build_policy

    started = time.monotonic()
    tasks = [t.split("/")[-1].rsplit("-v", 1)[0] for t in (cfg.eval.tasks or list(TASKS))]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ConfigError(f"config eval.tasks: unknown task(s) {unknown}; known: {sorted(TASKS)}")
    if policy is None:
        action_spec, state_spec = tabletop_specs()
        policy = build_policy(cfg.policy.kind, action_spec, state_spec, checkpoint=cfg.policy.checkpoint,
                              device=cfg.policy.device, dtype=cfg.policy.dtype, threads=cfg.policy.threads, period=0.05,
                              horizon=cfg.loop.replan_every, seed=cfg.eval.seed, fast=cfg.policy.fast)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seeds = list(range(cfg.eval.seed, cfg.eval.seed + cfg.eval.episodes))
    per_task, episodes = {}, []
    with tqdm(total=len(tasks) * cfg.eval.episodes, desc="episodes", unit="ep", file=sys.stderr) as bar:
        for task in tasks:
            bar.set_postfix_str(task)
            results = run_task(policy, task, seeds, cfg, bar)
            episodes += episode_entries(results, out / "videos", task, fps=20)
            expert = expert_summary(task, seeds) if cfg.eval.expert else None
            per_task[task] = task_entry(results, min(TASKS[task].max_episode_steps, cfg.env.max_steps), expert)
    with tqdm(total=0, desc="vqa", unit="q", file=sys.stderr) as bar:
        vqa = evaluate_vqa(policy, tasks, cfg.eval.seed, cfg.eval.vqa_scenes, cfg.env.image_size, bar)
    results = results_record(cfg, policy, seeds, episodes, per_task, vqa=vqa, replan_every=cfg.loop.replan_every,
                             started=started)
    write_results(results, out)
    return results


def rate_row(name: str, entry: dict, expert: dict | None, width: int = 20, ci_width: int = 15) -> str:
    """One line of the printed table: name, success rate, its 95% interval, the expert's rate."""
    shown = f"{expert['success_rate']:.2f}" if expert else "-"
    return f"{name:<{width}} {entry['success_rate']:>8.2f} {str(entry['ci95']):>{ci_width}} {shown:>8}"


def format_results(results: dict) -> str:
    lines = [f"{'task':<20} {'success':>8} {'95% CI':>15} {'expert':>8}"]
    lines += [rate_row(task, e, e["expert"]) for task, e in results["per_task"].items()]
    lines.append(rate_row("all", results, results["expert"]))
    if results["vqa"]:
        v = results["vqa"]
        lines.append(f"VQA accuracy {v['accuracy']:.3f} on {v['questions']} questions ({v['scenes']} held-out scenes)")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    cfg = load_config(argv)
    results = evaluate(cfg)
    if results.get("suite", "tabletop") != "tabletop":
        from .evaluate_vima import format_vima_results

        print(format_vima_results(results))
    else:
        print(format_results(results))
    print(f"wrote {Path(cfg.out_dir) / 'results.json'}, results.png and {len(results['videos'])} videos")
    return 0
