"""Check an installed VIMA-Bench through the adapter against recorded episodes.

    python -m uio_robot.envs.vima_bench.check --samples ../shared/vima_bench_samples [--limit N]

For each recorded oracle episode: make the live env with the episode's level spec, reset with its seed,
and compare the adapter's observation and prompt with the recording (pixel-exact when the software
stack matches the recording's); then let VIMA-Bench's oracle act through the adapter (optionally
through the primitive codec's bins) and report success. The oracle's first action is compared with the
recorded one; later ones depend on how the earlier (binned) actions played out.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from .convert import ACTION_HIGH, ACTION_LOW, action_to_vector, convert_observation, convert_prompt
from .env import VimaBenchEnv
from .recorded import list_episodes, load_episode


def check_episode(folder, codec=None) -> dict:
    ep = load_episode(folder)
    env = VimaBenchEnv(ep.task, level=ep.level, seed=ep.seed)
    try:
        obs, _ = env.reset(seed=ep.seed)
        want = convert_observation(ep.observation(0))
        pixels = {k: float(np.mean(obs[k] != want[k])) for k in ("image", "top_image", "segm_top")}
        prompt, assets = ep.prompt_and_assets()
        live_parts = convert_prompt(obs["instruction"], env._prompt[1])
        want_parts = convert_prompt(prompt, assets)
        prompt_same = obs["instruction"] == prompt and all(
            (a == b) if isinstance(a, str) else np.array_equal(a, b) for a, b in zip(live_parts, want_parts))
        oracle = env.expert()
        errors, info, done, steps = [], {}, False, 0
        while not done:
            action = oracle.act(obs)
            if steps == 0:
                errors.append(float(np.max(np.abs(action - action_to_vector(ep.action(0))))))
            if codec is not None:
                action = codec.decode_actions(codec.encode_actions(action[None]))[0]
            obs, _, terminated, truncated, info = env.step(action)
            steps += 1
            done = terminated or truncated
        return {"episode": str(folder.name), "task": ep.task, "level": ep.level, "pixels_differing": pixels,
                "prompt_same": bool(prompt_same), "first_action_diff": errors[0] if errors else None,
                "success": bool(info.get("is_success")), "recorded_success": bool(ep.meta["final"]["success"])}
    finally:
        env.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", required=True)
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--through-bins", action="store_true", help="act with the oracle's actions after the codec's bins")
    args = p.parse_args(argv)
    codec = None
    if args.through_bins:
        from uio_robot.policies.vima_prompts import primitive_codec

        codec = primitive_codec(ACTION_LOW, ACTION_HIGH)
    folders = list_episodes(args.samples)[: args.limit or None]
    ok = 0
    for folder in folders:
        r = check_episode(folder, codec)
        ok += r["success"]
        print(r, flush=True)
    print(f"{ok}/{len(folders)} episodes succeeded through the adapter")
    return 0


if __name__ == "__main__":
    sys.exit(main())
