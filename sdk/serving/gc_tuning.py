"""The garbage collector of a process that only serves."""

from __future__ import annotations

import gc

# Every request allocates tasks, futures and models that die young. With thousands in flight the
# default young-generation threshold (700) collects and promotes many times a second, and each full
# collection walks every live session: at 10,000 sessions that halved steps/s (BENCHMARKS.md). A
# young collection only walks what is still alive, and requests live as long as their step takes:
# with 20,000 sessions at 1 s steps (about 240,000 allocations a second) a threshold of 50,000 found
# nearly all of them alive and took 1.6-2.0 s of the server's CPU in a 12 s run; 400,000 let most die
# first and took 0.4-1.0 s (gymwire bench --sessions, BENCHMARKS.md).
SERVING_GC_THRESHOLDS = (400_000, 20, 100)


def tune_gc_for_serving() -> None:
    """Freeze what is alive now (imports, the server itself: never garbage) out of the collector's
    way and collect young objects less often. Process-wide: for processes that only serve."""
    gc.freeze()
    gc.set_threshold(*SERVING_GC_THRESHOLDS)
