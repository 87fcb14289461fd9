"""The garbage collector of a process that only serves."""

from __future__ import annotations

import gc

# Every request allocates tasks, futures and models that die young. With thousands in flight the
# default young-generation threshold (700) collects and promotes many times a second, and each full
# collection walks every live session: at 10,000 sessions that halved steps/s (BENCHMARKS.md).
SERVING_GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc_for_serving() -> None:
    """Freeze what is alive now (imports, the server itself: never garbage) out of the collector's
    way and collect young objects less often. Process-wide: for processes that only serve."""
    gc.freeze()
    gc.set_threshold(*SERVING_GC_THRESHOLDS)
