"""`serve_forever` tunes the process's garbage collector for serving (see BENCHMARKS.md)."""

from __future__ import annotations

import gc

from gymwire.sdk.server import SERVING_GC_THRESHOLDS, tune_gc_for_serving


def test_tuning_freezes_what_is_alive_and_raises_the_thresholds() -> None:
    before = gc.get_threshold()
    try:
        tune_gc_for_serving()
        assert gc.get_threshold() == SERVING_GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
        assert SERVING_GC_THRESHOLDS[0] > before[0]
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
