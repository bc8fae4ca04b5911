"""`PolicyRecipe`: how to build a policy, as plain picklable data, so another process can build it.

Why: with `loop.worker=process` the policy lives in a child process. Pickling a built policy would copy
its torch state through a pipe (slow, and not every model object pickles); a recipe instead names a
top-level callable (a policy class, or a factory such as `policies.factory.build_policy`) and its plain
arguments (specs, paths, numbers), and the child calls it. The thread worker accepts a recipe too and
builds it in-process, so a caller can pass the same recipe whichever worker the config picks.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .protocols import Policy


@dataclass(frozen=True)
class PolicyRecipe:
    factory: Callable[..., Policy]  # importable by name in a fresh interpreter (module level)
    kwargs: dict[str, Any] = field(default_factory=dict)

    def build(self) -> Policy:
        return self.factory(**self.kwargs)

    def check_picklable(self) -> None:
        """Fail here, with the reason, rather than inside the child process's start-up."""
        try:
            pickle.dumps(self)
        except Exception as exc:
            name = getattr(self.factory, "__qualname__", repr(self.factory))
            raise TypeError(f"policy recipe for {name} cannot be sent to the inference process: {exc} "
                            f"(the factory must be a module-level callable, the arguments plain data)") from None
