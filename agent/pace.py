"""Same-tick pacing: slow a control loop, where the model needs it, so that each tick that asks for a chunk
gets the chunk of the observation it just read and plays it from row 0 (as lock-step `uio-robot eval`
does). The shipped model needs that: one tick between seeing and acting costs it most of its success
(agent/README.md, "Chunk tracking"). Used by `uio-robot rollout` (env.pace=auto) and `uio-robot
ros-agent` (ros.pace=auto, for a robot that takes commands at any rate, such as `ros-sim`)."""

from __future__ import annotations

import time

from .config import AppConfig
from .policy_recipe import PolicyRecipe, policy_recipe_from_config
from .protocols import ArraySpec, Observation, Policy

PACE_PROBES = 4  # timed requests before choosing the pace
# period >= the slowest probe x this. Requests in the running loop are slower than the probes (the sim steps
# and renders beside them): at 1.35 a 128 px model missed its wait on some ticks, and each miss drops rows.
PACE_MARGIN = 1.7
PACE_WAIT = 0.85  # the same-tick wait, as a fraction of the period (the rest: observing, stepping, recording)


def fit_pace(cfg: AppConfig, action_spec: ArraySpec, state_spec: ArraySpec, obs: Observation,
             chunk: int | None) -> tuple[Policy | PolicyRecipe, str]:
    """Build the configured policy here and time a few requests on `obs`; set `cfg.loop` to a period that
    holds the slowest one with a margin (never faster than `loop.rate_hz`) and a same-tick wait. A chunk
    then arrives on the tick that asked for it, so re-planning every `loop.replan_every` ticks (at most
    the chunk length) plays rows 0.. of each chunk, exactly as lock-step eval does. Returns the policy to
    run (the built one for the thread worker, a recipe at the new rate for the process worker, whose
    child builds its own) and a line saying what was chosen."""
    import torch

    threads = torch.get_num_threads()  # policy.threads is process-wide: a probe for a child must not keep it
    policy = policy_recipe_from_config(cfg, action_spec, state_spec).build()
    times = []
    for _ in range(PACE_PROBES):
        t = time.perf_counter()
        policy.act(obs)
        times.append(time.perf_counter() - t)
    policy.reset()
    slowest = max(times)
    period = max(1.0 / cfg.loop.rate_hz, PACE_MARGIN * slowest)
    cfg.loop.rate_hz, cfg.loop.act_wait_s = 1.0 / period, PACE_WAIT * period
    # A simulated observation is a period old at the next tick, and nothing moves meanwhile: the staleness
    # watchdog must not take a slow pace for a dead camera.
    cfg.safety.max_obs_age_s = max(cfg.safety.max_obs_age_s, 2 * period)
    cfg.loop.replan_every = min(cfg.loop.replan_every, chunk or cfg.loop.replan_every)
    cfg.policy.period_s = policy.period = period  # its rows are due one (new) tick apart
    line = (f"pace: a request takes up to {slowest * 1e3:.0f} ms here, so the loop runs at {cfg.loop.rate_hz:.3g} Hz "
            f"and each tick waits up to {cfg.loop.act_wait_s * 1e3:.0f} ms for the chunk of the observation it "
            f"just read")
    if cfg.loop.worker == "process":
        del policy
        torch.set_num_threads(threads)
        return policy_recipe_from_config(cfg, action_spec, state_spec).warmed(obs), line
    return policy, line
