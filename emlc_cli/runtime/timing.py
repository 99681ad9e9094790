"""Where a run's time goes: named sections, summed (host wall time; on CUDA the per-step loss read syncs)."""
from __future__ import annotations

import contextlib
import time
from typing import Iterator


class Stopwatch(dict):
    """`with watch("decode"): ...` adds the block's seconds to watch["decode"]."""

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self[name] = self.get(name, 0.0) + time.perf_counter() - started

    def rounded(self) -> dict[str, float]:
        return {name: round(seconds, 2) for name, seconds in self.items()}
