"""Which kind of inference-thread load delays the control loop's ticks? (a benchmark that prints numbers)

Runs the real `ControlLoop` on the numpy point robot at 20 Hz with a policy whose `act` keeps the worker
thread busy for `--busy-ms` in one of three ways, under several Python thread switch intervals and
optionally a lower OS priority for the worker thread:
- python:   pure Python arithmetic (holds the GIL; the switch interval decides how soon the tick gets it)
- bigops:   256x256 torch matmuls (the GIL is released inside each op)
- smallops: chains of tiny torch ops with Python between them (the shape of a small model's forward)
If jitter stays high with `bigops` or with the worker at SCHED_IDLE, the GIL is not the cause.

    OMP_NUM_THREADS=1 python benchmarks/loop_worker_load.py --kinds python,bigops,smallops --switch-ms 0.5,5
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time

import numpy as np
import torch

from uio_robot.agent.config import LoopConfig
from uio_robot.agent.loop import ControlLoop
from uio_robot.agent.sim_robot import PointRobot
from uio_robot.policies.types import ActionChunk


class BusyPolicy:
    def __init__(self, spec, kind: str, busy_ms: float, worker_priority: str):
        self.spec, self.kind, self.busy_s, self.priority = spec, kind, busy_ms / 1e3, worker_priority
        self.big, self.small, self._priority_set = torch.randn(256, 256), torch.randn(64, 64), False

    def reset(self) -> None:
        pass

    def act(self, obs):
        if not self._priority_set:  # on the worker thread, once
            self._priority_set = True
            if self.priority == "nice19":
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
            elif self.priority in ("batch", "idle"):
                policy = os.SCHED_BATCH if self.priority == "batch" else os.SCHED_IDLE
                os.sched_setscheduler(0, policy, os.sched_param(0))
        end = time.perf_counter() + self.busy_s
        while time.perf_counter() < end:
            if self.kind == "python":
                sum(i * i for i in range(2000))
            elif self.kind == "bigops":
                self.big @ self.big
            else:
                x = self.small
                for _ in range(20):
                    x = torch.tanh(x @ self.small) + 1
        return ActionChunk(np.zeros((8, self.spec.dim), np.float32), obs.timestamp, 0.05)

    def query(self, images, text, between_steps=None) -> str:
        return ""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kinds", default="python,bigops,smallops")
    p.add_argument("--switch-ms", default="0.5,5", help="switch intervals to try (5 = Python's default)")
    p.add_argument("--worker-priority", default="none", help="comma list of none|nice19|batch|idle")
    p.add_argument("--busy-ms", type=float, default=150.0)
    p.add_argument("--ticks", type=int, default=200)
    args = p.parse_args()
    logging.disable(logging.WARNING)  # every request is late by design; the numbers are the output
    torch.set_num_threads(1)
    for kind in args.kinds.split(","):
        for priority in args.worker_priority.split(","):
            for switch_ms in (float(x) for x in args.switch_ms.split(",")):
                robot = PointRobot(dt=0.05)
                cfg = LoopConfig(rate_hz=20, replan_every=2, gil_switch_interval_s=switch_ms / 1e3)
                with ControlLoop(robot, BusyPolicy(robot.action_spec, kind, args.busy_ms, priority), cfg) as loop:
                    s = loop.run(max_ticks=args.ticks, seed=0)
                j = s["jitter_ms"]
                print(f"{kind:8s} worker {priority:6s} switch {switch_ms:4.1f} ms: jitter p50 {j['p50']:5.2f} "
                      f"p99 {j['p99']:6.2f} max {j['max']:6.2f}  inference p50 {s['latency_ms']['p50']:.0f} ms  "
                      f"load {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
