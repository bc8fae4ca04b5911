"""Run a closure over static (preallocated) tensors as a CUDA graph on a GPU, eagerly elsewhere.

Why: at batch 1 a UIO2 decode step is hundreds of small kernels; launching them one by one from Python
costs more than the GPU work. A CUDA graph replays all of them with one launch. The closure must read
its inputs from tensors that stay at the same address (callers copy new data into them) and must not
synchronise with the host (.item(), bool(tensor), data-dependent shapes); run eagerly on the CPU, the
same closure is the same computation, which is how the CPU tests exercise it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

WARMUP_RUNS = 2  # lazy kernel / workspace initialisation must happen before capture


class StaticCall:
    """`fn()` captured once as a CUDA graph (when `use_graph`), then `replay()`; otherwise called directly.

    `reset` (not captured) runs before each warm-up run, for closures that advance a counter.
    The closure's return value is kept: under a graph its tensors are overwritten by every replay, so a
    caller that needs them beyond the next replay copies them.
    """

    def __init__(self, fn: Callable[[], Any], use_graph: bool, reset: Callable[[], None] | None = None):
        self.fn = fn
        self.graph: torch.cuda.CUDAGraph | None = None
        self.outputs: Any = None
        if use_graph:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(WARMUP_RUNS):
                    if reset is not None:
                        reset()
                    fn()
            torch.cuda.current_stream().wait_stream(side)
            if reset is not None:
                reset()
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.outputs = fn()

    def __call__(self) -> Any:
        if self.graph is None:
            return self.fn()
        self.graph.replay()
        return self.outputs


def graphs_available(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_available()


class GraphedFunction:
    """`fn(*tensors)` with one CUDA graph per input signature (shapes, dtypes); plain calls otherwise.

    New inputs are copied into the graph's static input tensors before each replay; outputs are the
    graph's static tensors (valid until the next call with the same signature).
    """

    def __init__(self, fn: Callable[..., Any], use_graph: bool):
        self.fn, self.use_graph = fn, use_graph
        self.entries: dict[tuple, tuple[list[torch.Tensor], StaticCall]] = {}

    def __call__(self, *inputs: torch.Tensor) -> Any:
        if not self.use_graph:
            return self.fn(*inputs)
        key = tuple((tuple(t.shape), t.dtype) for t in inputs)
        entry = self.entries.get(key)
        if entry is None:
            static = [t.clone() for t in inputs]
            entry = self.entries[key] = (static, StaticCall(lambda: self.fn(*static), True))
        static, call = entry
        for dst, src in zip(static, inputs):
            dst.copy_(src)
        return call()
